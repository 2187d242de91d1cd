//! NDJSON batches, idempotency keys and producer sequences.

use serde_json::Value;

use super::T;
use crate::support::*;

on_both_stores! {
    #[tokio::test]
    batch_stores_lines_in_order_with_consecutive_cursors,
    #[tokio::test]
    batch_non_string_data_is_stored_as_its_own_text,
    #[tokio::test]
    batch_with_an_invalid_line_is_rejected_whole,
    #[tokio::test]
    batch_over_max_batch_events_is_refused,
    #[tokio::test]
    batch_over_max_batch_bytes_is_413,
    #[tokio::test]
    idempotency_key_replays_and_conflicts,
    #[tokio::test]
    producer_sequences,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_publishes_with_one_idempotency_key_store_once,
}

// ---------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------

async fn batch_stores_lines_in_order_with_consecutive_cursors(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "batch";
        b.publish_ok(t, "before").await;
        let body = concat!(
            "{\"data\":\"s1\"}\n",
            "{\"data\":{\"k\": [1, 2], \"n\": null}, \"type\":\"obj\"}\n",
            "{\"data\":42}\n",
            "{\"data\":\"line1\\nline2\",\"idempotency_key\":\"bk-1\"}\n",
            "{\"data\":[true, false], \"type\":\"arr\"}\n",
        );
        let r = b.batch(t, body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["topic"], t, "{}", r.text);
        let results = r.json["results"].as_array().expect("results array");
        assert_eq!(results.len(), 5, "{}", r.text);
        let cursors: Vec<String> = results
            .iter()
            .map(|x| {
                assert_eq!(x["duplicate"], false, "{x}");
                x["cursor"].as_str().expect("cursor").to_string()
            })
            .collect();
        for (i, c) in cursors.iter().enumerate() {
            assert_eq!(
                cursor_seq(c),
                2 + i as u64,
                "consecutive positions in line order"
            );
        }

        let evs = b.all_events(t).await;
        assert_eq!(evs.len(), 6);
        let want = [
            ("before", Value::Null),
            ("s1", Value::Null),
            ("{\"k\":[1,2],\"n\":null}", Value::from("obj")),
            ("42", Value::Null),
            ("line1\nline2", Value::Null),
            ("[true,false]", Value::from("arr")),
        ];
        for (i, (ev, (d, ty))) in evs.iter().zip(want.iter()).enumerate() {
            assert_eq!(
                data_of(ev),
                *d,
                "event {i}: non-string data stored as compact JSON"
            );
            assert_eq!(&ev["type"], ty, "event {i} type");
            if i > 0 {
                assert_eq!(cursor_of(ev), cursors[i - 1]);
            }
        }

        let mut s = b.sse(t, "from=earliest", &[]).await;
        let ms = s.expect_events(6, T).await;
        assert_eq!(ms[2].event.as_deref(), Some("obj"));
        assert_eq!(&*ms[4].data, "line1\nline2");

        // A repeat of a stored idempotency key inside a batch is a duplicate
        // with the original cursor, stored once.
        let r = b
            .batch(
                t,
                "{\"data\":\"new\"}\n{\"data\":\"line1\\nline2\",\"idempotency_key\":\"bk-1\"}\n",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let res = r.json["results"].as_array().expect("results");
        assert_eq!(res.len(), 2);
        assert_eq!(res[0]["duplicate"], false);
        assert_eq!(cursor_seq(res[0]["cursor"].as_str().unwrap()), 7);
        assert_eq!(res[1]["duplicate"], true, "{}", r.text);
        assert_eq!(res[1]["cursor"].as_str(), Some(cursors[3].as_str()));
        assert_eq!(b.count(t).await, 7);

        // Without a trailing newline too.
        let r = b.batch(t, "{\"data\":\"last\"}").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(b.count(t).await, 8);
    })
    .await;
}

