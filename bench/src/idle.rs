//! `idle`: hold N idle SSE streams (spread over topics) for a while and
//! report the broker's resident memory before and after they were opened,
//! hence its memory per idle stream.

use serde_json::json;
use std::time::Duration;
use tokio::{
    sync::Semaphore,
    time::{sleep, timeout, Instant},
};

use crate::{
    http::{Base, Error},
    sse, stats, Common, Report,
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
    /// Streams being opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
}

fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let p = stats::process_json(&pid?.to_string());
    p["vm_rss_kb"].as_u64()
}

/// Runs the mode.
pub async fn run(args: Args) -> Result<Report, Error> {
    let base = Base::parse(&args.common.url)?;
    let pid = args.common.pid;
    let before = rss_kb(pid);
    let start = Instant::now();
    let sem = std::sync::Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> =
        Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let permit = sem.clone().acquire_owned().await?;
        let (base, topic) = (
            base.clone(),
            format!("{}-{}", args.topic_prefix, i % args.topics.max(1)),
        );
        tasks.push(tokio::spawn(async move {
            // Opened once its `retry:` line arrived; then held, read only
            // so heartbeats and probes do not pile up in the socket.
            let opened = timeout(Duration::from_secs(30), async {
                let mut s = sse::subscribe(&base, &topic, "from=latest").await?;
                loop {
                    match s.next().await? {
                        Some(russe::Event::Retry(_)) => return Ok::<_, Error>(s),
                        Some(_) => continue,
                        None => return Err("stream ended before its retry: line".into()),
                    }
                }
            })
            .await;
            drop(permit);
            let mut s = match opened {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("not open within 30 s".to_string()),
            };
            // Hold: read (comments only) until the task is aborted.
            loop {
                match s.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("stream ended by the broker".into()),
                    Err(e) => return Err(format!("stream error: {e}")),
                }
            }
        }));
    }
    // Wait until every stream has its permit back (opened or failed).
    let _all = sem.acquire_many(args.concurrency.max(1) as u32).await?;
    let open_secs = start.elapsed().as_secs_f64();
    let failed_early = tasks.iter().filter(|t| t.is_finished()).count();
    eprintln!(
        "idle: {} streams opened in {open_secs:.1} s ({failed_early} failed)",
        args.streams - failed_early
    );
    sleep(Duration::from_secs(args.hold_secs)).await;
    let after = rss_kb(pid);
    let processes = stats::processes_json(pid);
    let failed = tasks.iter().filter(|t| t.is_finished()).count();
    for t in &tasks {
        t.abort();
    }
    let open = args.streams - failed;
    let per_stream_kib = match (before, after) {
        (Some(b), Some(a)) if open > 0 => Some((a as f64 - b as f64) / open as f64),
        _ => None,
    };
    eprintln!(
        "  held {open} streams over {} topics for {} s; broker RSS before {:?} KiB, after {:?} KiB \
         → {} KiB per idle stream; {failed} failed",
        args.topics,
        args.hold_secs,
        before,
        after,
        per_stream_kib.map_or("?".into(), |v| format!("{v:.1}"))
    );
    eprintln!("  {}", stats::processes_line(&processes));
    let json = json!({
        "mode": "idle",
        "streams": args.streams,
        "topics": args.topics,
        "open_streams": open,
        "failed_streams": failed,
        "open_secs": open_secs,
        "hold_secs": args.hold_secs,
        "broker_rss_before_kb": before,
        "broker_rss_after_kb": after,
        "per_stream_kib": per_stream_kib,
        "processes": processes,
    });
    Ok(Report {
        json,
        ok: failed == 0,
    })
}
