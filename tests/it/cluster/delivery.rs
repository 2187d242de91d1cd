//! Publish on one instance, deliver on another; idempotency keys and
//! producer sequences across instances; following other instances' appends
//! only while subscribed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use serde_json::json;
use tokio::time::Instant;

use super::{assert_replayed, instance, instance_process, T};
use crate::support::{redis::RedisServer, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_a_is_delivered_by_b_in_order_with_the_same_cursors() {
    bounded(120, async {
        const N: u64 = 500;
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let t = topic("xinst");

        // The topic is created by B's subscription, before anything exists.
        let mut live = b.sse(&t, "from=latest", &[]).await;
        live.assert_ok();

        let started = Instant::now();
        let cursors = a.publish_numbered(&t, 0..N).await;
        let msgs = live
            .expect_events(N as usize, Duration::from_secs(30))
            .await;
        let took = started.elapsed();
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(seq_of(&m.data), i as u64, "B delivered out of order");
            assert_eq!(
                msg_id(m),
                cursors[i],
                "event {i}: B's id must be the cursor A answered"
            );
        }
        live.expect_no_event(Duration::from_millis(500)).await;
        eprintln!("{N} events published on A and delivered live by B in {took:?}");

        // B also serves them from the store: a late stream from earliest and history.
        let mut late = b.sse(&t, "from=earliest", &[]).await;
        late.assert_ok();
        let again = late.expect_events(N as usize, T).await;
        let ids: Vec<String> = again.iter().map(msg_id).collect();
        assert_eq!(ids, cursors, "B's replay from earliest");
        let hist = b.all_events(&t).await;
        let hist_ids: Vec<&str> = hist.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
        assert_eq!(hist_ids, cursors, "B's history");
    })
    .await;
}

