//! Subscribing: SSE headers, `retry:` and heartbeats, `?stream=sse`, no
//! compression, HTTP/2, closed streams; and the JSON history poll.

use std::time::Duration;

use super::{HB, T};
use crate::support::*;

on_both_stores! {
    #[tokio::test]
    sse_headers_retry_and_heartbeat,
    #[tokio::test]
    keep_alives_come_when_the_probe_is_more_frequent,
    #[tokio::test]
    stream_query_param_works_without_accept,
    #[tokio::test]
    event_stream_is_not_compressed,
    #[tokio::test]
    closed_streams_do_not_leak,
    #[tokio::test]
    http2_prior_knowledge_with_curl,
    #[tokio::test]
    history_poll_shape_limit_and_chaining,
}

async fn sse_headers_retry_and_heartbeat(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[HB]).await;
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

/// A liveness probe is written more often than the heartbeat (the
/// defaults: 2 s and 15 s); the probes must not hold the keep-alives back.
async fn keep_alives_come_when_the_probe_is_more_frequent(store: Store) {
    bounded(60, async {
        let env = [
            ("SLUICE__STREAM__HEARTBEAT_SECS", "2"),
            ("SLUICE__STREAM__LIVENESS_PROBE_SECS", "1"),
        ];
        let b = Broker::start(store, &env).await;
        let mut s = b.sse("probed", "", &[]).await;
        s.assert_ok();
        let (mut probes, mut beats) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while beats < 2 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match s.next_item(left).await {
                Some(SseItem::Retry(_)) => {}
                Some(SseItem::Message(m)) if m.retry.is_some() => {}
                Some(SseItem::Comment(c)) if c.trim().is_empty() => probes += 1,
                Some(SseItem::Comment(c)) => {
                    assert_eq!(c.trim(), "keep-alive");
                    beats += 1;
                }
                other => panic!(
                    "two keep-alives (2 s) expected within 8 s, got {beats} and {probes} probes, then {other:?}"
                ),
            }
        }
        assert!(probes >= 1, "the 1 s probe is written too");
    })
    .await;
}

async fn stream_query_param_works_without_accept(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn event_stream_is_not_compressed(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
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

async fn closed_streams_do_not_leak(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[HB]).await;
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
async fn http2_prior_knowledge_with_curl(store: Store) {
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
        let b = Broker::start(store, &[]).await;
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

// ---------------------------------------------------------------------------
// History poll
// ---------------------------------------------------------------------------

async fn history_poll_shape_limit_and_chaining(store: Store) {
    bounded(90, async {
        let b = Broker::start(store, &[]).await;
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
