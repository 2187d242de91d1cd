//! `sluice-bench`: a load generator for the Sluice broker.
//!
//! Modes (see `--help` of each):
//! - `publish`: publish throughput and request latency;
//! - `fanout`: end-to-end delivery to many SSE subscribers, with ordering,
//!   gap and duplicate checks and publish→deliver latency;
//! - `idle`: hold many idle SSE streams; broker memory per stream.
//!
//! Each mode prints a human summary to stderr and one JSON line with every
//! figure to stdout. The exit code is non-zero when a run fails its checks.

mod fanout;
mod http;
mod idle;
mod payload;
mod publish;
mod sse;
mod stats;

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(version, about)]
enum Cli {
    /// Publish flat out for a fixed time; report rates and latency.
    Publish(publish::Args),
    /// Fan events out to many SSE subscribers; check order and completeness.
    Fanout(fanout::Args),
    /// Hold many idle SSE streams; report broker memory per stream.
    Idle(idle::Args),
}

/// Options every mode takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Broker base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Broker process id: its VmRSS/VmHWM are read at the end of the run.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// A finished run: its JSON line and whether it passed.
pub struct Report {
    pub json: serde_json::Value,
    pub ok: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse() {
        Cli::Publish(args) => publish::run(args).await,
        Cli::Fanout(args) => fanout::run(args).await,
        Cli::Idle(args) => idle::run(args).await,
    };
    match result {
        Ok(report) => {
            println!("{}", report.json);
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            ExitCode::from(2)
        }
    }
}
