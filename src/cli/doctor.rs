//! `remix doctor`: preflight against the real systems the configuration names. Each check says what
//! it found and, when something is wrong, what to run to fix it. Exit 1 when any check fails.
//!
//! The node's own resources (data directory, listen addresses) are checked in `doctor_local.rs`;
//! each source and target checks the system it names (its kind's `doctor`).

use super::{Exit, Out};
use crate::config::Config;
use crate::connector::{Report, Status};

pub async fn run(config: &Config, out: &mut Out) -> anyhow::Result<Exit> {
    let mut report = Report::default();
    super::doctor_local::check(config, &mut report).await;
    for source in &config.sources {
        source.spec.doctor(source.name(), &mut report).await;
    }
    for target in &config.targets {
        target.spec.doctor(target.name(), config, &mut report).await;
    }
    if out.json {
        out.json_value(&serde_json::to_value(&report.checks)?)?;
    } else {
        for c in &report.checks {
            let status = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.line(format_args!("{status} {} {}: {}", c.subject, c.check, c.message))?;
            if let Some(fix) = &c.fix {
                out.line(format_args!("     fix: {fix}"))?;
            }
        }
    }
    Ok(if report.failed() { Exit::Problem } else { Exit::Ok })
}
