//! `fanout`: M SSE subscribers on each of T topics, then N publishers
//! publish (a count of events, or for a duration; flat out or at a total
//! rate). Every subscriber checks per-publisher order (gaps, duplicates,
//! reorders) and, where the server assigns the ids, cursor order, and
//! records publish→deliver latency. The run ends when every subscriber holds
//! every event stored on its topic, or when the drain time is over.
//!
//! Publisher p sends its k-th request to topic (p + k) mod T; its sequence
//! numbers count per topic, so each subscriber checks each publisher's
//! sequence on its own topic.

use hdrhistogram::Histogram;
use serde_json::json;
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};
use tokio::{
    sync::{oneshot, watch, Semaphore},
    time::{sleep, sleep_until, timeout, Instant},
};

use crate::{
    http::{Base, Conn, Error},
    payload,
    seq::SeqTracker,
    sse, stats,
    stats::Statuses,
    target::{self, Endpoints, Kind},
    Common, Report,
};

/// Longest a publish request may take before it counts as failed.
const LAST_REQUEST: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// The topic; with `--topics T` above 1, the prefix of `{topic}-0` .. `{topic}-{T-1}`.
    #[arg(long, default_value = "fanout")]
    pub topic: String,
    /// Number of topics, each with `--subscribers` subscribers.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Subscribers per topic.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Subscribe through another instance (cluster mode): publishers use
    /// `--url`, subscribers this one, so latency is cross-instance.
    #[arg(long)]
    pub sub_url: Option<String>,
    /// Extra subscribers on the first topic that connect, take their
    /// `retry:` line and then never read again (slow consumers); not
    /// checked, held to the end.
    #[arg(long, default_value_t = 0)]
    pub paused_subscribers: usize,
    #[arg(long, default_value_t = 4)]
    pub publishers: u32,
    /// Events to publish in total, split evenly over the publishers
    /// (default 100,000 unless `--duration-secs` is given).
    #[arg(long)]
    pub events: Option<u64>,
    /// Publish for this long (and at most `--events`, when given).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Total publish rate in events/s over all publishers (default: flat out).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Publish NDJSON batches of this many events instead of single events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: Option<u64>,
    /// Publishing stops at the latest this long after the first publish.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Once publishing has stopped, subscribers get at most this long to
    /// receive everything stored (and, in a count-bound run, at least until
    /// `--timeout-secs`).
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// Subscriptions being opened at once.
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
}

/// What one publisher did.
struct PubTally {
    /// Per topic: events stored, its sequences `0..accepted[topic]`.
    accepted: Vec<u64>,
    latency: Histogram<u64>,
    non_2xx: Statuses,
    /// 429/503 answers retried after a pause.
    retries: u64,
    /// Why it stopped before publishing everything, if it did.
    failure: Option<String>,
}

/// What one subscriber saw.
struct SubTally {
    latency: Histogram<u64>,
    /// Per publisher.
    seqs: Vec<SeqTracker>,
    deliveries: u64,
    /// Events whose `id` was not greater than the previous event's.
    cursor_regressions: u64,
    /// Payloads that did not parse or named an unknown publisher.
    bad_payloads: u64,
    last_delivery: Option<Instant>,
    /// How the stream ended, if it ended before the run did.
    ended: Option<String>,
}

/// The plan every publisher follows.
#[derive(Clone)]
struct Plan {
    kind: Kind,
    topics: Vec<String>,
    batch: Option<u64>,
    size: usize,
    /// Events/s for this publisher, if rate-limited.
    rate: Option<f64>,
    deadline: Instant,
}

fn topic_names(args: &Args) -> Vec<String> {
    match args.topics {
        0 | 1 => vec![args.topic.clone()],
        t => (0..t).map(|j| format!("{}-{j}", args.topic)).collect(),
    }
}

