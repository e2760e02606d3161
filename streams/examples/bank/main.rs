//! `bank`: the bank workload of BANK.md (the contract, byte for byte) on the streams crate.
//!
//! ```sh
//! cargo run --release -p streams --example bank                  # the demo: 1-node Kafka, 2
//!                                                                 # processors, load, kill -9,
//!                                                                 # check
//! bank setup --bootstrap B --input IN --output OUT [--partitions 6]
//! bank run   --bootstrap B --input IN --output OUT --group G [--instance-id ID] ...
//! bank load  --bootstrap B --input IN --events N --rate R [--accounts A] [--seed S]
//! bank check --bootstrap B --input IN --output OUT --changelog C --events N [--seed S] ...
//! ```
//!
//! ```text
//!   driver: setup ─> load ──> input ──> run (processor, N instances) ──> output, changelog
//!                                                                          │
//!   checker: model(seed, N, accounts) ── oracles (a) (b) (c) (g) <─────────┘ read_committed
//! ```
//!
//! Exit status: 0 on success (`check` and the demo: every oracle holds), 1 on any failure,
//! 2 for bad usage. Logs go to stderr, filtered by `STREAMS_LOG` (default `warn`).
#![forbid(unsafe_code)]

mod check;
mod demo;
mod load;
mod model;
mod run;
mod setup;
mod wire;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The error of every command.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(
    name = "bank",
    about = "The bank workload (BANK.md): setup, load, run, check; no subcommand runs the demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create the input and output topics (idempotent).
    Setup(setup::SetupArgs),
    /// Produce the deterministic input stream on its schedule.
    Load(load::LoadArgs),
    /// Run one processor instance until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Read the output and the changelog and check the oracles against the model.
    Check(check::CheckArgs),
}

/// The bootstrap list of a `--bootstrap HOST:PORT[,HOST:PORT...]` flag.
pub fn servers(bootstrap: &str) -> Vec<String> {
    bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("STREAMS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    // No colours: streams builds tracing-subscriber without its `ansi` feature, so there are
    // none to give even on a terminal (and none is ever wanted on a pipe or in a file).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result: Result<bool, BoxError> = match cli.cmd {
        None => demo::demo().await,
        Some(Cmd::Setup(args)) => setup::setup(&args).await.map(|()| true),
        Some(Cmd::Load(args)) => load::load(&args).await.map(|report| {
            report.print();
            true
        }),
        Some(Cmd::Run(args)) => run::run(args).await.map(|()| true),
        Some(Cmd::Check(args)) => check::check(&args).await.map(|report| {
            report.print();
            report.ok()
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bank: {e}");
            ExitCode::FAILURE
        }
    }
}
