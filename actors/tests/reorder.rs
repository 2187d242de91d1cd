//! A store that may run a topic's appends in another order than they were
//! started (as Redis may, after a reconnect or a script reload, with
//! several appends in flight): each publisher still gets the seq its
//! events were stored at, subscribers get every event once in log order,
//! and a producer's sequence is not overtaken by its next one.

mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::future::join_all;
use sluice_actors::{
    event::{AppendOutcome, NewEvent, StoredEvent},
    memory_store::MemoryStore,
    store::{AppendFuture, SharedStore, Store, StoreError, TopicBounds},
    topic::Start,
    Broker,
};
use tokio::sync::oneshot;

use common::{config, read_events, subscribe};

/// How long an append waits for the next one to overtake it: only the
/// last append of a burst waits this long, alone.
const HOLD: Duration = Duration::from_millis(300);

/// Runs every odd-numbered append after the even-numbered one started
/// next (or after [`HOLD`], if none comes).
struct Reordering {
    inner: MemoryStore,
    /// Whether it says so ([`Store::appends_may_reorder`]).
    admits_it: bool,
    started: AtomicU64,
    /// Lets the held append go.
    release: Mutex<Option<oneshot::Sender<()>>>,
    /// Appends that ran after one started later.
    overtaken: AtomicU64,
}

impl Reordering {
    fn new(admits_it: bool) -> Arc<Self> {
        Arc::new(Reordering {
            inner: MemoryStore::new(),
            admits_it,
            started: AtomicU64::new(0),
            release: Mutex::new(None),
            overtaken: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Store for Reordering {
    async fn open_topic(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        self.inner.open_topic(topic).await
    }

    async fn bounds(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        self.inner.bounds(topic).await
    }

    async fn append(
        &self,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.inner.append(topic, batch, time_ms).await
    }

    fn start_append(
        self: Arc<Self>,
        topic: Arc<str>,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> AppendFuture {
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        if n % 2 == 1 {
            let (tx, rx) = oneshot::channel();
            *self.release.lock().unwrap() = Some(tx);
            Box::pin(async move {
                if let Ok(Ok(())) = tokio::time::timeout(HOLD, rx).await {
                    self.overtaken.fetch_add(1, Ordering::SeqCst);
                }
                self.inner.append(&topic, batch, time_ms).await
            })
        } else {
            let release = self.release.lock().unwrap().take();
            Box::pin(async move {
                let res = self.inner.append(&topic, batch, time_ms).await;
                if let Some(tx) = release {
                    let _ = tx.send(());
                }
                res
            })
        }
    }

    fn max_appends_in_flight(&self) -> usize {
        2
    }

    fn appends_may_reorder(&self) -> bool {
        self.admits_it
    }

    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read(topic, after_seq, limit).await
    }

    async fn topics(&self) -> Result<Vec<String>, StoreError> {
        self.inner.topics().await
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        self.inner.delete_topic(topic).await
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn stored_seq(outcome: &AppendOutcome) -> u64 {
    match outcome {
        AppendOutcome::Stored(ev) => ev.seq,
        other => panic!("not stored: {other:?}"),
    }
}

#[actix::test]
async fn appends_stored_out_of_order_reach_every_subscriber_once_in_log_order() {
    let store = Reordering::new(true);
    let broker = Broker::start(store.clone() as SharedStore, config(1));
    let mut live = subscribe(&broker, "r", Start::Latest).await;
    let total = 300;
    // Concurrent publishes: the topic coalesces them into appends of up to
    // ten events, two in flight, the second of each pair stored first.
    let replies = join_all((0..total).map(|i| {
        let broker = broker.clone();
        async move {
            let reply = broker
                .publish("r", vec![NewEvent::data(format!("{i}"))])
                .await
                .unwrap();
            (i, stored_seq(&reply.outcomes[0]))
        }
    }))
    .await;
    assert!(
        store.overtaken.load(Ordering::SeqCst) > 0,
        "the store never reordered: the test shows nothing"
    );
    // The log's order, by the seqs the publishers were answered with.
    let mut by_seq = replies.clone();
    by_seq.sort_by_key(|&(_, seq)| seq);
    let seqs: Vec<u64> = by_seq.iter().map(|&(_, s)| s).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    let log_order: Vec<usize> = by_seq.iter().map(|&(i, _)| i).collect();
    // A live subscriber and one from the start both see exactly that.
    assert_eq!(read_events(&mut live, total).await, log_order);
    let mut replay = subscribe(&broker, "r", Start::Earliest).await;
    assert_eq!(read_events(&mut replay, total).await, log_order);
}

/// Two publishes of one producer, the second sent before the first is
/// answered, with `admits_it` as the store's word: every outcome. The
/// first carries ten events (sequences 1 to 10), as many as an append
/// takes, so the two cannot share one.
async fn producer_pair(admits_it: bool) -> Vec<AppendOutcome> {
    let store = Reordering::new(admits_it);
    let broker = Broker::start(store as SharedStore, config(1));
    // The topic is loaded first (by a subscription: no append), so both
    // publishes find it ready.
    let _live = subscribe(&broker, "q", Start::Latest).await;
    let sequenced = |seqs: std::ops::RangeInclusive<u64>| {
        seqs.map(|seq| {
            let mut ev = NewEvent::data(format!("{seq}"));
            ev.producer = Some(("p".to_owned(), seq));
            ev
        })
        .collect::<Vec<_>>()
    };
    // Polled in turn: the first reaches the topic before the second.
    let (first, second) = futures_util::join!(
        broker.publish("q", sequenced(1..=10)),
        broker.publish("q", sequenced(11..=11))
    );
    [first, second]
        .into_iter()
        .flat_map(|r| r.unwrap().outcomes)
        .collect()
}

#[actix::test]
async fn a_producers_next_sequence_does_not_overtake_the_one_before() {
    let outcomes = producer_pair(true).await;
    assert_eq!(
        outcomes.iter().map(stored_seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    // What it guards against: a store that reorders without saying so
    // stores the second first (the producer's first sequence it sees), and
    // then takes the first ten for duplicates of it: lost.
    let outcomes = producer_pair(false).await;
    assert!(
        matches!(outcomes[0], AppendOutcome::Duplicate(None)),
        "{outcomes:?}"
    );
}
