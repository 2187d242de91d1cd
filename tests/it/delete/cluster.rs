//! A delete through one Redis instance, seen by another that streams the
//! topic: its streams end, it neither serves nor recreates the old log, and
//! it serves the new one.

use std::time::Duration;

use super::{assert_gone, assert_other_log, delete, expect_end, T};
use crate::support::{redis::RedisServer, *};

/// An instance of a cluster sharing `redis`, in this process.
async fn member(redis: &RedisServer) -> Broker {
    Broker::with(
        Setup::new(Store::Redis)
            .redis(&redis.url(), "deltest")
            .env(&[super::HB]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_delete_through_one_instance_ends_streams_on_another() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let a = member(&redis).await;
        let b = member(&redis).await;
        let t = topic("shared");
        let old = a.publish_numbered(&t, 0..3).await;
        let old_epoch = cursor_epoch(&old[2]).to_string();
        let mut on_b = b.sse(&t, "from=earliest", &[]).await;
        on_b.assert_ok();
        let ids: Vec<String> = on_b.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, old);

        let r = delete(&a, &t).await;
        assert_eq!(r.status, 204, "DELETE through A: {}", r.text);
        // B learns that the log is gone (it checks every 5 s) and ends its
        // stream; its client reads the end of the body.
        let end = expect_end(&mut on_b, Duration::from_secs(15), "B's stream").await;
        assert_eq!(end, SseItem::Eof, "B's stream must end cleanly");
        for (name, x) in [("A", &a), ("B", &b)] {
            assert_gone(x, &t, name).await;
        }
        // Redis holds nothing of the old log (dedup records, which expire
        // with the dedup window, are none here: no key was used).
        let keys = redis.cli(&["KEYS", &format!("deltest:{{{t}}}:*")]);
        assert!(keys.trim().is_empty(), "keys left of {t}: {keys}");

        // A publish on A starts a new log, and B serves it.
        let fresh = a.publish_ok(&t, "new").await;
        assert_ne!(cursor_epoch(&fresh), old_epoch);
        let mut s = b.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        assert_eq!(
            msg_id(&s.expect_event(T).await),
            fresh,
            "B serves the new log"
        );
        let r = b.sse(&t, "", &[("last-event-id", &old[2])]).await;
        let p = r.assert_problem(416).clone();
        assert_other_log("resume on B", &p, r.header("x-next-cursor"), &old_epoch);
        // B publishes into the new log too, never into the old one.
        let on_b_pub = b.publish_ok(&t, "from B").await;
        assert_eq!(cursor_epoch(&on_b_pub), cursor_epoch(&fresh));
        assert_eq!(msg_id(&s.expect_event(T).await), on_b_pub);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dedup_records_of_a_deleted_log_are_not_the_new_logs() {
    bounded(60, async {
        let redis = RedisServer::start().await;
        let a = member(&redis).await;
        let t = topic("dedup");
        let key = [("idempotency-key", "k1")];
        let r = a.publish(&t, "same", &key).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let pseq = [("producer-id", "p"), ("producer-seq", "1")];
        assert_eq!(a.publish(&t, "p1", &pseq).await.status, 201);
        assert_eq!(delete(&a, &t).await.status, 204);
        // The key's record outlives the log (it expires with the dedup
        // window) ...
        let left = redis.cli(&["KEYS", &format!("deltest:{{{t}}}:k:*")]);
        assert!(
            !left.trim().is_empty(),
            "the test expects the record kept: {left}"
        );
        // ... but the new log does not take it for its own: the same key
        // and body are stored anew, not answered with the old cursor.
        let r = a.publish(&t, "same", &key).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(cursor_seq(&r.cursor()), 1);
        let r = a.publish(&t, "same", &key).await;
        assert_eq!(
            r.status, 200,
            "a repeat in the new log is a duplicate: {}",
            r.text
        );
        assert_eq!(cursor_seq(&r.cursor()), 1);
        // A producer starts over: its first sequence in the new log is
        // accepted, and a repeat there is a duplicate of the new event.
        let r = a.publish(&t, "p1 again", &pseq).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = a.publish(&t, "p1 again", &pseq).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(cursor_seq(&r.cursor()), 2, "the new log's event");
    })
    .await;
}
