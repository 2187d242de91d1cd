//! Request heads and query strings: one value per single-value header and
//! known query parameter, numbers in one spelling, details in Sluice's own
//! words, `h2c` upgrade requests served as HTTP/1.1.

use reqwest::Method;

use super::{assert_own_words, raw_exchange, raw_header, T};
use crate::support::{bounded, Broker, Store};

/// A request with `headers` sent as given, repeats included (the suites'
/// helpers set each name once).
async fn send(
    b: &Broker,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = b.client.request(method, b.url(path)).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn repeated_single_value_headers_are_400() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        let publish = "/v1/topics/rep/events";
        for (name, a, z) in [
            ("Idempotency-Key", "k1", "k2"),
            ("Event-Type", "a", "b"),
            ("Producer-Id", "p", "p"),
            ("Producer-Seq", "1", "2"),
            ("Content-Type", "text/plain", "application/json"),
        ] {
            let mut headers = vec![(name, a), (name, z)];
            if name == "Producer-Seq" {
                headers.push(("Producer-Id", "p"));
            }
            if name == "Producer-Id" {
                headers.push(("Producer-Seq", "1"));
            }
            let (status, p) = send(&b, Method::POST, publish, &headers, "x").await;
            assert_eq!(status, 400, "{name}: {p}");
            let detail = p["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("{name} header is sent more than once")),
                "{detail}"
            );
        }
        for name in ["Last-Event-ID", "X-Resume-Cursor"] {
            let c = "20240101T000000.000Z-0000000000000001-abc";
            let (status, p) = send(
                &b,
                Method::GET,
                "/v1/topics/rep/events",
                &[("accept", "text/event-stream"), (name, c), (name, c)],
                "",
            )
            .await;
            assert_eq!(status, 400, "{name}: {p}");
        }
        assert_eq!(b.get("/v1/topics/rep").await.status, 404, "nothing stored");
        // List-valued headers may repeat.
        let (status, _) = send(
            &b,
            Method::GET,
            "/v1/topics",
            &[("accept", "application/json"), ("accept", "*/*")],
            "",
        )
        .await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test]
async fn numbers_have_one_spelling() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for seq in [
            "+5",
            "0005",
            "5.0",
            "-1",
            "0x5",
            "1e3",
            "18446744073709551616",
        ] {
            let r = b
                .publish("num", "x", &[("Producer-Id", "p"), ("Producer-Seq", seq)])
                .await;
            let p = r.assert_problem(400);
            assert!(
                p["detail"].as_str().unwrap().contains("Producer-Seq"),
                "{seq}: {}",
                r.text
            );
        }
        assert_eq!(b.get("/v1/topics/num").await.status, 404, "nothing stored");
        let r = b
            .publish("num", "x", &[("Producer-Id", "p"), ("Producer-Seq", "5")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        // `+` is a blank in a query string: `limit=+5` is " 5".
        for limit in ["+5", "%205", "5%20", "0005", "05", "-5", "5.0", "0", "1001"] {
            let r = b.history("num", &format!("limit={limit}")).await;
            let p = r.assert_problem(400);
            assert!(
                p["detail"].as_str().unwrap().contains("limit"),
                "{limit}: {}",
                r.text
            );
        }
        let r = b.history("num", "limit=5").await;
        assert_eq!(r.status, 200, "{}", r.text);
    })
    .await;
}

#[tokio::test]
async fn repeated_query_parameters_are_400_in_sluices_words() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for (path, name) in [
            ("/v1/topics/q/events?cursor=a&cursor=b", "cursor"),
            ("/v1/topics/q/events?from=earliest&from=earliest", "from"),
            ("/v1/topics/q/events?limit=1&limit=2", "limit"),
            ("/v1/topics/q/events?stream=sse&stream=sse", "stream"),
            ("/healthz?probe=stream&probe=stream", "probe"),
        ] {
            let r = b.get_with(path, &[("accept", "application/json")]).await;
            let p = r.assert_problem(400);
            let detail = p["detail"].as_str().unwrap();
            assert_own_words(detail);
            assert!(
                detail.contains(&format!("query parameter {name} is given more than once")),
                "{detail}"
            );
        }
        // Unknown parameters (cache busters) may repeat.
        b.publish_ok("q", "x").await;
        let r = b.history("q", "_=1&_=2").await;
        assert_eq!(r.status, 200, "{}", r.text);
    })
    .await;
}

#[tokio::test]
async fn problem_details_are_in_sluices_own_words() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for (line, says) in [
            (r#"{"data":1,"extra":2}"#, "unknown member"),
            (r#"{"type":"t"}"#, "\"data\" is missing"),
            (r#"{"data":1,"data":2}"#, "\"data\" is given more than once"),
            (r#"{"data":1,"type":5}"#, "\"type\" must be a string"),
            (r#"{"data":1,"idempotency_key":["k"]}"#, "\"idempotency_key\" must be a string"),
            ("[1]", "must be a JSON object"),
            ("5", "must be a JSON object"),
            (r#"{"data":1"#, "not valid JSON"),
            (r#"{"data":1,}"#, "not valid JSON"),
            (r#"{"data":"a\u"}"#, "not valid JSON"),
        ] {
            let r = b.batch("words", &format!("{{\"data\":\"ok\"}}\n{line}\n")).await;
            let p = r.assert_problem(400);
            assert_eq!(p["line"], 2, "{}", r.text);
            let detail = p["detail"].as_str().unwrap();
            assert_own_words(detail);
            assert!(detail.contains(says), "{line}: {detail}");
        }
        // A chunked body that breaks off: the framework's reading error.
        let answer = raw_exchange(
            b.port,
            b"POST /v1/topics/words/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            1,
            T,
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        let p: serde_json::Value = serde_json::from_str(body).expect("problem");
        assert_own_words(p["detail"].as_str().unwrap());
        assert!(p["detail"].as_str().unwrap().contains("the body ended before it was complete"), "{body}");
        assert_eq!(b.get("/v1/topics/words").await.status, 404, "nothing stored");
    })
    .await;
}

#[tokio::test]
async fn an_h2c_upgrade_request_is_served_as_http1() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        // As `curl --http2 http://...` sends it, then a second request on
        // the same connection.
        let raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n\
GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
        let answer = raw_exchange(b.port, raw, 2, T).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(raw_header(head, "connection"), None, "{head}");
        assert!(!answer.to_ascii_lowercase().contains("upgrade"), "{answer}");
        assert!(rest.contains("{\"status\":\"ok\"}HTTP/1.1 200 "), "{answer}");
        // A publish asking for the upgrade is served too.
        let raw = b"POST /v1/topics/h2c/events HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\nhi";
        let answer = raw_exchange(b.port, raw, 1, T).await;
        assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
        assert_eq!(b.all_events("h2c").await[0]["data"], "hi");
    })
    .await;
}
