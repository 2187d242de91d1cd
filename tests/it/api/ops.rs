//! Topic information, health probes, the connections list, and what the
//! HTTP layer answers to unknown paths, wrong methods and broken requests.

use reqwest::Method;
use serde_json::Value;

use super::{HB, T};
use crate::support::*;

on_both_stores! {
    #[tokio::test]
    topic_information,
    #[tokio::test]
    health_probe_counts_streams,
    #[tokio::test]
    connections_list_open_streams,
    #[tokio::test]
    unknown_path_404_and_wrong_method_405,
    #[tokio::test]
    malformed_and_oversized_request_heads_get_problem_json,
}

async fn topic_information(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[HB]).await;
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

async fn health_probe_counts_streams(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[HB]).await;
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

async fn connections_list_open_streams(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[HB]).await;
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

async fn unknown_path_404_and_wrong_method_405(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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
            (Method::POST, "/v1/topics/t", "GET, HEAD, DELETE, OPTIONS"),
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

async fn malformed_and_oversized_request_heads_get_problem_json(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[("SLUICE__REQUEST_HEAD_TIMEOUT_SECS", "1")]).await;
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
