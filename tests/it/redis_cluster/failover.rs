//! SIGKILL of a master under publishing load: its replica takes over, the
//! brokers follow without a restart, every acknowledged event is readable
//! afterwards and live streams go on without a gap or a duplicate.
//!
//! To make the loss that asynchronous replication allows certain rather
//! than a matter of microseconds, the replica is cut off (SIGSTOP, its
//! link killed) while publishing goes on, and only then is the master
//! killed and the replica resumed: what the master took meanwhile exists
//! nowhere else. With `redis.wait_replicas = 1` none of it was acknowledged.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use super::{assert_exact, instance, keyed_publisher, spread_topics, until_more, Progress, T};
use crate::support::{redis_cluster::RedisCluster, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_without_losing_an_acknowledged_event() {
    bounded(150, async {
        let mut cluster = RedisCluster::start().await;
        // An append is acknowledged once a replica has it (WAIT 1).
        let env = [("SLUICE__REDIS__WAIT_REPLICAS", "1")];
        let a = instance(&cluster, &env).await;
        let b = instance(&cluster, &env).await;
        let topics = spread_topics(&cluster, "rcfail", 3);
        let key = format!("sluicetest:{{{}}}:meta", topics[0]);
        let victim = cluster.master_of(&key);
        let replica = cluster.replica_of(victim);

        let mut streams = Vec::new();
        for t in &topics {
            let s = b.sse(t, "from=earliest", &[]).await;
            s.assert_ok();
            streams.push(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Vec<Arc<Progress>> = topics.iter().map(|_| Arc::default()).collect();
        // Idempotency keys on some topics, producer sequences on another.
        let publishers: Vec<_> = topics
            .iter()
            .zip(&progress)
            .enumerate()
            .map(|(i, (t, n))| {
                keyed_publisher(a.base_url(), t.clone(), i == 1, stop.clone(), n.clone())
            })
            .collect();
        until_more(&progress[0].acked, 100, "publishing before the kill").await;

        // The replica falls behind: stopped, and its link cut.
        cluster.signal(replica, "STOP");
        crate::support::redis_cluster::cli(
            cluster.nodes[victim].port,
            &["CLIENT", "KILL", "TYPE", "replica"],
        )
        .expect("CLIENT KILL TYPE replica");
        until_more(
            &progress[0].tries,
            20,
            "publishing while the replica is cut off",
        )
        .await;
        cluster.nodes[victim].kill9().await;
        let dead = format!("127.0.0.1:{}", cluster.nodes[victim].port);
        wait_until(T, "/readyz names the dead master", || async {
            let r = a.get("/readyz").await;
            r.status == 503
                && r.json["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("master {dead} unreachable")))
        })
        .await;
        cluster.signal(replica, "CONT");
        wait_until(
            std::time::Duration::from_secs(30),
            "the replica took over",
            || async { cluster.try_master_of(&key) == Some(replica) },
        )
        .await;
        // The new master has no replica yet: appends cannot be acknowledged.
        wait_until(T, "/readyz names the missing replica", || async {
            let r = a.get("/readyz").await;
            r.status == 503
                && r.json["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("has 0 of the 1 replicas appends wait for"))
        })
        .await;
        // Back as the new master's replica, so appends are acknowledged again.
        cluster.nodes[victim].restart().await;
        cluster.wait_healthy().await;
        wait_until(T, "/readyz is ready again", || async {
            a.get("/readyz").await.status == 200
        })
        .await;
        for (i, n) in progress.iter().enumerate() {
            let what = format!("publishing on {} after the failover", topics[i]);
            until_more(&n.acked, 100, &what).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut refused = 0;
        for ((p, t), s) in publishers.into_iter().zip(&topics).zip(&mut streams) {
            let (cursors, r) = p.await.expect("publisher");
            refused += r;
            assert_exact(&b, t, s, 0, &cursors).await;
            // The publishing instance reads the same.
            let on_a: Vec<String> = a
                .all_events(t)
                .await
                .iter()
                .map(|e| e["cursor"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(on_a, cursors, "{t}: history on A");
        }
        eprintln!("failover: {refused} publishes refused with 503 while it lasted");
    })
    .await;
}
