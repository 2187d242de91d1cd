//! Following other instances' appends on a cluster: with the sweep an hour
//! long, the sharded pub/sub wake-ups alone carry every append to the other
//! instance; and an instance with 2,000 watched topics on every master
//! holds a bounded number of connections per node (wake-ups on one cluster
//! connection, commands and reads on one per thread, up to
//! `redis.pool_size`), and delivers what another instance publishes.

use futures_util::future::join_all;

use super::{instance, live_streams, spread_topics, T};
use crate::support::{redis_cluster::RedisCluster, *};

const TOPICS: usize = 2000;

/// Checks that `s` delivers exactly `cursors`, numbered from `first` on,
/// and nothing more.
async fn delivers_exactly(s: &mut SseStream, t: &str, first: u64, cursors: &[String]) {
    let got = s.expect_events(cursors.len(), T).await;
    let ids: Vec<String> = got.iter().map(msg_id).collect();
    assert_eq!(ids, cursors, "{t}: every event once, in order");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(seq_of(&m.data), first + i as u64, "{t}: order");
    }
    s.expect_no_event(std::time::Duration::from_millis(300))
        .await;
}

/// The sweep (`redis.follow_sweep_ms`) is an hour here, so within the test
/// only the append script's `SPUBLISH` can tell B that A appended: B's live
/// streams of topics on every master get A's events exactly once, in
/// order, and so does a stream that reconnects with `Last-Event-ID` (the
/// missed ones from the log, the later ones woken up again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_alone_carry_appends_to_another_instance() {
    bounded(120, async {
        let cluster = RedisCluster::start().await;
        let hour = [("SLUICE__REDIS__FOLLOW_SWEEP_MS", "3600000")];
        let a = instance(&cluster, &hour).await;
        let b = instance(&cluster, &hour).await;
        let topics = spread_topics(&cluster, "rcw", 6);
        let mut live = live_streams(&b, &topics).await;
        let mut cursors = Vec::new();
        for t in &topics {
            cursors.push(a.publish_numbered(t, 0..10).await);
        }
        for ((s, t), c) in live.iter_mut().zip(&topics).zip(&cursors) {
            delivers_exactly(s, t, 0, c).await;
        }

        // B's subscribers go away; A publishes meanwhile and after they
        // are back from their last event's cursor.
        drop(live);
        for (t, c) in topics.iter().zip(&mut cursors) {
            c.extend(a.publish_numbered(t, 10..15).await);
        }
        let mut back = Vec::new();
        for (t, c) in topics.iter().zip(&cursors) {
            let s = b.sse(t, "", &[("last-event-id", &c[9])]).await;
            s.assert_ok();
            back.push(s);
        }
        for (t, c) in topics.iter().zip(&mut cursors) {
            c.extend(a.publish_numbered(t, 15..20).await);
        }
        for ((s, t), c) in back.iter_mut().zip(&topics).zip(&cursors) {
            delivers_exactly(s, t, 10, &c[10..]).await;
        }
    })
    .await;
}