/// An instance follows another's appends only while it has subscribers on
/// the topic (its one tailer reads just those). After its last subscriber
/// left, what was published elsewhere meanwhile is still known exactly:
/// the topic's latest cursor, a `from=latest` stream that starts after it,
/// and a resume by cursor that delivers the missed events, even from a
/// cursor this instance never applied.
#[tokio::test]
async fn an_instance_without_subscribers_stops_tailing_and_catches_up_exactly() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        // Processes: each reads its own gauge in its own /metrics.
        let a = instance_process(&redis, &[]).await;
        let b = instance_process(&redis, &[]).await;
        let t = topic("rewatch");
        let first = a.publish_numbered(&t, 0..3).await;
        async fn watched(x: &Api) -> f64 {
            x.metrics().await.value("sluice_store_watched_topics")
        }
        let mut s = b.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let got: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, first);
        wait_until(T, "B follows the topic", || async {
            watched(&b).await == 1.0
        })
        .await;
        assert_eq!(
            watched(&a).await,
            0.0,
            "A publishes but has no subscriber: it follows nothing"
        );
        drop(s);
        wait_until(
            T,
            "B stops following the topic once its stream closed",
            || async { watched(&b).await == 0.0 },
        )
        .await;

        // Published on A while B has nobody on the topic.
        let missed = a.publish_numbered(&t, 3..8).await;
        // A client that read up to missed[1] from A resumes on B, which
        // has not applied any of them: the events after it, not a 416
        // "ahead of the latest event".
        let mut ahead = b.sse(&t, "", &[("last-event-id", &missed[1])]).await;
        ahead.assert_ok();
        let got: Vec<String> = ahead.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, missed[2..], "a resume from a cursor B had not seen");
        drop(ahead);
        wait_until(T, "B stops following the topic again", || async {
            watched(&b).await == 0.0
        })
        .await;
        let info = b.get(&format!("/v1/topics/{t}")).await;
        assert_eq!(
            info.json["latest_cursor"].as_str(),
            Some(missed[4].as_str()),
            "B's view of the topic: {}",
            info.text
        );

        // `from=latest` on B starts after A's latest, not after B's last view.
        let mut live = b.sse(&t, "from=latest", &[]).await;
        live.assert_ok();
        let mut resumed = b.sse(&t, "", &[("last-event-id", &first[2])]).await;
        resumed.assert_ok();
        let after = a.publish_numbered(&t, 8..11).await;
        let got: Vec<String> = live.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(
            got, after,
            "a live stream gets exactly what came after it opened"
        );
        live.expect_no_event(Duration::from_millis(300)).await;
        let want: Vec<String> = missed.iter().chain(&after).cloned().collect();
        let got: Vec<String> = resumed
            .expect_events(8, T)
            .await
            .iter()
            .map(msg_id)
            .collect();
        assert_eq!(
            got, want,
            "a resume gets what it missed, then live, once each"
        );
        resumed.expect_no_event(Duration::from_millis(300)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Idempotency keys and producer sequences across instances
// ---------------------------------------------------------------------------

/// One request of `concurrently`: instance base URL, body, headers.
type Req = (String, String, Vec<(String, String)>);

/// Sends every request at once; returns the answers in order.
async fn concurrently(topic: &str, reqs: Vec<Req>) -> Vec<Resp> {
    let c = http_client();
    let gate = Arc::new(tokio::sync::Barrier::new(reqs.len()));
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|(base, body, headers)| {
            let (c, gate, topic) = (c.clone(), gate.clone(), topic.to_owned());
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                gate.wait().await;
                try_publish(&c, &base, &topic, &body, &h)
                    .await
                    .unwrap_or_else(|e| panic!("publish to {base}: {e}"))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_concurrently_to_a_and_b_is_stored_once() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let bases = [a.base_url(), b.base_url()];

        // 300 requests, one key, alternating between A and B.
        let t = topic("idem-one");
        let reqs = (0..300)
            .map(|i| {
                (
                    bases[i % 2].clone(),
                    "the one event".to_string(),
                    vec![("idempotency-key".to_string(), "same-key".to_string())],
                )
            })
            .collect();
        let answers = concurrently(&t, reqs).await;
        let created: Vec<&Resp> = answers.iter().filter(|a| a.status == 201).collect();
        assert_eq!(
            created.len(),
            1,
            "exactly one 201 for one key; statuses: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        let cursor = created[0].cursor();
        assert_eq!(created[0].json["duplicate"], json!(false));
        for (i, ans) in answers.iter().enumerate() {
            if ans.status != 201 {
                assert_replayed(ans, &cursor, &format!("request {i}"));
            }
        }
        for (name, broker) in [("A", &a), ("B", &b)] {
            let evs = broker.all_events(&t).await;
            assert_eq!(evs.len(), 1, "history on {name}: {evs:?}");
            assert_eq!(evs[0]["cursor"], json!(cursor));
            assert_eq!(evs[0]["data"], json!("the one event"));
        }
        // The same key with another body, on the instance that did not
        // store it: refused, nothing stored (the append script's `c`).
        let reused = b
            .publish(&t, "another event", &[("idempotency-key", "same-key")])
            .await;
        assert_eq!(
            reused.assert_problem(422)["type"],
            json!("https://sluice.dev/problems/idempotency-key-conflict")
        );
        assert_eq!(a.all_events(&t).await.len(), 1, "nothing more stored");

        // 20 keys, each sent 10 times (5 to A, 5 to B), all at once.
        let t = topic("idem-many");
        let mut reqs = Vec::new();
        for k in 0..20 {
            for i in 0..10 {
                reqs.push((
                    bases[i % 2].clone(),
                    format!("event {k}"),
                    vec![("idempotency-key".to_string(), format!("key-{k}"))],
                ));
            }
        }
        let answers = concurrently(&t, reqs).await;
        let mut by_key: HashMap<usize, Vec<&Resp>> = HashMap::new();
        for (i, ans) in answers.iter().enumerate() {
            by_key.entry(i / 10).or_default().push(ans);
        }
        let mut key_cursor = HashMap::new();
        for (k, list) in &by_key {
            let created: Vec<&&Resp> = list.iter().filter(|a| a.status == 201).collect();
            assert_eq!(
                created.len(),
                1,
                "key-{k}: statuses {:?}",
                list.iter().map(|a| a.status).collect::<Vec<_>>()
            );
            let cursor = created[0].cursor();
            for ans in list.iter().filter(|a| a.status != 201) {
                assert_replayed(ans, &cursor, &format!("key-{k}"));
            }
            key_cursor.insert(*k, cursor);
        }
        let evs = a.all_events(&t).await;
        assert_eq!(evs.len(), 20, "20 keys, 20 events: {evs:?}");
        for e in &evs {
            let k: usize = e["data"].as_str().unwrap()[6..].parse().unwrap();
            assert_eq!(e["cursor"], json!(key_cursor[&k]), "event {k}'s cursor");
        }
        let distinct: HashSet<&String> = key_cursor.values().collect();
        assert_eq!(distinct.len(), 20, "every key has its own cursor");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sequences_hold_across_instances() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let t = topic("producer");
        let p = |seq: &'static str| [("producer-id", "p"), ("producer-seq", seq)];

        let r1 = a.publish(&t, "one", &p("1")).await;
        assert_eq!(r1.status, 201, "seq 1 on A: {}", r1.text);
        let c1 = r1.cursor();
        let r2 = b.publish(&t, "two", &p("2")).await;
        assert_eq!(r2.status, 201, "seq 2 on B: {}", r2.text);
        let c2 = r2.cursor();

        let d = a.publish(&t, "two", &p("2")).await;
        assert_eq!(d.status, 200, "seq 2 again on A is a duplicate: {}", d.text);
        assert_eq!(d.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(d.cursor(), c2, "the duplicate answers the original cursor");

        let g = b.publish(&t, "four", &p("4")).await;
        let prob = g.assert_problem(409);
        assert_eq!(
            prob["expected_seq"].as_u64(),
            Some(3),
            "seq 4 on B skips 3: {}",
            g.text
        );

        // A has only seen seq 1 itself: seq 3 must still be accepted there.
        let r3 = a.publish(&t, "three", &p("3")).await;
        assert_eq!(r3.status, 201, "seq 3 on A after seq 2 on B: {}", r3.text);
        let d1 = b.publish(&t, "one", &p("1")).await;
        assert_eq!(d1.status, 200, "seq 1 on B is a duplicate: {}", d1.text);
        assert_eq!(d1.cursor(), c1);

        // Seq 4, 20 times at once on A and B: stored once.
        let bases = [a.base_url(), b.base_url()];
        let reqs = (0..20)
            .map(|i| {
                (
                    bases[i % 2].clone(),
                    "four".to_string(),
                    vec![
                        ("producer-id".to_string(), "p".to_string()),
                        ("producer-seq".to_string(), "4".to_string()),
                    ],
                )
            })
            .collect();
        let answers = concurrently(&t, reqs).await;
        let created: Vec<&Resp> = answers.iter().filter(|a| a.status == 201).collect();
        assert_eq!(
            created.len(),
            1,
            "seq 4 sent 20 times: statuses {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        let c4 = created[0].cursor();
        for ans in answers.iter().filter(|a| a.status != 201) {
            assert_replayed(ans, &c4, "concurrent seq 4");
        }

        let evs = b.all_events(&t).await;
        let data: Vec<&str> = evs.iter().map(|e| e["data"].as_str().unwrap()).collect();
        assert_eq!(data, ["one", "two", "three", "four"], "history");
    })
    .await;
}
