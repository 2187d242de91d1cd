//! `DELETE /v1/topics/{topic}`: the topic's events and dedup state go, its
//! open streams end (the client reads the end of the body), every read
//! says it does not exist, a resume from one of its cursors is `416`, and
//! the next publish starts a new log under a new epoch. Publishes racing
//! the delete are either deleted with the old log or kept in the new one.
//! Across Redis instances in [`cluster`], across a SIGKILL in [`crash`].

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use crate::support::*;

mod cluster;
mod crash;

const T: Duration = Duration::from_secs(15);
const HB: (&str, &str) = ("SLUICE__STREAM__HEARTBEAT_SECS", "1");

on_both_stores! {
    #[tokio::test]
    delete_ends_streams_and_leaves_nothing_of_the_topic,
    #[tokio::test]
    delete_of_an_unknown_topic_is_404_and_of_a_bad_name_400,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    delete_during_publishes_loses_no_acknowledged_event,
}

/// `DELETE /v1/topics/{topic}`.
async fn delete(b: &Api, topic: &str) -> Resp {
    b.request(Method::DELETE, &format!("/v1/topics/{topic}"), &[], None)
        .await
}

/// Reads `s` until its body ends and returns how it ended; panics on an
/// event, or when the body is still open after `within`.
async fn expect_end(s: &mut SseStream, within: Duration, what: &str) -> SseItem {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match s.next_item(left).await {
            None => panic!("{what}: the stream is still open {within:?} after the delete"),
            Some(SseItem::Message(m)) => panic!("{what}: an event after the delete: {m:?}"),
            Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
            Some(end) => return end,
        }
    }
}

/// The topic names of `GET /v1/topics`.
async fn listed(b: &Api) -> Vec<String> {
    let r = b.get("/v1/topics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["topics"]
        .as_array()
        .unwrap_or_else(|| panic!("no topics array: {}", r.text))
        .iter()
        .map(|t| t["topic"].as_str().expect("topic name").to_string())
        .collect()
}

/// Asserts that `b` knows nothing of `t`: info and history `404`, not
/// listed.
async fn assert_gone(b: &Api, t: &str, what: &str) {
    let r = b.get(&format!("/v1/topics/{t}")).await;
    assert_eq!(r.status, 404, "{what}: GET /v1/topics/{t}: {}", r.text);
    r.assert_problem(404);
    for q in ["", "from=earliest", "from=latest"] {
        let r = b.history(t, q).await;
        assert_eq!(r.status, 404, "{what}: history ?{q}: {}", r.text);
        r.assert_problem(404);
    }
    let names = listed(b).await;
    assert!(
        !names.iter().any(|n| n == t),
        "{what}: {t} still listed: {names:?}"
    );
}

/// Asserts a `416` for a cursor of the deleted log whose next and latest
/// cursors belong to another one.
fn assert_other_log(what: &str, problem: &Value, next: Option<String>, old_epoch: &str) {
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("another log epoch")),
        "{what}: {problem}"
    );
    let next = next.unwrap_or_else(|| panic!("{what}: 416 without X-Next-Cursor"));
    assert_ne!(cursor_epoch(&next), old_epoch, "{what}: X-Next-Cursor");
    let latest = problem["latest_cursor"].as_str().expect("latest_cursor");
    assert_ne!(cursor_epoch(latest), old_epoch, "{what}: latest_cursor");
}

async fn delete_ends_streams_and_leaves_nothing_of_the_topic(store: Store) {
    bounded(90, async {
        let b = Broker::start(store, &[HB]).await;
        let (t, kept) = (topic("doomed"), topic("kept"));
        let old = b.publish_numbered(&t, 0..5).await;
        let old_epoch = cursor_epoch(&old[4]).to_string();
        // Dedup state that must go with the log.
        let keyed = b.publish(&t, "keyed", &[("idempotency-key", "k1")]).await;
        assert_eq!(keyed.status, 201, "{}", keyed.text);
        let pseq = [("producer-id", "p1"), ("producer-seq", "7")];
        assert_eq!(b.publish(&t, "p7", &pseq).await.status, 201);
        b.publish_ok(&kept, "stays").await;

        let mut s = b.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let ids: Vec<String> = s.expect_events(7, T).await.iter().map(msg_id).collect();
        assert_eq!(ids[..5], old[..]);

        let r = delete(&b, &t).await;
        assert_eq!(r.status, 204, "DELETE: {}", r.text);
        assert!(r.text.is_empty(), "a 204 has no body: {:?}", r.text);

        // The client sees its stream end: the body ends cleanly.
        let end = expect_end(&mut s, T, "stream of the deleted topic").await;
        assert_eq!(end, SseItem::Eof, "the stream must end cleanly");
        assert_gone(&b, &t, "after the delete").await;
        assert!(listed(&b).await.contains(&kept), "the other topic stays");

        // A poll from a cursor of the deleted log, and the EventSource
        // reconnect with it: 416, pointing into another log.
        let h = b.history(&t, &format!("cursor={}", old[4])).await;
        let p = h.assert_problem(416).clone();
        assert_other_log(
            "poll from the old cursor",
            &p,
            h.header("x-next-cursor"),
            &old_epoch,
        );
        let r = b.sse(&t, "", &[("last-event-id", &old[4])]).await;
        let p = r.assert_problem(416).clone();
        assert_other_log(
            "resume with Last-Event-ID",
            &p,
            r.header("x-next-cursor"),
            &old_epoch,
        );

        // A new publish starts a new log; the old one's dedup state is gone.
        let fresh = b.publish_ok(&t, "after").await;
        assert_ne!(cursor_epoch(&fresh), old_epoch, "a new log, a new epoch");
        assert_eq!(cursor_seq(&fresh), 1, "the new log starts at 1: {fresh}");
        let again = b.publish(&t, "keyed", &[("idempotency-key", "k1")]).await;
        assert_eq!(
            again.status, 201,
            "a key of the deleted log: {}",
            again.text
        );
        let first = [("producer-id", "p1"), ("producer-seq", "1")];
        let r = b.publish(&t, "p1", &first).await;
        assert_eq!(r.status, 201, "a producer's first sequence: {}", r.text);
        let events = b.all_events(&t).await;
        let datas: Vec<&str> = events.iter().map(data_of).collect();
        assert_eq!(datas, ["after", "keyed", "p1"], "only the new log's events");
        assert_eq!(cursor_of(&events[0]), fresh);
        assert_eq!(b.count(&kept).await, 1, "the other topic is untouched");

        // Nothing of it left on this instance's books.
        wait_until(T, "the stream's connection row is gone", || async {
            b.connections().await.is_empty()
        })
        .await;
        let m = b.metrics().await;
        assert!(m.value("sluice_topics_deleted_total") >= 1.0);
        assert!(m.value("sluice_stream_disconnects_total{reason=\"deleted\"}") >= 1.0);
    })
    .await;
}

