//! A Redis Cluster that requires a password, and one that speaks TLS only
//! (clients, the cluster bus and replication): the store gets in with what
//! the node URLs carry, follows other instances' appends and says it is
//! ready; a broker that cannot get in says why and stores nothing.

use super::{live_streams, member, spread_topics, T};
use crate::support::{certs::make_certs, redis::Access, redis_cluster::RedisCluster, *};

const PASSWORD: &str = "cluster-s3cret";
/// Events published on each topic.
const EVENTS: u64 = 3;
/// The sweep an hour long: B learns of A's appends by the sharded pub/sub
/// wake-ups alone, so the subscriptions' own connections must get in too.
const HOUR: (&str, &str) = ("SLUICE__REDIS__FOLLOW_SWEEP_MS", "3600000");

/// `redis.cluster_nodes` (and `redis.url`) of `cluster`'s nodes as
/// `scheme://auth@127.0.0.1:PORT`.
fn nodes_as(cluster: &RedisCluster, scheme: &str, auth: &str) -> Setup {
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{scheme}://{auth}127.0.0.1:{}", n.port))
        .collect();
    Setup::new(Store::Redis)
        .redis(&urls[0], "sluicetest")
        .env(&[("SLUICE__REDIS__CLUSTER_NODES", urls.join(",").as_str())])
}

/// What works on a cluster the instances `a` and `b` get into: both say
/// they are ready, and B's live streams of topics on every master get what
/// A publishes, exactly once and in order. Returns the topics, each with
/// [`EVENTS`] events on it.
async fn serves_across_instances(cluster: &RedisCluster, a: &Api, b: &Api) -> Vec<String> {
    for (name, x) in [("A", a), ("B", b)] {
        let r = x.get("/readyz").await;
        assert_eq!(r.status, 200, "/readyz of {name}: {}", r.text);
    }
    let topics = spread_topics(cluster, "rca", 3);
    let mut live = live_streams(b, &topics).await;
    for (t, s) in topics.iter().zip(&mut live) {
        let cursors = a.publish_numbered(t, 0..EVENTS).await;
        let got: Vec<String> = s
            .expect_events(cursors.len(), T)
            .await
            .iter()
            .map(msg_id)
            .collect();
        assert_eq!(got, cursors, "B's live stream of {t}");
        s.expect_no_event(std::time::Duration::from_millis(200))
            .await;
    }
    topics
}

/// `denied` cannot get into the cluster: `/readyz` answers 503 naming
/// `why` (any of these words, in lower case), and publishes answer 503 problems and store nothing (as `a`,
/// which gets in, sees: `topics` keep their one event, a new topic is not
/// created).
async fn refuses_with_reason(denied: &Api, a: &Api, topics: &[String], why: &[&str]) {
    let r = denied.get("/readyz").await;
    assert_eq!(r.status, 503, "/readyz: {}", r.text);
    eprintln!("/readyz of a broker that cannot get in: {}", r.text);
    let text = r.text.to_lowercase();
    assert!(
        why.iter().any(|w| text.contains(w)),
        "/readyz names the reason ({why:?}): {}",
        r.text
    );
    let fresh = topic("rca-none");
    for t in topics.iter().chain([&fresh]) {
        let p = denied.publish(t, r#"{"seq":1}"#, &[]).await;
        p.assert_problem(503);
    }
    for t in topics {
        assert_eq!(a.count(t).await as u64, EVENTS, "{t}: nothing more stored");
    }
    assert_eq!(
        a.history(&fresh, "").await.status,
        404,
        "{fresh} not created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_password_serves_with_it_and_says_why_not_without() {
    bounded(120, async {
        let cluster = RedisCluster::start_with(Access {
            password: Some(PASSWORD.to_owned()),
            tls: None,
        })
        .await;
        let good = nodes_as(&cluster, "redis", &format!(":{PASSWORD}@")).env(&[HOUR]);
        let a = Broker::with(good.clone()).await;
        let b = Broker::with(good).await;
        let topics = serves_across_instances(&cluster, &a, &b).await;

        let wrong = Broker::with(nodes_as(&cluster, "redis", ":not-it@")).await;
        refuses_with_reason(&wrong, &a, &topics, &["password authentication failed"]).await;
        let none = Broker::with(nodes_as(&cluster, "redis", "")).await;
        refuses_with_reason(&none, &a, &topics, &["noauth", "authentication"]).await;

        // The password on some node URLs only: refused at start, since the
        // cluster client uses one password for every node.
        let (p0, p1) = (cluster.nodes[0].port, cluster.nodes[1].port);
        let mixed = format!("redis://:{PASSWORD}@127.0.0.1:{p0},redis://127.0.0.1:{p1}");
        let (status, stderr) =
            run_expecting_exit(Store::Redis, &[("SLUICE__REDIS__CLUSTER_NODES", &mixed)]).await;
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains("redis.cluster_nodes") && stderr.contains("different password"),
            "{stderr}"
        );
    })
    .await;
}

/// TLS only (`--port 0`, `--tls-cluster yes`, `--tls-replication yes`),
/// with a password: `rediss://` node URLs and the test CA in
/// `SSL_CERT_FILE` (read from the process environment, hence processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_over_verified_tls() {
    bounded(150, async {
        let certs = tempfile::tempdir().expect("tempdir");
        make_certs(certs.path());
        let cluster = RedisCluster::start_with(Access {
            password: Some(PASSWORD.to_owned()),
            tls: Some(certs.path().to_path_buf()),
        })
        .await;
        let ca = certs.path().join("ca.crt").to_str().unwrap().to_owned();
        let good = member(&cluster, &[("SSL_CERT_FILE", &ca), HOUR]);
        let a = BrokerProcess::with(good.clone()).await;
        let b = BrokerProcess::with(good).await;
        let topics = serves_across_instances(&cluster, &a, &b).await;

        // Without the CA the nodes' certificate does not verify.
        let empty = certs.path().join("none.pem");
        std::fs::write(&empty, "").unwrap();
        let untrusting = BrokerProcess::with(member(
            &cluster,
            &[("SSL_CERT_FILE", empty.to_str().unwrap())],
        ))
        .await;
        refuses_with_reason(&untrusting, &a, &topics, &["certificate"]).await;
    })
    .await;
}