/// Runs the mode.
pub async fn run(args: Args) -> Result<Report, Error> {
    let endpoints = Endpoints::new(&args.common, args.sub_url.as_deref())?;
    let kind = endpoints.kind;
    let topics = topic_names(&args);
    let n_pubs = args.publishers.max(1);
    let total = match (args.events, args.duration_secs) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 100_000,
    };
    let shares: Vec<u64> = (0..n_pubs as u64)
        .map(|i| match total {
            u64::MAX => u64::MAX,
            n => n / n_pubs as u64 + u64::from(i < n % n_pubs as u64),
        })
        .collect();

    // Subscribers first; publishing starts once every one has its `retry:` line.
    let n_subs = args.subscribers * topics.len();
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..n_subs).map(|_| AtomicU64::new(0)).collect());
    let opening = Arc::new(Semaphore::new(args.open_concurrency.max(1)));
    let open_start = Instant::now();
    let (mut subs, mut readies) = (Vec::new(), Vec::new());
    for i in 0..n_subs {
        let (ready_tx, ready_rx) = oneshot::channel();
        subs.push(tokio::spawn(subscriber(
            endpoints.subscribe.clone(),
            kind,
            topics[i % topics.len()].clone(),
            n_pubs as usize,
            opening.clone(),
            ready_tx,
            stop_rx.clone(),
            progress.clone(),
            i,
        )));
        readies.push(ready_rx);
    }
    for (i, ready) in readies.into_iter().enumerate() {
        match timeout(Duration::from_secs(60), ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(format!("subscriber {i}: {e}").into()),
            _ => return Err(format!("subscriber {i}: not ready within 60 s").into()),
        }
    }
    let mut paused = Vec::new();
    for i in 0..args.paused_subscribers {
        let opened = async {
            let mut stream =
                sse::subscribe(&endpoints.subscribe, &topics[0], "from=latest").await?;
            loop {
                match stream.next().await? {
                    Some(sluice_client::sse::Frame::Retry(_)) => return Ok::<_, Error>(stream),
                    Some(_) => continue,
                    None => return Err("stream ended before its retry: line".into()),
                }
            }
        };
        match timeout(Duration::from_secs(30), opened).await {
            Ok(Ok(s)) => paused.push(s),
            Ok(Err(e)) => return Err(format!("paused subscriber {i}: {e}").into()),
            Err(_) => return Err(format!("paused subscriber {i}: not ready within 30 s").into()),
        }
    }
    eprintln!(
        "fanout: {} subscribers ready on {} topic(s) in {:.1} s, {} paused (never read)",
        n_subs,
        topics.len(),
        open_start.elapsed().as_secs_f64(),
        paused.len()
    );
    if kind == Kind::Pushpin {
        // Pushpin subscribes the channel as it takes over the held stream:
        // give the last ones a moment before the first publish.
        sleep(Duration::from_millis(500)).await;
    }

    let start = Instant::now();
    let timeout_at = start + Duration::from_secs(args.timeout_secs);
    let deadline = match args.duration_secs {
        Some(d) => timeout_at.min(start + Duration::from_secs_f64(d)),
        None => timeout_at,
    };
    let plan = Plan {
        kind,
        topics: topics.clone(),
        batch: args.batch,
        size: args.payload_bytes,
        rate: args.rate.map(|r| r / n_pubs as f64),
        deadline,
    };
    let pubs: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(p, &n)| {
            tokio::spawn(publisher(
                endpoints.publish.clone(),
                plan.clone(),
                p as u32,
                n,
                start,
            ))
        })
        .collect();

    let mut pub_latency = stats::histogram();
    let mut non_2xx = Statuses::default();
    let (mut accepted, mut retries, mut pub_failures) = (Vec::new(), 0, Vec::new());
    for (p, task) in pubs.into_iter().enumerate() {
        let t = task.await?;
        pub_latency.add(&t.latency)?;
        non_2xx.merge(&t.non_2xx);
        retries += t.retries;
        accepted.push(t.accepted);
        if let Some(f) = t.failure {
            pub_failures.push(format!("publisher {p}: {f}"));
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    // Per topic, events stored.
    let stored_on: Vec<u64> = (0..topics.len())
        .map(|j| accepted.iter().map(|a| a[j]).sum())
        .collect();
    let stored: u64 = stored_on.iter().sum();
    let expected = |i: usize| stored_on[i % topics.len()];

    // Wait until every subscriber holds every event stored on its topic, or
    // the drain time is over.
    let mut wait_until = Instant::now() + Duration::from_secs(args.drain_secs);
    if args.duration_secs.is_none() {
        wait_until = wait_until.max(timeout_at);
    }
    while Instant::now() < wait_until
        && progress
            .iter()
            .enumerate()
            .any(|(i, n)| n.load(Relaxed) < expected(i))
    {
        sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);

    let mut latency = stats::histogram();
    let (mut deliveries, mut dups, mut gaps, mut reorders, mut regressions, mut bad) =
        (0, 0, 0, 0, 0, 0);
    let (mut missing, mut incomplete, mut ended) = (0u64, 0usize, Vec::new());
    let mut last_delivery = start;
    for (i, task) in subs.into_iter().enumerate() {
        let t = task.await?;
        latency.add(&t.latency)?;
        deliveries += t.deliveries;
        regressions += t.cursor_regressions;
        bad += t.bad_payloads;
        let j = i % topics.len();
        let mut lost = 0;
        for (p, s) in t.seqs.iter().enumerate() {
            dups += s.dups;
            gaps += s.gaps;
            reorders += s.reorders;
            lost += s.missing(accepted[p][j]);
        }
        missing += lost;
        incomplete += usize::from(lost > 0);
        last_delivery = last_delivery.max(t.last_delivery.unwrap_or(start));
        if let Some(e) = t.ended {
            ended.push(format!("subscriber {i}: {e}"));
        }
    }
    let deliver_secs = (last_delivery - start).as_secs_f64();
    let all_delivered = incomplete == 0 && (total == u64::MAX || stored == total);
    let ok =
        all_delivered && dups == 0 && gaps == 0 && reorders == 0 && regressions == 0 && bad == 0;

    let processes = stats::processes_json(&args.common.pid);
    drop(paused);
    eprintln!(
        "fanout: {} topic(s) × {} subscribers (+{} paused), {} publishers{}, {} of {} B, {} event(s)/request",
        topics.len(),
        args.subscribers,
        args.paused_subscribers,
        n_pubs,
        args.rate.map_or(" flat out".into(), |r| format!(" at {r} events/s")),
        match (args.events, args.duration_secs) {
            (_, Some(d)) => format!("{d} s of events"),
            _ => format!("{total} events"),
        },
        args.payload_bytes,
        args.batch.unwrap_or(1)
    );
    eprintln!(
        "  publish: {stored} events stored in {publish_secs:.2} s = {} events/s; request {}",
        stats::per_sec(stored, publish_secs),
        stats::latency_line(&pub_latency)
    );
    eprintln!(
        "  deliver: {deliveries} deliveries in {deliver_secs:.2} s = {} events/s",
        stats::per_sec(deliveries, deliver_secs)
    );
    eprintln!("  publish→deliver: {}", stats::latency_line(&latency));
    eprintln!(
        "  gaps {gaps}, dups {dups}, reorders {reorders}, cursor regressions {regressions}, bad payloads {bad}, \
         missing {missing} over {incomplete} subscriber(s); non-2xx {:?}, retries {retries}",
        non_2xx.0
    );
    eprintln!("  {}", stats::processes_line(&processes));
    for line in pub_failures.iter().chain(&ended).take(10) {
        eprintln!("  {line}");
    }
    eprintln!(
        "  {}",
        if ok {
            "OK: every subscriber got every event once, in order"
        } else {
            "FAILED"
        }
    );

    let mut json = json!({
        "mode": "fanout",
        "topics": topics.len(),
        "subscribers": args.subscribers,
        "paused_subscribers": args.paused_subscribers,
        "publishers": n_pubs,
        "events": args.events,
        "duration_secs": args.duration_secs,
        "rate": args.rate,
        "payload_bytes": args.payload_bytes,
        "batch": args.batch,
        "stored_events": stored,
        "publish_secs": publish_secs,
        "publish_events_per_sec": stats::per_sec(stored, publish_secs),
        "publish_latency": stats::latency_json(&pub_latency),
        "deliveries": deliveries,
        "expected_deliveries": (0..n_subs).map(expected).sum::<u64>(),
        "deliver_secs": deliver_secs,
        "delivered_events_per_sec": stats::per_sec(deliveries, deliver_secs),
        "latency": stats::latency_json(&latency),
        "gaps": gaps,
        "dups": dups,
        "reorders": reorders,
        "cursor_regressions": regressions,
        "bad_payloads": bad,
        "missing": missing,
        "incomplete_subscribers": incomplete,
        "all_delivered": all_delivered,
        "non_2xx": non_2xx.json(),
        "retries": retries,
        "publisher_failures": pub_failures,
        "streams_ended": ended.iter().take(20).collect::<Vec<_>>(),
        "streams_ended_count": ended.len(),
        "processes": processes,
        "ok": ok,
    });
    args.common.label("fanout", &mut json);
    Ok(Report { json, ok })
}

/// Publishes up to `count` events as publisher `p`, one request at a time,
/// until the plan's deadline. 429 and 503 (nothing stored) are retried; any
/// other failure stops this publisher, since whether a failed request was
/// stored is unknown.
async fn publisher(base: Base, plan: Plan, p: u32, count: u64, start: Instant) -> PubTally {
    let n_topics = plan.topics.len();
    let mut t = PubTally {
        accepted: vec![0; n_topics],
        latency: stats::histogram(),
        non_2xx: Statuses::default(),
        retries: 0,
        failure: None,
    };
    let mut conn = match Conn::connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            t.failure = Some(format!("connect: {e}"));
            return t;
        }
    };
    let (mut sent_events, mut k) = (0u64, p as usize);
    while sent_events < count {
        if let Some(rate) = plan.rate {
            // Event number `sent_events` is due at start + sent_events / rate.
            let due = start + Duration::from_secs_f64(sent_events as f64 / rate);
            if due >= plan.deadline {
                break;
            }
            sleep_until(due).await;
        }
        let left = plan.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let j = k % n_topics;
        let seq = t.accepted[j];
        let n = plan.batch.map_or(1, |b| b.min(count - sent_events));
        let now = payload::unix_micros();
        let events: Vec<_> = (seq..seq + n)
            .map(|s| (p, s, payload::encode(p, s, now, plan.size)))
            .collect();
        let req =
            target::publish_request(plan.kind, &plan.topics[j], &events, plan.batch.is_some());
        let sent = Instant::now();
        // A request started before the deadline is seen through (and
        // counted): abandoning it would leave events stored but unknown to
        // the checks, and the drain below would stop on counts that include
        // them while an acknowledged event is still on its way.
        match timeout(
            LAST_REQUEST,
            conn.post(&req.path, req.content_type, req.body),
        )
        .await
        {
            Ok(Ok((status, _))) if status.is_success() => {
                t.latency
                    .saturating_record(sent.elapsed().as_micros() as u64);
                t.accepted[j] += n;
                sent_events += n;
                k += 1;
            }
            Ok(Ok((status, _))) if status == 429 || status == 503 => {
                t.non_2xx.add(status.as_u16(), 1);
                t.retries += 1;
                sleep(Duration::from_millis(50)).await;
            }
            Ok(Ok((status, body))) => {
                t.non_2xx.add(status.as_u16(), 1);
                t.failure = Some(format!("{status}: {}", String::from_utf8_lossy(&body)));
                break;
            }
            Ok(Err(e)) => {
                t.failure = Some(format!("transport: {e}"));
                break;
            }
            // No answer in LAST_REQUEST: it may or may not be stored; its
            // events are not counted (a late one shows as an unexpected
            // arrival, not as a loss).
            Err(_) => {
                t.failure = Some(format!("no answer within {LAST_REQUEST:?}"));
                break;
            }
        }
    }
    t
}

