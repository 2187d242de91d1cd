//! The Redis store on a Redis Cluster (issue 17): every test starts its own
//! cluster of 3 masters with one replica each ([`RedisCluster`]) and
//! brokers that reach it through `redis.cluster_nodes`.

use std::time::Duration;

use crate::support::{redis_cluster::RedisCluster, *};

mod auth;
mod basics;
mod failover;
mod follow;
mod reshard;
mod startup;

const T: Duration = Duration::from_secs(15);

/// The settings of an instance on `cluster`.
fn member(cluster: &RedisCluster, extra: &[(&str, &str)]) -> Setup {
    let nodes = cluster.env_value();
    Setup::new(Store::Redis)
        .redis(&cluster.urls()[0], "sluicetest")
        .env(&[("SLUICE__REDIS__CLUSTER_NODES", nodes.as_str())])
        .env(extra)
}

/// Starts one instance on `cluster`, in this process.
async fn instance(cluster: &RedisCluster, extra: &[(&str, &str)]) -> Broker {
    Broker::with(member(cluster, extra)).await
}

/// A `from=latest` stream on `on` for each of `topics`, each answered `200`.
async fn live_streams(on: &Api, topics: &[String]) -> Vec<SseStream> {
    let mut live = Vec::new();
    for t in topics {
        let s = on.sse(t, "from=latest", &[]).await;
        s.assert_ok();
        live.push(s);
    }
    live
}

/// Names of `n` topics whose slots are served by every master of
/// `cluster` (at least one topic per master).
fn spread_topics(cluster: &RedisCluster, prefix: &str, n: usize) -> Vec<String> {
    loop {
        let topics: Vec<String> = (0..n).map(|_| topic(prefix)).collect();
        let masters: std::collections::HashSet<usize> = topics
            .iter()
            .map(|t| cluster.master_of(&format!("sluicetest:{{{t}}}:meta")))
            .collect();
        if masters.len() == 3 {
            return topics;
        }
    }
}

/// Publishes `{"seq":i}` on `topic` through `base` from 0 until `stop`,
/// each with `Idempotency-Key: i` (or, with `producer`, as `Producer-Seq:
/// i + 1` of one producer), and sends `i` again after a `503` or a
/// transport error until it is acknowledged (`201`, or `200` for one an
/// earlier try stored). Returns the acknowledged cursors and the count of
/// `503`s.
fn keyed_publisher(
    base: String,
    topic: String,
    producer: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    progress: std::sync::Arc<Progress>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let c = http_client();
        let (mut cursors, mut refused) = (Vec::new(), 0);
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let (key, pseq) = (i.to_string(), (i + 1).to_string());
            let body = format!("{{\"seq\":{i}}}");
            let headers: Vec<(&str, &str)> = if producer {
                vec![("producer-id", "p"), ("producer-seq", &pseq)]
            } else {
                vec![("idempotency-key", &key)]
            };
            let r = try_publish(&c, &base, &topic, &body, &headers).await;
            progress.tries.fetch_add(1, Ordering::SeqCst);
            match r {
                Ok(r) if r.status == 201 || r.status == 200 => {
                    cursors.push(r.cursor());
                    i += 1;
                    progress.acked.store(i, Ordering::SeqCst);
                }
                Ok(r) if r.status == 503 => {
                    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                    refused += 1;
                    // The store is failing over: retry shortly (pacing).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(r) => panic!("publish {i} on {topic}: {} {}", r.status, r.text),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        (cursors, refused)
    })
}

/// Publishing load on busy topics: a [`keyed_publisher`] per topic through
/// one instance (producer sequences on the second topic, idempotency keys
/// on the others) and a live stream of each topic on another.
struct Load {
    topics: Vec<String>,
    streams: Vec<SseStream>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    progress: Vec<std::sync::Arc<Progress>>,
    publishers: Vec<tokio::task::JoinHandle<(Vec<String>, usize)>>,
}

impl Load {
    /// Opens `reader`'s streams of `topics` from the start, then starts
    /// publishing through `writer` and waits for 100 acknowledgements.
    async fn start(writer: &Api, reader: &Api, topics: &[String]) -> Load {
        let mut streams = Vec::new();
        for t in topics {
            let s = reader.sse(t, "from=earliest", &[]).await;
            s.assert_ok();
            streams.push(s);
        }
        let stop = std::sync::Arc::default();
        let progress: Vec<std::sync::Arc<Progress>> =
            topics.iter().map(|_| Default::default()).collect();
        let publishers = topics
            .iter()
            .zip(&progress)
            .enumerate()
            .map(|(i, (t, n))| {
                keyed_publisher(
                    writer.base_url(),
                    t.clone(),
                    i == 1,
                    std::sync::Arc::clone(&stop),
                    n.clone(),
                )
            })
            .collect();
        let load = Load {
            topics: topics.to_vec(),
            streams,
            stop,
            progress,
            publishers,
        };
        until_more(&load.progress[0].acked, 100, "publishing before the fault").await;
        load
    }

    /// Waits until every topic has 100 more events acknowledged.
    async fn each_goes_on(&self, after: &str) {
        for (t, n) in self.topics.iter().zip(&self.progress) {
            until_more(&n.acked, 100, &format!("publishing on {t} after {after}")).await;
        }
    }

    /// Stops publishing and checks that `reader`'s streams deliver, and its
    /// history holds, exactly what was acknowledged. Returns each topic's
    /// acknowledged cursors and how many publishes got a `503`.
    async fn finish(mut self, reader: &Api) -> (Vec<Vec<String>>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut acked, mut refused) = (Vec::new(), 0);
        for ((p, t), s) in self
            .publishers
            .into_iter()
            .zip(&self.topics)
            .zip(&mut self.streams)
        {
            let (cursors, r) = p.await.expect("publisher");
            refused += r;
            assert_exact(reader, t, s, 0, &cursors).await;
            acked.push(cursors);
        }
        (acked, refused)
    }
}

/// How far a [`keyed_publisher`] got.
#[derive(Default)]
struct Progress {
    /// Events acknowledged.
    acked: std::sync::atomic::AtomicU64,
    /// Requests answered (or failed), acknowledged or not.
    tries: std::sync::atomic::AtomicU64,
}

/// Waits until `counter` has grown by `n` from now.
async fn until_more(acked: &std::sync::atomic::AtomicU64, n: u64, what: &str) {
    let from = acked.load(std::sync::atomic::Ordering::SeqCst);
    wait_until(Duration::from_secs(30), what, || async {
        acked.load(std::sync::atomic::Ordering::SeqCst) >= from + n
    })
    .await;
}

/// Checks that `stream` delivers exactly `cursors` (after what it already
/// delivered, `seen`), and that history on `broker` holds exactly them.
async fn assert_exact(
    broker: &Api,
    t: &str,
    stream: &mut SseStream,
    seen: usize,
    cursors: &[String],
) {
    let rest = stream.expect_events(cursors.len() - seen, T).await;
    let ids: Vec<String> = rest.iter().map(msg_id).collect();
    assert_eq!(
        ids,
        cursors[seen..],
        "{t}: live stream, no gap, no duplicate"
    );
    for (i, m) in rest.iter().enumerate() {
        assert_eq!(seq_of(&m.data), (seen + i) as u64, "{t}: order");
    }
    stream.expect_no_event(Duration::from_millis(300)).await;
    let hist = broker.all_events(t).await;
    let hist: Vec<&str> = hist.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
    assert_eq!(
        hist, cursors,
        "{t}: every acknowledged event is stored once, in order"
    );
}
