//! FLUSHALL while clients hold cursors: 416 and a new epoch, never an old
//! position mapped onto the new log.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{instance, T};
use crate::support::{redis::RedisServer, *};

/// Publishes on `b`, retrying a `503` (with `Retry-After`) for at most 5 s.
async fn publish_retrying(b: &Api, topic: &str, body: &str, retries: &mut u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = b.publish(topic, body, &[]).await;
        if r.status == 201 {
            return r.cursor();
        }
        r.assert_problem(503);
        assert!(r.header("retry-after").is_some(), "503 without Retry-After");
        assert!(
            Instant::now() < deadline,
            "publish {body:?} kept answering 503: {}",
            r.text
        );
        *retries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_416_for(what: &str, r: &Value, headers: &[Option<String>], old_epoch: &str) {
    for (name, v) in ["X-Next-Cursor", "X-Latest-Cursor"].iter().zip(headers) {
        let v = v
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: 416 without {name}"));
        assert_cursor(v);
        assert_ne!(
            cursor_epoch(v),
            old_epoch,
            "{what}: {name} must belong to the new log"
        );
    }
    assert!(r["next_cursor"].is_string(), "{what}: next_cursor in {r}");
    assert!(
        r["latest_cursor"].is_string(),
        "{what}: latest_cursor in {r}"
    );
    assert!(r.get("lost").is_some(), "{what}: lost in {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_gives_416_and_a_new_epoch() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let env = [("SLUICE__STREAM__HEARTBEAT_SECS", "1")];
        let a = instance(&redis, &env).await;
        let b = instance(&redis, &env).await;

        // Topic u: cursors held by a client that is not connected.
        let u = topic("flush-idle");
        let u_cursors = a.publish_numbered(&u, 0..3).await;
        let mut s = b.sse(&u, "from=earliest", &[]).await;
        s.assert_ok();
        s.expect_events(3, T).await;
        drop(s);

        // Topic t: a client on B holds an open stream at the 5th event.
        let t = topic("flush-held");
        let old = a.publish_numbered(&t, 0..5).await;
        let old_epoch = cursor_epoch(&old[4]).to_string();
        let mut held = b.sse(&t, "from=earliest", &[]).await;
        held.assert_ok();
        let ids: Vec<String> = held.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, old);

        redis.flushall();

        // The idle client's next resume, right away, on either instance: 416.
        let u_last = &u_cursors[2];
        let u_epoch = cursor_epoch(u_last).to_string();
        for (name, broker) in [("B", &b), ("A", &a)] {
            let s = broker.sse(&u, "", &[("last-event-id", u_last)]).await;
            let prob = s.assert_problem(416).clone();
            assert_416_for(
                &format!("resume of {u} on {name}"),
                &prob,
                &[s.header("x-next-cursor"), s.header("x-latest-cursor")],
                &u_epoch,
            );
        }
        let h = a.history(&u, &format!("cursor={u_last}")).await;
        h.assert_problem(416);

        // New publishes on A work and start a new epoch.
        let mut retries = 0;
        let mut fresh = Vec::new();
        for i in 0..10 {
            fresh.push(
                publish_retrying(&a, &t, &format!("{{\"seq\":{}}}", 100 + i), &mut retries).await,
            );
        }
        let new_epoch = cursor_epoch(&fresh[0]).to_string();
        assert_ne!(new_epoch, old_epoch, "a wiped log must get a new epoch");
        for c in &fresh {
            assert_eq!(cursor_epoch(c), new_epoch);
        }

        // The stream held on B must never deliver a position that does not
        // exist in its log: it ends (its client then resumes and gets 416).
        let mut after_flush = Vec::new();
        let end = loop {
            match held.next_item(Duration::from_secs(10)).await {
                Some(SseItem::Message(m)) => after_flush.push(m),
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(end) => break Some(end),
                None => break None,
            }
        };
        let wrong: Vec<String> = after_flush
            .iter()
            .filter(|m| m.event.as_deref() != Some("gap"))
            .map(|m| format!("{:?}={}", m.id, m.data))
            .collect();
        assert!(
            wrong.is_empty(),
            "the stream held across FLUSHALL delivered events of the new log as if they \
             followed {} (old epoch {old_epoch}, new epoch {new_epoch}): {wrong:?}",
            old[4]
        );
        assert!(
            end.is_some(),
            "the stream held across FLUSHALL neither ended nor delivered anything within 10 s"
        );

        // Its client resumes with the last id it got: 416 on B and on A.
        for (name, broker) in [("B", &b), ("A", &a)] {
            let s = broker.sse(&t, "", &[("last-event-id", &old[4])]).await;
            let prob = s.assert_problem(416).clone();
            assert_416_for(
                &format!("resume of {t} on {name}"),
                &prob,
                &[s.header("x-next-cursor"), s.header("x-latest-cursor")],
                &old_epoch,
            );
            assert_eq!(
                s.header("x-latest-cursor").as_deref(),
                Some(fresh[9].as_str()),
                "X-Latest-Cursor on {name}"
            );
            // Resuming from X-Next-Cursor delivers everything still retained.
            let next = s.header("x-next-cursor").unwrap();
            let mut r = broker.sse(&t, "", &[("last-event-id", &next)]).await;
            r.assert_ok();
            let ids: Vec<String> = r.expect_events(10, T).await.iter().map(msg_id).collect();
            assert_eq!(ids, fresh, "resume from X-Next-Cursor on {name}");
        }

        // on_gap=resume: a gap event, then the new log from its start.
        let mut g = a
            .sse(&t, "on_gap=resume", &[("last-event-id", &old[4])])
            .await;
        g.assert_ok();
        let first = g.expect_event(T).await;
        assert_eq!(
            first.event.as_deref(),
            Some("gap"),
            "first event: {first:?}"
        );
        let gap: Value = serde_json::from_str(&first.data).expect("gap data is JSON");
        assert_eq!(gap["requested"], json!(old[4]), "gap event: {gap}");
        assert!(gap.get("lost").is_some(), "gap event: {gap}");
        let ids: Vec<String> = g.expect_events(10, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, fresh, "events after the gap event");

        // Both instances follow the new log: publish on B, live delivery
        // across instances both ways.
        let mut live_b = b.sse(&t, "from=latest", &[]).await;
        live_b.assert_ok();
        let mut live_a = a.sse(&t, "from=latest", &[]).await;
        live_a.assert_ok();
        let on_a = publish_retrying(&a, &t, "{\"seq\":200}", &mut retries).await;
        let on_b = publish_retrying(&b, &t, "{\"seq\":201}", &mut retries).await;
        assert_eq!(cursor_epoch(&on_b), new_epoch, "B writes into the new log");
        for (name, s) in [("B", &mut live_b), ("A", &mut live_a)] {
            let ids: Vec<String> = s.expect_events(2, T).await.iter().map(msg_id).collect();
            assert_eq!(ids, [on_a.clone(), on_b.clone()], "live stream on {name}");
        }
        eprintln!("FLUSHALL: {retries} publish retries (503) after the wipe");
    })
    .await;
}
