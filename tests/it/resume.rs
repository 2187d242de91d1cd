//! Exact resume: a subscriber that disconnects and reconnects with the id of
//! the last event it received gets every later event exactly once, in order,
//! whichever way it passes the cursor, while a publisher keeps publishing.

use std::time::Duration;

use crate::support::*;

on_both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    exact_resume_with_last_event_id,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    exact_resume_with_x_resume_cursor,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    exact_resume_with_cursor_query,
    #[tokio::test]
    resume_far_back_reads_the_whole_log,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fan_out_to_many_subscribers_is_identical,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    slow_subscriber_loses_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    stalled_subscriber_is_evicted_and_resumes_without_loss,
}

const T: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Via {
    LastEventId,
    ResumeHeader,
    Query,
}

async fn reconnect(b: &Api, topic: &str, via: Via, cursor: &str) -> SseStream {
    match via {
        Via::LastEventId => b.sse(topic, "", &[("last-event-id", cursor)]).await,
        Via::ResumeHeader => b.sse(topic, "", &[("x-resume-cursor", cursor)]).await,
        Via::Query => b.sse(topic, &format!("cursor={cursor}"), &[]).await,
    }
}

async fn exact_resume(store: Store, via: Via) {
    const N: u64 = 300;
    let b = Broker::start(store, &[("SLUICE__STREAM__HEARTBEAT_SECS", "1")]).await;
    let t = format!("resume-{via:?}").to_lowercase();
    let t = t.as_str();

    let publisher = async {
        let mut cursors = Vec::with_capacity(N as usize);
        for i in 0..N {
            cursors.push(b.publish_ok(t, &format!("{{\"seq\":{i}}}")).await);
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        cursors
    };

    let subscriber = async {
        let mut got: Vec<(u64, String)> = Vec::new();
        let mut last: Option<String> = None;
        let mut round = 0usize;
        let mut reconnects = 0usize;
        while (got.len() as u64) < N {
            let mut s = match &last {
                None => b.sse(t, "from=earliest", &[]).await,
                Some(c) => {
                    reconnects += 1;
                    reconnect(&b, t, via, c).await
                }
            };
            s.assert_ok();
            let take = 7 + (round * 13) % 41;
            for _ in 0..take {
                let m = s
                    .next_event(T)
                    .await
                    .unwrap_or_else(|| panic!("stream stalled after {} events", got.len()));
                let id = msg_id(&m);
                got.push((seq_of(&m.data), id.clone()));
                last = Some(id);
                if got.len() as u64 == N {
                    break;
                }
            }
            drop(s);
            round += 1;
        }
        // Reconnecting at the end delivers nothing more (no duplicate).
        let mut s = reconnect(&b, t, via, last.as_deref().unwrap()).await;
        s.assert_ok();
        s.expect_no_event(Duration::from_millis(500)).await;
        (got, reconnects)
    };

    let (cursors, (got, reconnects)) = tokio::join!(publisher, subscriber);
    assert!(
        reconnects >= 5,
        "the test should reconnect several times: {reconnects}"
    );
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "every event exactly once, in order ({via:?})"
    );
    let ids: Vec<String> = got.into_iter().map(|g| g.1).collect();
    assert_eq!(ids, cursors, "SSE ids are the publish cursors");

    // Every stream dropped mid-flight is gone from the broker.
    let bb = &b;
    wait_until(T, "active_connections back to 0", || async move {
        bb.get("/healthz?probe=stream").await.json["active_connections"] == 0
    })
    .await;
    wait_until(T, "topic subscribers back to 0", || async move {
        bb.get(&format!("/v1/topics/{t}")).await.json["subscribers"] == 0
    })
    .await;
}

async fn exact_resume_with_last_event_id(store: Store) {
    bounded(120, exact_resume(store, Via::LastEventId)).await;
}

async fn exact_resume_with_x_resume_cursor(store: Store) {
    bounded(120, exact_resume(store, Via::ResumeHeader)).await;
}

