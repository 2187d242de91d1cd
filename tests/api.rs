//! Every endpoint and error of API.md (except auth and /metrics), against the
//! real binary.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);
const HB: (&str, &str) = ("SLUICE__STREAM__HEARTBEAT_SECS", "1");

fn data_of(ev: &Value) -> &str {
    ev["data"]
        .as_str()
        .unwrap_or_else(|| panic!("event data is not a string: {ev}"))
}

fn cursor_of(ev: &Value) -> String {
    ev["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("event cursor is not a string: {ev}"))
        .to_string()
}

// ---------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------

#[tokio::test]
async fn publish_single_returns_201_with_cursor() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "orders";
        let r = b.publish(t, "hello", &[]).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let c1 = r.cursor();
        assert_cursor(&c1);
        assert_eq!(cursor_seq(&c1), 1, "first event has sequence 1");
        assert_eq!(r.json["topic"], t, "{}", r.text);
        assert_eq!(r.json["duplicate"], false, "{}", r.text);
        assert_eq!(
            r.header("event-cursor").as_deref(),
            Some(c1.as_str()),
            "Event-Cursor header equals body cursor"
        );
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "publish answer is JSON: {:?}",
            r.header("content-type")
        );

        let c2 = b.publish_ok(t, "world").await;
        assert_eq!(cursor_seq(&c2), 2);
        assert!(c2 > c1, "later cursor sorts after: {c1} < {c2}");
        assert_eq!(cursor_epoch(&c1), cursor_epoch(&c2));

        let evs = b.all_events(t).await;
        assert_eq!(evs.len(), 2);
        assert_eq!(cursor_of(&evs[0]), c1);
        assert_eq!(data_of(&evs[0]), "hello");
        assert_eq!(evs[0]["type"], Value::Null, "untyped event: type null");
        assert_eq!(cursor_of(&evs[1]), c2);
        assert_eq!(data_of(&evs[1]), "world");

        // `time` is ISO 8601 with milliseconds, the same instant as the cursor.
        let time = evs[0]["time"].as_str().expect("time string");
        let tb = time.as_bytes();
        assert!(
            tb.len() == 24
                && tb[4] == b'-'
                && tb[7] == b'-'
                && tb[10] == b'T'
                && tb[13] == b':'
                && tb[16] == b':'
                && tb[19] == b'.'
                && tb[23] == b'Z',
            "time not like 2024-05-20T10:30:22.123Z: {time:?}"
        );
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        assert_eq!(
            digits(time),
            digits(&c1[..20]),
            "history time and cursor time differ: {time} vs {c1}"
        );
    })
    .await;
}

