//! Store faults: failing appends restart the topic actor and lose or
//! duplicate nothing; slow appends fill the topic queue (503).

use std::{collections::HashMap, time::Duration};

use super::{ps, publish_until_stored, read_checked};
use crate::support::*;

on_both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    injected_store_faults_lose_and_duplicate_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    full_topic_queue_answers_503_and_stores_nothing,
}

/// Every 7th append fails before reaching the store. Four publishers retry
/// with the same Idempotency-Key until stored. The topic actor restarts (the
/// restart metric counts it), the history holds every acknowledged event
/// exactly once at its acknowledged cursor, a live subscriber sees every
/// event in order with no gap or duplicate, and so does one that drops
/// halfway and resumes with Last-Event-ID.
async fn injected_store_faults_lose_and_duplicate_nothing(store: Store) {
    const PUBLISHERS: usize = 4;
    const EACH: u64 = 50;
    const TOTAL: usize = PUBLISHERS * EACH as usize;
    bounded(240, async {
        let b = BrokerProcess::start(
            store,
            &[
                ("SLUICE_TEST_FAULTS", "append_fail_every=7"),
                ("SLUICE__LOG__LEVEL", "warn"),
            ],
        )
        .await;
        let t = topic("faults");
        let mut live = b.sse(&t, "from=earliest", &[]).await;
        live.assert_ok();
        let mut resumer = b.sse(&t, "from=earliest", &[]).await;
        resumer.assert_ok();

        let pubs = (0..PUBLISHERS).map(|p| {
            let (b, t) = (&b, &t);
            async move {
                let mut acked = Vec::new();
                let mut refused = 0;
                for s in 0..EACH {
                    let (cursor, r) = publish_until_stored(b, t, p, s).await;
                    refused += r;
                    acked.push(((p, s), cursor));
                }
                (acked, refused)
            }
        });
        // The resumer reads half the events, then drops and resumes by id.
        let reader = read_checked(
            &mut resumer,
            "resumer",
            TOTAL / 2,
            PUBLISHERS,
            vec![],
            vec![],
        );
        let (results, half) = tokio::join!(futures_util::future::join_all(pubs), reader);
        drop(resumer);

        let mut acked: HashMap<(usize, u64), String> = HashMap::new();
        let mut refused = 0;
        for (a, r) in results {
            refused += r;
            acked.extend(a);
        }
        assert_eq!(acked.len(), TOTAL);
        assert!(
            refused > 0,
            "append_fail_every=7 must have refused some publishes"
        );

        let m = b.metrics().await;
        assert!(
            m.value("sluice_actor_restarts_total") >= 1.0,
            "the topic actor must have been restarted"
        );
        assert!(m.value("sluice_store_errors_total") >= 1.0);

        // History: every acknowledged event once, at its cursor, in order.
        let events = b.all_events(&t).await;
        assert_eq!(
            events.len(),
            TOTAL,
            "history must hold each acknowledged event exactly once"
        );
        let mut seen: HashMap<(usize, u64), String> = HashMap::new();
        let mut prev = String::new();
        for e in &events {
            let c = e["cursor"].as_str().unwrap().to_string();
            assert!(c > prev, "history out of order at {c}");
            prev = c.clone();
            let key = ps(e["data"].as_str().unwrap());
            assert!(seen.insert(key, c).is_none(), "{key:?} stored twice");
        }
        assert_eq!(
            seen, acked,
            "each event is stored at the cursor its publisher was given"
        );

        // The live subscriber saw everything, in order, once.
        let ids = read_checked(&mut live, "live", TOTAL, PUBLISHERS, vec![], vec![]).await;
        live.expect_no_event(Duration::from_millis(300)).await;
        let history_ids: Vec<String> = events
            .iter()
            .map(|e| e["cursor"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, history_ids, "the live stream is the history");

        // The resumer resumes after its last id and gets the rest.
        let last = half.last().unwrap().clone();
        let mut next = vec![0u64; PUBLISHERS];
        for e in &events[..half.len()] {
            let (p, _) = ps(e["data"].as_str().unwrap());
            next[p] += 1;
        }
        let mut resumed = b.sse(&t, "", &[("last-event-id", &last)]).await;
        resumed.assert_ok();
        let all = read_checked(&mut resumed, "resumed", TOTAL, PUBLISHERS, next, half).await;
        assert_eq!(all, history_ids);
        resumed.expect_no_event(Duration::from_millis(300)).await;
    })
    .await;
}

/// Appends take 300 ms and a topic queues at most 2 publish requests: of
/// 40 concurrent publishes some are refused with 503, Retry-After and a
/// problem body; exactly the accepted ones are stored.
async fn full_topic_queue_answers_503_and_stores_nothing(store: Store) {
    bounded(120, async {
        let b = BrokerProcess::start(
            store,
            &[
                ("SLUICE_TEST_FAULTS", "append_delay_ms=300"),
                ("SLUICE__TOPICS__MAILBOX_CAPACITY", "2"),
                ("SLUICE__LOG__LEVEL", "warn"),
            ],
        )
        .await;
        let t = topic("full");
        let rs = futures_util::future::join_all((0..40).map(|i| {
            let (b, t) = (&b, &t);
            async move { b.publish(t, &format!("{{\"i\":{i}}}"), &[]).await }
        }))
        .await;
        let mut accepted = Vec::new();
        let mut refused = 0;
        for (i, r) in rs.iter().enumerate() {
            match r.status.as_u16() {
                201 => accepted.push(format!("{{\"i\":{i}}}")),
                503 => {
                    r.assert_problem(503);
                    let ra = r.header("retry-after").expect("503 without Retry-After");
                    assert!(
                        ra.parse::<u64>().is_ok_and(|s| s >= 1),
                        "Retry-After {ra:?}"
                    );
                    refused += 1;
                }
                _ => panic!("publish {i}: {} {}", r.status, r.text),
            }
        }
        assert!(
            refused > 0,
            "40 concurrent publishes into a queue of 2 must see 503s"
        );
        assert!(!accepted.is_empty());
        let mut stored: Vec<String> = b
            .all_events(&t)
            .await
            .iter()
            .map(|e| e["data"].as_str().unwrap().to_string())
            .collect();
        stored.sort();
        accepted.sort();
        assert_eq!(
            stored, accepted,
            "exactly the accepted publishes are stored"
        );
        let m = b.metrics().await;
        assert_eq!(
            m.value("sluice_publish_rejected_total{reason=\"overloaded\"}"),
            refused as f64
        );
    })
    .await;
}
