//! Cross-instance delivery, exact resume, idempotency keys and producer
//! sequences, listing and delete, with topics on every master.

use std::collections::HashSet;

use serde_json::json;

use super::{instance, live_streams, spread_topics, T};
use crate::support::{redis_cluster::RedisCluster, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_every_master_deliver_resume_and_deduplicate_across_instances() {
    bounded(120, async {
        let cluster = RedisCluster::start().await;
        let a = instance(&cluster, &[]).await;
        let b = instance(&cluster, &[]).await;
        let topics = spread_topics(&cluster, "rc", 6);

        // Live on B what A publishes, each topic on its own master's slot.
        let mut live = live_streams(&b, &topics).await;
        let mut cursors = Vec::new();
        for t in &topics {
            cursors.push(a.publish_numbered(t, 0..20).await);
        }
        for (i, s) in live.iter_mut().enumerate() {
            let got: Vec<String> = s.expect_events(20, T).await.iter().map(msg_id).collect();
            assert_eq!(got, cursors[i], "B's live stream of {}", topics[i]);
        }

        // Exact resume on B from a cursor A answered.
        for (i, t) in topics.iter().enumerate() {
            let mut r = b.sse(t, "", &[("last-event-id", &cursors[i][9])]).await;
            r.assert_ok();
            let got: Vec<String> = r.expect_events(10, T).await.iter().map(msg_id).collect();
            assert_eq!(got, cursors[i][10..], "resume on B of {t}");
        }

        // One idempotency key sent to A and B at once: stored once.
        let t = &topics[0];
        let mut tasks = Vec::new();
        for i in 0..40 {
            let base = [a.base_url(), b.base_url()][i % 2].clone();
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                try_publish(
                    &http_client(),
                    &base,
                    &t,
                    "once",
                    &[("idempotency-key", "k1")],
                )
                .await
                .expect("publish")
            }));
        }
        let mut statuses = Vec::new();
        let mut replayed = HashSet::new();
        for task in tasks {
            let r = task.await.expect("task");
            statuses.push(r.status);
            if r.status == 200 {
                replayed.insert(r.cursor());
            }
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            1,
            "one 201 for one key: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            39,
            "{statuses:?}"
        );
        assert_eq!(replayed.len(), 1, "every replay names the one event");

        // Producer sequences across instances, on another master's topic.
        let t = &topics[1];
        let p = |seq: &'static str| [("producer-id", "p"), ("producer-seq", seq)];
        let one = a.publish(t, "one", &p("1")).await;
        assert_eq!(one.status, 201, "{}", one.text);
        let dup = b.publish(t, "one", &p("1")).await;
        assert_eq!(dup.status, 200, "seq 1 again on B: {}", dup.text);
        assert_eq!(dup.cursor(), one.cursor());
        let gap = b.publish(t, "three", &p("3")).await;
        assert_eq!(gap.assert_problem(409)["expected_seq"], json!(2));
        assert_eq!(b.publish(t, "two", &p("2")).await.status, 201);

        // Listing (the registry's own slot) and delete (the topic's slot).
        let list = a.get("/v1/topics").await;
        for t in &topics {
            assert!(list.text.contains(t.as_str()), "{t} listed: {}", list.text);
        }
        let del = a
            .request(
                reqwest::Method::DELETE,
                &format!("/v1/topics/{}", topics[2]),
                &[],
                None,
            )
            .await;
        assert_eq!(del.status, 204, "delete: {}", del.text);
        assert_eq!(
            b.history(&topics[2], "").await.status,
            404,
            "deleted on B too"
        );
        let again = a.publish(&topics[2], "new life", &[]).await;
        assert_eq!(again.status, 201, "recreated: {}", again.text);
        assert_eq!(b.count(&topics[2]).await, 1, "the new log has one event");
    })
    .await;
}
