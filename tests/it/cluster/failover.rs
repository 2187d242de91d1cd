//! Failover with Last-Event-ID: a subscriber of instance B (dropped, or B
//! SIGKILLed) resumes on C while A keeps publishing.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{instance, member, T};
use crate::support::{redis::RedisServer, *};

/// Publishes `{"seq":i}` on `base` from 0 until `stop`; returns the count.
fn spawn_publisher(
    base: String,
    topic: String,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let c = http_client();
        let mut cursors = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let r = try_publish(&c, &base, &topic, &format!("{{\"seq\":{i}}}"), &[])
                .await
                .unwrap_or_else(|e| panic!("publish {i} on A: {e}"));
            assert_eq!(r.status, 201, "publish {i} on A: {}", r.text);
            cursors.push(r.cursor());
            i += 1;
            published.store(i, Ordering::SeqCst);
            // Pace it so the stream is read while publishing continues.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cursors
    })
}

async fn failover(kill_b: bool) {
    let redis = RedisServer::start().await;
    let hb = [("SLUICE__STREAM__HEARTBEAT_SECS", "1")];
    let a = instance(&redis, &hb).await;
    // A process, since one variant SIGKILLs it.
    let mut b = BrokerProcess::with(member(&redis, &hb)).await;
    let c = instance(&redis, &hb).await;
    let t = topic(if kill_b {
        "failover-kill"
    } else {
        "failover-drop"
    });

    let mut on_b = b.sse(&t, "from=earliest", &[]).await;
    on_b.assert_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(a.base_url(), t.clone(), stop.clone(), published.clone());

    let mut got: Vec<Message> = on_b.expect_events(150, T).await;
    if kill_b {
        b.kill9().await;
        // Whatever B wrote before dying and the client fully received counts.
        loop {
            match on_b.next_item(Duration::from_secs(10)).await {
                Some(SseItem::Message(m)) => got.push(m),
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(SseItem::Eof) | Some(SseItem::Error(_)) => break,
                None => panic!("B's stream neither ended nor delivered within 10 s of SIGKILL"),
            }
        }
    } else {
        // The subscriber goes away mid-stream.
        drop(on_b);
    }
    let last = msg_id(got.last().expect("events before the failover"));
    let received_before = got.len();
    let at_reconnect = published.load(Ordering::SeqCst);

    let mut on_c = c.sse(&t, "", &[("last-event-id", &last)]).await;
    on_c.assert_ok();
    // Keep publishing until C has delivered at least 150 events that were
    // published after the reconnect.
    let target = at_reconnect + 150;
    while (got.len() as u64) < target {
        got.push(on_c.expect_event(T).await);
    }
    stop.store(true, Ordering::SeqCst);
    let cursors = publisher.await.expect("publisher task");
    let n = cursors.len();
    assert!(
        (at_reconnect as usize) < n,
        "the publisher must still be publishing during the reconnect"
    );
    while got.len() < n {
        got.push(on_c.expect_event(T).await);
    }
    on_c.expect_no_event(Duration::from_millis(500)).await;

    let seqs: Vec<u64> = got.iter().map(|m| seq_of(&m.data)).collect();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(
            *s,
            i as u64,
            "gap or duplicate at position {i} around the failover \
             (reconnected after {at_reconnect} events): {:?}",
            &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())]
        );
    }
    let ids: Vec<String> = got.iter().map(msg_id).collect();
    assert_eq!(ids, cursors, "ids delivered by B then C are A's cursors");
    eprintln!(
        "failover (kill B: {kill_b}): {n} events; the subscriber reconnected to C after \
         receiving {received_before}, when {at_reconnect} were published"
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_subscriber_dropped_on_b_resumes_on_c() {
    bounded(120, failover(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_instance_b_sigkilled_subscriber_resumes_on_c() {
    bounded(120, failover(true)).await;
}
