//! What the broker's integration tests share: a small broker
//! configuration, and publishing and reading through the broker's handle.

// Each test file uses some of these.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use sluice_actors::{
    body::Body,
    event::NewEvent,
    subscription::Watermarks,
    topic::{Start, TopicConfig},
    Broker, BrokerConfig, SessionConfig, StreamRequest,
};

/// A broker with small watermarks and tail, topics on `arbiters` threads.
pub fn config(arbiters: usize) -> BrokerConfig {
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
pub async fn subscribe(broker: &Broker, topic: &str, start: Start) -> Body {
    let req = StreamRequest {
        start,
        resume_on_gap: false,
        retry: Duration::from_secs(1),
        expiry: None,
    };
    broker.open_stream(topic, req).await.unwrap().body
}

pub async fn publish(broker: &Broker, topic: &str, n: usize, from: usize) {
    for i in from..from + n {
        broker
            .publish(topic, vec![NewEvent::data(format!("{i}"))])
            .await
            .unwrap();
    }
}

/// Reads `data:` payloads from a body until `n` events arrived.
pub async fn read_events(rx: &mut Body, n: usize) -> Vec<usize> {
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
