//! A slot migration (`redis-cli --cluster reshard`) of busy topics under
//! publishing load: nothing lost, nothing duplicated, live streams go on.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use super::{assert_exact, instance, keyed_publisher, until_more, Progress};
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

        let mut streams = Vec::new();
        for t in &topics {
            let s = b.sse(t, "from=earliest", &[]).await;
            s.assert_ok();
            streams.push(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Vec<Arc<Progress>> = topics.iter().map(|_| Arc::default()).collect();
        // Idempotency keys on some topics, producer sequences on another.
        let publishers: Vec<_> = topics
            .iter()
            .zip(&acked)
            .enumerate()
            .map(|(i, (t, n))| {
                keyed_publisher(a.base_url(), t.clone(), i == 1, stop.clone(), n.clone())
            })
            .collect();
        until_more(&acked[0].acked, 100, "publishing before the reshard").await;

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
        for (i, n) in acked.iter().enumerate() {
            until_more(
                &n.acked,
                100,
                &format!("publishing on {} after the move", topics[i]),
            )
            .await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut refused = 0;
        for ((p, t), s) in publishers.into_iter().zip(&topics).zip(&mut streams) {
            let (cursors, r) = p.await.expect("publisher");
            refused += r;
            assert_exact(&b, t, s, 0, &cursors).await;
        }
        eprintln!("reshard: {refused} publishes refused with 503 while it lasted");
    })
    .await;
}
