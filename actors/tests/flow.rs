//! Topic ⇄ session flow control with the in-memory store: a subscriber that
//! stops reading is paused at the high watermark, the others keep going, and
//! when it reads again it gets every event once, in order, via the tail and
//! the store.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use sluice_actors::{
    body::Body,
    event::NewEvent,
    memory_store::MemoryStore,
    store::SharedStore,
    subscription::Watermarks,
    topic::{Start, TopicConfig},
    Broker, BrokerConfig, SessionConfig, StreamRequest,
};

fn config(arbiters: usize) -> BrokerConfig {
    BrokerConfig {
        topic: TopicConfig {
            tail_events: 64,
            tail_bytes: 1 << 20,
            watermarks: Watermarks {
                high_events: 32,
                high_bytes: 1 << 20,
                low_events: 8,
                low_bytes: 1 << 19,
            },
            max_coalesce_events: 10,
            mailbox_capacity: 1024,
            max_pending_events: 100_000,
            idle_release: None,
        },
        session: SessionConfig {
            heartbeat: Duration::from_secs(30),
            liveness_probe: None,
            stall_timeout: Duration::from_secs(30),
            mailbox_capacity: 48,
        },
        arbiters,
    }
}

/// Opens a stream on `topic`; returns its response body.
async fn subscribe(broker: &Broker, topic: &str, start: Start) -> Body {
    let req = StreamRequest {
        start,
        resume_on_gap: false,
        retry: Duration::from_secs(1),
        expiry: None,
    };
    broker.open_stream(topic, req).await.unwrap().body
}

async fn publish(broker: &Broker, topic: &str, n: usize, from: usize) {
    for i in from..from + n {
        broker
            .publish(topic, vec![NewEvent::data(format!("{i}"))])
            .await
            .unwrap();
    }
}

/// Reads `data:` payloads from a body until `n` events arrived.
async fn read_events(rx: &mut Body, n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut text = String::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .expect("events arrive in time")
            .expect("stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(d) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                out.push(d.parse().unwrap());
            }
        }
    }
    out
}

#[actix::test]
async fn slow_subscriber_is_paused_then_catches_up_without_gap_or_duplicate() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let broker = Broker::start(store, config(2));
    let mut fast = subscribe(&broker, "t", Start::Latest).await;
    let mut slow = subscribe(&broker, "t", Start::Latest).await;
    let total = 500;
    let publisher = {
        let broker = broker.clone();
        actix::spawn(async move { publish(&broker, "t", total, 0).await })
    };
    // The fast subscriber gets everything while the slow one reads nothing:
    // the slow one's backlog cannot hold up the others.
    let got = read_events(&mut fast, total).await;
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    publisher.await.unwrap();
    // 500 events went far past the slow one's high watermark (32) and the
    // tail (64): it must be served partly from the store.
    let got = read_events(&mut slow, total).await;
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    // And it is live again afterwards.
    publish(&broker, "t", 5, total).await;
    assert_eq!(
        read_events(&mut slow, 5).await,
        (total..total + 5).collect::<Vec<_>>()
    );
}

#[actix::test]
async fn resume_from_earliest_reads_history_then_live() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let broker = Broker::start(store, config(1));
    publish(&broker, "h", 200, 0).await;
    let mut rx = subscribe(&broker, "h", Start::Earliest).await;
    publish(&broker, "h", 50, 200).await;
    assert_eq!(
        read_events(&mut rx, 250).await,
        (0..250).collect::<Vec<_>>()
    );
}
