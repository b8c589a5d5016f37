//! `remix log ls | stat | dump | tail | verify | repair`: inspecting the log, beside a running node or
//! without one. Read-only commands take no lock; `repair` takes it and is refused while a node runs.

use super::{Exit, Out};
use crate::record::{self, Decoded};
use crate::time::format_ms;
use remix_storage::verify::{repair, verify};
use remix_storage::{LogView, OsFs, Record};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often `tail --follow` looks for new records.
const FOLLOW_POLL_MS: u64 = 200;

#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Segments: base offset, last offset, records, bytes, sealed, time range.
    Ls,
    /// First/last/durable offset, records, bytes, and each target's cursor and lag.
    Stat,
    /// Records, one per line.
    Dump {
        /// First offset to print (default: the log's first).
        #[arg(long)]
        from: Option<u64>,
        /// At most this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Only records of this model.
        #[arg(long)]
        model: Option<String>,
    },
    /// The newest records, and with --follow every new one as it becomes durable.
    Tail {
        /// How many of the newest records to print first.
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        n: u64,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Check every frame checksum, offset continuity, index and cursor. Exit 1 on a problem.
    Verify,
    /// Cut the log at its first corruption, copying what is cut to quarantine/ first. Refused while a
    /// node holds the data directory.
    Repair,
}

/// `targets`: the configured targets' names, when a configuration was read (not with `--data-dir`).
pub fn run(
    command: &LogCommand,
    data_dir: &Path,
    targets: Option<&[String]>,
    out: &mut Out,
) -> anyhow::Result<Exit> {
    match command {
        LogCommand::Ls => ls(data_dir, out),
        LogCommand::Stat => stat(data_dir, targets, out),
        LogCommand::Dump { from, limit, model } => dump(data_dir, *from, *limit, model.as_deref(), out),
        LogCommand::Tail { n, follow } => tail(data_dir, *n, *follow, out),
        LogCommand::Verify => verify_cmd(data_dir, out),
        LogCommand::Repair => repair_cmd(data_dir, out),
    }
}

pub(crate) fn open_view(data_dir: &Path) -> anyhow::Result<LogView> {
    if !data_dir.join("log").is_dir() {
        anyhow::bail!(
            "no log in {} (has `remix run` ever run with this data directory?)",
            data_dir.display()
        );
    }
    Ok(LogView::open(Arc::new(OsFs), data_dir)?)
}

fn time_or_dash(ms: u64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        format_ms(ms)
    }
}

fn ls(data_dir: &Path, out: &mut Out) -> anyhow::Result<Exit> {
    let stat = open_view(data_dir)?.stat();
    if out.json {
        let rows: Vec<Value> = stat
            .segments
            .iter()
            .map(|s| {
                json!({"base_offset": s.base_offset, "last_offset": s.last_offset, "records": s.records,
                "bytes": s.bytes, "sealed": s.sealed, "first_time": (s.records > 0).then(|| format_ms(s.first_timestamp_ms)),
                "last_time": (s.records > 0).then(|| format_ms(s.last_timestamp_ms)), "path": s.path})
            })
            .collect();
        out.json_value(&Value::Array(rows))?;
        return Ok(Exit::Ok);
    }
    out.line(format_args!(
        "{:>20} {:>20} {:>10} {:>12} {:>6}  {:<24}  {:<24}",
        "BASE", "LAST", "RECORDS", "BYTES", "SEALED", "FIRST TIME", "LAST TIME"
    ))?;
    for s in &stat.segments {
        out.line(format_args!(
            "{:>20} {:>20} {:>10} {:>12} {:>6}  {:<24}  {:<24}",
            s.base_offset,
            s.last_offset,
            s.records,
            s.bytes,
            if s.sealed { "yes" } else { "no" },
            time_or_dash(s.first_timestamp_ms),
            time_or_dash(s.last_timestamp_ms)
        ))?;
    }
    Ok(Exit::Ok)
}

