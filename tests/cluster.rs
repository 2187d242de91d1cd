//! Cluster mode: several broker instances over one Redis (issue 3, "What must
//! be shown"). Every test starts its own `redis-server` on a free loopback
//! port (AOF on, `appendfsync always`) and two or three `sluice` instances
//! sharing it.

mod common;
use common::redis as redis_server;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::*;
use redis_server::RedisServer;
use reqwest::{header::HeaderMap, Client};
use serde_json::{json, Value};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(15);
const S5: Duration = Duration::from_secs(5);
const S10: Duration = Duration::from_secs(10);

/// Starts one broker instance of the cluster that shares `redis`.
async fn instance(redis: &RedisServer, extra: &[(&str, &str)]) -> Broker {
    let url = redis.url();
    let mut env: Vec<(&str, &str)> = vec![
        ("SLUICE__STORE", "redis"),
        ("SLUICE__REDIS__URL", &url),
        ("SLUICE__REDIS__KEY_PREFIX", "sluicetest"),
    ];
    env.extend_from_slice(extra);
    Broker::start(&env).await
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// One raw publish answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    json: Value,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        header_str(&self.headers, name)
    }

    fn cursor(&self) -> String {
        self.json["cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no cursor in {} {}", self.status, self.text))
            .to_string()
    }
}

/// `POST {base}/v1/topics/{topic}/events`; transport errors are returned.
async fn post(
    c: &Client,
    base: &str,
    topic: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, reqwest::Error> {
    let r = c
        .post(format!("{base}/v1/topics/{topic}/events"))
        .headers(header_map(headers))
        .body(body.to_owned())
        .send()
        .await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        headers,
        json,
        text,
    })
}

/// Asserts a `200` duplicate answer carrying `cursor`.
fn assert_replayed(a: &Answer, cursor: &str, what: &str) {
    assert_eq!(a.status, 200, "{what}: expected a 200 replay: {}", a.text);
    assert_eq!(
        a.header("idempotent-replayed").as_deref(),
        Some("true"),
        "{what}: a replay carries Idempotent-Replayed: true"
    );
    assert_eq!(
        a.cursor(),
        cursor,
        "{what}: replay must give the original cursor"
    );
    assert_eq!(
        a.header("event-cursor").as_deref(),
        Some(cursor),
        "{what}: Event-Cursor header"
    );
}

// ---------------------------------------------------------------------------
// 1. Publish on A, subscribe on B
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_a_is_delivered_by_b_in_order_with_the_same_cursors() {
    bounded(120, async {
        const N: u64 = 500;
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let t = topic("xinst");

        // The topic is created by B's subscription, before anything exists.
        let mut live = b.sse(&t, "from=latest", &[]).await;
        live.assert_ok();

        let started = Instant::now();
        let cursors = a.publish_numbered(&t, 0..N).await;
        let msgs = live
            .expect_events(N as usize, Duration::from_secs(30))
            .await;
        let took = started.elapsed();
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(seq_of(&m.data), i as u64, "B delivered out of order");
            assert_eq!(
                msg_id(m),
                cursors[i],
                "event {i}: B's id must be the cursor A answered"
            );
        }
        live.expect_no_event(Duration::from_millis(500)).await;
        eprintln!("{N} events published on A and delivered live by B in {took:?}");

        // B also serves them from the store: a late stream from earliest and history.
        let mut late = b.sse(&t, "from=earliest", &[]).await;
        late.assert_ok();
        let again = late.expect_events(N as usize, T).await;
        let ids: Vec<String> = again.iter().map(msg_id).collect();
        assert_eq!(ids, cursors, "B's replay from earliest");
        let hist = b.all_events(&t).await;
        let hist_ids: Vec<&str> = hist.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
        assert_eq!(hist_ids, cursors, "B's history");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Failover with Last-Event-ID
// ---------------------------------------------------------------------------

/// Publishes `{"seq":i}` on `base` from 0 until `stop`; returns the count.
fn spawn_publisher(
    base: String,
    topic: String,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let c = client();
        let mut cursors = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let r = post(&c, &base, &topic, &format!("{{\"seq\":{i}}}"), &[])
                .await
                .unwrap_or_else(|e| panic!("publish {i} on A: {e}"));
            assert_eq!(r.status, 201, "publish {i} on A: {}", r.text);
            cursors.push(r.cursor());
            i += 1;
            published.store(i, Ordering::SeqCst);
            // Pace it so the stream is read while publishing continues.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cursors
    })
}

