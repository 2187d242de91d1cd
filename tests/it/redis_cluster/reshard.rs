//! A slot migration (`redis-cli --cluster reshard`) of busy topics under
//! publishing load: nothing lost, nothing duplicated, live streams go on.

use std::process::Command;

use super::{instance, Load};
use crate::support::{redis_cluster::RedisCluster, *};

/// How many slots the reshard moves (from slot 0 up).
const MOVED: u16 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_topics_move_to_another_master_without_loss_or_duplicate() {
    bounded(150, async {
        let cluster = RedisCluster::start().await;
        let a = instance(&cluster, &[]).await;
        let b = instance(&cluster, &[]).await;
        // Topics in the first slots, which `reshard` moves first.
        let meta = |t: &str| format!("sluicetest:{{{t}}}:meta");
        let mut topics = Vec::new();
        while topics.len() < 3 {
            let t = topic("rcmove");
            if cluster.slot(&meta(&t)) < MOVED {
                topics.push(t);
            }
        }
        let source = cluster.master_of(&meta(&topics[0]));
        let target = cluster
            .masters()
            .into_iter()
            .find(|&m| m != source)
            .expect("another master");

        let load = Load::start(&a, &b, &topics).await;

        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", cluster.nodes[source].port))
            .args(["--cluster-from", &cluster.node_id(source)])
            .args(["--cluster-to", &cluster.node_id(target)])
            .args(["--cluster-slots", &MOVED.to_string(), "--cluster-yes"])
            // One key per MIGRATE: a busy topic's slot stays half-moved longer.
            .args(["--cluster-pipeline", "1"])
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "reshard: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for t in &topics {
            assert_eq!(
                cluster.master_of(&meta(t)),
                target,
                "{t} moved to the target master"
            );
        }
        load.each_goes_on("the move").await;
        let (_, refused) = load.finish(&b).await;
        eprintln!("reshard: {refused} publishes refused with 503 while it lasted");
    })
    .await;
}