async fn delete_of_an_unknown_topic_is_404_and_of_a_bad_name_400(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let r = delete(&b, "never-used").await;
        let p = r.assert_problem(404);
        assert_eq!(p["type"], "https://sluice.dev/problems/not-found", "{p}");
        for bad in ["-dash", ".dot", "a%20b", &"a".repeat(129)] {
            let r = delete(&b, bad).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text);
            r.assert_problem(400);
        }
        // A second delete finds nothing; a refused one creates nothing.
        let t = topic("twice");
        b.publish_ok(&t, "x").await;
        assert_eq!(delete(&b, &t).await.status, 204);
        delete(&b, &t).await.assert_problem(404);
        assert_eq!(listed(&b).await, Vec::<String>::new());

        // The resource names DELETE among its methods, and browsers may
        // send it from another origin.
        let r = b.request(Method::PUT, "/v1/topics/x", &[], None).await;
        assert_eq!(r.status, 405, "{}", r.text);
        assert_eq!(
            r.header("allow").as_deref(),
            Some("GET, HEAD, DELETE, OPTIONS")
        );
        let origin = "http://app.test";
        let r = b
            .request(
                Method::OPTIONS,
                "/v1/topics/x",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "DELETE"),
                ],
                None,
            )
            .await;
        assert!(r.status.is_success(), "preflight: {} {}", r.status, r.text);
        let methods = r.header("access-control-allow-methods").unwrap_or_default();
        assert!(
            methods
                .split(',')
                .any(|m| m.trim() == "DELETE" || m.trim() == "*"),
            "Access-Control-Allow-Methods lacks DELETE: {methods:?}"
        );
        b.publish_ok("x", "y").await;
        let r = b
            .request(Method::DELETE, "/v1/topics/x", &[("origin", origin)], None)
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(origin)
        );
    })
    .await;
}

async fn delete_during_publishes_loses_no_acknowledged_event(store: Store) {
    bounded(120, async {
        let b = Broker::start(store, &[]).await;
        let t = topic("raced");
        let old_epoch = cursor_epoch(&b.publish_ok(&t, "first").await).to_string();
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for p in 0..4 {
            let (acked, stop, base, t) = (acked.clone(), stop.clone(), b.base_url(), t.clone());
            tasks.push(tokio::spawn(async move {
                let client = http_client();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let data = format!("{p}-{i}");
                    let r = try_publish(&client, &base, &t, &data, &[]).await.unwrap();
                    match r.status.as_u16() {
                        201 => acked.lock().unwrap().push((r.cursor(), data)),
                        // Nothing stored: a retry with the same data.
                        503 => tokio::time::sleep(Duration::from_millis(10)).await,
                        s => panic!("publish {data}: {s} {}", r.text),
                    }
                }
            }));
        }
        let n = || acked.lock().unwrap().len();
        wait_until(T, "publishes under way", || async { n() >= 50 }).await;
        let r = delete(&b, &t).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let at_delete = n();
        wait_until(T, "publishes after the delete", || async {
            n() >= at_delete + 50
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }

        // Every acknowledged event was stored before the delete (the old
        // epoch: deleted with its log) or is in the new log; the new log
        // holds nothing else.
        let events = b.all_events(&t).await;
        let kept: Vec<(String, String)> = events
            .iter()
            .map(|e| (cursor_of(e), data_of(e).to_string()))
            .collect();
        let new_epoch = cursor_epoch(&kept[0].0).to_string();
        assert_ne!(new_epoch, old_epoch);
        let acked = acked.lock().unwrap();
        let (before, after): (Vec<_>, Vec<_>) = acked
            .iter()
            .partition(|(c, _)| cursor_epoch(c) == old_epoch);
        assert!(
            !before.is_empty(),
            "no publish was acknowledged before the delete"
        );
        let mut after: Vec<(String, String)> = after.into_iter().cloned().collect();
        after.sort();
        let mut kept_sorted = kept.clone();
        kept_sorted.sort();
        assert_eq!(
            after, kept_sorted,
            "the acknowledged events of the new log ({new_epoch}) and the new log's history differ"
        );
    })
    .await;
}
