//! An in-memory store for unit tests: the Store contract without a disk.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;

use crate::{
    cursor::{now_ms, Epoch},
    dedup::{DedupIndex, Verdict},
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::{Store, StoreError, TopicBounds},
};

struct MemTopic {
    bounds: TopicBounds,
    events: Vec<StoredEvent>,
    dedup: DedupIndex,
}

/// Keeps every event in memory, forever. Not for production use.
#[derive(Default)]
pub struct MemoryStore {
    topics: Mutex<HashMap<String, MemTopic>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every event of `topic` after `keep_through`, keeping its
    /// epoch: what a store restarted from an older snapshot looks like.
    pub fn rewind(&self, topic: &str, keep_through: u64) {
        let mut topics = self.topics.lock().expect("poisoned");
        let t = topics.get_mut(topic).expect("known topic");
        t.events.retain(|e| e.seq <= keep_through);
        t.bounds.latest_seq = keep_through;
        t.bounds.latest_time_ms = t.events.last().map_or(0, |e| e.time_ms);
        t.dedup = DedupIndex::new(300_000);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn open_topic(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        let mut topics = self.topics.lock().expect("poisoned");
        let t = topics.entry(topic.to_owned()).or_insert_with(|| MemTopic {
            bounds: TopicBounds::empty(Epoch::generate()),
            events: Vec::new(),
            dedup: DedupIndex::new(300_000),
        });
        Ok(t.bounds.clone())
    }

    async fn bounds(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        let topics = self.topics.lock().expect("poisoned");
        topics
            .get(topic)
            .map(|t| t.bounds.clone())
            .ok_or(StoreError::UnknownTopic)
    }

    async fn append(
        &self,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut topics = self.topics.lock().expect("poisoned");
        let t = topics.get_mut(topic).ok_or(StoreError::UnknownTopic)?;
        let time_ms = time_ms.max(t.bounds.latest_time_ms);
        let mut out = Vec::with_capacity(batch.len());
        for ev in batch {
            match t.dedup.check(&ev, now_ms(), &t.bounds.epoch) {
                Verdict::Answer(a) => out.push(a),
                Verdict::New => {
                    let seq = t.bounds.latest_seq + 1;
                    t.dedup.record(
                        ev.idempotency_key.as_deref(),
                        ev.producer.as_ref().map(|(p, s)| (p.as_str(), *s)),
                        ev.fingerprint(),
                        seq,
                        time_ms,
                    );
                    let stored = StoredEvent {
                        seq,
                        time_ms,
                        event_type: ev.event_type,
                        data: ev.data,
                    };
                    if t.events.is_empty() {
                        t.bounds.first_time_ms = time_ms;
                    }
                    t.bounds.latest_seq = seq;
                    t.bounds.latest_time_ms = time_ms;
                    t.events.push(stored.clone());
                    out.push(AppendOutcome::Stored(stored));
                }
            }
        }
        Ok(out)
    }

    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let topics = self.topics.lock().expect("poisoned");
        let t = topics.get(topic).ok_or(StoreError::UnknownTopic)?;
        let start = after_seq.saturating_sub(t.bounds.first_seq - 1) as usize;
        Ok(t.events.iter().skip(start).take(limit).cloned().collect())
    }

    async fn topics(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .topics
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect())
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        let mut topics = self.topics.lock().expect("poisoned");
        topics
            .remove(topic)
            .map(|_| ())
            .ok_or(StoreError::UnknownTopic)
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
