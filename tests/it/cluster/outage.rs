//! Redis killed and restarted under load: 503s with Retry-After meanwhile,
//! streams kept open with heartbeats, and afterwards every acknowledged
//! event stored once and delivered once.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::Value;
use tokio::time::Instant;

use super::{instance, S10, S5, T};
use crate::support::{redis::RedisServer, *};

#[derive(Default)]
struct LoadStats {
    /// Per publisher: (n, cursor, when acknowledged).
    acked: Vec<Vec<(u64, String, Instant)>>,
    unavailable: u64,
    unavailable_without_retry_after: u64,
    transport_errors: u64,
}

#[derive(Default)]
struct StreamLog {
    msgs: Vec<(Instant, Message)>,
    comments: Vec<Instant>,
    end: Option<(Instant, SseItem)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    bounded(180, async {
        const PUBLISHERS: usize = 4;
        let mut redis = RedisServer::start().await;
        let env = [("SLUICE__STREAM__HEARTBEAT_SECS", "1")];
        let a = instance(&redis, &env).await;
        let b = instance(&redis, &env).await;
        let t = topic("outage");

        // A stream on B, open before everything.
        let mut stream = b.sse(&t, "from=latest", &[]).await;
        stream.assert_ok();
        let log = Arc::new(Mutex::new(StreamLog::default()));
        let reader = {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let item = stream.next_item(Duration::from_secs(3600)).await;
                    let now = Instant::now();
                    let mut l = log.lock().unwrap();
                    match item {
                        Some(SseItem::Message(m)) => l.msgs.push((now, m)),
                        Some(SseItem::Comment(_)) => l.comments.push(now),
                        Some(SseItem::Retry(_)) => {}
                        Some(end) => {
                            l.end = Some((now, end));
                            return;
                        }
                        None => return,
                    }
                }
            })
        };

        let stats = Arc::new(Mutex::new(LoadStats {
            acked: vec![Vec::new(); PUBLISHERS],
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let base = if p % 2 == 0 { a.base_url() } else { b.base_url() };
                let (stats, stop, t) = (stats.clone(), stop.clone(), t.clone());
                tokio::spawn(async move {
                    let c = http_client();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("p{p}-{n}");
                        let body = format!("{{\"p\":{p},\"n\":{n}}}");
                        // Retry this event until it is acknowledged.
                        loop {
                            match try_publish(&c, &base, &t, &body, &[("idempotency-key", &key)]).await {
                                Ok(r) if r.status == 201 || r.status == 200 => {
                                    let mut s = stats.lock().unwrap();
                                    s.acked[p].push((n, r.cursor(), Instant::now()));
                                    break;
                                }
                                Ok(r) if r.status == 503 => {
                                    let mut s = stats.lock().unwrap();
                                    s.unavailable += 1;
                                    if r.header("retry-after").is_none() {
                                        s.unavailable_without_retry_after += 1;
                                    }
                                }
                                Ok(r) => {
                                    panic!("publisher {p}, event {n}: {} {}", r.status, r.text)
                                }
                                Err(_) => stats.lock().unwrap().transport_errors += 1,
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();

        let acked_min = |stats: &Arc<Mutex<LoadStats>>, after: Option<Instant>| {
            let s = stats.lock().unwrap();
            s.acked
                .iter()
                .map(|v| v.iter().filter(|x| after.is_none_or(|t0| x.2 > t0)).count())
                .min()
                .unwrap_or(0)
        };
        wait_until(T, "every publisher has 20 events acknowledged", || async {
            acked_min(&stats, None) >= 20
        })
        .await;

        // ---- outage ----
        let before = stats.lock().unwrap().unavailable;
        redis.kill9().await;
        let killed_at = Instant::now();
        let comments_at_kill = log.lock().unwrap().comments.len();
        let what = "a publish answers 503 during the outage";
        wait_until(S10, what, || async {
            stats.lock().unwrap().unavailable > before
        })
        .await;
        for (name, broker) in [("A", &a), ("B", &b)] {
            let what = format!("/readyz on {name} answers 503");
            wait_until(S10, &what, || async {
                broker.get("/readyz").await.status == 503
            })
            .await;
            let r = broker.get("/readyz").await;
            let prob = r.assert_problem(503);
            assert!(
                !prob["detail"].as_str().unwrap_or("").is_empty(),
                "/readyz 503 must give the reason: {}",
                r.text
            );
        }
        // The stream on B stays open with heartbeats while Redis is down.
        let what = "two heartbeats on B's stream during the outage";
        wait_until(S10, what, || async {
            log.lock().unwrap().comments.len() >= comments_at_kill + 2
        })
        .await;
        assert!(
            log.lock().unwrap().end.is_none(),
            "B's stream ended during the outage: {:?}",
            log.lock().unwrap().end
        );
        let outage_503s = stats.lock().unwrap().unavailable - before;

        // ---- Redis returns ----
        redis.restart().await;
        let up = Instant::now();
        let mut ready_after = Vec::new();
        for (name, broker) in [("A", &a), ("B", &b)] {
            let what = format!("/readyz on {name} answers 200 again");
            wait_until(S5, &what, || async {
                broker.get("/readyz").await.status == 200
            })
            .await;
            ready_after.push((name, up.elapsed()));
        }
        let what = "a publish is acknowledged after Redis returns";
        let first_ack = wait_for(S5, what, || async {
            let s = stats.lock().unwrap();
            s.acked.iter().flatten().map(|x| x.2).filter(|&t| t > up).min()
        })
        .await;
        let what = "B's stream (opened before the outage) delivers an event after Redis returns";
        let first_delivery = wait_for(S5, what, || async {
            log.lock().unwrap().msgs.iter().map(|m| m.0).find(|&t| t > up)
        })
        .await;
        let what = "every publisher gets an acknowledgement after Redis returns";
        let all_acked = wait_for(S5, what, || async {
            let s = stats.lock().unwrap();
            s.acked
                .iter()
                .map(|v| v.iter().map(|x| x.2).filter(|&t| t > up).min())
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().max().unwrap())
        })
        .await;
        eprintln!(
            "outage {:?}; 503s during it: {outage_503s}; after Redis answered PING: \
             readyz 200 {:?}, first ack {:?}, every publisher acked {:?}, first event on B's old stream {:?}",
            up - killed_at,
            ready_after,
            first_ack - up,
            all_acked - up,
            first_delivery - up
        );

        wait_until(T, "every publisher has 20 more events acknowledged", || async {
            acked_min(&stats, Some(up)) >= 20
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        for p in publishers {
            p.await.expect("publisher task");
        }

        let s = std::mem::take(&mut *stats.lock().unwrap());
        assert!(s.unavailable > 0, "503s must be seen during the outage");
        assert_eq!(
            s.unavailable_without_retry_after, 0,
            "every 503 carries Retry-After"
        );
        eprintln!(
            "publishes: {} acknowledged, {} answers 503, {} transport errors",
            s.acked.iter().map(Vec::len).sum::<usize>(),
            s.unavailable,
            s.transport_errors
        );

        // Every acknowledged event is stored exactly once, in each
        // publisher's order, with the cursor it was acknowledged with.
        let hist = a.all_events(&t).await;
        let mut seen: HashMap<(usize, u64), String> = HashMap::new();
        let mut next_n = [0u64; PUBLISHERS];
        for e in &hist {
            let d: Value = serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
            let (p, n) = (d["p"].as_u64().unwrap() as usize, d["n"].as_u64().unwrap());
            let c = e["cursor"].as_str().unwrap().to_string();
            assert!(
                seen.insert((p, n), c).is_none(),
                "event p{p}-{n} is stored twice"
            );
            assert_eq!(n, next_n[p], "publisher {p}'s events out of order or missing in history");
            next_n[p] += 1;
        }
        for (p, list) in s.acked.iter().enumerate() {
            for (n, cursor, _) in list {
                let stored = seen
                    .get(&(p, *n))
                    .unwrap_or_else(|| panic!("event p{p}-{n} got a 201/200 but is not stored"));
                assert_eq!(stored, cursor, "p{p}-{n}: acknowledged cursor vs stored");
            }
            assert_eq!(next_n[p], list.len() as u64, "publisher {p}: stored vs acknowledged");
        }

        // B's stream, open all along, delivers the whole history exactly once, in order.
        let want: Vec<String> = hist
            .iter()
            .map(|e| e["cursor"].as_str().unwrap().to_string())
            .collect();
        wait_until(T, "B's stream delivers the whole history", || async {
            let l = log.lock().unwrap();
            l.msgs.len() >= want.len() || l.end.is_some()
        })
        .await;
        let l = log.lock().unwrap();
        assert!(l.end.is_none(), "B's stream ended: {:?}", l.end);
        let got: Vec<String> = l.msgs.iter().map(|(_, m)| msg_id(m)).collect();
        assert_eq!(got, want, "B's stream vs history");
        drop(l);
        reader.abort();
        assert!(
            first_delivery - up <= Duration::from_secs(5),
            "streams must recover within a few seconds of Redis returning"
        );
    })
    .await;
}
