//! `sluice-bench`: a load generator for the Sluice broker, the servers it is
//! compared with, and the report of a benchmark session.
//!
//! Load modes (see `--help` of each), against `--target sluice|ceiling|pushpin|trivial`:
//! - `publish`: publish throughput and request latency;
//! - `fanout`: end-to-end delivery to many SSE subscribers over one or more
//!   topics, flat out or at a rate, with ordering, gap and duplicate checks
//!   and publish→deliver latency;
//! - `resume`: fill a topic, then time one subscriber's catch-up from `earliest`;
//! - `idle`: hold many idle SSE streams; server memory per stream.
//!
//! Each load mode prints a human summary to stderr and one JSON line with
//! every figure to stdout. The exit code is non-zero when a run fails its checks.
//!
//! Servers: `ceiling` (the transport ceiling), `trivial` (a trivial actix-web
//! publish handler), `grip-origin` (the origin behind Pushpin).
//! `report` turns the JSON lines of a session into tables and charts.

mod ceiling;
mod fanout;
mod http;
mod idle;
mod origin;
mod payload;
mod publish;
mod report;
mod resume;
mod seq;
mod server;
mod sse;
mod stats;
mod target;
mod trivial;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the subscribers' decoding allocates and frees per event on
/// every core, where glibc's malloc was a third of the load generator's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
// A later option overrides an earlier one of the same name, so `bench/run.sh`
// can append per-scenario overrides (`S1_ARGS="--publishers 32"`).
#[command(version, about)]
enum Cli {
    /// Publish flat out for a fixed time; report rates and latency.
    #[command(args_override_self = true)]
    Publish(publish::Args),
    /// Fan events out to SSE subscribers on one or more topics; check order and completeness.
    #[command(args_override_self = true)]
    Fanout(fanout::Args),
    /// Fill a topic, then time one subscriber's catch-up from `earliest`.
    #[command(args_override_self = true)]
    Resume(resume::Args),
    /// Hold many idle SSE streams; report server memory per stream.
    #[command(args_override_self = true)]
    Idle(idle::Args),
    /// (internal) One process's share of `idle`'s streams.
    #[command(hide = true)]
    IdleHold(idle::HoldArgs),
    /// The reference ceiling: an in-memory broadcast SSE server speaking Sluice's API.
    Ceiling(ceiling::Args),
    /// A trivial actix-web publish handler (201 and a tiny JSON body).
    Trivial(trivial::Args),
    /// The origin behind Pushpin: holds every subscribe with `Grip-Hold: stream`.
    GripOrigin(origin::Args),
    /// Medians per scenario and target from results files: Markdown and SVG charts.
    Report(report::Args),
    /// (for run.sh) Prints a free loopback TCP port.
    #[command(hide = true)]
    FreePort,
}

/// Options every load mode takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Server base URL, e.g. http://127.0.0.1:8080 (for Pushpin: its proxy port).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// What the server is: it decides the publish requests' format.
    #[arg(long, value_enum, default_value_t = target::Kind::Sluice)]
    pub target: target::Kind,
    /// Where publishes go when not to `--url` (Pushpin: its HTTP control API).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Server process ids (comma-separated; several are summed, e.g.
    /// Pushpin's processes): their VmRSS/VmHWM/CPU are read at the end of the run.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Target name in the JSON line (default: the `--target` kind).
    #[arg(long)]
    pub target_name: Option<String>,
    /// Scenario name in the JSON line (default: the mode).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Run number in the JSON line.
    #[arg(long, default_value_t = 1)]
    pub run: u32,
}

impl Common {
    /// Adds target, scenario, run and the server's RSS to a mode's JSON line.
    pub fn label(&self, mode: &str, json: &mut serde_json::Value) {
        let rss = json["processes"]["broker"]["vm_rss_kb"].clone();
        let obj = json.as_object_mut().expect("a JSON object");
        obj.insert(
            "target".into(),
            self.target_name
                .clone()
                .unwrap_or_else(|| self.target.name().into())
                .into(),
        );
        obj.insert("target_kind".into(), self.target.name().into());
        obj.insert(
            "scenario".into(),
            self.scenario.clone().unwrap_or_else(|| mode.into()).into(),
        );
        obj.insert("run".into(), self.run.into());
        obj.insert("server_rss_kb".into(), rss);
    }
}

/// A finished run: its JSON line and whether it passed.
pub struct Report {
    pub json: serde_json::Value,
    pub ok: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli {
        Cli::Publish(a) => Some(a.common.clone()),
        Cli::Fanout(a) => Some(a.common.clone()),
        Cli::Resume(a) => Some(a.common.clone()),
        Cli::Idle(a) => Some(a.common.clone()),
        _ => None,
    };
    let mode = format!("{cli:?}")
        .split('(')
        .next()
        .unwrap_or("")
        .to_lowercase();
    let result = match cli {
        Cli::Trivial(args) => return exit(trivial::run(args).map_err(Into::into)),
        Cli::Report(args) => return exit(report::run(args)),
        Cli::IdleHold(args) => return exit(block_on(idle::hold(args))),
        Cli::Ceiling(args) => return exit(block_on(ceiling::run(args))),
        Cli::GripOrigin(args) => return exit(block_on(origin::run(args))),
        Cli::FreePort => {
            return exit(
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| println!("{}", a.port()))
                    .map_err(Into::into),
            )
        }
        Cli::Publish(args) => block_on(publish::run(args)),
        Cli::Fanout(args) => block_on(fanout::run(args)),
        Cli::Resume(args) => block_on(resume::run(args)),
        Cli::Idle(args) => block_on(idle::run(args)),
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
            let mut json = serde_json::json!({ "mode": mode, "error": e.to_string(), "ok": false });
            if let Some(c) = common {
                c.label(&mode, &mut json);
            }
            println!("{json}");
            ExitCode::from(2)
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn exit(r: Result<(), http::Error>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            ExitCode::from(2)
        }
    }
}
