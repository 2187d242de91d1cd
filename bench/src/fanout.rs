//! `fanout`: M SSE subscribers on one topic, then N publishers publish E
//! events in total flat out. Every subscriber checks per-publisher order
//! (gaps, duplicates, reorders) and cursor order, and records
//! publish→deliver latency. The run ends when every subscriber holds every
//! stored event, or at the timeout.

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
    sync::{oneshot, watch},
    time::{sleep, timeout, Instant},
};

use crate::{
    http::{Base, Conn, Error},
    payload, sse, stats,
    stats::Statuses,
    target::{self, Endpoints, Kind},
    Common, Report,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value = "fanout")]
    pub topic: String,
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Subscribe through another instance (cluster mode): publishers use
    /// `--url`, subscribers this one, so latency is cross-instance.
    #[arg(long)]
    pub sub_url: Option<String>,
    /// Extra subscribers that connect, take their `retry:` line and then
    /// never read again (slow consumers); not checked, held to the end.
    #[arg(long, default_value_t = 0)]
    pub paused_subscribers: usize,
    #[arg(long, default_value_t = 4)]
    pub publishers: u32,
    /// Events to publish in total, split evenly over the publishers.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Publish NDJSON batches of this many events instead of single events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: Option<u64>,
    /// Stop publishing this long after the first publish; subscribers then
    /// get at most 5 s more to receive what was stored.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// How long subscribers may still take after publishing stopped at the timeout.
const DRAIN: Duration = Duration::from_secs(5);

/// What one publisher did.
struct PubTally {
    /// Events stored: its sequences `0..accepted`.
    accepted: u64,
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
    /// Per publisher: which sequences arrived.
    seen: Vec<Vec<bool>>,
    deliveries: u64,
    dups: u64,
    /// Times a sequence jumped past the next expected one.
    gaps: u64,
    /// Arrivals of a sequence below one already seen (and not a duplicate).
    reorders: u64,
    /// Events whose `id` was not greater than the previous event's.
    cursor_regressions: u64,
    /// Payloads that did not parse or named an unknown publisher/sequence.
    bad_payloads: u64,
    last_delivery: Option<Instant>,
    /// How the stream ended, if it ended before the run did.
    ended: Option<String>,
}

