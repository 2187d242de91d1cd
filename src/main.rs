//! The `sluice` binary: parse flags, load configuration, start logging, run.

use std::{net::TcpListener, path::PathBuf, process::ExitCode};

use clap::Parser;

use sluice::config::{LogFormat, Overrides, Settings};
use tracing_subscriber::EnvFilter;

/// jemalloc: a single-event publish allocates and frees a few dozen small
/// buffers across the HTTP layer, the actors and the Redis client, and
/// glibc's malloc was about a tenth of the broker's CPU there; jemalloc cut
/// the broker's CPU per publish on the Redis store by a fifth. mimalloc cut
/// it as much but cost fan-out a sixth and idle streams 40 % more memory
/// each; jemalloc changes neither beyond the noise (BENCHMARKS.md, "Single
/// events: where the CPU goes").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (the symbol's `_rjem_` prefix is
/// tikv-jemalloc-sys's). What a disconnect storm's streams used goes back to
/// the system within seconds, as with glibc: by default jemalloc keeps
/// freed pages ten seconds and purges them only while the process
/// allocates, so an instance gone quiet after a storm held its peak. One
/// background thread purges pages unused for three seconds (one second
/// cost fan-out a seventh); `muzzy_decay_ms:0` returns them with
/// `MADV_DONTNEED`, which lowers RSS at once, not with `MADV_FREE`, which
/// lowers it only under memory pressure.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:3000,muzzy_decay_ms:0\0";

/// Sluice: a pub/sub event broker over HTTP and Server-Sent Events.
#[derive(Parser)]
#[command(
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SLUICE_REVISION"), ")"),
    about,
    after_help = "Configuration is layered, later layers winning: built-in defaults \
(config/default.toml), the --config file, SLUICE__<SECTION>__<KEY> environment \
variables (e.g. SLUICE__STREAM__HEARTBEAT_SECS=15, SLUICE__STORE=redis, \
SLUICE__REDIS__URL=redis://127.0.0.1:6379), then the flags above. RUST_LOG overrides \
the log filter (default: `log.level`, info)."
)]
struct Cli {
    /// What to do; without one, serve.
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML); see config/default.toml for every key.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory of the embedded store (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format: text or json (overrides `log.format`).
    #[arg(long)]
    log_format: Option<String>,
}

/// What to do.
#[derive(clap::Subcommand)]
enum Command {
    /// Runs the broker (what `sluice` without a subcommand does).
    Serve(ServeArgs),
    #[command(flatten)]
    Client(sluice::cli::ClientCommand),
    /// Exits 0 when the broker at --url answers `/readyz` with 200, else 1
    /// (for a container HEALTHCHECK; needs no other tool).
    Health {
        /// The broker's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Verifies the embedded store's data directory offline (every record's
    /// checksum, sequence continuity, epochs, the journal) and reports what
    /// it finds, changing nothing; with --repair, applies the rules start-up
    /// applies. Exit status: 0 clean, 1 damage found (or, with --repair,
    /// found and repaired), 2 the check could not run. Stop the broker first.
    Check {
        /// Repair what is found, as start-up would.
        #[arg(long)]
        repair: bool,
    },
}

/// `sluice serve`'s own flags, the same as the top-level ones.
#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Log format: text or json (overrides `log.format`).
    #[arg(long)]
    log_format: Option<String>,
}

/// What [`init_logging`] set up besides the log output; shut down at exit.
struct Telemetry {
    /// The OpenTelemetry exporter (inactive unless an OTLP endpoint is set).
    #[cfg(feature = "otel")]
    otel: sluice::telemetry::Otel,
}

impl Telemetry {
    /// Whether spans are exported (so requests should get one).
    fn exporting(&self) -> bool {
        #[cfg(feature = "otel")]
        return self.otel.is_exporting();
        #[cfg(not(feature = "otel"))]
        false
    }

    /// Flushes what is still buffered; call once the server has stopped.
    fn shutdown(self) {
        #[cfg(feature = "otel")]
        self.otel.shutdown();
    }
}

