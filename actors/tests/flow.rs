//! Topic ⇄ session flow control with the in-memory store: a subscriber that
//! stops reading is paused at the high watermark, the others keep going, and
//! when it reads again it gets every event once, in order, via the tail and
//! the store.

mod common;

use std::sync::Arc;

use common::{config, publish, read_events, subscribe};
use sluice_actors::{memory_store::MemoryStore, store::SharedStore, topic::Start, Broker};

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