/// Runs the mode.
pub async fn run(args: Args) -> Result<Report, Error> {
    let endpoints = Endpoints::new(&args.common, args.sub_url.as_deref())?;
    let kind = endpoints.kind;
    let base = endpoints.publish.clone();
    let sub_base = endpoints.subscribe.clone();
    let shares: Vec<u64> = (0..args.publishers as u64)
        .map(|i| {
            args.events / args.publishers as u64
                + u64::from(i < args.events % args.publishers as u64)
        })
        .collect();

    // Subscribers first; publishing starts once every one has its `retry:` line.
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.subscribers).map(|_| AtomicU64::new(0)).collect());
    let mut subs = Vec::new();
    for i in 0..args.subscribers {
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(subscriber(
            sub_base.clone(),
            kind,
            args.topic.clone(),
            shares.clone(),
            ready_tx,
            stop_rx.clone(),
            progress.clone(),
            i,
        ));
        match timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(Ok(()))) => subs.push(task),
            Ok(Ok(Err(e))) => return Err(format!("subscriber {i}: {e}").into()),
            _ => return Err(format!("subscriber {i}: not ready within 30 s").into()),
        }
    }
    let mut paused = Vec::new();
    for i in 0..args.paused_subscribers {
        let opened = async {
            let mut stream = sse::subscribe(&sub_base, &args.topic, "from=latest").await?;
            loop {
                match stream.next().await? {
                    Some(russe::Event::Retry(_)) => return Ok::<_, Error>(stream),
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
        "fanout: {} subscribers ready, {} paused (never read)",
        subs.len(),
        paused.len()
    );

    if kind == Kind::Pushpin {
        // Pushpin subscribes the channel as it takes over the held stream:
        // give the last ones a moment before the first publish.
        sleep(Duration::from_millis(500)).await;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let pubs: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(p, &n)| {
            let (base, topic) = (base.clone(), args.topic.clone());
            tokio::spawn(publisher(
                base,
                kind,
                topic,
                p as u32,
                n,
                args.batch,
                args.payload_bytes,
                deadline,
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
    let stored: u64 = accepted.iter().sum();

    // Wait until every subscriber holds every stored event, or the deadline;
    // events stored just before it get `DRAIN` to arrive.
    let wait_until = deadline.max(Instant::now() + DRAIN);
    while Instant::now() < wait_until && progress.iter().any(|n| n.load(Relaxed) < stored) {
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
        dups += t.dups;
        gaps += t.gaps;
        reorders += t.reorders;
        regressions += t.cursor_regressions;
        bad += t.bad_payloads;
        let lost: u64 = t
            .seen
            .iter()
            .zip(&accepted)
            .map(|(seen, &n)| seen[..n as usize].iter().filter(|s| !**s).count() as u64)
            .sum();
        missing += lost;
        incomplete += usize::from(lost > 0);
        last_delivery = last_delivery.max(t.last_delivery.unwrap_or(start));
        if let Some(e) = t.ended {
            ended.push(format!("subscriber {i}: {e}"));
        }
    }
    let deliver_secs = (last_delivery - start).as_secs_f64();
    let all_delivered = incomplete == 0 && stored == args.events;
    let ok =
        all_delivered && dups == 0 && gaps == 0 && reorders == 0 && regressions == 0 && bad == 0;

    let processes = stats::processes_json(&args.common.pid);
    drop(paused);
    eprintln!(
        "fanout: {} subscribers (+{} paused), {} publishers, {} events of {} B, {} event(s)/request",
        args.subscribers,
        args.paused_subscribers,
        args.publishers,
        args.events,
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
        "subscribers": args.subscribers,
        "paused_subscribers": args.paused_subscribers,
        "publishers": args.publishers,
        "events": args.events,
        "payload_bytes": args.payload_bytes,
        "batch": args.batch,
        "stored_events": stored,
        "publish_secs": publish_secs,
        "publish_events_per_sec": stats::per_sec(stored, publish_secs),
        "publish_latency": stats::latency_json(&pub_latency),
        "deliveries": deliveries,
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
        "streams_ended": ended,
        "processes": processes,
        "ok": ok,
    });
    args.common.label("fanout", &mut json);
    Ok(Report { json, ok })
}

/// Publishes sequences `0..count` as publisher `p`, in order, one request at
/// a time. 429 and 503 (nothing stored) are retried; any other failure stops
/// this publisher, since whether a failed request was stored is unknown.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    base: Base,
    kind: Kind,
    topic: String,
    p: u32,
    count: u64,
    batch: Option<u64>,
    size: usize,
    deadline: Instant,
) -> PubTally {
    let mut t = PubTally {
        accepted: 0,
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
    while t.accepted < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            t.failure = Some("timeout".into());
            break;
        }
        let seq = t.accepted;
        let n = batch.map_or(1, |b| b.min(count - seq));
        let now = payload::unix_micros();
        let events: Vec<_> = (seq..seq + n)
            .map(|s| (p, s, payload::encode(p, s, now, size)))
            .collect();
        let req = target::publish_request(kind, &topic, &events, batch.is_some());
        let sent = Instant::now();
        match timeout(left, conn.post(&req.path, req.content_type, req.body)).await {
            Ok(Ok((status, _))) if status.is_success() => {
                t.latency
                    .saturating_record(sent.elapsed().as_micros() as u64);
                t.accepted += n;
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
            Err(_) => {
                t.failure = Some("timeout".into());
                break;
            }
        }
    }
    t
}

/// Reads one SSE stream until it holds every planned event or `stop` fires.
/// `ready` is answered once the stream's `retry:` line has arrived.
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    base: Base,
    kind: Kind,
    topic: String,
    shares: Vec<u64>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Vec<AtomicU64>>,
    index: usize,
) -> SubTally {
    let mut t = SubTally {
        latency: stats::histogram(),
        seen: shares.iter().map(|&n| vec![false; n as usize]).collect(),
        deliveries: 0,
        dups: 0,
        gaps: 0,
        reorders: 0,
        cursor_regressions: 0,
        bad_payloads: 0,
        last_delivery: None,
        ended: None,
    };
    let opened = async {
        let mut stream = sse::subscribe(&base, &topic, "from=latest").await?;
        loop {
            match stream.next().await? {
                Some(russe::Event::Retry(_)) => return Ok(stream),
                Some(russe::Event::Comment(_)) => continue,
                other => return Err(format!("expected a retry: line first, got {other:?}").into()),
            }
        }
    };
    let mut stream = match timeout(Duration::from_secs(30), opened).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let e: Error = e;
            let _ = ready.send(Err(e.to_string()));
            return t;
        }
        Err(_) => {
            let _ = ready.send(Err("no retry: line within 30 s".into()));
            return t;
        }
    };
    let _ = ready.send(Ok(()));

    let planned: u64 = shares.iter().sum();
    let mut unique = 0u64;
    // Highest sequence seen so far per publisher (+1), and the previous cursor.
    let mut next = vec![0u64; shares.len()];
    let mut last_id: Option<bytestring::ByteString> = None;
    while unique < planned {
        let event = tokio::select! {
            biased;
            e = stream.next() => e,
            _ = stop.changed() => break,
        };
        let msg = match event {
            Ok(Some(russe::Event::Message(m))) => m,
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
        let (p, s) = (stamp.p as usize, stamp.s);
        let Some(slot) = t.seen.get_mut(p).and_then(|v| v.get_mut(s as usize)) else {
            t.bad_payloads += 1;
            continue;
        };
        t.latency.saturating_record(now.saturating_sub(stamp.t));
        if *slot {
            t.dups += 1;
            continue;
        }
        *slot = true;
        unique += 1;
        progress[index].store(unique, Relaxed);
        if s < next[p] {
            t.reorders += 1;
        } else {
            t.gaps += u64::from(s > next[p]);
            next[p] = s + 1;
        }
    }
    t
}
