//! `publish`: N publishers, one keep-alive connection each, publish flat out
//! (single events or NDJSON batches) for a fixed time; reports request and
//! event rates, request latency of 2xx answers and non-2xx counts by status.

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

use crate::{
    http::{Base, Conn},
    payload, stats,
    stats::Statuses,
    target::{self, Endpoints, Kind},
    Common, Report,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Number of topics; publisher i writes to `{topic_prefix}-{i % topics}`.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Size of each event's data in bytes.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Publish NDJSON batches of this many events instead of single events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: Option<u64>,
    /// A request unanswered after this long counts as an error and its
    /// connection is replaced.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
}

/// What one publisher saw.
struct Tally {
    latency: Histogram<u64>,
    ok_requests: u64,
    non_2xx: Statuses,
    transport_errors: u64,
    connects: u64,
}

/// Runs the mode.
pub async fn run(args: Args) -> Result<Report, crate::http::Error> {
    let endpoints = Endpoints::new(&args.common, None)?;
    let base = endpoints.publish.clone();
    let events_per_request = args.batch.unwrap_or(1);
    let duration = Duration::from_secs(args.duration_secs);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..args.publishers)
        .map(|i| {
            let topic = format!("{}-{}", args.topic_prefix, i % args.topics.max(1));
            let req = request(&args, endpoints.kind, &topic);
            let (path, content_type, body) = (req.path, req.content_type, req.body);
            let base = base.clone();
            let req_timeout = Duration::from_secs(args.request_timeout_secs);
            tokio::spawn(publisher(
                base,
                path,
                content_type,
                body,
                deadline,
                req_timeout,
            ))
        })
        .collect();

    let mut latency = stats::histogram();
    let (mut ok_requests, mut transport_errors, mut connects) = (0, 0, 0);
    let mut non_2xx = Statuses::default();
    for task in tasks {
        let t = task.await?;
        latency.add(&t.latency)?;
        ok_requests += t.ok_requests;
        transport_errors += t.transport_errors;
        connects += t.connects;
        non_2xx.merge(&t.non_2xx);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let requests = ok_requests + non_2xx.total();
    let events = ok_requests * events_per_request;

    let processes = stats::processes_json(&args.common.pid);
    eprintln!(
        "publish: {} publishers, {} topic(s), {} B payload, {} event(s)/request, {elapsed:.1} s",
        args.publishers, args.topics, args.payload_bytes, events_per_request
    );
    eprintln!(
        "  {} requests/s, {} events/s stored ({requests} requests, {events} events)",
        stats::per_sec(requests, elapsed),
        stats::per_sec(events, elapsed)
    );
    eprintln!("  2xx latency: {}", stats::latency_line(&latency));
    eprintln!(
        "  non-2xx: {:?}, transport errors: {transport_errors}, connections opened: {connects}",
        non_2xx.0
    );

    eprintln!("  {}", stats::processes_line(&processes));
    let mut json = json!({
        "mode": "publish",
        "publishers": args.publishers,
        "topics": args.topics,
        "payload_bytes": args.payload_bytes,
        "batch": args.batch,
        "elapsed_secs": elapsed,
        "requests": requests,
        "ok_requests": ok_requests,
        "events": events,
        "requests_per_sec": stats::per_sec(requests, elapsed),
        "events_per_sec": stats::per_sec(events, elapsed),
        "delivered_events_per_sec": stats::per_sec(events, elapsed),
        "latency": stats::latency_json(&latency),
        "non_2xx": non_2xx.json(),
        "transport_errors": transport_errors,
        "connections_opened": connects,
        "processes": processes,
    });
    // Every request answered 2xx, none lost.
    json["ok"] = (ok_requests > 0 && non_2xx.total() == 0 && transport_errors == 0).into();
    args.common.label("publish", &mut json);
    Ok(Report {
        json,
        ok: ok_requests > 0,
    })
}

/// The request every publisher of the run sends to `topic`.
fn request(args: &Args, kind: Kind, topic: &str) -> target::PublishRequest {
    let data = payload::encode(0, 0, payload::unix_micros(), args.payload_bytes);
    let n = args.batch.unwrap_or(1);
    let events: Vec<_> = (0..n).map(|s| (0, s, data.clone())).collect();
    target::publish_request(kind, topic, &events, args.batch.is_some())
}

/// Publishes `body` to `path` back to back until `deadline`.
async fn publisher(
    base: Base,
    path: String,
    content_type: &'static str,
    body: Bytes,
    deadline: Instant,
    req_timeout: Duration,
) -> Tally {
    let mut t = Tally {
        latency: stats::histogram(),
        ok_requests: 0,
        non_2xx: Statuses::default(),
        transport_errors: 0,
        connects: 0,
    };
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match timeout(req_timeout, Conn::connect(&base)).await {
                Ok(Ok(c)) => {
                    t.connects += 1;
                    conn.insert(c)
                }
                _ => {
                    t.transport_errors += 1;
                    sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match timeout(req_timeout, c.post(&path, content_type, body.clone())).await {
            Ok(Ok((status, _))) if status.is_success() => {
                t.latency
                    .saturating_record(sent.elapsed().as_micros() as u64);
                t.ok_requests += 1;
            }
            Ok(Ok((status, _))) => t.non_2xx.add(status.as_u16(), 1),
            Ok(Err(_)) | Err(_) => {
                t.transport_errors += 1;
                t.connects += c.reconnects;
                conn = None;
            }
        }
    }
    // Reconnects after `Connection: close` answers (Pushpin's control API).
    t.connects += conn.map_or(0, |c| c.reconnects);
    t
}