/// Reads one SSE stream until `stop` fires. `ready` is answered once the
/// stream's `retry:` line has arrived.
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    base: Base,
    kind: Kind,
    topic: String,
    publishers: usize,
    opening: Arc<Semaphore>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Vec<AtomicU64>>,
    index: usize,
) -> SubTally {
    let mut t = SubTally {
        latency: stats::histogram(),
        seqs: vec![SeqTracker::default(); publishers],
        deliveries: 0,
        cursor_regressions: 0,
        bad_payloads: 0,
        last_delivery: None,
        ended: None,
    };
    let opened = async {
        let _permit = opening.acquire().await?;
        let mut stream = sse::subscribe(&base, &topic, "from=latest").await?;
        loop {
            match stream.next().await? {
                Some(sluice_client::sse::Frame::Retry(_)) => return Ok(stream),
                Some(sluice_client::sse::Frame::Comment(_)) => continue,
                other => return Err(format!("expected a retry: line first, got {other:?}").into()),
            }
        }
    };
    let mut stream = match timeout(Duration::from_secs(60), opened).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let e: Error = e;
            let _ = ready.send(Err(e.to_string()));
            return t;
        }
        Err(_) => {
            let _ = ready.send(Err("no retry: line within 60 s".into()));
            return t;
        }
    };
    let _ = ready.send(Ok(()));

    let mut unique = 0u64;
    let mut last_id: Option<String> = None;
    loop {
        let event = tokio::select! {
            biased;
            e = stream.next() => e,
            _ = stop.changed() => break,
        };
        let msg = match event {
            Ok(Some(sluice_client::sse::Frame::Message(m))) => m,
            Ok(Some(_)) => continue,
            Ok(None) => {
                t.ended = Some("stream ended by the server".into());
                break;
            }
            Err(e) => {
                t.ended = Some(format!("stream error: {e}"));
                break;
            }
        };
        let now = payload::unix_micros();
        t.deliveries += 1;
        t.last_delivery = Some(Instant::now());
        if let (true, Some(prev), Some(id)) = (kind.assigns_ids(), &last_id, &msg.id) {
            if id.as_bytes() <= prev.as_bytes() {
                t.cursor_regressions += 1;
            }
        }
        last_id = msg.id;
        let Some(stamp) = payload::decode(&msg.data) else {
            t.bad_payloads += 1;
            continue;
        };
        let Some(seqs) = t.seqs.get_mut(stamp.p as usize) else {
            t.bad_payloads += 1;
            continue;
        };
        t.latency.saturating_record(now.saturating_sub(stamp.t));
        if seqs.observe(stamp.s) {
            unique += 1;
            progress[index].store(unique, Relaxed);
        }
    }
    t
}