async fn batch_non_string_data_is_stored_as_its_own_text(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "batchtext";
        // (line, stored data): compact, but key order, number spelling and
        // string escapes as sent, not as a JSON library would respell them.
        let lines = [
            (r#"{"data":{"b":1,"a":[1, 2]}}"#, r#"{"b":1,"a":[1,2]}"#),
            (r#"{"data":1.10}"#, "1.10"),
            (r#"{"data":1e3}"#, "1e3"),
            (r#"{"data":18446744073709551616}"#, "18446744073709551616"),
            (
                r#"{"type":"t", "data": { "s" : "a  b\"\u00e9" } }"#,
                r#"{"s":"a  b\"\u00e9"}"#,
            ),
        ];
        let body: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
        let r = b.batch(t, &body).await;
        assert_eq!(r.status, 200, "{}", r.text);

        let evs = b.all_events(t).await;
        let got: Vec<&str> = evs.iter().map(data_of).collect();
        let want: Vec<&str> = lines.iter().map(|(_, d)| *d).collect();
        assert_eq!(got, want, "history poll");

        let mut s = b.sse(t, "from=earliest", &[]).await;
        let ms = s.expect_events(lines.len(), T).await;
        let got: Vec<&str> = ms.iter().map(|m| &*m.data).collect();
        assert_eq!(got, want, "SSE data");
    })
    .await;
}

async fn batch_with_an_invalid_line_is_rejected_whole(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__LIMITS__MAX_EVENT_BYTES", "100")]).await;
        let t = "badbatch";
        b.publish_ok(t, "seed").await;
        let cases: Vec<(String, u64)> = vec![
            ("{\"data\":\"a\"}\n{\"data\":\"b\"}\nnot json\n".into(), 3),
            ("{\"data\":\"a\"}\n{\"data\":\"b\",\"type\":\"bad type!\"}\n".into(), 2),
            ("[1,2]\n".into(), 1),
            // Broker notice names: a forged gap or token expiry.
            ("{\"data\":\"a\"}\n{\"data\":\"b\",\"type\":\"gap\"}\n".into(), 2),
            ("{\"data\":\"a\",\"type\":\"auth-expired\"}\n".into(), 1),
            (
                format!(
                    "{{\"data\":\"a\"}}\n{{\"data\":\"a\"}}\n{{\"data\":\"a\"}}\n{{\"data\":\"{}\"}}\n",
                    "x".repeat(200)
                ),
                4,
            ),
            (
                format!(
                    "{{\"data\":\"a\",\"idempotency_key\":\"{}\"}}\n",
                    "k".repeat(256)
                ),
                1,
            ),
        ];
        for (body, line) in cases {
            let r = b.batch(t, &body).await;
            assert!(
                r.status == 400 || (line == 4 && r.status == 413),
                "invalid batch must be refused, got {}: {} for {body:?}",
                r.status,
                r.text
            );
            if r.status == 400 {
                let p = r.assert_problem(400);
                if body.contains("\"gap\"") || body.contains("\"auth-expired\"") {
                    assert!(
                        p["detail"].as_str().is_some_and(|d| d.contains("reserved")),
                        "the problem says the type is reserved: {}",
                        r.text
                    );
                }
                assert_eq!(
                    p["line"].as_u64(),
                    Some(line),
                    "problem names the bad line (1-based): {}",
                    r.text
                );
            } else {
                r.assert_problem(413);
            }
            assert_eq!(b.count(t).await, 1, "nothing stored by a rejected batch");
        }
    })
    .await;
}

async fn batch_over_max_batch_events_is_refused(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__LIMITS__MAX_BATCH_EVENTS", "5")]).await;
        let t = "bigbatch";
        let line = |i: usize| format!("{{\"data\":\"e{i}\"}}\n");
        let six: String = (0..6).map(line).collect();
        let r = b.batch(t, &six).await;
        assert!(
            r.status == 400 || r.status == 413,
            "6 lines over a limit of 5: got {}: {}",
            r.status,
            r.text
        );
        r.assert_problem(r.status.as_u16());
        assert_eq!(b.count(t).await, 0, "nothing stored");
        let five: String = (0..5).map(line).collect();
        let r = b.batch(t, &five).await;
        assert_eq!(r.status, 200, "exactly the limit: {}", r.text);
        assert_eq!(b.count(t).await, 5);
    })
    .await;
}

async fn batch_over_max_batch_bytes_is_413(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__LIMITS__MAX_BATCH_BYTES", "1000")]).await;
        let t = "batchbytes";
        let body: String = (0..20)
            .map(|i| format!("{{\"data\":\"{i:02}{}\"}}\n", "x".repeat(80)))
            .collect();
        assert!(body.len() > 1000);
        let r = b.batch(t, &body).await;
        r.assert_problem(413);
        assert_eq!(b.count(t).await, 0, "nothing stored");
        let small: String = (0..5).map(|i| format!("{{\"data\":\"{i}\"}}\n")).collect();
        let r = b.batch(t, &small).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(b.count(t).await, 5);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Idempotency and producer sequences
// ---------------------------------------------------------------------------

async fn idempotency_key_replays_and_conflicts(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "idem";
        let r = b.publish(t, "A", &[("idempotency-key", "k1")]).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let c = r.cursor();
        assert_eq!(
            r.header("idempotent-replayed")
                .as_deref()
                .unwrap_or("false"),
            "false"
        );

        let r = b.publish(t, "A", &[("idempotency-key", "k1")]).await;
        assert_eq!(r.status, 200, "replay answers 200: {}", r.text);
        assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(r.cursor(), c, "original cursor");
        assert_eq!(r.header("event-cursor").as_deref(), Some(c.as_str()));
        assert_eq!(r.json["duplicate"], true, "{}", r.text);

        let r = b.publish(t, "B", &[("idempotency-key", "k1")]).await;
        r.assert_problem(422);

        // Keys are per topic.
        let r = b
            .publish("idem-other", "A", &[("idempotency-key", "k1")])
            .await;
        assert_eq!(
            r.status, 201,
            "same key on another topic is new: {}",
            r.text
        );
        // Another key on the same topic is new.
        let r = b.publish(t, "A", &[("idempotency-key", "k2")]).await;
        assert_eq!(r.status, 201, "{}", r.text);

        let datas: Vec<String> = b
            .all_events(t)
            .await
            .iter()
            .map(|e| data_of(e).to_string())
            .collect();
        assert_eq!(
            datas,
            vec!["A", "A"],
            "the replay and the conflict stored nothing"
        );
    })
    .await;
}