/// The log's figures and every target's cursor; with a configuration, a cursor file of a target
/// that is not configured is marked (`"configured": false`: it holds no retention).
fn stat(data_dir: &Path, targets: Option<&[String]>, out: &mut Out) -> anyhow::Result<Exit> {
    let view = open_view(data_dir)?;
    let stat = view.stat();
    let mut names: Vec<String> = view.cursors().keys().cloned().collect();
    names.extend(targets.unwrap_or_default().iter().filter(|t| !view.cursors().contains_key(*t)).cloned());
    let target_rows: Vec<Value> = names
        .iter()
        .map(|name| {
            let cursor = view.cursors().get(name).copied().unwrap_or(0);
            let mut row =
                json!({"name": name, "cursor": cursor, "lag_records": stat.durable_offset.saturating_sub(cursor)});
            if let Some(targets) = targets {
                row["configured"] = json!(targets.contains(name));
            }
            row
        })
        .collect();
    let value = json!({
        "first_offset": stat.first_offset, "last_offset": stat.last_offset, "durable_offset": stat.durable_offset,
        "records": stat.records, "bytes": stat.bytes, "segments": stat.segments.len(), "targets": target_rows,
        "notes": view.notes(),
    });
    if out.json {
        out.json_value(&value)?;
        return Ok(Exit::Ok);
    }
    out.line(format_args!("data dir        {}", data_dir.display()))?;
    out.line(format_args!("first offset    {}", stat.first_offset))?;
    out.line(format_args!("last offset     {}", stat.last_offset))?;
    out.line(format_args!("durable offset  {}", stat.durable_offset))?;
    out.line(format_args!("records         {}", stat.records))?;
    out.line(format_args!("bytes           {}", stat.bytes))?;
    out.line(format_args!("segments        {}", stat.segments.len()))?;
    for row in &target_rows {
        let unconfigured =
            if row["configured"] == false { "  (not configured: holds no retention)" } else { "" };
        out.line(format_args!(
            "target {:<16} cursor {:>12}  lag {:>10} records{unconfigured}",
            row["name"].as_str().unwrap_or(""),
            row["cursor"].as_u64().unwrap_or(0),
            row["lag_records"].as_u64().unwrap_or(0)
        ))?;
    }
    for note in view.notes() {
        out.line(format_args!("note: {note}"))?;
    }
    Ok(Exit::Ok)
}

/// Prints one record; returns whether it matched the model filter.
fn print_record(record: &Record, model: Option<&str>, out: &mut Out) -> anyhow::Result<bool> {
    let decoded = record::decode(record.kind, &record.payload);
    let record_model = match &decoded {
        Decoded::Change(c) => Some(c.model.as_str()),
        Decoded::DeadLetter(d) => Some(d.model.as_str()),
        _ => None,
    };
    if model.is_some() && model != record_model {
        return Ok(false);
    }
    let value = match &decoded {
        Decoded::Change(change) => record::change_json(record.offset, record.timestamp_ms, change),
        Decoded::DeadLetter(d) => {
            json!({"offset": record.offset, "time": format_ms(record.timestamp_ms),
            "dead_letter": true, "source": d.source, "position": d.position, "model": d.model, "errors": d.errors, "input": d.input})
        }
        Decoded::Resolved(r) => {
            json!({"offset": record.offset, "time": format_ms(record.timestamp_ms),
            "dead_letter_resolved": r.id, "how": r.how})
        }
        Decoded::Other { kind, error } => {
            json!({"offset": record.offset, "time": format_ms(record.timestamp_ms),
            "kind": kind, "bytes": record.payload.len(), "undecoded": error})
        }
    };
    if out.json {
        out.json_line(&value)?;
    } else if let Decoded::Change(c) = &decoded {
        let data = value.get("data").map_or(String::new(), Value::to_string);
        out.line(format_args!(
            "{:>10}  {}  {} {}  {} {} {} {}",
            record.offset,
            value["time"].as_str().unwrap_or(""),
            c.source,
            c.position,
            c.model,
            c.op.as_str(),
            c.key,
            data
        ))?;
    } else {
        out.line(format_args!("{:>10}  {value}", record.offset))?;
    }
    Ok(true)
}

fn dump(
    data_dir: &Path,
    from: Option<u64>,
    limit: Option<u64>,
    model: Option<&str>,
    out: &mut Out,
) -> anyhow::Result<Exit> {
    let view = open_view(data_dir)?;
    let mut printed = 0;
    for record in view.reader(from.unwrap_or(view.first_offset()).max(view.first_offset()))? {
        if limit.is_some_and(|l| printed >= l) {
            break;
        }
        if print_record(&record?, model, out)? {
            printed += 1;
        }
    }
    Ok(Exit::Ok)
}

