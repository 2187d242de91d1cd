//! Regression tests of the bugs that hostile-input testing found (issue
//! 14, item 8: the fuzz targets of `fuzz/`, the property tests of
//! `sluice::fuzzing` and `sluice::http::fuzzing`, and schemathesis in
//! `tests/schemathesis/`), each as a client meets it.

use crate::support::{bounded, Broker, Store};

/// A cursor `?cursor=` parameter is percent-decoded UTF-8: a character
/// across the byte offsets the parser slices at made it panic, and the
/// client got a `500`. Now a `400` that says what is wrong, for the poll
/// and the stream alike, and the broker goes on serving.
#[tokio::test]
async fn a_cursor_that_is_not_ascii_is_a_400_not_a_panic() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        assert_eq!(b.publish("na", "x", &[]).await.status, 201);
        // "€" (3 bytes) over byte 20, where the first '-' belongs.
        let cursor = "20240520T103022.123%E2%82%AC000000000000002a-k3f9";
        for query in ["", "&stream=sse"] {
            let r = b
                .get(&format!("/v1/topics/na/events?cursor={cursor}{query}"))
                .await;
            let p = r.assert_problem(400);
            let detail = p["detail"].as_str().unwrap();
            assert!(
                detail.contains("cursor") && detail.contains("ASCII"),
                "{detail}"
            );
        }
        let r = b
            .get_with(
                "/v1/topics/na/events?from=earliest",
                &[("accept", "application/json")],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["events"].as_array().unwrap().len(), 1);
    })
    .await;
}

/// A batch line of Unicode blanks (no-break space, line separator) was
/// skipped as blank: a line that is not JSON stored nothing and said
/// nothing. Now it is the bad line, named by its number, and nothing of
/// the batch is stored.
#[tokio::test]
async fn a_batch_line_of_unicode_blanks_is_named_not_skipped() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for blank in ["\u{a0}", "\u{2028}", "\u{b}"] {
            let r = b
                .batch("ub", &format!("{{\"data\":1}}\n{blank}\n{{\"data\":2}}\n"))
                .await;
            let p = r.assert_problem(400);
            assert_eq!(p["line"], 2, "{blank:?}: {}", r.text);
        }
        assert_eq!(b.get("/v1/topics/ub").await.status, 404, "nothing stored");
    })
    .await;
}

/// The operation of `path` and `method` in docs/openapi.json.
fn operation<'a>(doc: &'a serde_json::Value, path: &str, method: &str) -> &'a serde_json::Value {
    &doc["paths"][path][method]
}

/// What schemathesis found where docs/openapi.json and the broker
/// disagreed, each as the broker answers and the document now says: a
/// history poll of an unknown topic is a documented `404`; a resume
/// cursor's documented pattern takes exactly what the broker takes (a
/// string of 64 zeros, a 29 February of a common year, uppercase hex are
/// refused by both); an event body may be any JSON value; an empty
/// `Content-Encoding` is no coding.
#[tokio::test]
async fn what_schemathesis_found_is_answered_as_documented() {
    bounded(60, async {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
        let b = Broker::start(Store::Embedded, &[]).await;
        let events = "/v1/topics/{topic}/events";

        let r = b.get("/v1/topics/never-used/events").await;
        r.assert_problem(404);
        assert!(
            operation(&doc, events, "get")["responses"]["404"].is_object(),
            "the 404 is documented"
        );

        let pattern = doc["components"]["schemas"]["ResumeCursor"]["pattern"]
            .as_str()
            .unwrap();
        let re = regex::Regex::new(pattern).unwrap();
        let issued = b.publish("sc", "x", &[]).await.cursor();
        for (cursor, accepted) in [
            (issued.as_str(), true),
            ("20240229T235959.999Z-000000000000002a-k3f9", true),
            (&"0".repeat(64), false),
            ("20230229T000000.000Z-000000000000002a-k3f9", false),
            ("20240520T103022.123Z-000000000000002A-k3f9", false),
            ("20240520T240000.000Z-000000000000002a-k3f9", false),
        ] {
            assert_eq!(re.is_match(cursor), accepted, "pattern on {cursor}");
            let r = b
                .get_with(
                    &format!("/v1/topics/sc/events?cursor={cursor}"),
                    &[("accept", "application/json")],
                )
                .await;
            // A well-formed cursor of another log is 416, not 400.
            assert_eq!(r.status != 400, accepted, "{cursor}: {}", r.text);
        }

        let r = b
            .publish("sc", "[]", &[("content-type", "application/json")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let body = &operation(&doc, events, "post")["requestBody"]["content"]["*/*"]["schema"];
        assert!(body.get("type").is_none(), "any JSON value: {body}");

        // Producer-Seq: the pattern takes exactly the unsigned 64-bit
        // integers (20 digits past u64::MAX matched the old one).
        let seq = operation(&doc, events, "post")["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Producer-Seq")
            .unwrap();
        let seq_re = regex::Regex::new(seq["schema"]["pattern"].as_str().unwrap()).unwrap();
        for (value, status) in [
            ("18446744073709551615", 201),
            ("45692645954160057969", 400),
            ("18446744073709551616", 400),
        ] {
            assert_eq!(seq_re.is_match(value), status == 201, "pattern on {value}");
            let r = b
                .publish(
                    "sq",
                    "x",
                    &[("producer-id", value), ("producer-seq", value)],
                )
                .await;
            assert_eq!(r.status, status, "{value}: {}", r.text);
        }

        let r = b.publish("sc", "x", &[("content-encoding", "")]).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let coding = operation(&doc, events, "post")["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Content-Encoding")
            .unwrap();
        assert!(coding["schema"]["enum"]
            .as_array()
            .unwrap()
            .contains(&"".into()));
    })
    .await;
}

/// A malformed position behind a valid one was ignored (the first present
/// wins): `X-Resume-Cursor: 0` with a valid `Last-Event-ID` resumed from
/// the latter, as schemathesis found. Every position sent is now read,
/// and a malformed one is a `400` wherever it stands.
#[tokio::test]
async fn a_malformed_position_behind_a_valid_one_is_a_400() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        let c = b.publish("mp", "x", &[]).await.cursor();
        let poll = [("accept", "application/json")];
        let r = b
            .get_with("/v1/topics/mp/events?from=earliest", &poll)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        for (query, headers) in [
            (
                "",
                vec![("last-event-id", c.as_str()), ("x-resume-cursor", "0")],
            ),
            ("cursor=0", vec![("last-event-id", c.as_str())]),
            ("from=soonest", vec![("x-resume-cursor", c.as_str())]),
        ] {
            let mut h = headers.clone();
            h.extend(poll);
            let r = b
                .get_with(&format!("/v1/topics/mp/events?{query}"), &h)
                .await;
            r.assert_problem(400);
        }
        // Valid ones together: the first wins, as before.
        let r = b
            .get_with(
                "/v1/topics/mp/events?from=earliest",
                &[
                    ("last-event-id", c.as_str()),
                    ("accept", "application/json"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["events"].as_array().unwrap().len(), 0);
    })
    .await;
}