async fn producer_sequences(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "prod";
        let p = |seq: &'static str| [("producer-id", "p-1"), ("producer-seq", seq)];

        let r = b.publish(t, "five", &p("5")).await;
        assert_eq!(
            r.status, 201,
            "first sequence accepted whatever its value: {}",
            r.text
        );
        let r = b.publish(t, "six", &p("6")).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let c6 = r.cursor();

        let r = b.publish(t, "six", &p("6")).await;
        assert_eq!(r.status, 200, "duplicate: {}", r.text);
        assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(r.cursor(), c6, "original cursor");

        let r = b.publish(t, "three", &p("3")).await;
        assert_eq!(
            r.status, 200,
            "below the highest is a duplicate: {}",
            r.text
        );
        assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));

        let r = b.publish(t, "eight", &p("8")).await;
        let prob = r.assert_problem(409);
        assert_eq!(prob["expected_seq"].as_u64(), Some(7), "{}", r.text);

        let r = b.publish(t, "seven", &p("7")).await;
        assert_eq!(r.status, 201, "{}", r.text);

        // Producers are independent.
        let r = b
            .publish(t, "other", &[("producer-id", "p-2"), ("producer-seq", "0")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = b
            .publish(
                t,
                "max",
                &[
                    ("producer-id", "p-3"),
                    ("producer-seq", "18446744073709551615"),
                ],
            )
            .await;
        assert_eq!(
            r.status, 201,
            "u64::MAX is a valid first sequence: {}",
            r.text
        );

        // One header alone, or bad values: 400.
        for hs in [
            vec![("producer-id", "p-1")],
            vec![("producer-seq", "9")],
            vec![("producer-id", "p-1"), ("producer-seq", "abc")],
            vec![("producer-id", "p-1"), ("producer-seq", "-1")],
            vec![
                ("producer-id", "p-1"),
                ("producer-seq", "18446744073709551616"),
            ],
            vec![("producer-id", "bad id"), ("producer-seq", "1")],
            vec![("producer-id", &*"p".repeat(65)), ("producer-seq", "1")],
        ] {
            let r = b.publish(t, "bad", &hs).await;
            assert_eq!(r.status, 400, "{hs:?}: {}", r.text);
            r.assert_problem(400);
        }

        let datas: Vec<String> = b
            .all_events(t)
            .await
            .iter()
            .map(|e| data_of(e).to_string())
            .collect();
        assert_eq!(datas, vec!["five", "six", "seven", "other", "max"]);
    })
    .await;
}

async fn concurrent_publishes_with_one_idempotency_key_store_once(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "race";
        for round in 0..5 {
            let key = format!("race-{round}");
            let hdr = [("idempotency-key", key.as_str())];
            let futs = (0..12).map(|_| b.publish(t, "same body", &hdr));
            let rs = futures_util::future::join_all(futs).await;
            let created: Vec<&Resp> = rs.iter().filter(|r| r.status == 201).collect();
            assert_eq!(
                created.len(),
                1,
                "exactly one 201 among concurrent duplicates: {:?}",
                rs.iter().map(|r| r.status).collect::<Vec<_>>()
            );
            let c = created[0].cursor();
            for r in &rs {
                assert!(
                    r.status == 201 || r.status == 200,
                    "{} {}",
                    r.status,
                    r.text
                );
                assert_eq!(r.cursor(), c, "every duplicate answers the original cursor");
                if r.status == 200 {
                    assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
                }
            }
        }
        assert_eq!(b.count(t).await, 5, "one event per key");
    })
    .await;
}