/// Clients of node `i` that are not replication links.
fn app_clients(cluster: &RedisCluster, i: usize) -> usize {
    let list = crate::support::redis_cluster::cli(cluster.nodes[i].port, &["CLIENT", "LIST"])
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| !l.contains("cmd=client") && !l.contains("flags=S") && !l.contains("flags=M"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watched_topics_take_a_few_connections_per_node() {
    bounded(150, async {
        let cluster = RedisCluster::start().await;
        let b = instance(&cluster, &[]).await;
        let prefix = topic("rcf");
        let names: Vec<String> = (0..TOPICS).map(|i| format!("{prefix}-{i}")).collect();
        let mut streams = Vec::new();
        for chunk in names.chunks(100) {
            let opened = join_all(chunk.iter().map(|t| b.sse(t, "from=latest", &[]))).await;
            for s in &opened {
                s.assert_ok();
            }
            streams.extend(opened);
        }
        let per_node: Vec<usize> = (0..cluster.nodes.len()).map(|i| app_clients(&cluster, i)).collect();
        eprintln!("connections per node of one instance following {TOPICS} topics: {per_node:?}");
        // One for the wake-ups, and one per thread that calls Redis, up to
        // `redis.pool_size` (4 by default): however many topics.
        for (i, n) in per_node.iter().enumerate() {
            assert!(
                *n <= 5,
                "node {i} holds {n} connections of one instance following {TOPICS} topics: {per_node:?}"
            );
        }

        // What A publishes to every 20th topic reaches B's stream of it.
        let a = instance(&cluster, &[]).await;
        let sample: Vec<usize> = (0..TOPICS).step_by(20).collect();
        let mut cursors = Vec::new();
        for &i in &sample {
            cursors.push(a.publish_ok(&names[i], "{\"seq\":0}").await);
        }
        for (k, &i) in sample.iter().enumerate() {
            let m = streams[i].expect_event(T).await;
            assert_eq!(msg_id(&m), cursors[k], "B's stream of {}", names[i]);
        }
        streams[1].expect_no_event(std::time::Duration::from_millis(200)).await;
    })
    .await;
}

/// An instance whose Redis user may not use pub/sub channels (an ACL user
/// made without `&*` or `allchannels`, Redis 7's default for new users)
/// can neither subscribe to the wake-ups nor announce its own appends. It
/// stays ready and says so in `/readyz`; its publishes are stored and
/// acknowledged (the announcement is best effort: before, the script
/// stored the event and then failed, and the publisher got a `503` for a
/// stored event); and each way, the other instance's appends reach the
/// streams with the sweep. Once the user may, it says nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refused_its_channels_says_so_and_both_ways_deliver_with_the_sweep() {
    bounded(120, async {
        let cluster = RedisCluster::start().await;
        for n in &cluster.nodes {
            cluster
                .cli(
                    n.port,
                    &[
                        "ACL",
                        "SETUSER",
                        "nochan",
                        "on",
                        ">pw",
                        "~*",
                        "+@all",
                        "resetchannels",
                    ],
                )
                .expect("ACL SETUSER");
        }
        let sweep = ("SLUICE__REDIS__FOLLOW_SWEEP_MS", "200");
        let a = instance(&cluster, &[sweep]).await;
        let nodes = cluster
            .nodes
            .iter()
            .map(|n| format!("redis://nochan:pw@127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",");
        let b = instance(
            &cluster,
            &[("SLUICE__REDIS__CLUSTER_NODES", nodes.as_str()), sweep],
        )
        .await;
        let topics = spread_topics(&cluster, "rcn", 3);
        let mut on_b = live_streams(&b, &topics).await;
        let mut on_a = live_streams(&a, &topics).await;
        let bb = &b;
        let why = wait_for(T, "B's /readyz to say its channels are refused", || {
            bb.degraded()
        })
        .await;
        assert!(
            why.contains("cluster follower") && why.contains("no permissions"),
            "the reason names the refusal: {why}"
        );
        assert_eq!(a.degraded().await, None, "A is fine");
        for ((sb, sa), t) in on_b.iter_mut().zip(&mut on_a).zip(&topics) {
            let from_a = a.publish_numbered(t, 0..5).await;
            delivers_exactly(sb, t, 0, &from_a).await;
            let from_b = b.publish_numbered(t, 5..10).await;
            let mut all = from_a.clone();
            all.extend(from_b);
            delivers_exactly(sa, t, 0, &all).await;
        }
        // Once the user may, the follower subscribes, and says nothing more.
        for n in &cluster.nodes {
            cluster
                .cli(n.port, &["ACL", "SETUSER", "nochan", "allchannels"])
                .expect("ACL SETUSER");
        }
        wait_for(T, "B's /readyz to stop saying it", || async move {
            bb.degraded().await.is_none().then_some(())
        })
        .await;
    })
    .await;
}
