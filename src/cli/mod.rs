//! The `remix` command line: argument parsing, output, exit codes (SPEC section 5).
//!
//! Exit codes: 0 ok, 1 the command found a problem (corruption, a failed check) or failed at run
//! time, 2 usage or configuration error.

pub mod check;
pub mod client;
pub mod dataset_cmd;
pub mod dlq_cmd;
pub mod doctor;
mod doctor_local;
pub mod log_cmd;
pub mod source_cmd;
pub mod target_cmd;

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
    /// Format of the node's own log lines (on standard error).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every source and target in the configuration until SIGINT or SIGTERM.
    Run,
    /// Validate the configuration, schemas and mappings, and print the plan. Exit 2 on any problem.
    Check,
    /// Preflight against the real systems: wal_level, privileges, slots, tables. Exit 1 on a failure.
    Doctor,
    /// List, pause, resume and rewind targets.
    Target {
        #[command(subcommand)]
        command: target_cmd::TargetCommand,
    },
    /// Source operations: `catch-up NAME` reads what a Stripe source missed from the Events API.
    Source {
        #[command(subcommand)]
        command: source_cmd::SourceCommand,
    },
    /// The dead-letter queue: objects that failed remix in or validation, or that a target refused.
    Dlq {
        #[command(subcommand)]
        command: dlq_cmd::DlqCommand,
    },
    /// Datasets: `remix dataset export MODEL --to URL`.
    Dataset {
        #[command(subcommand)]
        command: dataset_cmd::DatasetCommand,
    },
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
    crate::install_tls_provider();
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
    init_tracing(cli.log_format);
    match &cli.command {
        Command::Log { data_dir, command } => {
            let (data_dir, targets) = match data_dir {
                Some(dir) => (dir.clone(), None),
                None => {
                    let config = load_config(&cli.config)?;
                    (
                        config.data_dir.clone(),
                        Some(config.targets.iter().map(|t| t.name().to_owned()).collect::<Vec<_>>()),
                    )
                }
            };
            log_cmd::run(command, &data_dir, targets.as_deref(), out)
        }
        Command::Check => check::run(&cli.config, out),
        Command::Dataset { command } => {
            let config = load_config(&cli.config)?;
            dataset_cmd::run(command, &config, out)
        }
        Command::Run => {
            let config = load_config(&cli.config)?;
            runtime()?.block_on(crate::runtime::node::run(config))?;
            Ok(Exit::Ok)
        }
        Command::Doctor => {
            let config = load_config(&cli.config)?;
            runtime()?.block_on(doctor::run(&config, out))
        }
        Command::Target { command } => {
            let config = load_config(&cli.config)?;
            runtime()?.block_on(target_cmd::run(command, &config, out))
        }
        Command::Source { command } => {
            let config = std::sync::Arc::new(load_config(&cli.config)?);
            runtime()?.block_on(source_cmd::run(command, config, out))
        }
        Command::Dlq { command } => {
            let config = std::sync::Arc::new(load_config(&cli.config)?);
            runtime()?.block_on(dlq_cmd::run(command, config, out))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn init_tracing(format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::INFO);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Loads and validates the configuration; every problem is reported (exit 2).
pub fn load_config(path: &std::path::Path) -> anyhow::Result<crate::config::Config> {
    if !path.exists() {
        let hint = if path == std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH) {
            " (run from the project root, or pass --config PATH)"
        } else {
            ""
        };
        return Err(UsageError(format!("configuration file {} not found{hint}", path.display())).into());
    }
    crate::config::load(path).map_err(|errors| UsageError(errors.to_string()).into())
}
