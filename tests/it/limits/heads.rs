//! Request heads past their size limits (`431`), and deadlines: a head
//! that never completes (the first on a connection, silent or trickled, or
//! a later one on a kept-alive connection) and a body trickled a byte at a
//! time are answered `408` and their connection closes.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use super::{closed, connect, healthz_on, raw_problem, read_answer};
use crate::support::{bounded, Broker, BrokerProcess, Store};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn heads_past_their_limits_get_431() {
    bounded(60, async {
        // A process of its own: the head limits are the HTTP layer's, one
        // per process.
        let b = BrokerProcess::start(
            Store::Embedded,
            &[
                ("SLUICE__LIMITS__MAX_HEAD_BYTES", "2048"),
                ("SLUICE__LIMITS__MAX_HEADERS", "16"),
            ],
        )
        .await;
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(3000)
        );
        let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for i in 0..20 {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        for raw in [big, many] {
            let mut s = connect(b.port).await;
            s.write_all(raw.as_bytes()).await.unwrap();
            let answer = read_answer(&mut s, T).await;
            raw_problem(&answer, 431);
            assert!(closed(&mut s, T).await);
        }
        // Within the limits: served.
        let fits = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1500)
        );
        let mut s = connect(b.port).await;
        s.write_all(fits.as_bytes()).await.unwrap();
        assert!(read_answer(&mut s, T).await.starts_with("HTTP/1.1 200 "));
    })
    .await;
}

#[tokio::test]
async fn a_late_request_head_on_a_kept_alive_connection_gets_408() {
    bounded(60, async {
        let b = Broker::start(
            Store::Embedded,
            &[("SLUICE__REQUEST_HEAD_TIMEOUT_SECS", "1")],
        )
        .await;
        let mut s = connect(b.port).await;
        assert_eq!(healthz_on(&mut s).await, 200);
        // The next head, a byte every 100 ms: it would take 4 s.
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n";
        let started = Instant::now();
        let mut answer = String::new();
        for byte in head {
            if s.write_all(&[*byte]).await.is_err() {
                break;
            }
            answer = read_answer(&mut s, Duration::from_millis(100)).await;
            if !answer.is_empty() {
                break;
            }
        }
        if answer.is_empty() {
            answer = read_answer(&mut s, T).await;
        }
        raw_problem(&answer, 408);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "cut off before the head was done"
        );
        assert!(closed(&mut s, T).await);
        // A connection that sends nothing at all gets the same (after at
        // most twice the deadline: see docs/API.md, "Limits").
        let mut silent = connect(b.port).await;
        raw_problem(&read_answer(&mut silent, T).await, 408);
        assert!(closed(&mut silent, T).await);
    })
    .await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_stores_nothing() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[("SLUICE__REQUEST_BODY_TIMEOUT_SECS", "1")]).await;
        let mut s = connect(b.port).await;
        s.write_all(
            b"POST /v1/topics/trickle/events HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nfirst bytes",
        )
        .await
        .unwrap();
        // The rest a byte every 200 ms: it would take 6 s.
        let started = Instant::now();
        let mut answer = String::new();
        for _ in 0..29 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            answer = read_answer(&mut s, Duration::from_millis(200)).await;
            if !answer.is_empty() {
                break;
            }
        }
        let p = raw_problem(&answer, 408);
        assert!(p["detail"].as_str().unwrap().contains("body"), "{p}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(closed(&mut s, T).await);
        assert_eq!(b.get("/v1/topics/trickle").await.status, 404, "nothing stored");
        // A body sent at once is served.
        b.publish_ok("trickle", "whole").await;
    })
    .await;
}