async fn failover(kill_b: bool) {
    let redis = RedisServer::start().await;
    let hb = [("SLUICE__STREAM__HEARTBEAT_SECS", "1")];
    let a = instance(&redis, &hb).await;
    let mut b = instance(&redis, &hb).await;
    let c = instance(&redis, &hb).await;
    let t = topic(if kill_b {
        "failover-kill"
    } else {
        "failover-drop"
    });

    let mut on_b = b.sse(&t, "from=earliest", &[]).await;
    on_b.assert_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(a.base_url(), t.clone(), stop.clone(), published.clone());

    let mut got: Vec<Message> = on_b.expect_events(150, T).await;
    if kill_b {
        b.kill9().await;
        // Whatever B wrote before dying and the client fully received counts.
        loop {
            match on_b.next_item(Duration::from_secs(10)).await {
                Some(SseItem::Message(m)) => got.push(m),
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(SseItem::Eof) | Some(SseItem::Error(_)) => break,
                None => panic!("B's stream neither ended nor delivered within 10 s of SIGKILL"),
            }
        }
    } else {
        // The subscriber goes away mid-stream.
        drop(on_b);
    }
    let last = msg_id(got.last().expect("events before the failover"));
    let received_before = got.len();
    let at_reconnect = published.load(Ordering::SeqCst);

    let mut on_c = c.sse(&t, "", &[("last-event-id", &last)]).await;
    on_c.assert_ok();
    // Keep publishing until C has delivered at least 150 events that were
    // published after the reconnect.
    let target = at_reconnect + 150;
    while (got.len() as u64) < target {
        got.push(on_c.expect_event(T).await);
    }
    stop.store(true, Ordering::SeqCst);
    let cursors = publisher.await.expect("publisher task");
    let n = cursors.len();
    assert!(
        (at_reconnect as usize) < n,
        "the publisher must still be publishing during the reconnect"
    );
    while got.len() < n {
        got.push(on_c.expect_event(T).await);
    }
    on_c.expect_no_event(Duration::from_millis(500)).await;

    let seqs: Vec<u64> = got.iter().map(|m| seq_of(&m.data)).collect();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(
            *s,
            i as u64,
            "gap or duplicate at position {i} around the failover \
             (reconnected after {at_reconnect} events): {:?}",
            &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())]
        );
    }
    let ids: Vec<String> = got.iter().map(msg_id).collect();
    assert_eq!(ids, cursors, "ids delivered by B then C are A's cursors");
    eprintln!(
        "failover (kill B: {kill_b}): {n} events; the subscriber reconnected to C after \
         receiving {received_before}, when {at_reconnect} were published"
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_subscriber_dropped_on_b_resumes_on_c() {
    bounded(120, failover(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_instance_b_sigkilled_subscriber_resumes_on_c() {
    bounded(120, failover(true)).await;
}

// ---------------------------------------------------------------------------
// 3. Idempotency keys and producer sequences across instances
// ---------------------------------------------------------------------------

/// One request of `concurrently`: instance base URL, body, headers.
type Req = (String, String, Vec<(String, String)>);

/// Sends every request at once; returns the answers in order.
async fn concurrently(topic: &str, reqs: Vec<Req>) -> Vec<Answer> {
    let c = client();
    let gate = Arc::new(tokio::sync::Barrier::new(reqs.len()));
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|(base, body, headers)| {
            let (c, gate, topic) = (c.clone(), gate.clone(), topic.to_owned());
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                gate.wait().await;
                post(&c, &base, &topic, &body, &h)
                    .await
                    .unwrap_or_else(|e| panic!("publish to {base}: {e}"))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_concurrently_to_a_and_b_is_stored_once() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let bases = [a.base_url(), b.base_url()];

        // 300 requests, one key, alternating between A and B.
        let t = topic("idem-one");
        let reqs = (0..300)
            .map(|i| {
                (
                    bases[i % 2].clone(),
                    "the one event".to_string(),
                    vec![("idempotency-key".to_string(), "same-key".to_string())],
                )
            })
            .collect();
        let answers = concurrently(&t, reqs).await;
        let created: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
        assert_eq!(
            created.len(),
            1,
            "exactly one 201 for one key; statuses: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        let cursor = created[0].cursor();
        assert_eq!(created[0].json["duplicate"], json!(false));
        for (i, ans) in answers.iter().enumerate() {
            if ans.status != 201 {
                assert_replayed(ans, &cursor, &format!("request {i}"));
            }
        }
        for (name, broker) in [("A", &a), ("B", &b)] {
            let evs = broker.all_events(&t).await;
            assert_eq!(evs.len(), 1, "history on {name}: {evs:?}");
            assert_eq!(evs[0]["cursor"], json!(cursor));
            assert_eq!(evs[0]["data"], json!("the one event"));
        }

        // 20 keys, each sent 10 times (5 to A, 5 to B), all at once.
        let t = topic("idem-many");
        let mut reqs = Vec::new();
        for k in 0..20 {
            for i in 0..10 {
                reqs.push((
                    bases[i % 2].clone(),
                    format!("event {k}"),
                    vec![("idempotency-key".to_string(), format!("key-{k}"))],
                ));
            }
        }
        let answers = concurrently(&t, reqs).await;
        let mut by_key: HashMap<usize, Vec<&Answer>> = HashMap::new();
        for (i, ans) in answers.iter().enumerate() {
            by_key.entry(i / 10).or_default().push(ans);
        }
        let mut key_cursor = HashMap::new();
        for (k, list) in &by_key {
            let created: Vec<&&Answer> = list.iter().filter(|a| a.status == 201).collect();
            assert_eq!(
                created.len(),
                1,
                "key-{k}: statuses {:?}",
                list.iter().map(|a| a.status).collect::<Vec<_>>()
            );
            let cursor = created[0].cursor();
            for ans in list.iter().filter(|a| a.status != 201) {
                assert_replayed(ans, &cursor, &format!("key-{k}"));
            }
            key_cursor.insert(*k, cursor);
        }
        let evs = a.all_events(&t).await;
        assert_eq!(evs.len(), 20, "20 keys, 20 events: {evs:?}");
        for e in &evs {
            let k: usize = e["data"].as_str().unwrap()[6..].parse().unwrap();
            assert_eq!(e["cursor"], json!(key_cursor[&k]), "event {k}'s cursor");
        }
        let distinct: HashSet<&String> = key_cursor.values().collect();
        assert_eq!(distinct.len(), 20, "every key has its own cursor");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sequences_hold_across_instances() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let t = topic("producer");
        let p = |seq: &'static str| [("producer-id", "p"), ("producer-seq", seq)];

        let r1 = a.publish(&t, "one", &p("1")).await;
        assert_eq!(r1.status, 201, "seq 1 on A: {}", r1.text);
        let c1 = r1.cursor();
        let r2 = b.publish(&t, "two", &p("2")).await;
        assert_eq!(r2.status, 201, "seq 2 on B: {}", r2.text);
        let c2 = r2.cursor();

        let d = a.publish(&t, "two", &p("2")).await;
        assert_eq!(d.status, 200, "seq 2 again on A is a duplicate: {}", d.text);
        assert_eq!(d.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(d.cursor(), c2, "the duplicate answers the original cursor");

        let g = b.publish(&t, "four", &p("4")).await;
        let prob = g.assert_problem(409);
        assert_eq!(
            prob["expected_seq"].as_u64(),
            Some(3),
            "seq 4 on B skips 3: {}",
            g.text
        );

        // A has only seen seq 1 itself: seq 3 must still be accepted there.
        let r3 = a.publish(&t, "three", &p("3")).await;
        assert_eq!(r3.status, 201, "seq 3 on A after seq 2 on B: {}", r3.text);
        let d1 = b.publish(&t, "one", &p("1")).await;
        assert_eq!(d1.status, 200, "seq 1 on B is a duplicate: {}", d1.text);
        assert_eq!(d1.cursor(), c1);

        // Seq 4, 20 times at once on A and B: stored once.
        let bases = [a.base_url(), b.base_url()];
        let reqs = (0..20)
            .map(|i| {
                (
                    bases[i % 2].clone(),
                    "four".to_string(),
                    vec![
                        ("producer-id".to_string(), "p".to_string()),
                        ("producer-seq".to_string(), "4".to_string()),
                    ],
                )
            })
            .collect();
        let answers = concurrently(&t, reqs).await;
        let created: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
        assert_eq!(
            created.len(),
            1,
            "seq 4 sent 20 times: statuses {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        let c4 = created[0].cursor();
        for ans in answers.iter().filter(|a| a.status != 201) {
            assert_replayed(ans, &c4, "concurrent seq 4");
        }

        let evs = b.all_events(&t).await;
        let data: Vec<&str> = evs.iter().map(|e| e["data"].as_str().unwrap()).collect();
        assert_eq!(data, ["one", "two", "three", "four"], "history");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Redis killed and restarted under load
// ---------------------------------------------------------------------------

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
                    let c = client();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("p{p}-{n}");
                        let body = format!("{{\"p\":{p},\"n\":{n}}}");
                        // Retry this event until it is acknowledged.
                        loop {
                            match post(&c, &base, &t, &body, &[("idempotency-key", &key)]).await {
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

// ---------------------------------------------------------------------------
// 5. FLUSHALL while a client holds a cursor
// ---------------------------------------------------------------------------

/// Publishes on `b`, retrying a `503` (with `Retry-After`) for at most 5 s.
async fn publish_retrying(b: &Broker, topic: &str, body: &str, retries: &mut u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = b.publish(topic, body, &[]).await;
        if r.status == 201 {
            return r.cursor();
        }
        r.assert_problem(503);
        assert!(r.header("retry-after").is_some(), "503 without Retry-After");
        assert!(
            Instant::now() < deadline,
            "publish {body:?} kept answering 503: {}",
            r.text
        );
        *retries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_416_for(what: &str, r: &Value, headers: &[Option<String>], old_epoch: &str) {
    for (name, v) in ["X-Next-Cursor", "X-Latest-Cursor"].iter().zip(headers) {
        let v = v
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: 416 without {name}"));
        assert_cursor(v);
        assert_ne!(
            cursor_epoch(v),
            old_epoch,
            "{what}: {name} must belong to the new log"
        );
    }
    assert!(r["next_cursor"].is_string(), "{what}: next_cursor in {r}");
    assert!(
        r["latest_cursor"].is_string(),
        "{what}: latest_cursor in {r}"
    );
    assert!(r.get("lost").is_some(), "{what}: lost in {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_gives_416_and_a_new_epoch() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let env = [("SLUICE__STREAM__HEARTBEAT_SECS", "1")];
        let a = instance(&redis, &env).await;
        let b = instance(&redis, &env).await;

        // Topic u: cursors held by a client that is not connected.
        let u = topic("flush-idle");
        let u_cursors = a.publish_numbered(&u, 0..3).await;
        let mut s = b.sse(&u, "from=earliest", &[]).await;
        s.assert_ok();
        s.expect_events(3, T).await;
        drop(s);

        // Topic t: a client on B holds an open stream at the 5th event.
        let t = topic("flush-held");
        let old = a.publish_numbered(&t, 0..5).await;
        let old_epoch = cursor_epoch(&old[4]).to_string();
        let mut held = b.sse(&t, "from=earliest", &[]).await;
        held.assert_ok();
        let ids: Vec<String> = held.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, old);

        redis.flushall();

        // The idle client's next resume, right away, on either instance: 416.
        let u_last = &u_cursors[2];
        let u_epoch = cursor_epoch(u_last).to_string();
        for (name, broker) in [("B", &b), ("A", &a)] {
            let s = broker.sse(&u, "", &[("last-event-id", u_last)]).await;
            let prob = s.assert_problem(416).clone();
            assert_416_for(
                &format!("resume of {u} on {name}"),
                &prob,
                &[s.header("x-next-cursor"), s.header("x-latest-cursor")],
                &u_epoch,
            );
        }
        let h = a.history(&u, &format!("cursor={u_last}")).await;
        h.assert_problem(416);

        // New publishes on A work and start a new epoch.
        let mut retries = 0;
        let mut fresh = Vec::new();
        for i in 0..10 {
            fresh.push(
                publish_retrying(&a, &t, &format!("{{\"seq\":{}}}", 100 + i), &mut retries).await,
            );
        }
        let new_epoch = cursor_epoch(&fresh[0]).to_string();
        assert_ne!(new_epoch, old_epoch, "a wiped log must get a new epoch");
        for c in &fresh {
            assert_eq!(cursor_epoch(c), new_epoch);
        }

        // The stream held on B must never deliver a position that does not
        // exist in its log: it ends (its client then resumes and gets 416).
        let mut after_flush = Vec::new();
        let end = loop {
            match held.next_item(Duration::from_secs(10)).await {
                Some(SseItem::Message(m)) => after_flush.push(m),
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(end) => break Some(end),
                None => break None,
            }
        };
        let wrong: Vec<String> = after_flush
            .iter()
            .filter(|m| m.event.as_deref() != Some("gap"))
            .map(|m| format!("{:?}={}", m.id, m.data))
            .collect();
        assert!(
            wrong.is_empty(),
            "the stream held across FLUSHALL delivered events of the new log as if they \
             followed {} (old epoch {old_epoch}, new epoch {new_epoch}): {wrong:?}",
            old[4]
        );
        assert!(
            end.is_some(),
            "the stream held across FLUSHALL neither ended nor delivered anything within 10 s"
        );

        // Its client resumes with the last id it got: 416 on B and on A.
        for (name, broker) in [("B", &b), ("A", &a)] {
            let s = broker.sse(&t, "", &[("last-event-id", &old[4])]).await;
            let prob = s.assert_problem(416).clone();
            assert_416_for(
                &format!("resume of {t} on {name}"),
                &prob,
                &[s.header("x-next-cursor"), s.header("x-latest-cursor")],
                &old_epoch,
            );
            assert_eq!(
                s.header("x-latest-cursor").as_deref(),
                Some(fresh[9].as_str()),
                "X-Latest-Cursor on {name}"
            );
            // Resuming from X-Next-Cursor delivers everything still retained.
            let next = s.header("x-next-cursor").unwrap();
            let mut r = broker.sse(&t, "", &[("last-event-id", &next)]).await;
            r.assert_ok();
            let ids: Vec<String> = r.expect_events(10, T).await.iter().map(msg_id).collect();
            assert_eq!(ids, fresh, "resume from X-Next-Cursor on {name}");
        }

        // on_gap=resume: a gap event, then the new log from its start.
        let mut g = a
            .sse(&t, "on_gap=resume", &[("last-event-id", &old[4])])
            .await;
        g.assert_ok();
        let first = g.expect_event(T).await;
        assert_eq!(
            first.event.as_deref(),
            Some("gap"),
            "first event: {first:?}"
        );
        let gap: Value = serde_json::from_str(&first.data).expect("gap data is JSON");
        assert_eq!(gap["requested"], json!(old[4]), "gap event: {gap}");
        assert!(gap.get("lost").is_some(), "gap event: {gap}");
        let ids: Vec<String> = g.expect_events(10, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, fresh, "events after the gap event");

        // Both instances follow the new log: publish on B, live delivery
        // across instances both ways.
        let mut live_b = b.sse(&t, "from=latest", &[]).await;
        live_b.assert_ok();
        let mut live_a = a.sse(&t, "from=latest", &[]).await;
        live_a.assert_ok();
        let on_a = publish_retrying(&a, &t, "{\"seq\":200}", &mut retries).await;
        let on_b = publish_retrying(&b, &t, "{\"seq\":201}", &mut retries).await;
        assert_eq!(cursor_epoch(&on_b), new_epoch, "B writes into the new log");
        for (name, s) in [("B", &mut live_b), ("A", &mut live_a)] {
            let ids: Vec<String> = s.expect_events(2, T).await.iter().map(msg_id).collect();
            assert_eq!(ids, [on_a.clone(), on_b.clone()], "live stream on {name}");
        }
        eprintln!("FLUSHALL: {retries} publish retries (503) after the wipe");
    })
    .await;
}

// ---------------------------------------------------------------------------
// TLS and Sentinel
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the
/// `openssl` command line (in `dir`: ca.crt, srv.crt, srv.key).
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=sluice-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

/// `rediss://`: events go to Redis over TLS, and the server's certificate is
/// checked (here against a private CA given in `SSL_CERT_FILE`): a broker
/// that cannot verify it stores nothing and says why it is not ready.
#[tokio::test]
async fn rediss_url_stores_over_verified_tls() {
    bounded(120, async {
        let certs = tempfile::tempdir().expect("tempdir");
        make_certs(certs.path());
        let p = |f: &str| certs.path().join(f).to_str().unwrap().to_owned();
        let tls_port = free_port().to_string();
        let redis = RedisServer::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &p("srv.crt"),
            "--tls-key-file",
            &p("srv.key"),
            "--tls-ca-cert-file",
            &p("ca.crt"),
            "--tls-auth-clients",
            "no",
        ])
        .await;
        let url = format!("rediss://127.0.0.1:{tls_port}");
        let ca = p("ca.crt");
        let store = [
            ("SLUICE__STORE", "redis"),
            ("SLUICE__REDIS__URL", url.as_str()),
            ("SLUICE__REDIS__KEY_PREFIX", "tlstest"),
        ];
        let mut env = store.to_vec();
        env.push(("SSL_CERT_FILE", &ca));
        let a = Broker::start(&env).await;
        assert_eq!(a.get("/readyz").await.status, 200);
        let t = topic("tls");
        let cursors = a.publish_numbered(&t, 0..5).await;
        // They are in that Redis (read over its plain port).
        let log = format!("tlstest:{{{t}}}:log:{}", cursor_epoch(&cursors[0]));
        assert_eq!(redis.cli(&["XLEN", &log]), "5");
        let mut s = a.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, cursors);

        // The same URL without the CA: the certificate does not verify.
        let mut env = store.to_vec();
        let empty = tempfile::tempdir().expect("tempdir");
        let none = empty.path().join("none.pem");
        std::fs::write(&none, "").unwrap();
        let none = none.to_str().unwrap().to_owned();
        env.push(("SSL_CERT_FILE", &none));
        let b = Broker::start(&env).await;
        let r = b.get("/readyz").await;
        assert_eq!(r.status, 503, "readyz of an unverifiable Redis: {}", r.text);
        let r = b.publish(&t, r#"{"n":1}"#, &[]).await;
        r.assert_problem(503);
        assert_eq!(
            redis.cli(&["XLEN", &log]),
            "5",
            "nothing stored without TLS trust"
        );
    })
    .await;
}

/// Sentinel: the store finds the master through Sentinel, and follows a
/// failover to the promoted replica with no broker restart: every event
/// that got a 201 is readable afterwards, in order, and a subscriber that
/// resumes by cursor misses nothing.
#[tokio::test]
async fn sentinel_finds_the_master_and_follows_a_failover() {
    bounded(180, async {
        let mut master = RedisServer::start().await;
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port]).await;
        let sentinel = RedisServer::start_sentinel(master.port).await;
        let sentinels = format!("redis://127.0.0.1:{}", sentinel.port);
        let a = Broker::start(&[
            ("SLUICE__STORE", "redis"),
            ("SLUICE__REDIS__SENTINELS", sentinels.as_str()),
            ("SLUICE__REDIS__SENTINEL_MASTER", "mymaster"),
            ("SLUICE__REDIS__KEY_PREFIX", "senttest"),
        ])
        .await;
        let t = topic("sentinel");
        let mut cursors = a.publish_numbered(&t, 0..5).await;
        let log = format!("senttest:{{{t}}}:log:{}", cursor_epoch(&cursors[0]));
        assert_eq!(master.cli(&["XLEN", &log]), "5", "written to the master");
        let mut s = a.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let got: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(got, cursors);
        // The replica has caught up before its master goes: WAIT makes the
        // master confirm one replica holds every write so far.
        assert_eq!(master.cli(&["WAIT", "1", "5000"]), "1");

        master.kill9().await;
        // Publish until the broker reaches the promoted replica; 503s
        // meanwhile (nothing stored), then 201s again.
        let mut retries = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 5;
        while n < 15 {
            assert!(
                Instant::now() < deadline,
                "no publish went through within 60 s of the failover"
            );
            let r = a.publish(&t, &format!("{{\"seq\":{n}}}"), &[]).await;
            match r.status.as_u16() {
                201 => {
                    cursors.push(r.json["cursor"].as_str().unwrap().to_owned());
                    n += 1;
                }
                503 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("publish during failover: {other} {}", r.text),
            }
        }
        assert!(
            retries > 0,
            "the master was killed: some publishes must have waited"
        );
        assert_eq!(
            replica.cli(&["ROLE"]).lines().next(),
            Some("master"),
            "the replica was promoted"
        );
        assert_eq!(replica.cli(&["XLEN", &log]), "15");
        // Resume after the 5th event: the other ten, in order, once.
        let mut r = a.sse(&t, "", &[("last-event-id", &cursors[4])]).await;
        r.assert_ok();
        let got: Vec<String> = r.expect_events(10, T).await.iter().map(msg_id).collect();
        assert_eq!(got, cursors[5..].to_vec());
        r.expect_no_event(Duration::from_millis(300)).await;
    })
    .await;
}

/// An instance follows another's appends only while it has subscribers on
/// the topic (its one tailer reads just those). After its last subscriber
/// left, what was published elsewhere meanwhile is still known exactly:
/// the topic's latest cursor, a `from=latest` stream that starts after it,
/// and a resume by cursor that delivers the missed events.
#[tokio::test]
async fn an_instance_without_subscribers_stops_tailing_and_catches_up_exactly() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let t = topic("rewatch");
        let first = a.publish_numbered(&t, 0..3).await;
        async fn watched(x: &Broker) -> f64 {
            x.metrics().await.value("sluice_store_watched_topics")
        }
        let mut s = b.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let got: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, first);
        wait_until(T, "B follows the topic", || async {
            watched(&b).await == 1.0
        })
        .await;
        assert_eq!(
            watched(&a).await,
            0.0,
            "A publishes but has no subscriber: it follows nothing"
        );
        drop(s);
        wait_until(
            T,
            "B stops following the topic once its stream closed",
            || async { watched(&b).await == 0.0 },
        )
        .await;

        // Published on A while B has nobody on the topic.
        let missed = a.publish_numbered(&t, 3..8).await;
        let info = b.get(&format!("/v1/topics/{t}")).await;
        assert_eq!(
            info.json["latest_cursor"].as_str(),
            Some(missed[4].as_str()),
            "B's view of the topic: {}",
            info.text
        );

        // `from=latest` on B starts after A's latest, not after B's last view.
        let mut live = b.sse(&t, "from=latest", &[]).await;
        live.assert_ok();
        let mut resumed = b.sse(&t, "", &[("last-event-id", &first[2])]).await;
        resumed.assert_ok();
        let after = a.publish_numbered(&t, 8..11).await;
        let got: Vec<String> = live.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(
            got, after,
            "a live stream gets exactly what came after it opened"
        );
        live.expect_no_event(Duration::from_millis(300)).await;
        let want: Vec<String> = missed.iter().chain(&after).cloned().collect();
        let got: Vec<String> = resumed
            .expect_events(8, T)
            .await
            .iter()
            .map(msg_id)
            .collect();
        assert_eq!(
            got, want,
            "a resume gets what it missed, then live, once each"
        );
        resumed.expect_no_event(Duration::from_millis(300)).await;
    })
    .await;
}
