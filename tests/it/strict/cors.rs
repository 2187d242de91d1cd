//! CORS headers on every error, the HTTP layer's own included, and
//! preflights that list the route's own methods.

use reqwest::Method;

use super::{assert_own_words, raw_exchange, raw_header, T};
use crate::support::{bounded, Broker, Store};

const ORIGIN: &str = "http://page.test";

#[tokio::test]
async fn errors_the_http_layer_answers_carry_cors_headers() {
    bounded(60, async {
        let b = Broker::start(
            Store::Embedded,
            &[("SLUICE__REQUEST_HEAD_TIMEOUT_SECS", "1")],
        )
        .await;
        let fields: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        for (raw, status) in [
            (format!("GARBAGE\r\nOrigin: {ORIGIN}\r\n\r\n"), "400"),
            (
                format!("GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n{fields}\r\n"),
                "431",
            ),
            // A head that never ends: 408 when request_head_timeout_secs runs out.
            (
                format!("GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n"),
                "408",
            ),
        ] {
            let answer = raw_exchange(b.port, raw.as_bytes(), 1, T).await;
            let (head, _) = answer.split_once("\r\n\r\n").expect("an answer");
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert_eq!(
                raw_header(head, "access-control-allow-origin"),
                Some("*"),
                "{head}"
            );
        }
        // The application's errors, a request with an Origin.
        let origin = [("origin", ORIGIN)];
        for (method, path, headers, status) in [
            (Method::GET, "/nowhere", &[][..], 404),
            (Method::DELETE, "/v1/topics", &[][..], 405),
            (Method::POST, "/v1/topics/-x/events", &[][..], 400),
            (
                Method::POST,
                "/v1/topics/c/events",
                &[("content-encoding", "br")][..],
                415,
            ),
            (Method::GET, "/v1/topics/c/events?limit=0005", &[][..], 400),
        ] {
            let mut all = origin.to_vec();
            all.extend_from_slice(headers);
            let r = b.request(method, path, &all, Some(b"x".to_vec())).await;
            r.assert_problem(status);
            assert_eq!(
                r.header("access-control-allow-origin").as_deref(),
                Some(ORIGIN),
                "{path}"
            );
        }
        let r = b
            .request(
                Method::POST,
                "/v1/topics/c/events",
                &origin,
                Some(vec![b'x'; 2 << 20]),
            )
            .await;
        r.assert_problem(413);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(ORIGIN)
        );
        let r = b
            .client
            .post(b.url("/v1/topics/c/events"))
            .header("origin", ORIGIN)
            .header("event-type", "a")
            .header("event-type", "b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    })
    .await;
}

/// A preflight for `method` on `path`.
async fn preflight(b: &Broker, path: &str, method: &str) -> crate::support::Resp {
    b.request(
        Method::OPTIONS,
        path,
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", method),
            (
                "access-control-request-headers",
                "content-type, idempotency-key",
            ),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn preflights_list_only_the_routes_own_methods() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for route in sluice::http::ROUTES {
            let path = route.path.replace("{topic}", "pre");
            let methods: Vec<&str> = route.allow.split(", ").collect();
            for m in [
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT",
            ] {
                let r = preflight(&b, &path, m).await;
                if methods.contains(&m) {
                    assert_eq!(r.status, 200, "{m} {path}: {}", r.text);
                    assert_eq!(
                        r.header("access-control-allow-methods").as_deref(),
                        Some(route.allow),
                        "{m} {path}"
                    );
                    assert_eq!(
                        r.header("access-control-allow-origin").as_deref(),
                        Some(ORIGIN)
                    );
                } else {
                    let p = r.assert_problem(405);
                    assert_own_words(p["detail"].as_str().unwrap());
                    assert_eq!(
                        r.header("allow").as_deref(),
                        Some(route.allow),
                        "{m} {path}"
                    );
                    assert_eq!(
                        r.header("access-control-allow-origin").as_deref(),
                        Some(ORIGIN)
                    );
                }
            }
        }
        let r = preflight(&b, "/v1/nowhere", "GET").await;
        r.assert_problem(404);
    })
    .await;
}

#[tokio::test]
async fn a_refused_preflight_says_why_in_sluices_words() {
    bounded(60, async {
        let b = Broker::start(
            Store::Embedded,
            &[("SLUICE__CORS__ALLOWED_ORIGINS", "http://other.test")],
        )
        .await;
        let r = preflight(&b, "/v1/topics", "GET").await;
        let p = r.assert_problem(400);
        let detail = p["detail"].as_str().unwrap();
        assert_own_words(detail);
        assert!(detail.contains("cors.allowed_origins"), "{detail}");
    })
    .await;
}
