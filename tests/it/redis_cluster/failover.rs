//! SIGKILL of a master under publishing load: its replica takes over, the
//! brokers follow without a restart, every acknowledged event is readable
//! afterwards and live streams go on without a gap or a duplicate.
//!
//! To make the loss that asynchronous replication allows certain rather
//! than a matter of microseconds, the replica is cut off (SIGSTOP, its
//! link killed) while publishing goes on, and only then is the master
//! killed and the replica resumed: what the master took meanwhile exists
//! nowhere else. With `redis.wait_replicas = 1` none of it was acknowledged.

use super::{instance, spread_topics, until_more, Load, T};
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

        let load = Load::start(&a, &b, &topics).await;

        // The replica falls behind: stopped, and its link cut.
        cluster.signal(replica, "STOP");
        crate::support::redis_cluster::cli(
            cluster.nodes[victim].port,
            &["CLIENT", "KILL", "TYPE", "replica"],
        )
        .expect("CLIENT KILL TYPE replica");
        until_more(
            &load.progress[0].tries,
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
        load.each_goes_on("the failover").await;
        let (acked, refused) = load.finish(&b).await;
        for (t, cursors) in topics.iter().zip(&acked) {
            // The publishing instance reads the same.
            let on_a: Vec<String> = a
                .all_events(t)
                .await
                .iter()
                .map(|e| e["cursor"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(&on_a, cursors, "{t}: history on A");
        }
        eprintln!("failover: {refused} publishes refused with 503 while it lasted");
    })
    .await;
}
