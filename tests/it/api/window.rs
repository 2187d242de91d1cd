//! What the dedup window forgets, and what it does not: an idempotency key
//! past the window stores its event again; a producer sequence past it is
//! still a duplicate (the highest sequence is kept), only without the
//! original's cursor.

use std::time::Duration;

use crate::support::*;

on_both_stores! {
    #[tokio::test]
    idempotency_key_is_forgotten_after_the_window,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_producer_sequence_past_the_window_is_a_duplicate_without_a_cursor,
}

async fn idempotency_key_is_forgotten_after_the_window(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__LIMITS__DEDUP_WINDOW_SECS", "1")]).await;
        let t = "window";
        let r = b.publish(t, "A", &[("idempotency-key", "w")]).await;
        assert_eq!(r.status, 201);
        let first = r.cursor();
        let r = b.publish(t, "A", &[("idempotency-key", "w")]).await;
        assert_eq!(r.status, 200, "within the window: {}", r.text);
        let bb = &b;
        let second = wait_for(
            Duration::from_secs(20),
            "the key to expire",
            || async move {
                let r = bb.publish(t, "A", &[("idempotency-key", "w")]).await;
                assert!(
                    r.status == 200 || r.status == 201,
                    "{} {}",
                    r.status,
                    r.text
                );
                (r.status == 201).then(|| r.cursor())
            },
        )
        .await;
        assert_ne!(second, first);
        assert_eq!(b.count(t).await, 2);
    })
    .await;
}

async fn a_producer_sequence_past_the_window_is_a_duplicate_without_a_cursor(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__LIMITS__DEDUP_WINDOW_SECS", "1")]).await;
        let t = "window-producer";
        let p = |seq: &'static str| [("producer-id", "p"), ("producer-seq", seq)];
        for (seq, data) in [("1", "one"), ("2", "two")] {
            let r = b.publish(t, data, &p(seq)).await;
            assert_eq!(r.status, 201, "seq {seq}: {}", r.text);
        }
        // Within the window a duplicate names the original; then its record
        // expires and only the highest sequence is left to know it by.
        let bb = &b;
        let d = wait_for(
            Duration::from_secs(20),
            "seq 1's record to expire",
            || async move {
                let d = bb.publish(t, "one again", &p("1")).await;
                assert_eq!(d.status, 200, "seq 1 again is a duplicate: {}", d.text);
                d.json["cursor"].is_null().then_some(d)
            },
        )
        .await;
        assert_eq!(d.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(d.json["duplicate"].as_bool(), Some(true), "{}", d.text);
        assert_eq!(
            d.header("event-cursor"),
            None,
            "no Event-Cursor: {}",
            d.text
        );
        // The highest sequence still guards what follows.
        let g = b.publish(t, "four", &p("4")).await;
        assert_eq!(g.assert_problem(409)["expected_seq"].as_u64(), Some(3));
        let r3 = b.publish(t, "three", &p("3")).await;
        assert_eq!(r3.status, 201, "seq 3: {}", r3.text);
        let evs = b.all_events(t).await;
        let data: Vec<&str> = evs.iter().map(|e| e["data"].as_str().unwrap()).collect();
        assert_eq!(data, ["one", "two", "three"], "history");
    })
    .await;
}
