//! `idle`: hold N idle SSE streams (spread over topics) for a while and
//! report the server's resident memory before and after they were opened,
//! hence its memory per idle stream.
//!
//! One process can hold only as many sockets as its open-file limit allows,
//! so past `--per-process` streams the work is spread over child processes
//! (`idle-hold`, this same binary), each binding its sockets to its own
//! 127.0.0.x source address (so no one source runs out of ephemeral ports).
//! The server has the same kind of limit: once a stream fails to open, no
//! more are tried, and the run reports how many it held and what bound it.

use serde_json::json;
use std::{
    net::IpAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    sync::Semaphore,
    task::JoinHandle,
    time::{sleep, timeout, Instant},
};

use crate::{
    http::{Base, Error},
    sse, stats,
    target::Endpoints,
    Common, Report,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Streams to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    /// Topics the streams are spread over (`{topic_prefix}-{i % topics}`).
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    #[arg(long, default_value = "idle")]
    pub topic_prefix: String,
    /// How long to hold every stream open once all are open.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Streams being opened at once (over all processes).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Most streams one client process holds; more are spread over child
    /// processes, child i binding to source address 127.0.0.{i+2} (or the
    /// `--source-ips`, round-robin).
    #[arg(long, default_value_t = 9_000)]
    pub per_process: usize,
    /// Local addresses the client sockets bind to.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// A stream not open after this long counts as failed.
    #[arg(long, default_value_t = 10)]
    pub open_timeout_secs: u64,
}

/// `idle-hold`: one child process's share of the streams.
#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub streams: usize,
    #[arg(long)]
    pub topics: usize,
    #[arg(long)]
    pub topic_prefix: String,
    /// Index of this share's first stream (for topic assignment).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub source_ip: Option<IpAddr>,
    #[arg(long)]
    pub open_timeout_secs: u64,
}

/// Streams held by one process.
struct Held {
    tasks: Vec<JoinHandle<Result<(), String>>>,
    opened: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Held {
    /// Streams still open.
    fn open(&self) -> u64 {
        self.tasks.iter().filter(|t| !t.is_finished()).count() as u64
    }
}

/// Opens `share.streams` streams, stopping at the first failure.
async fn open_streams(base: &Base, share: &HoldArgs) -> Result<Held, Error> {
    let sem = Arc::new(Semaphore::new(share.concurrency.max(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let open_timeout = Duration::from_secs(share.open_timeout_secs);
    let mut tasks = Vec::with_capacity(share.streams);
    for i in share.offset..share.offset + share.streams {
        let permit = sem.clone().acquire_owned().await?;
        if stop.load(Relaxed) {
            break;
        }
        let topic = format!("{}-{}", share.topic_prefix, i % share.topics.max(1));
        let (base, source) = (base.clone(), share.source_ip);
        let (stop, opened, failed, first_error) = (
            stop.clone(),
            opened.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Open once its `retry:` line arrived; then held, read only so
            // heartbeats and probes do not pile up in the socket.
            let res = timeout(open_timeout, async {
                let mut s = sse::subscribe_from(&base, &topic, "from=latest", source).await?;
                loop {
                    match s.next().await? {
                        Some(sluice_client::sse::Frame::Retry(_)) => return Ok::<_, Error>(s),
                        Some(_) => continue,
                        None => return Err("stream ended before its retry: line".into()),
                    }
                }
            })
            .await;
            let mut s = match res {
                Ok(Ok(s)) => {
                    opened.fetch_add(1, Relaxed);
                    drop(permit);
                    s
                }
                other => {
                    let e = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("not open within {} s", open_timeout.as_secs()),
                    };
                    stop.store(true, Relaxed);
                    failed.fetch_add(1, Relaxed);
                    first_error
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(e.clone());
                    drop(permit);
                    return Err(e);
                }
            };
            loop {
                match s.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("stream ended by the server".into()),
                    Err(e) => return Err(format!("stream error: {e}")),
                }
            }
        }));
    }
    // Every permit back: every stream is open or has failed.
    let _all = sem.acquire_many(share.concurrency.max(1) as u32).await?;
    let first_error = first_error.lock().expect("not poisoned").clone();
    Ok(Held {
        tasks,
        opened: opened.load(Relaxed),
        failed: failed.load(Relaxed),
        first_error,
    })
}

/// `idle-hold`: opens its share, prints `{"opened","failed","first_error"}`,
/// holds until its stdin closes, then prints `{"still_open"}` and exits.
pub async fn hold(args: HoldArgs) -> Result<(), Error> {
    let base = Base::parse(&args.url)?;
    let held = open_streams(&base, &args).await?;
    println!(
        "{}",
        json!({"opened": held.opened, "failed": held.failed, "first_error": held.first_error})
    );
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    println!("{}", json!({ "still_open": held.open() }));
    for t in &held.tasks {
        t.abort();
    }
    Ok(())
}

/// A child process holding a share, and its stdout.
struct Child {
    proc: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn line(&mut self, within: Duration) -> serde_json::Value {
        match timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => serde_json::from_str(&l).unwrap_or(json!({ "bad_line": l })),
            _ => json!({ "error": "no answer from the child process" }),
        }
    }
}

