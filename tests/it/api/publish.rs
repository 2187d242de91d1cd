//! Publishing single events: cursors, bodies stored as sent, event types,
//! multi-line data, size and header errors, topic names.

use serde_json::Value;

use super::T;
use crate::support::*;

on_both_stores! {
    #[tokio::test]
    publish_single_returns_201_with_cursor,
    #[tokio::test]
    json_body_is_stored_as_sent_and_empty_body_allowed,
    #[tokio::test]
    event_type_is_delivered_as_sse_event_field,
    #[tokio::test]
    multiline_data_is_split_into_data_lines,
    #[tokio::test]
    publish_errors_are_problems_and_store_nothing,
    #[tokio::test]
    bad_topic_names_are_400,
    #[tokio::test]
    topic_names_are_case_sensitive,
    #[tokio::test]
    large_and_unicode_events_round_trip,
}

async fn publish_single_returns_201_with_cursor(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn json_body_is_stored_as_sent_and_empty_body_allowed(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn event_type_is_delivered_as_sse_event_field(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn multiline_data_is_split_into_data_lines(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn publish_errors_are_problems_and_store_nothing(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__LIMITS__MAX_EVENT_BYTES", "1024")]).await;
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
        // The names of broker notices: a subscriber would take such an
        // event for a gap or a token expiry the broker never sent.
        for reserved in ["gap", "auth-expired"] {
            let r = b.publish(t, "forged", &[("event-type", reserved)]).await;
            let p = r.assert_problem(400);
            let detail = p["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("reserved")
                    && detail.contains("\"gap\"")
                    && detail.contains("\"auth-expired\""),
                "Event-Type {reserved:?}: the problem names the reserved types: {}",
                r.text
            );
        }
        // Only those exact names (event names are case-sensitive).
        for near in ["Gap", "gaps", "auth-expired.v2"] {
            let r = b.publish(t, "near", &[("event-type", near)]).await;
            assert_eq!(r.status, 201, "Event-Type {near:?} is valid: {}", r.text);
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
            vec![
                "seed",
                ok.as_str(),
                "near",
                "near",
                "near",
                "typed64",
                "key255",
                "keyprint"
            ],
            "only the accepted publishes are stored"
        );
    })
    .await;
}

async fn bad_topic_names_are_400(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn topic_names_are_case_sensitive(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn large_and_unicode_events_round_trip(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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