#[tokio::test]
async fn json_body_is_stored_as_sent_and_empty_body_allowed() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "raw";
        let body = "{\"a\": 1,   \"b\":[1, 2] }";
        let r = b
            .publish(t, body, &[("content-type", "application/json")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = b.publish(t, "", &[]).await;
        assert_eq!(r.status, 201, "empty body is allowed: {}", r.text);
        let r = b
            .publish(t, "plain", &[("content-type", "text/plain; charset=utf-8")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        // The content type is not validated: any UTF-8 text is an event.
        let r = b
            .publish(t, "not json {", &[("content-type", "application/json")])
            .await;
        assert_eq!(
            r.status, 201,
            "JSON content type with non-JSON text: {}",
            r.text
        );
        let evs = b.all_events(t).await;
        assert_eq!(evs.len(), 4);
        assert_eq!(data_of(&evs[3]), "not json {");
        assert_eq!(data_of(&evs[0]), body, "JSON stored as the raw text sent");
        assert_eq!(data_of(&evs[1]), "");
        assert_eq!(data_of(&evs[2]), "plain");

        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let ms = s.expect_events(3, T).await;
        assert_eq!(&*ms[0].data, body);
        assert_eq!(&*ms[1].data, "", "empty event delivered with empty data");
        assert_eq!(&*ms[2].data, "plain");
    })
    .await;
}

#[tokio::test]
async fn event_type_is_delivered_as_sse_event_field() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "typed";
        // Subscribe first on an empty topic, so delivery is live.
        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let r = b
            .publish(t, "x", &[("event-type", "order.created_v-1")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let c = r.cursor();
        b.publish_ok(t, "y").await;
        let ms = s.expect_events(2, T).await;
        assert_eq!(ms[0].event.as_deref(), Some("order.created_v-1"));
        assert_eq!(msg_id(&ms[0]), c);
        assert_eq!(&*ms[0].data, "x");
        assert_eq!(ms[1].event, None, "no event: field without Event-Type");

        let evs = b.all_events(t).await;
        assert_eq!(evs[0]["type"], "order.created_v-1");
        assert_eq!(evs[1]["type"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn multiline_data_is_split_into_data_lines() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "lines";
        let bodies = [
            ("a\nb", "a\nb"),
            ("c\r\nd", "c\nd"),
            ("e\rf", "e\nf"),
            ("one\n\nthree", "one\n\nthree"),
            ("mix\r\nof\rall\nthree", "mix\nof\nall\nthree"),
            ("trailing\n", "trailing\n"),
        ];
        for (body, _) in bodies {
            b.publish_ok(t, body).await;
        }
        // History keeps the raw text.
        let evs = b.all_events(t).await;
        for (ev, (body, _)) in evs.iter().zip(bodies) {
            assert_eq!(data_of(ev), body, "history keeps the raw data");
        }

        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let ms = s.expect_events(bodies.len(), T).await;
        for (m, (body, want)) in ms.iter().zip(bodies) {
            assert_eq!(&*m.data, want, "SSE data for published {body:?}");
        }

        // And on the wire: one `data:` line per line, no raw CR inside a line.
        let r = b
            .client
            .get(b.url(&format!("/v1/topics/{t}/events?from=earliest")))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut raw = Vec::new();
        let mut body = r.bytes_stream();
        use futures_util::StreamExt;
        while !String::from_utf8_lossy(&raw).contains("data: three\n") {
            let chunk = tokio::time::timeout(T, body.next())
                .await
                .expect("raw SSE bytes")
                .expect("stream open")
                .expect("chunk");
            raw.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("data: c\ndata: d\n"), "{text:?}");
        assert!(text.contains("data: e\ndata: f\n"), "{text:?}");
        assert!(
            text.contains("data: one\ndata: \ndata: three\n"),
            "{text:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn publish_errors_are_problems_and_store_nothing() {
    bounded(60, async {
        let b = Broker::start(&[("SLUICE__LIMITS__MAX_EVENT_BYTES", "1024")]).await;
        let t = "errs";
        b.publish_ok(t, "seed").await;

        // Size limit: exactly the limit is fine, one byte more is 413.
        let ok = "x".repeat(1024);
        let r = b.publish(t, &ok, &[]).await;
        assert_eq!(r.status, 201, "body of exactly max_event_bytes: {}", r.text);
        let r = b.publish(t, &"x".repeat(1025), &[]).await;
        r.assert_problem(413);
        let r = b.publish(t, &"y".repeat(100_000), &[]).await;
        r.assert_problem(413);

        // Invalid UTF-8.
        let r = b.publish_bytes(t, vec![b'o', b'k', 0xff, 0xfe], &[]).await;
        r.assert_problem(400);
        let r = b.publish_bytes(t, vec![0xc3], &[]).await;
        r.assert_problem(400);

        // Event-Type values.
        for bad in ["has space", "semi;colon", "é", &"a".repeat(65), ""] {
            let r = b.publish(t, "z", &[("event-type", bad)]).await;
            assert_eq!(
                r.status, 400,
                "Event-Type {bad:?} must be refused: {}",
                r.text
            );
            r.assert_problem(400);
        }
        let r = b
            .publish(t, "typed64", &[("event-type", &"a".repeat(64))])
            .await;
        assert_eq!(
            r.status, 201,
            "64-character Event-Type is valid: {}",
            r.text
        );

        // Idempotency-Key values.
        for bad in [&"k".repeat(256) as &str, "", "tab\there", "caf\u{e9}"] {
            let r = b.publish(t, "z", &[("idempotency-key", bad)]).await;
            assert_eq!(
                r.status, 400,
                "Idempotency-Key {bad:?} must be refused: {}",
                r.text
            );
            r.assert_problem(400);
        }
        let r = b
            .publish(t, "key255", &[("idempotency-key", &"k".repeat(255))])
            .await;
        assert_eq!(r.status, 201, "255-character key is valid: {}", r.text);
        let r = b
            .publish(t, "keyprint", &[("idempotency-key", "a b~!@#$%^&*()")])
            .await;
        assert_eq!(r.status, 201, "printable ASCII key with space: {}", r.text);

        let evs = b.all_events(t).await;
        let datas: Vec<&str> = evs.iter().map(data_of).collect();
        assert_eq!(
            datas,
            vec!["seed", ok.as_str(), "typed64", "key255", "keyprint"],
            "only the accepted publishes are stored"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_topic_names_are_400() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let long = "a".repeat(129);
        let bad = [
            "bad%20name",
            long.as_str(),
            "-x",
            ".x",
            "_x",
            "a%2Fb",
            "caf%C3%A9",
            "a:b",
        ];
        for name in bad {
            let r = b.publish(name, "x", &[]).await;
            assert_eq!(r.status, 400, "publish to {name:?}: {}", r.text);
            r.assert_problem(400);
            let r = b.history(name, "from=earliest").await;
            r.assert_problem(400);
            let r = b.get(&format!("/v1/topics/{name}")).await;
            r.assert_problem(400);
            let r = b.batch(name, "{\"data\":\"x\"}\n").await;
            r.assert_problem(400);
            let s = b.sse(name, "", &[]).await;
            s.assert_problem(400);
        }
        let ok = format!("A{}", "z9._-".repeat(25));
        assert_eq!(ok.len(), 126);
        let max = "b".repeat(128);
        for name in [ok.as_str(), max.as_str(), "0", "a.b_c-D"] {
            let r = b.publish(name, "x", &[]).await;
            assert_eq!(r.status, 201, "valid topic {name:?}: {}", r.text);
        }
        let r = b.get("/v1/topics").await;
        assert_eq!(r.status, 200);
        let names: Vec<&str> = r.json["topics"]
            .as_array()
            .expect("topics array")
            .iter()
            .map(|t| t["topic"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "only valid topics exist: {names:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------

#[tokio::test]
async fn batch_stores_lines_in_order_with_consecutive_cursors() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
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

#[tokio::test]
async fn batch_non_string_data_is_stored_as_its_own_text() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
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

#[tokio::test]
async fn batch_with_an_invalid_line_is_rejected_whole() {
    bounded(60, async {
        let b = Broker::start(&[("SLUICE__LIMITS__MAX_EVENT_BYTES", "100")]).await;
        let t = "badbatch";
        b.publish_ok(t, "seed").await;
        let cases: Vec<(String, u64)> = vec![
            ("{\"data\":\"a\"}\n{\"data\":\"b\"}\nnot json\n".into(), 3),
            ("{\"data\":\"a\"}\n{\"data\":\"b\",\"type\":\"bad type!\"}\n".into(), 2),
            ("[1,2]\n".into(), 1),
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

#[tokio::test]
async fn batch_over_max_batch_events_is_refused() {
    bounded(60, async {
        let b = Broker::start(&[("SLUICE__LIMITS__MAX_BATCH_EVENTS", "5")]).await;
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

// ---------------------------------------------------------------------------
// Idempotency and producer sequences
// ---------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
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

#[tokio::test]
async fn producer_sequences() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
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

// ---------------------------------------------------------------------------
// Subscribe
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sse_headers_retry_and_heartbeat() {
    bounded(60, async {
        let b = Broker::start(&[HB]).await;
        let started = tokio::time::Instant::now();
        let mut s = b.sse("quiet", "", &[]).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "200 must be sent at once even with no event waiting"
        );
        s.assert_ok();
        assert!(
            s.header("content-type")
                .unwrap_or_default()
                .starts_with("text/event-stream"),
            "{:?}",
            s.headers
        );
        assert_eq!(s.header("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(
            s.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(s.header("x-accel-buffering").as_deref(), Some("no"));

        // The body opens with `retry: 1000`, before anything else.
        let first = s.next_item(Duration::from_secs(5)).await;
        match first {
            Some(SseItem::Retry(r)) => assert_eq!(r, Duration::from_millis(1000)),
            Some(SseItem::Message(ref m)) if m.retry.is_some() => {
                assert_eq!(m.retry, Some(Duration::from_millis(1000)))
            }
            other => panic!("stream must open with `retry: 1000`, got {other:?}"),
        }

        // Idle: `: keep-alive` comments about every second.
        let mut seen = 0;
        let hb_start = tokio::time::Instant::now();
        while seen < 2 {
            match s.next_item(Duration::from_secs(5)).await {
                // An empty liveness-probe comment (":") is allowed too.
                Some(SseItem::Comment(c)) if c.trim().is_empty() => {}
                Some(SseItem::Comment(c)) => {
                    assert_eq!(c.trim(), "keep-alive", "heartbeat comment text");
                    seen += 1;
                }
                other => panic!("expected a keep-alive comment within 5 s, got {other:?}"),
            }
        }
        assert!(
            hb_start.elapsed() < Duration::from_secs(5),
            "two heartbeats at 1 s took {:?}",
            hb_start.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn retry_ms_from_config_file() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("sluice.toml");
        std::fs::write(&cfg, "[stream]\nretry_ms = 2500\n").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let b = Broker::start_args(&data, &["--config", cfg.to_str().unwrap()], &[]).await;
        let mut s = b.sse("cfg", "", &[]).await;
        s.assert_ok();
        match s.next_item(Duration::from_secs(5)).await {
            Some(SseItem::Retry(r)) => assert_eq!(r, Duration::from_millis(2500)),
            other => panic!("expected retry: 2500 from --config, got {other:?}"),
        }
        // Environment overrides the file.
        drop(s);
        drop(b);
        let b = Broker::start_args(
            &data,
            &["--config", cfg.to_str().unwrap()],
            &[("SLUICE__STREAM__RETRY_MS", "700")],
        )
        .await;
        let mut s = b.sse("cfg", "", &[]).await;
        match s.next_item(Duration::from_secs(5)).await {
            Some(SseItem::Retry(r)) => assert_eq!(r, Duration::from_millis(700)),
            other => panic!("expected retry: 700 from the environment, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn bad_config_value_exits_nonzero_naming_the_key() {
    bounded(60, async {
        let (st, err) = run_expecting_exit(&[], &[("SLUICE__EMBEDDED__FSYNC", "sometimes")]).await;
        assert!(!st.success(), "bad fsync value must fail the start: {st:?}");
        assert!(err.contains("fsync"), "stderr should name the key: {err}");
        let (st, err) = run_expecting_exit(&[], &[("SLUICE__RETENTION__MAX_EVENTS", "lots")]).await;
        assert!(!st.success(), "bad max_events must fail the start: {st:?}");
        assert!(
            err.contains("max_events"),
            "stderr should name the key: {err}"
        );
    })
    .await;
}

#[tokio::test]
async fn stream_query_param_works_without_accept() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "qs";
        let c = b.publish_ok(t, "one").await;
        let url = b.url(&format!("/v1/topics/{t}/events?stream=sse&from=earliest"));
        let mut s = SseStream::connect(&url, &[("accept", "*/*")]).await;
        s.assert_ok();
        assert!(s
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/event-stream"));
        let m = s.expect_event(T).await;
        assert_eq!(msg_id(&m), c);
        assert_eq!(&*m.data, "one");

        // Same URL without the parameter and with */*: the JSON poll.
        let r = b
            .get_with(
                &format!("/v1/topics/{t}/events?from=earliest"),
                &[("accept", "*/*")],
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"));
        assert_eq!(r.json["events"][0]["cursor"], c.as_str());
    })
    .await;
}

#[tokio::test]
async fn start_position_rules() {
    bounded(90, async {
        let b = Broker::start(&[]).await;
        let t = "start";
        let cs = b.publish_numbered(t, 1..6).await; // seq 1..=5
        let first_seq = |m: &Message| seq_of(&m.data);

        // from=earliest
        let mut s = b.sse(t, "from=earliest", &[]).await;
        let ms = s.expect_events(5, T).await;
        let ids: Vec<String> = ms.iter().map(msg_id).collect();
        assert_eq!(ids, cs, "from=earliest delivers everything in order");

        // cursor query
        let mut s = b.sse(t, &format!("cursor={}", cs[1]), &[]).await;
        assert_eq!(first_seq(&s.expect_event(T).await), 3);

        // X-Resume-Cursor beats cursor
        let mut s = b
            .sse(
                t,
                &format!("cursor={}", cs[1]),
                &[("x-resume-cursor", &cs[0])],
            )
            .await;
        assert_eq!(first_seq(&s.expect_event(T).await), 2);

        // Last-Event-ID beats both
        let mut s = b
            .sse(
                t,
                &format!("cursor={}&from=earliest", cs[1]),
                &[("x-resume-cursor", &cs[0]), ("last-event-id", &cs[2])],
            )
            .await;
        let m = s.expect_event(T).await;
        assert_eq!(first_seq(&m), 4);
        assert_eq!(msg_id(&m), cs[3]);

        // cursor beats from
        let mut s = b
            .sse(t, &format!("from=latest&cursor={}", cs[3]), &[])
            .await;
        assert_eq!(first_seq(&s.expect_event(T).await), 5);

        // seq-0 cursor: before the first event.
        let zero = with_seq(&cs[0], 0);
        let mut s = b.sse(t, &format!("cursor={zero}"), &[]).await;
        s.assert_ok();
        assert_eq!(first_seq(&s.expect_event(T).await), 1);

        // cursor of the latest event: nothing until the next publish.
        let mut at_latest = b.sse(t, "", &[("last-event-id", &cs[4])]).await;
        at_latest.assert_ok();

        // from=latest (also the default): only events published afterwards.
        let mut latest = b.sse(t, "from=latest", &[]).await;
        let mut default = b.sse(t, "", &[]).await;
        latest.assert_ok();
        default.assert_ok();
        // Make sure each stream has started (its opening retry is read).
        for s in [&mut latest, &mut default, &mut at_latest] {
            match s.next_item(T).await {
                Some(SseItem::Retry(_)) => {}
                Some(SseItem::Message(m)) if m.retry.is_some() => {
                    panic!("unexpected message before any publish: {m:?}")
                }
                other => panic!("expected the opening retry, got {other:?}"),
            }
        }
        let c6 = b.publish_ok(t, "{\"seq\":6}").await;
        for s in [&mut latest, &mut default, &mut at_latest] {
            let m = s.expect_event(T).await;
            assert_eq!(
                msg_id(&m),
                c6,
                "first event is the one published after subscribing"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_start_positions_are_400() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "malformed";
        let c = b.publish_ok(t, "x").await;
        let bads = [
            "garbage".to_string(),
            c.to_uppercase(),
            format!("{c},{c}"),
            format!("{}-{}", &c[..20], "zz"),
            c[..c.len() - 1].to_string() + "-",
            "x".repeat(65),
        ];
        for bad in &bads {
            let enc = bad.replace(',', "%2C");
            let s = b.sse(t, &format!("cursor={enc}"), &[]).await;
            assert_eq!(s.status, 400, "cursor={bad:?}: {}", s.error_text);
            s.assert_problem(400);
            let s = b.sse(t, "", &[("last-event-id", bad)]).await;
            s.assert_problem(400);
            let s = b.sse(t, "", &[("x-resume-cursor", bad)]).await;
            s.assert_problem(400);
            let r = b.history(t, &format!("cursor={enc}")).await;
            r.assert_problem(400);
        }
        for from in ["middle", "EARLIEST", "", "0"] {
            let s = b.sse(t, &format!("from={from}"), &[]).await;
            assert_eq!(s.status, 400, "from={from:?}: {}", s.error_text);
            s.assert_problem(400);
            let r = b.history(t, &format!("from={from}")).await;
            r.assert_problem(400);
        }
    })
    .await;
}

fn check_416(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    json: &Value,
    text: &str,
) -> (String, String) {
    assert_problem(
        416,
        reqwest::StatusCode::from_u16(status).unwrap(),
        headers,
        json,
        text,
    );
    let next = header_str(headers, "x-next-cursor").expect("X-Next-Cursor header on 416");
    let latest = header_str(headers, "x-latest-cursor").expect("X-Latest-Cursor header on 416");
    assert_cursor(&next);
    assert_cursor(&latest);
    assert_eq!(json["next_cursor"].as_str(), Some(next.as_str()), "{text}");
    assert_eq!(
        json["latest_cursor"].as_str(),
        Some(latest.as_str()),
        "{text}"
    );
    assert!(
        json.get("lost").is_some() && (json["lost"].is_null() || json["lost"].is_u64()),
        "problem has `lost` (number or null): {text}"
    );
    (next, latest)
}

#[tokio::test]
async fn unresumable_cursors_are_416() {
    bounded(90, async {
        let b = Broker::start(&[]).await;
        let t = "gone";
        let cs = b.publish_numbered(t, 1..6).await;

        // Another epoch, same sequence.
        let foreign = with_other_epoch(&cs[1]);
        for (query, headers) in [
            (format!("cursor={foreign}"), vec![]),
            (String::new(), vec![("last-event-id", foreign.as_str())]),
            (String::new(), vec![("x-resume-cursor", foreign.as_str())]),
        ] {
            let s = b.sse(t, &query, &headers).await;
            let (next, latest) =
                check_416(s.status.as_u16(), &s.headers, &s.error_json, &s.error_text);
            assert_eq!(latest, cs[4], "X-Latest-Cursor is the latest event");
            assert_eq!(
                cursor_epoch(&next),
                cursor_epoch(&cs[0]),
                "next cursor is of the live epoch"
            );
            // Resuming from X-Next-Cursor delivers every retained event.
            let mut r = b.sse(t, "", &[("last-event-id", &next)]).await;
            r.assert_ok();
            let ids: Vec<String> = r.expect_events(5, T).await.iter().map(msg_id).collect();
            assert_eq!(ids, cs, "X-Next-Cursor resumes with the least loss");
        }
        let r = b.history(t, &format!("cursor={foreign}")).await;
        check_416(r.status.as_u16(), &r.headers, &r.json, &r.text);

        // Ahead of the latest event.
        let ahead = with_seq(&cs[4], 99);
        let s = b.sse(t, &format!("cursor={ahead}"), &[]).await;
        let (_, latest) = check_416(s.status.as_u16(), &s.headers, &s.error_json, &s.error_text);
        assert_eq!(latest, cs[4]);
        let r = b.history(t, &format!("cursor={ahead}")).await;
        check_416(r.status.as_u16(), &r.headers, &r.json, &r.text);
        // Just one ahead is ahead too.
        let s = b
            .sse(t, &format!("cursor={}", with_seq(&cs[4], 6)), &[])
            .await;
        check_416(s.status.as_u16(), &s.headers, &s.error_json, &s.error_text);

        // on_gap=resume: 200, first event is `event: gap`, then the log.
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", foreign.as_str())])
            .await;
        s.assert_ok();
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
        let g: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(g["requested"].as_str(), Some(foreign.as_str()), "{g}");
        let resumed_after = g["resumed_after"]
            .as_str()
            .expect("resumed_after")
            .to_string();
        assert_cursor(&resumed_after);
        assert!(g.get("lost").is_some(), "{g}");
        // If the notice carries an id (EventSource remembers it), resuming
        // from it must not hit the gap again.
        if let Some(id) = gap.id.as_deref() {
            assert_eq!(
                id, resumed_after,
                "gap notice id is where the stream resumed"
            );
        }
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, cs, "after the gap notice, the oldest retained onwards");
        let m = s.next_event(Duration::from_millis(500)).await;
        assert!(m.is_none(), "nothing more: {m:?}");
        let mut s = b.sse(t, "", &[("last-event-id", &resumed_after)]).await;
        s.assert_ok();
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(
            ids, cs,
            "resuming from resumed_after replays the retained log"
        );

        // on_gap=resume replaces the 416 of a cursor ahead of the log too.
        let mut s = b
            .sse(t, &format!("on_gap=resume&cursor={ahead}"), &[])
            .await;
        s.assert_ok();
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
        let g: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(g["requested"].as_str(), Some(ahead.as_str()), "{g}");
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, cs, "from the oldest retained event");
    })
    .await;
}

// ---------------------------------------------------------------------------
// History poll
// ---------------------------------------------------------------------------

#[tokio::test]
async fn history_poll_shape_limit_and_chaining() {
    bounded(90, async {
        let b = Broker::start(&[]).await;
        let t = "hist";
        let body: String = (1..=150)
            .map(|i| format!("{{\"data\":{{\"seq\":{i}}}}}\n"))
            .collect();
        let r = b.batch(t, &body).await;
        assert_eq!(r.status, 200, "{}", r.text);

        let r = b.history(t, "from=earliest").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"));
        let evs = r.json["events"].as_array().expect("events");
        assert_eq!(evs.len(), 100, "default limit is 100");
        for (i, ev) in evs.iter().enumerate() {
            assert_eq!(seq_of(data_of(ev)), i as u64 + 1);
            assert_cursor(ev["cursor"].as_str().unwrap());
            assert!(ev.get("type").is_some(), "type field present (null): {ev}");
            assert!(ev["time"].is_string(), "{ev}");
        }
        let next = r.json["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_string();
        assert_eq!(
            next,
            cursor_of(&evs[99]),
            "next_cursor is the last event's cursor"
        );

        let r = b.history(t, &format!("cursor={next}")).await;
        let evs2 = r.json["events"].as_array().expect("events");
        assert_eq!(evs2.len(), 50);
        assert_eq!(seq_of(data_of(&evs2[0])), 101);
        let next2 = r.json["next_cursor"].as_str().unwrap().to_string();
        let r = b.history(t, &format!("cursor={next2}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["events"].as_array().unwrap().len(), 0, "caught up");
        assert!(
            r.json["next_cursor"].is_string(),
            "next_cursor still given: {}",
            r.text
        );

        // limit chaining by 7.
        let mut got = Vec::new();
        let mut q = "from=earliest&limit=7".to_string();
        loop {
            let r = b.history(t, &q).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let evs = r.json["events"].as_array().unwrap();
            assert!(evs.len() <= 7);
            if evs.is_empty() {
                break;
            }
            got.extend(evs.iter().map(|e| seq_of(data_of(e))));
            q = format!("cursor={}&limit=7", r.json["next_cursor"].as_str().unwrap());
        }
        assert_eq!(got, (1..=150).collect::<Vec<u64>>());

        let r = b.history(t, "from=earliest&limit=1000").await;
        assert_eq!(r.json["events"].as_array().unwrap().len(), 150);
        let r = b.history(t, "from=earliest&limit=1001").await;
        assert!(
            r.status == 400
                || (r.status == 200 && r.json["events"].as_array().unwrap().len() <= 1000),
            "limit above 1000: {} {}",
            r.status,
            r.text
        );
        if r.status == 400 {
            r.assert_problem(400);
        }
        for bad in ["abc", "-1", "1.5"] {
            let r = b.history(t, &format!("from=earliest&limit={bad}")).await;
            assert_eq!(r.status, 400, "limit={bad}: {}", r.text);
            r.assert_problem(400);
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Topic information and operations
// ---------------------------------------------------------------------------

#[tokio::test]
async fn topic_information() {
    bounded(60, async {
        let b = Broker::start(&[HB]).await;
        let r = b.get("/v1/topics/never").await;
        r.assert_problem(404);

        let cs = b.publish_numbered("info", 1..4).await;
        b.publish_ok("info2", "x").await;

        let r = b.get("/v1/topics/info").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["topic"], "info");
        assert_eq!(
            r.json["oldest_cursor"].as_str(),
            Some(cs[0].as_str()),
            "{}",
            r.text
        );
        assert_eq!(
            r.json["latest_cursor"].as_str(),
            Some(cs[2].as_str()),
            "{}",
            r.text
        );
        assert_eq!(r.json["retained"], 3, "{}", r.text);
        assert_eq!(r.json["subscribers"], 0, "{}", r.text);

        let r = b.get("/v1/topics").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let topics = r.json["topics"].as_array().expect("topics");
        let info = topics
            .iter()
            .find(|t| t["topic"] == "info")
            .unwrap_or_else(|| panic!("info missing: {}", r.text));
        assert_eq!(info["retained"], 3);
        assert_eq!(info["subscribers"], 0);
        assert!(topics
            .iter()
            .any(|t| t["topic"] == "info2" && t["retained"] == 1));

        // An open stream counts as a subscriber, and stops counting once closed.
        let s = b.sse("info", "", &[]).await;
        s.assert_ok();
        let bb = &b;
        wait_until(T, "subscribers = 1", || async move {
            bb.get("/v1/topics/info").await.json["subscribers"] == 1
        })
        .await;
        let r = b.get("/v1/topics").await;
        let info = r.json["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == "info")
            .unwrap()
            .clone();
        assert_eq!(info["subscribers"], 1, "{}", r.text);
        drop(s);
        wait_until(T, "subscribers back to 0", || async move {
            bb.get("/v1/topics/info").await.json["subscribers"] == 0
        })
        .await;

        // Subscribing creates the topic.
        let s = b.sse("subonly", "", &[]).await;
        s.assert_ok();
        let r = b.get("/v1/topics/subonly").await;
        assert_eq!(r.status, 200, "a subscribed topic exists: {}", r.text);
        assert_eq!(r.json["retained"], 0, "{}", r.text);
    })
    .await;
}

#[tokio::test]
async fn health_probe_counts_streams() {
    bounded(60, async {
        let b = Broker::start(&[HB]).await;
        let r = b.get("/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["status"], "ok", "{}", r.text);

        let r = b.get("/healthz?probe=stream").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["status"], "ok", "{}", r.text);
        assert_eq!(r.json["active_connections"], 0, "{}", r.text);
        assert_eq!(r.json["disconnects_1m"], 0, "{}", r.text);
        assert_eq!(
            r.json["disconnect_rate_1m"].as_f64(),
            Some(0.0),
            "{}",
            r.text
        );

        let s = b.sse("h", "", &[]).await;
        s.assert_ok();
        let bb = &b;
        wait_until(T, "active_connections = 1", || async move {
            bb.get("/healthz?probe=stream").await.json["active_connections"] == 1
        })
        .await;
        drop(s);
        let r = wait_for(T, "active_connections back to 0", || async move {
            let r = bb.get("/healthz?probe=stream").await;
            (r.json["active_connections"] == 0).then_some(r)
        })
        .await;
        assert_eq!(r.json["disconnects_1m"], 1, "{}", r.text);
        assert_eq!(
            r.json["disconnect_rate_1m"].as_f64(),
            Some(1.0),
            "{}",
            r.text
        );

        // One open, one closed: rate 1 / (1 + 1).
        let s2 = b.sse("h", "", &[]).await;
        s2.assert_ok();
        let r = wait_for(T, "active_connections = 1 again", || async move {
            let r = bb.get("/healthz?probe=stream").await;
            (r.json["active_connections"] == 1).then_some(r)
        })
        .await;
        assert_eq!(r.json["disconnects_1m"], 1, "{}", r.text);
        let rate = r.json["disconnect_rate_1m"].as_f64().expect("rate");
        assert!((rate - 0.5).abs() < 1e-9, "rate {rate}: {}", r.text);

        let r = b.get("/readyz").await;
        assert_eq!(r.status, 200, "embedded store takes writes: {}", r.text);
    })
    .await;
}

#[tokio::test]
async fn connections_list_open_streams() {
    bounded(60, async {
        let b = Broker::start(&[HB]).await;
        let r = b.get("/v1/connections").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json["connections"].as_array().map(Vec::len),
            Some(0),
            "{}",
            r.text
        );

        b.publish_ok("conn", "one").await;
        let mut s = b.sse("conn", "from=earliest", &[]).await;
        s.expect_event(T).await;
        let bb = &b;
        let row = wait_for(T, "one connection row with events_sent 1", || async move {
            let r = bb.get("/v1/connections").await;
            let rows = r.json["connections"].as_array()?.clone();
            (rows.len() == 1 && rows[0]["events_sent"] == 1).then(|| rows[0].clone())
        })
        .await;
        assert_eq!(row["topic"], "conn", "{row}");
        assert!(
            row["id"].is_string() || row["id"].is_u64(),
            "connection id: {row}"
        );
        let state = row["state"].as_str().expect("state");
        assert!(
            ["HEALTHY", "UNRESPONSIVE", "STALLED"].contains(&state),
            "state {state}"
        );
        assert_eq!(state, "HEALTHY", "a reading client is healthy: {row}");
        for f in [
            "queued_events",
            "queued_bytes",
            "bytes_sent",
            "events_sent",
            "last_write_ms_ago",
            "connected_secs",
        ] {
            assert!(row[f].is_number(), "field {f} must be a number: {row}");
        }
        assert!(row["bytes_sent"].as_f64().unwrap() > 0.0, "{row}");

        drop(s);
        wait_until(T, "no connection rows", || async move {
            bb.get("/v1/connections").await.json["connections"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn unknown_path_404_and_wrong_method_405() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        for p in [
            "/nope",
            "/v1/topics/t/nope",
            "/v2/topics",
            "/v1/topics/t/events/extra",
        ] {
            let r = b.get(p).await;
            assert_eq!(r.status, 404, "{p}: {}", r.text);
            r.assert_problem(404);
        }
        // Each 405 names the methods that resource has (RFC 9110).
        for (m, p, allow) in [
            (Method::DELETE, "/v1/topics/t/events", "GET, POST, OPTIONS"),
            (Method::PUT, "/v1/topics/t/events", "GET, POST, OPTIONS"),
            (Method::HEAD, "/v1/topics/t/events", "GET, POST, OPTIONS"),
            (Method::GET, "/v1/topics/t/batch", "POST, OPTIONS"),
            (Method::POST, "/v1/topics", "GET, HEAD, OPTIONS"),
            (Method::POST, "/v1/topics/t", "GET, HEAD, OPTIONS"),
            (Method::DELETE, "/healthz", "GET, HEAD, OPTIONS"),
        ] {
            let r = b.request(m.clone(), p, &[], None).await;
            assert_eq!(r.status, 405, "{m} {p}: {}", r.text);
            assert_eq!(r.header("allow").as_deref(), Some(allow), "{m} {p}");
            if m != Method::HEAD {
                r.assert_problem(405);
            }
        }
        // HEAD answers like GET without a body where the answer is immediate.
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/topics",
            "/v1/connections",
        ] {
            let r = b.request(Method::HEAD, p, &[], None).await;
            assert_eq!(r.status, 200, "HEAD {p}: {}", r.text);
            assert!(r.text.is_empty(), "HEAD {p} has a body: {}", r.text);
            assert!(r.header("content-type").is_some(), "HEAD {p}");
        }
        // Nothing was created on the way.
        let r = b.get("/v1/topics").await;
        assert_eq!(
            r.json["topics"].as_array().map(Vec::len),
            Some(0),
            "{}",
            r.text
        );
    })
    .await;
}

/// Sends `raw` on a new connection and reads one answer (head and a body of
/// its `content-length`).
async fn raw_exchange(port: u16, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // The server may answer and close before it has read everything sent.
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("length"))
                })
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_request_heads_get_problem_json() {
    bounded(60, async {
        let b = Broker::start(&[("SLUICE__REQUEST_HEAD_TIMEOUT_SECS", "1")]).await;
        // More header fields than the server takes.
        let fields: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        for (raw, status) in [
            (b"GARBAGE\r\n\r\n".to_vec(), 400),
            (
                b"POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
                400,
            ),
            (huge.into_bytes(), 431),
            // A head that never ends: answered when the timeout runs out.
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec(), 408),
        ] {
            let answer = raw_exchange(b.port, &raw).await;
            let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(
                head.to_ascii_lowercase().contains("content-type: application/problem+json"),
                "{head}"
            );
            let problem: Value = serde_json::from_str(body).expect("JSON body");
            assert_eq!(problem["status"], status, "{body}");
            assert!(problem["type"].as_str().is_some_and(|t| t.starts_with("https://")), "{body}");
            assert!(problem["detail"].is_string(), "{body}");
        }
        // Nothing was stored on the way.
        let r = b.get("/v1/topics").await;
        assert_eq!(r.json["topics"].as_array().map(Vec::len), Some(0), "{}", r.text);
    })
    .await;
}

// ---------------------------------------------------------------------------
// More edges
// ---------------------------------------------------------------------------

#[tokio::test]
async fn batch_over_max_batch_bytes_is_413() {
    bounded(60, async {
        let b = Broker::start(&[("SLUICE__LIMITS__MAX_BATCH_BYTES", "1000")]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_with_one_idempotency_key_store_once() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
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

#[tokio::test]
async fn idempotency_key_is_forgotten_after_the_window() {
    bounded(60, async {
        let b = Broker::start(&[("SLUICE__LIMITS__DEDUP_WINDOW_SECS", "1")]).await;
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

#[tokio::test]
async fn large_and_unicode_events_round_trip() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "big";
        let unit = "é世界🦀 αβγ\n";
        let mut big = String::new();
        while big.len() + unit.len() <= 1024 * 1024 {
            big.push_str(unit);
        }
        while big.len() < 1024 * 1024 {
            big.push('x');
        }
        assert_eq!(big.len(), 1024 * 1024);
        let r = b.publish(t, &big, &[]).await;
        assert_eq!(
            r.status,
            201,
            "exactly 1 MiB is allowed by default: {}",
            &r.text[..r.text.len().min(300)]
        );
        let r = b.publish(t, &format!("{big}y"), &[]).await;
        r.assert_problem(413);
        b.publish_ok(t, "🦀").await;

        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let ms = s.expect_events(2, T).await;
        assert!(
            ms[0].data.len() == big.len() && *ms[0].data == *big,
            "1 MiB event intact over SSE"
        );
        assert_eq!(&*ms[1].data, "🦀");
        let evs = b.all_events(t).await;
        assert_eq!(data_of(&evs[0]), big, "intact in history");
    })
    .await;
}

#[tokio::test]
async fn event_stream_is_not_compressed() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "gz";
        let mut s = b
            .sse(t, "", &[("accept-encoding", "gzip, deflate, br")])
            .await;
        s.assert_ok();
        let ce = s.header("content-encoding");
        assert!(
            ce.is_none() || ce.as_deref() == Some("identity"),
            "an event stream must not be compressed (buffering delays events): {ce:?}"
        );
        // The stream is started: its retry frame is here.
        assert!(matches!(s.next_item(T).await, Some(SseItem::Retry(_))));
        let c = b.publish_ok(t, "live").await;
        let m = s.expect_event(Duration::from_secs(3)).await;
        assert_eq!(msg_id(&m), c, "delivered at once despite Accept-Encoding");
    })
    .await;
}

#[tokio::test]
async fn closed_streams_do_not_leak() {
    bounded(60, async {
        let b = Broker::start(&[HB]).await;
        let t = "leak";
        b.publish_numbered(t, 0..50).await;
        for i in 0..20 {
            let mut s = b.sse(t, "from=earliest", &[]).await;
            s.assert_ok();
            // Some read a little, some nothing at all.
            for _ in 0..(i % 4) {
                s.expect_event(T).await;
            }
            drop(s);
        }
        let bb = &b;
        wait_until(T, "active_connections back to 0", || async move {
            bb.get("/healthz?probe=stream").await.json["active_connections"] == 0
        })
        .await;
        wait_until(T, "subscribers back to 0", || async move {
            bb.get(&format!("/v1/topics/{t}")).await.json["subscribers"] == 0
        })
        .await;
        let r = b.get("/v1/connections").await;
        assert_eq!(
            r.json["connections"].as_array().map(Vec::len),
            Some(0),
            "{}",
            r.text
        );
        let r = b.get("/healthz?probe=stream").await;
        assert_eq!(r.json["disconnects_1m"], 20, "{}", r.text);
    })
    .await;
}

/// HTTP/2 with prior knowledge (h2c), checked with curl when it is installed.
#[tokio::test]
async fn http2_prior_knowledge_with_curl() {
    let curl_ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("nghttp2"))
        .unwrap_or(false);
    if !curl_ok {
        println!("curl with HTTP/2 not found: h2c not checked");
        return;
    }
    bounded(60, async {
        let b = Broker::start(&[]).await;
        let t = "h2";
        let curl = |args: Vec<String>| async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "-i", "--http2-prior-knowledge", "--max-time", "3"])
                .args(args)
                .kill_on_drop(true)
                .output()
                .await
                .expect("run curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let out = curl(vec![
            "-X".into(),
            "POST".into(),
            "--data-binary".into(),
            "over h2".into(),
            b.url(&format!("/v1/topics/{t}/events")),
        ])
        .await;
        assert!(out.starts_with("HTTP/2 201"), "h2c publish: {out}");
        let out = curl(vec![
            "-N".into(),
            "-H".into(),
            "accept: text/event-stream".into(),
            b.url(&format!("/v1/topics/{t}/events?from=earliest")),
        ])
        .await;
        assert!(out.starts_with("HTTP/2 200"), "h2c stream: {out}");
        assert!(out.contains("retry: 1000"), "{out}");
        assert!(out.contains("data: over h2"), "event over h2c: {out}");
    })
    .await;
}

#[tokio::test]
async fn topic_names_are_case_sensitive() {
    bounded(60, async {
        let b = Broker::start(&[]).await;
        b.publish_ok("Case", "upper").await;
        b.publish_ok("case", "lower").await;
        b.publish_ok("case", "lower2").await;
        let up = b.all_events("Case").await;
        let low = b.all_events("case").await;
        assert_eq!(up.len(), 1);
        assert_eq!(low.len(), 2);
        assert_eq!(up[0]["data"], "upper");
        let r = b.get("/v1/topics").await;
        assert_eq!(
            r.json["topics"].as_array().map(Vec::len),
            Some(2),
            "{}",
            r.text
        );
    })
    .await;
}
