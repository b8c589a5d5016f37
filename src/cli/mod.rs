//! The `remix` command line: argument parsing, output, exit codes (SPEC section 5).
//!
//! Exit codes: 0 ok, 1 the command found a problem (corruption, a failed check) or failed at run
//! time, 2 usage or configuration error.

pub mod log_cmd;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "remix",
    version,
    about = "A durable data replicator: sources -> canonical models -> log -> targets"
)]
pub struct Cli {
    /// Configuration file (`${VAR}` and `${VAR:-default}` are taken from the environment).
    #[arg(long, global = true, env = "REMIX_CONFIG", default_value = "config/remix.yaml")]
    pub config: PathBuf,
    /// Machine output: one JSON document, or one JSON object per line for streams.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, verify and repair the log.
    Log {
        /// The data directory (default: `data_dir` of the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: log_cmd::LogCommand,
    },
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Problem = 1,
    Usage = 2,
}

/// Standard output, with the `--json` switch; a closed pipe ends the command quietly.
#[derive(Debug)]
pub struct Out {
    pub json: bool,
    stdout: std::io::BufWriter<std::io::Stdout>,
}

impl Out {
    pub fn new(json: bool) -> Out {
        Out { json, stdout: std::io::BufWriter::new(std::io::stdout()) }
    }
    pub fn line(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        writeln!(self.stdout, "{args}")
    }
    pub fn json_line(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.stdout, value)?;
        writeln!(self.stdout)
    }
    pub fn json_value(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut self.stdout, value)?;
        writeln!(self.stdout)
    }
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.stdout.flush()
    }
}

/// Parses the arguments, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let mut out = Out::new(cli.json);
    let result = run(&cli, &mut out);
    let flushed = out.flush();
    match result.and_then(|exit| flushed.map(|()| exit).map_err(Into::into)) {
        Ok(exit) => exit as i32,
        Err(e) if is_broken_pipe(&e) => Exit::Ok as i32,
        Err(e) => {
            eprintln!("remix: {e:#}");
            match e.downcast_ref::<UsageError>() {
                Some(_) => Exit::Usage as i32,
                None => Exit::Problem as i32,
            }
        }
    }
}

/// An error that is the caller's (bad arguments or configuration): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: &Cli, out: &mut Out) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Log { data_dir, command } => {
            let (data_dir, targets) = match data_dir {
                Some(dir) => (dir.clone(), Vec::new()),
                None => data_dir_from_config(cli)?,
            };
            log_cmd::run(command, &data_dir, &targets, out)
        }
    }
}

/// The data directory and target names of the configuration.
fn data_dir_from_config(cli: &Cli) -> anyhow::Result<(PathBuf, Vec<String>)> {
    Err(UsageError(format!("cannot read {}: pass --data-dir", cli.config.display())).into())
}
