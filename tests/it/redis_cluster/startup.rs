//! A broker started before its Redis Cluster is formed, as `docker compose`
//! or an orchestrator may start them: it listens at once, answers `503`
//! saying why, keeps its log readable meanwhile, and serves once the
//! cluster is created, without a restart.

use std::time::Duration;

use super::{member, T};
use crate::support::{redis_cluster::RedisCluster, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_started_before_its_cluster_is_formed_serves_once_it_is() {
    bounded(120, async {
        let cluster = RedisCluster::unformed(Default::default()).await;
        // RUST_LOG as an operator sets it: no target named.
        let b = BrokerProcess::with(member(&cluster, &[("RUST_LOG", "info")])).await;
        let api: &Api = &b;
        let why = wait_for(
            T,
            "/readyz to answer 503 while there is no cluster",
            || async {
                let r = api.get("/readyz").await;
                (r.status == 503).then_some(r.text)
            },
        )
        .await;
        assert!(why.contains("cluster"), "/readyz says why: {why}");

        // Every call to the store meanwhile (a probe's /readyz, a publish)
        // makes the Redis client try its seeds over and over; it logged each
        // try, about a hundred lines a call. The broker says it once.
        let before = b.stderr_text().lines().count();
        for _ in 0..3 {
            let r = api.get("/readyz").await;
            assert_eq!(r.status, 503, "/readyz meanwhile: {}", r.text);
        }
        let early = b.publish(&topic("early"), "x", &[]).await;
        assert_eq!(early.status, 503, "a publish meanwhile: {}", early.text);
        // The log comes through a pipe: a moment for what those calls
        // wrote to arrive (a window, not a condition: what is checked is
        // how much was written).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = b.stderr_text();
        let written: Vec<&str> = log.lines().skip(before).collect();
        assert!(
            written.len() <= 5,
            "{} log lines for three /readyz and a publish while the cluster is not formed:\n{}",
            written.len(),
            written.join("\n")
        );

        cluster.form().await;
        wait_until(
            T,
            "/readyz to answer 200 once the cluster is formed",
            || async { api.get("/readyz").await.status == 200 },
        )
        .await;
        let t = topic("formed");
        let cursors = b.publish_numbered(&t, 0..3).await;
        let mut s = b.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let got: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, cursors, "what was published once the cluster formed");
        // Logged by the store's watch, which looks every few seconds.
        let bb = &b;
        wait_until(T, "the recovery to be logged", || async move {
            bb.stderr_text()
                .lines()
                .any(|l| l.contains("INFO") && l.contains("store ready again"))
        })
        .await;
    })
    .await;
}