async fn exact_resume_with_cursor_query(store: Store) {
    bounded(120, exact_resume(store, Via::Query)).await;
}

/// Resuming far back reads from the store, not only from an in-memory tail.
async fn resume_far_back_reads_the_whole_log(store: Store) {
    bounded(120, async {
        let b = Broker::start(store, &[]).await;
        let t = "deep";
        let mut cursors = Vec::new();
        for chunk in 0..5u64 {
            let body: String = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| format!("{{\"data\":{{\"seq\":{i}}}}}\n"))
                .collect();
            let r = b.batch(t, &body).await;
            assert_eq!(r.status, 200, "{}", r.text);
            cursors.extend(
                r.json["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["cursor"].as_str().unwrap().to_string()),
            );
        }
        for start in [9usize, 2500] {
            let mut s = b.sse(t, "", &[("last-event-id", &cursors[start])]).await;
            s.assert_ok();
            let want = 5000 - start - 1;
            let ms = s.expect_events(want, Duration::from_secs(60)).await;
            for (k, m) in ms.iter().enumerate() {
                let i = start + 1 + k;
                assert_eq!(seq_of(&m.data), i as u64, "resumed after {start}");
                assert_eq!(msg_id(m), cursors[i]);
            }
            s.expect_no_event(Duration::from_millis(300)).await;
        }
    })
    .await;
}

/// Several live subscribers see the same sequence while two publishers race.
async fn fan_out_to_many_subscribers_is_identical(store: Store) {
    bounded(120, async {
        let b = Broker::start(store, &[]).await;
        let t = "fan";
        let mut subs = Vec::new();
        for _ in 0..5 {
            let s = b.sse(t, "from=earliest", &[]).await;
            s.assert_ok();
            subs.push(s);
        }
        let publish = |tag: &'static str| {
            let b = &b;
            async move {
                let mut cs = Vec::new();
                for i in 0..100 {
                    cs.push(
                        b.publish_ok(t, &format!("{{\"p\":\"{tag}\",\"seq\":{i}}}"))
                            .await,
                    );
                }
                cs
            }
        };
        let (ca, cb) = tokio::join!(publish("a"), publish("b"));
        let mut all: Vec<String> = ca.iter().chain(cb.iter()).cloned().collect();
        all.sort();
        let mut first: Option<Vec<String>> = None;
        for s in subs.iter_mut() {
            let ids: Vec<String> = s.expect_events(200, T).await.iter().map(msg_id).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(ids, sorted, "delivery order is cursor order");
            assert_eq!(sorted, all, "every acknowledged event delivered once");
            match &first {
                None => first = Some(ids),
                Some(f) => assert_eq!(&ids, f, "every subscriber sees the same order"),
            }
        }
        // Each publisher's events are in its own order.
        let hist = b.all_events(t).await;
        for tag in ["a", "b"] {
            let seqs: Vec<u64> = hist
                .iter()
                .filter_map(|e| {
                    let v: serde_json::Value = serde_json::from_str(e["data"].as_str()?).ok()?;
                    (v["p"] == tag).then(|| v["seq"].as_u64().unwrap())
                })
                .collect();
            assert_eq!(seqs, (0..100).collect::<Vec<_>>(), "publisher {tag} order");
        }
    })
    .await;
}

