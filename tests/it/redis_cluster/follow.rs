//! Following other instances' appends on a cluster: an instance with 2,000
//! watched topics on every master holds a bounded number of connections
//! per node (sharded pub/sub wake-ups on one cluster connection, reads on
//! another), and delivers what another instance publishes.

use futures_util::future::join_all;

use super::{instance, T};
use crate::support::{redis_cluster::RedisCluster, *};

const TOPICS: usize = 2000;

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
        for (i, n) in per_node.iter().enumerate() {
            assert!(
                *n <= 3,
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