/// The soft open-file limit of a process, from /proc/PID/limits.
fn nofile_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the mode.
pub async fn run(args: Args) -> Result<Report, Error> {
    let endpoints = Endpoints::new(&args.common, None)?;
    let base = endpoints.subscribe.clone();
    let pids = args.common.pid.clone();
    let before = stats::rss_kb(&pids);
    let start = Instant::now();
    let open_timeout = args.open_timeout_secs.max(1);
    let processes_n = args.streams.div_ceil(args.per_process.max(1)).max(1);
    let share = |i: usize| -> (usize, usize) {
        let each = args.streams / processes_n;
        let extra = args.streams % processes_n;
        (each + usize::from(i < extra), i * each + i.min(extra))
    };
    let source = |i: usize| -> Option<IpAddr> {
        match (&args.source_ips[..], processes_n) {
            ([], 1) => None,
            ([], _) => Some(IpAddr::from([127, 0, 0, 2 + (i % 250) as u8])),
            (ips, _) => Some(ips[i % ips.len()]),
        }
    };

    // Open: in this process, or spread over child processes.
    let (mut local, mut children) = (None, Vec::new());
    let (mut opened, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    if processes_n == 1 {
        let held = open_streams(
            &base,
            &HoldArgs {
                url: String::new(),
                streams: args.streams,
                topics: args.topics,
                topic_prefix: args.topic_prefix.clone(),
                offset: 0,
                concurrency: args.concurrency,
                source_ip: source(0),
                open_timeout_secs: open_timeout,
            },
        )
        .await?;
        (opened, failed, first_error) = (held.opened, held.failed, held.first_error.clone());
        local = Some(held);
    } else {
        let exe = std::env::current_exe()?;
        for i in 0..processes_n {
            let (n, offset) = share(i);
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("idle-hold")
                .args(["--url", &format!("http://{}", base.authority)])
                .args(["--streams", &n.to_string()])
                .args(["--topics", &args.topics.to_string()])
                .args(["--topic-prefix", &args.topic_prefix])
                .args(["--offset", &offset.to_string()])
                .args([
                    "--concurrency",
                    &(args.concurrency / processes_n).max(1).to_string(),
                ])
                .args(["--open-timeout-secs", &open_timeout.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true);
            if let Some(ip) = source(i) {
                cmd.args(["--source-ip", &ip.to_string()]);
            }
            let mut proc = cmd.spawn()?;
            let stdout = proc.stdout.take().ok_or("child without stdout")?;
            children.push(Child {
                proc,
                lines: BufReader::new(stdout).lines(),
            });
        }
        // Each child answers once its share is open or has stopped at a failure.
        let within = Duration::from_secs(open_timeout + 10 + args.streams as u64 / 200);
        for c in &mut children {
            let v = c.line(within).await;
            opened += v["opened"].as_u64().unwrap_or(0);
            failed += v["failed"].as_u64().unwrap_or(0);
            if first_error.is_none() {
                first_error = v["first_error"]
                    .as_str()
                    .or(v["error"].as_str())
                    .map(str::to_owned);
            }
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    eprintln!(
        "idle: {opened} of {} streams opened in {open_secs:.1} s over {processes_n} process(es) ({failed} failed)",
        args.streams
    );
    sleep(Duration::from_secs(args.hold_secs)).await;
    let after = stats::rss_kb(&pids);
    let processes = stats::processes_json(&pids);

    // Close: how many were still open at the end of the hold.
    let mut open = 0u64;
    if let Some(held) = &local {
        open = held.open();
        for t in &held.tasks {
            t.abort();
        }
    }
    for c in &mut children {
        drop(c.proc.stdin.take());
        let v = c.line(Duration::from_secs(10)).await;
        open += v["still_open"].as_u64().unwrap_or(0);
        if timeout(Duration::from_secs(10), c.proc.wait())
            .await
            .is_err()
        {
            let _ = c.proc.kill().await;
        }
    }
    let per_stream_kib = match (before, after) {
        (Some(b), Some(a)) if open > 0 => Some((a as f64 - b as f64) / open as f64),
        _ => None,
    };
    let nofile = pids.first().and_then(|p| nofile_limit(*p));
    let bound = (open < args.streams as u64).then(|| match nofile {
        Some(limit) if opened + 1000 >= limit => format!(
            "held {open} of {} streams: the server's open-file limit ({limit}) is the bound",
            args.streams
        ),
        _ => format!(
            "held {open} of {} streams; first failure: {}",
            args.streams,
            first_error
                .as_deref()
                .unwrap_or("a stream ended during the hold")
        ),
    });
    eprintln!(
        "  held {open} streams over {} topics for {} s; server RSS before {:?} KiB, after {:?} KiB \
         → {} KiB per idle stream",
        args.topics,
        args.hold_secs,
        before,
        after,
        per_stream_kib.map_or("?".into(), |v| format!("{v:.1}"))
    );
    if let Some(b) = &bound {
        eprintln!("  {b}");
    }
    eprintln!("  {}", stats::processes_line(&processes));
    let mut json = json!({
        "mode": "idle",
        "streams": args.streams,
        "topics": args.topics,
        "client_processes": processes_n,
        "opened_streams": opened,
        "open_streams": open,
        "failed_streams": failed,
        "first_error": first_error,
        "open_secs": open_secs,
        "hold_secs": args.hold_secs,
        "broker_rss_before_kb": before,
        "broker_rss_after_kb": after,
        "per_stream_kib": per_stream_kib,
        "server_nofile_limit": nofile,
        "bound": bound,
        "processes": processes,
    });
    let ok = open == args.streams as u64;
    json["ok"] = ok.into();
    args.common.label("idle", &mut json);
    Ok(Report { json, ok })
}
