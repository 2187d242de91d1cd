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
