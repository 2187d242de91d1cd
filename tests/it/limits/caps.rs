//! Connections, streams and topics past their caps: refused with the
//! status docs/API.md gives, `Retry-After` and problem+json, while the
//! clients within the caps are served.

use std::time::Duration;

use super::{client_from, closed, connect, healthz_on, raw_problem, read_answer};
use crate::support::{assert_problem, bounded, try_publish, wait_until, Broker, Store};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn connections_past_the_cap_get_a_fast_503_and_close() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[("SLUICE__LIMITS__MAX_CONNECTIONS", "4")]).await;
        // Connections, each answered once (so counted), until one is
        // refused: the helpers' own pooled connection counts too.
        let mut held = Vec::new();
        let (mut fourth, answer) = loop {
            assert!(held.len() < 4, "more than 4 connections served");
            let mut s = connect(b.port).await;
            use tokio::io::AsyncWriteExt as _;
            s.write_all(
                b"POST /v1/topics/conn/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
            )
            .await
            .unwrap();
            let answer = read_answer(&mut s, T).await;
            if !answer.starts_with("HTTP/1.1 201 ") {
                break (s, answer);
            }
            held.push(s);
        };
        assert!(held.len() >= 2, "{} served before the refusal", held.len());
        let p = raw_problem(&answer, 503);
        let head = answer.split_once("\r\n\r\n").unwrap().0;
        assert_eq!(super::header(head, "retry-after"), Some("1"), "{head}");
        assert!(p["detail"].as_str().unwrap().contains("connections"), "{p}");
        assert!(
            closed(&mut fourth, T).await,
            "a refused connection is closed"
        );
        // The connections within the cap are served, and the refused
        // publish stored nothing.
        assert_eq!(healthz_on(&mut held[0]).await, 200);
        let stored = held.len();
        // A connection that closes makes room for a new one.
        held.pop();
        wait_until(T, "a new connection is served", || async {
            let mut s = connect(b.port).await;
            healthz_on(&mut s).await == 200
        })
        .await;
        drop(held);
        assert_eq!(b.count("conn").await, stored);
    })
    .await;
}

#[tokio::test]
async fn streams_past_the_caps_get_429_per_client_and_503_in_all() {
    bounded(60, async {
        let b = Broker::start(
            Store::Embedded,
            &[
                ("SLUICE__LIMITS__MAX_STREAMS", "3"),
                ("SLUICE__LIMITS__MAX_STREAMS_PER_CLIENT", "2"),
                ("SLUICE__RATE_LIMIT__EXEMPT_LOOPBACK", "false"),
            ],
        )
        .await;
        b.publish_ok("caps", "first").await;
        let mut a1 = b.sse("caps", "", &[]).await;
        let a2 = b.sse("caps", "", &[]).await;
        a1.assert_ok();
        a2.assert_ok();
        let refused = b.sse("caps", "", &[]).await;
        let p = refused.assert_problem(429);
        assert!(p["detail"].as_str().unwrap().contains("streams"), "{p}");
        assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
        // Another client address has its own share, up to the global cap.
        let url = b.url("/v1/topics/caps/events");
        let other = client_from("127.0.0.2");
        let ok = other
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let full = client_from("127.0.0.3")
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let (status, headers) = (full.status(), full.headers().clone());
        let text = full.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_default();
        assert_problem(503, status, &headers, &json, &text);
        assert_eq!(headers.get("retry-after").unwrap(), "1");
        // The open streams are served meanwhile.
        b.publish_ok("caps", "second").await;
        assert_eq!(a1.expect_event(T).await.data, "second");
        // A stream that ends frees its place.
        drop(a2);
        drop(ok);
        wait_until(T, "a stream opens again", || async {
            b.sse("caps", "", &[]).await.status == 200
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn topics_past_the_caps_get_503_in_all_and_429_per_client() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[("SLUICE__LIMITS__MAX_TOPICS", "3")]).await;
        for t in ["t1", "t2", "t3"] {
            b.publish_ok(t, "x").await;
        }
        let r = b.publish("t4", "x", &[]).await;
        let p = r.assert_problem(503);
        assert!(
            p["detail"].as_str().unwrap().contains("topics"),
            "{}",
            r.text
        );
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        let s = b.sse("t4", "", &[]).await;
        s.assert_problem(503);
        assert_eq!(b.get("/v1/topics/t4").await.status, 404, "nothing stored");
        // Topics that exist are served.
        b.publish_ok("t1", "y").await;
        b.sse("t2", "", &[]).await.assert_ok();

        let b = Broker::start(
            Store::Embedded,
            &[
                ("SLUICE__RATE_LIMIT__TOPICS_PER_MINUTE", "2"),
                ("SLUICE__RATE_LIMIT__EXEMPT_LOOPBACK", "false"),
            ],
        )
        .await;
        b.publish_ok("n1", "x").await;
        b.publish_ok("n2", "x").await;
        let r = b.publish("n3", "x", &[]).await;
        let p = r.assert_problem(429);
        assert!(
            p["detail"].as_str().unwrap().contains("new topics"),
            "{}",
            r.text
        );
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        b.sse("n3", "", &[]).await.assert_problem(429);
        assert_eq!(b.get("/v1/topics/n3").await.status, 404, "nothing stored");
        // Its topics are still its own, and another client creates its own.
        b.publish_ok("n1", "y").await;
        let r = try_publish(&client_from("127.0.0.2"), &b.base_url(), "n3", "x", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text);
    })
    .await;
}