fn tail(data_dir: &Path, n: u64, follow: bool, out: &mut Out) -> anyhow::Result<Exit> {
    let view = open_view(data_dir)?;
    let from = view.durable_offset().saturating_sub(n).saturating_add(1).max(view.first_offset());
    let mut reader = view.reader(from)?;
    loop {
        while let Some(record) = reader.try_next()? {
            print_record(&record, None, out)?;
        }
        if !follow {
            return Ok(Exit::Ok);
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS));
        view.refresh()?;
    }
}

/// The dead-letter log beside the main one, if the node has made it.
fn dlq_dir(data_dir: &Path) -> Option<std::path::PathBuf> {
    let dir = data_dir.join("dlq");
    dir.join("log").is_dir().then_some(dir)
}

/// Verifies the main log and the dead-letter log: exit 1 when either has a problem.
fn verify_cmd(data_dir: &Path, out: &mut Out) -> anyhow::Result<Exit> {
    if !data_dir.join("log").is_dir() {
        anyhow::bail!("no log in {}", data_dir.display());
    }
    let main = verify(&OsFs, data_dir)?;
    let dlq = dlq_dir(data_dir).map(|dir| verify(&OsFs, &dir)).transpose()?;
    let ok = main.problems.is_empty() && dlq.as_ref().is_none_or(|d| d.problems.is_empty());
    let exit = if ok { Exit::Ok } else { Exit::Problem };
    if out.json {
        let mut value = verify_json(&main);
        value["ok"] = json!(ok);
        value["dlq"] = dlq.as_ref().map_or(Value::Null, verify_json);
        out.json_value(&value)?;
        return Ok(exit);
    }
    print_verify(&main, "", out)?;
    if let Some(dlq) = &dlq {
        print_verify(dlq, "dead-letter log ", out)?;
    }
    Ok(exit)
}

fn verify_json(report: &remix_storage::verify::VerifyReport) -> Value {
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|p| json!({"path": p.path, "position": p.position, "offset": p.offset, "message": p.message}))
        .collect();
    json!({"ok": report.problems.is_empty(), "segments": report.segments, "records": report.records,
        "last_offset": report.last_offset, "problems": problems, "notes": report.notes})
}

fn print_verify(
    report: &remix_storage::verify::VerifyReport,
    which: &str,
    out: &mut Out,
) -> anyhow::Result<()> {
    for problem in &report.problems {
        out.line(format_args!(
            "PROBLEM: {} byte {} offset {}: {}",
            problem.path.display(),
            problem.position,
            problem.offset,
            problem.message
        ))?;
    }
    for note in &report.notes {
        out.line(format_args!("note: {note}"))?;
    }
    let verdict = if report.problems.is_empty() { "ok" } else { "CORRUPT" };
    out.line(format_args!(
        "{which}{verdict}: {} segments, {} records, last offset {}, {} problems",
        report.segments,
        report.records,
        report.last_offset,
        report.problems.len()
    ))?;
    Ok(())
}

/// Repairs the main log, then the dead-letter log.
fn repair_cmd(data_dir: &Path, out: &mut Out) -> anyhow::Result<Exit> {
    let mut report = repair(&OsFs, data_dir, crate::time::now_ms())?;
    let mut dlq_quarantine = None;
    if let Some(dir) = dlq_dir(data_dir) {
        let dlq = repair(&OsFs, &dir, crate::time::now_ms())?;
        report.actions.extend(dlq.actions.into_iter().map(|a| format!("dead-letter log: {a}")));
        dlq_quarantine = dlq.quarantine;
    }
    if out.json {
        out.json_value(
            &json!({"actions": report.actions, "quarantine": report.quarantine, "dlq_quarantine": dlq_quarantine}),
        )?;
    } else if report.actions.is_empty() {
        out.line(format_args!("nothing to repair"))?;
    } else {
        for action in &report.actions {
            out.line(format_args!("{action}"))?;
        }
    }
    Ok(Exit::Ok)
}