/// The Redis client's own messages at ERROR only, unless the filter names
/// `redis`: redis-rs logs every reconnect attempt of a cluster client at
/// WARN and INFO, dozens of lines a second while a cluster is unreachable
/// or not yet formed, where Sluice reports the store's state itself (one
/// WARN when it becomes unavailable and why, one INFO when it is back, and
/// `/readyz`).
fn quiet_redis_client(filter: EnvFilter, spec: &str) -> EnvFilter {
    let names_redis = spec
        .split(',')
        .any(|directive| directive.trim_start().starts_with("redis"));
    if names_redis {
        filter
    } else {
        filter.add_directive("redis=error".parse().expect("a valid directive"))
    }
}

fn init_logging(settings: &Settings) -> Telemetry {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _, Layer as _};

    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| settings.log.level.clone());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = quiet_redis_client(filter, &spec);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match settings.log.format.get() {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry();
    #[cfg(feature = "otel")]
    let (otel_layer, otel) = sluice::telemetry::from_env();
    #[cfg(feature = "otel")]
    let registry = registry.with(otel_layer);
    registry.with(filter).with(fmt).init();
    #[cfg(feature = "otel")]
    otel.log_status();
    Telemetry {
        #[cfg(feature = "otel")]
        otel,
    }
}

/// Caps glibc's malloc arenas at one per core. By default glibc grows up to
/// eight per core, and buffers allocated on one thread (the store's blocking
/// pool, the topic arbiters) and freed on another fragment them: RSS then
/// measured 40 % above the live data under a fan-out load.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    const M_ARENA_MAX: i32 = -8;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: mallopt only sets an allocator tunable; called before any
    // other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, cores.clamp(1, 64) as i32);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// `sluice check`: see [`Command::Check`].
fn check(settings: &Settings, repair: bool) -> ExitCode {
    use sluice::store::embedded::check;
    let dir = &settings.data_dir;
    let found = match check::check(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice check: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    for line in &found.problems {
        println!("problem: {line}");
    }
    for line in &found.notes {
        println!("note: {line}");
    }
    println!(
        "{}: {} topic(s), {} event(s), {}",
        dir.display(),
        found.topics,
        found.events,
        if found.clean() { "clean" } else { "DAMAGED" }
    );
    if found.clean() {
        return ExitCode::SUCCESS;
    }
    if !repair {
        println!("run `sluice check --repair` (broker stopped) to apply start-up's repair rules");
        return ExitCode::from(1);
    }
    // The repair logs what it removes, as start-up does.
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    match check::repair(dir, settings.embedded_config()) {
        Ok(after) => {
            for line in &after.problems {
                println!("after repair, problem: {line}");
            }
            println!(
                "repaired: {} topic(s), {} event(s), {}",
                after.topics,
                after.events,
                if after.clean() {
                    "clean"
                } else {
                    "STILL DAMAGED"
                }
            );
            ExitCode::from(if after.clean() { 1 } else { 2 })
        }
        Err(e) => {
            eprintln!("sluice check --repair: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(Command::Client(cmd)) => return sluice::cli::run(cmd),
        Some(Command::Serve(serve)) => {
            cli.listen = serve.listen.or(cli.listen);
            cli.log_format = serve.log_format.or(cli.log_format);
        }
        other => cli.command = other,
    }
    if let Some(Command::Health { url, timeout_secs }) = &cli.command {
        return match sluice::probe::readyz(url, std::time::Duration::from_secs(*timeout_secs)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("sluice health: not ready: {why}");
                ExitCode::FAILURE
            }
        };
    }
    let overrides = Overrides {
        file: cli.config,
        listen: cli.listen,
        data_dir: cli.data_dir,
        log_format: cli.log_format,
    };
    let settings = match Settings::load(&overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check { repair }) = cli.command {
        return check(&settings, repair);
    }
    let telemetry = init_logging(&settings);
    let listener = match TcpListener::bind(settings.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sluice: cannot listen on {}: {e}", settings.listen);
            return ExitCode::from(1);
        }
    };
    // Request spans are built only for an exporter; tests that check what
    // the spans carry (no token, ever) turn them on without one.
    let request_spans =
        telemetry.exporting() || std::env::var_os("SLUICE_TEST_REQUEST_SPANS").is_some();
    let result = actix_web::rt::System::new().block_on(sluice::server::run(
        settings,
        listener,
        sluice::server::shutdown_signal(),
        request_spans,
    ));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
