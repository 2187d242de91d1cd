//! `resume`: fill one topic with E events (NDJSON batches, several
//! publishers at once), then open one subscriber from `earliest` and time
//! its catch-up over the whole log, checking order, gaps and duplicates.

use serde_json::json;
use std::time::Duration;
use tokio::time::{timeout, Instant};

use crate::{
    http::{Base, Conn, Error},
    payload,
    seq::SeqTracker,
    sse, stats,
    target::{self, Endpoints, Kind},
    Common, Report,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value = "resume")]
    pub topic: String,
    /// Events to fill the topic with (at most the broker's retention keeps).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per NDJSON batch while filling.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// Publishers filling at once.
    #[arg(long, default_value_t = 4)]
    pub publishers: u32,
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Limit on each of the two phases.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// Fills `topic` with publisher `p`'s `count` events; returns how many were stored.
async fn fill(
    base: Base,
    kind: Kind,
    args: (String, u64, usize),
    p: u32,
    count: u64,
) -> Result<u64, Error> {
    let (topic, batch, size) = args;
    let mut conn = Conn::connect(&base).await?;
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let now = payload::unix_micros();
        let events: Vec<_> = (done..done + n)
            .map(|s| (p, s, payload::encode(p, s, now, size)))
            .collect();
        let req = target::publish_request(kind, &topic, &events, true);
        let (status, body) = conn.post(&req.path, req.content_type, req.body).await?;
        if !status.is_success() {
            return Err(format!("fill: {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        done += n;
    }
    Ok(done)
}

/// Runs the mode.
pub async fn run(args: Args) -> Result<Report, Error> {
    let endpoints = Endpoints::new(&args.common, None)?;
    let kind = endpoints.kind;
    if matches!(kind, Kind::Ceiling | Kind::Pushpin | Kind::Trivial) {
        return Err(format!("{}: keeps no history to resume from", kind.name()).into());
    }
    let n_pubs = args.publishers.max(1);
    let limit = Duration::from_secs(args.timeout_secs);

    // Phase 1: fill.
    let fill_start = Instant::now();
    let tasks: Vec<_> = (0..n_pubs)
        .map(|p| {
            let share =
                args.events / n_pubs as u64 + u64::from((p as u64) < args.events % n_pubs as u64);
            let a = (args.topic.clone(), args.batch, args.payload_bytes);
            tokio::spawn(timeout(
                limit,
                fill(endpoints.publish.clone(), kind, a, p, share),
            ))
        })
        .collect();
    let mut stored = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(Ok(n)) => stored.push(n),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("fill: timeout".into()),
        }
    }
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let total: u64 = stored.iter().sum();
    eprintln!(
        "resume: {total} events stored in {fill_secs:.1} s = {} events/s (batches of {})",
        stats::per_sec(total, fill_secs),
        args.batch
    );

    // Phase 2: one subscriber from the oldest retained event.
    let cpu_before = stats::cpu_split(&args.common.pid);
    let start = Instant::now();
    let mut seqs = vec![SeqTracker::default(); n_pubs as usize];
    let (mut deliveries, mut unique, mut regressions, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut first_event_secs = None;
    let mut ended = None;
    let caught_up = timeout(limit, async {
        let stream = sse::subscribe(&endpoints.subscribe, &args.topic, "from=earliest").await?;
        // One subscriber's events arrive faster than one thread can decode
        // and check them: the parser decodes pieces of the body on every core,
        // in order, and this task checks sequences and ids.
        let mut batches = sse::decode_parallel(stream.into_body(), |event| match event {
            sluice_client::sse::Frame::Message(m) => Some((m.id, payload::decode(&m.data))),
            _ => None,
        });
        let mut last_id: Option<String> = None;
        'stream: while unique < total {
            let Some(batch) = batches.recv().await else {
                ended = Some("stream ended by the server".to_string());
                break;
            };
            for (id, stamp) in batch? {
                deliveries += 1;
                if deliveries == 1 {
                    first_event_secs = Some(start.elapsed().as_secs_f64());
                }
                if let (Some(prev), Some(id)) = (&last_id, &id) {
                    if id.as_bytes() <= prev.as_bytes() {
                        regressions += 1;
                    }
                }
                last_id = id;
                match stamp {
                    Some(st) if (st.p as usize) < seqs.len() => {
                        unique += u64::from(seqs[st.p as usize].observe(st.s));
                    }
                    _ => bad += 1,
                }
                if unique >= total {
                    break 'stream;
                }
            }
        }
        Ok::<_, Error>(())
    })
    .await;
    let catchup_secs = start.elapsed().as_secs_f64();
    let cpu_after = stats::cpu_split(&args.common.pid);
    let used = |a: Option<f64>, b: Option<f64>| Some(((b? - a?) * 100.0).round() / 100.0);
    let catchup_cpu = (
        used(cpu_before.0, cpu_after.0),
        used(cpu_before.1, cpu_after.1),
    );
    match caught_up {
        Ok(Ok(())) => {}
        Ok(Err(e)) => ended = Some(format!("stream error: {e}")),
        Err(_) => ended = Some(format!("not caught up within {} s", args.timeout_secs)),
    }
    let (gaps, dups, reorders): (u64, u64, u64) = seqs.iter().fold((0, 0, 0), |a, s| {
        (a.0 + s.gaps, a.1 + s.dups, a.2 + s.reorders)
    });
    let missing: u64 = seqs.iter().zip(&stored).map(|(s, &n)| s.missing(n)).sum();
    let ok =
        missing == 0 && gaps == 0 && dups == 0 && reorders == 0 && regressions == 0 && bad == 0;
    let processes = stats::processes_json(&args.common.pid);
    eprintln!(
        "  catch-up from earliest: {deliveries} events in {catchup_secs:.2} s = {} events/s (first after {:.1} ms)",
        stats::per_sec(deliveries, catchup_secs),
        first_event_secs.unwrap_or(0.0) * 1000.0
    );
    eprintln!(
        "  gaps {gaps}, dups {dups}, reorders {reorders}, cursor regressions {regressions}, bad payloads {bad}, missing {missing}{}",
        ended.as_deref().map_or(String::new(), |e| format!("; {e}"))
    );
    eprintln!(
        "  CPU during the catch-up: broker {} s, this bench process {} s (of {catchup_secs:.2} s)",
        catchup_cpu.0.map_or("?".into(), |c| c.to_string()),
        catchup_cpu.1.map_or("?".into(), |c| c.to_string()),
    );
    eprintln!("  {}", stats::processes_line(&processes));
    eprintln!(
        "  {}",
        if ok {
            "OK: every event once, in order"
        } else {
            "FAILED"
        }
    );
    let mut json = json!({
        "mode": "resume",
        "events": args.events,
        "payload_bytes": args.payload_bytes,
        "batch": args.batch,
        "publishers": n_pubs,
        "stored_events": total,
        "fill_secs": fill_secs,
        "fill_events_per_sec": stats::per_sec(total, fill_secs),
        "deliveries": deliveries,
        "catchup_secs": catchup_secs,
        "first_event_ms": first_event_secs.map(|s| (s * 1e6).round() / 1e3),
        "delivered_events_per_sec": stats::per_sec(deliveries, catchup_secs),
        "catchup_cpu_secs": { "broker": catchup_cpu.0, "bench": catchup_cpu.1 },
        "gaps": gaps,
        "dups": dups,
        "reorders": reorders,
        "cursor_regressions": regressions,
        "bad_payloads": bad,
        "missing": missing,
        "ended": ended,
        "processes": processes,
        "ok": ok,
    });
    args.common.label("resume", &mut json);
    Ok(Report { json, ok })
}