/// A subscriber that stops reading while lots is published loses nothing
/// once it reads again (it lags, catches up, rejoins live).
async fn slow_subscriber_loses_nothing(store: Store) {
    bounded(120, async {
        let b = Broker::start(store, &[]).await;
        let t = "slow";
        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let mut fast = b.sse(t, "from=earliest", &[]).await;
        fast.assert_ok();
        let pad = "p".repeat(1000);
        const N: u64 = 4000;
        for chunk in 0..(N / 500) {
            let body: String = (chunk * 500..(chunk + 1) * 500)
                .map(|i| {
                    format!("{{\"data\":\"{{\\\"seq\\\":{i},\\\"pad\\\":\\\"{pad}\\\"}}\"}}\n")
                })
                .collect();
            let r = b.batch(t, &body).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let mut next = 0u64;
        for stream in [&mut fast, &mut s] {
            next = 0;
            let ms = stream
                .expect_events(N as usize, Duration::from_secs(60))
                .await;
            for m in &ms {
                assert_eq!(seq_of(&m.data), next, "no gap, no duplicate");
                next += 1;
            }
        }
        assert_eq!(next, N);
        // Both are live again.
        let c = b.publish_ok(t, "{\"seq\":4000}").await;
        assert_eq!(msg_id(&s.expect_event(T).await), c);
        assert_eq!(msg_id(&fast.expect_event(T).await), c);
    })
    .await;
}

/// A subscriber that takes nothing for longer than stall_timeout_secs is
/// disconnected (the others keep going at full speed), and resuming with its
/// last id loses nothing.
async fn stalled_subscriber_is_evicted_and_resumes_without_loss(store: Store) {
    bounded(180, async {
        let b = Broker::start(
            store,
            &[
                ("SLUICE__STREAM__STALL_TIMEOUT_SECS", "2"),
                ("SLUICE__STREAM__HEARTBEAT_SECS", "1"),
            ],
        )
        .await;
        let t = "stall";
        let mut slow = b.sse(t, "from=earliest", &[]).await;
        slow.assert_ok();
        let mut fast = b.sse(t, "from=earliest", &[]).await;
        fast.assert_ok();
        const BATCH: u64 = 500;
        const N: u64 = 48 * BATCH; // about 24 MB
        let pad = "p".repeat(1000);

        let publisher = async {
            for chunk in 0..N / BATCH {
                let body: String = (chunk * BATCH..(chunk + 1) * BATCH)
                    .map(|i| {
                        format!("{{\"data\":\"{{\\\"seq\\\":{i},\\\"pad\\\":\\\"{pad}\\\"}}\"}}\n")
                    })
                    .collect();
                let r = b.batch(t, &body).await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
        };
        let fast_reader = async {
            let mut next = 0u64;
            while next < N {
                let m = fast
                    .next_event(Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|| panic!("fast subscriber stalled at {next}"));
                assert_eq!(seq_of(&m.data), next, "fast subscriber order");
                next += 1;
            }
        };
        tokio::join!(publisher, fast_reader);

        // The slow one is disconnected by the broker: only the fast one is left.
        let bb = &b;
        wait_until(
            Duration::from_secs(30),
            "the stalled stream to be evicted",
            || async move {
                bb.get("/v1/connections").await.json["connections"]
                    .as_array()
                    .is_some_and(|rows| rows.len() == 1 && rows[0]["events_sent"] == N)
            },
        )
        .await;

        // The slow client now reads what reached it, sees the end, resumes.
        let mut next = 0u64;
        let mut last: Option<String> = None;
        let mut ended = 0;
        loop {
            match slow.next_item(Duration::from_secs(30)).await {
                Some(SseItem::Message(m)) => {
                    assert_eq!(
                        seq_of(&m.data),
                        next,
                        "slow subscriber: no gap, no duplicate"
                    );
                    next += 1;
                    last = Some(msg_id(&m));
                    if next == N {
                        break;
                    }
                }
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(SseItem::Eof) | Some(SseItem::Error(_)) => {
                    ended += 1;
                    assert!(ended < 20, "too many reconnects");
                    slow = match &last {
                        Some(c) => b.sse(t, "", &[("last-event-id", c)]).await,
                        None => b.sse(t, "from=earliest", &[]).await,
                    };
                    slow.assert_ok();
                }
                None => panic!("slow subscriber got nothing for 30 s at {next}"),
            }
        }
        assert!(ended >= 1, "the stalled stream was ended by the broker");
        assert_eq!(next, N);
    })
    .await;
}
