//! Deduplication state of one topic: idempotency keys and producer sequences.
//!
//! Shared by every store that keeps dedup state in process (the embedded log
//! rebuilds it from its records on start; the memory store keeps it as is).
//! Redis keeps its own in the Lua script.

use std::collections::{HashMap, VecDeque};

use crate::{
    cursor::{Cursor, Epoch},
    event::{AppendOutcome, NewEvent},
};

/// What a new event is, given what the topic already holds.
#[derive(Debug)]
pub enum Verdict {
    /// Store it.
    New,
    /// Already stored (or conflicting): answer this instead of storing.
    Answer(AppendOutcome),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Idempotency(String),
    Producer(String, u64),
}

#[derive(Debug, Clone)]
struct Record {
    seq: u64,
    time_ms: i64,
    fingerprint: u128,
}

/// The dedup index of one topic.
#[derive(Debug, Default)]
pub struct DedupIndex {
    window_ms: i64,
    records: HashMap<Key, Record>,
    /// Insertion order, for expiry by age.
    order: VecDeque<(i64, Key)>,
    /// Highest stored sequence per producer. Kept past the window: a
    /// producer's high-water mark is what makes `Producer-Seq` safe to retry
    /// at any later time.
    producers: HashMap<String, u64>,
}

impl DedupIndex {
    /// An empty index whose key records live for `window_ms`.
    pub fn new(window_ms: i64) -> Self {
        DedupIndex {
            window_ms,
            ..Default::default()
        }
    }

    /// Decides what to do with `ev`, as if every event passed to
    /// [`record`](Self::record) so far were stored.
    pub fn check(&mut self, ev: &NewEvent, now_ms: i64, epoch: &Epoch) -> Verdict {
        self.expire(now_ms);
        if let Some(key) = &ev.idempotency_key {
            if let Some(r) = self.records.get(&Key::Idempotency(key.clone())) {
                return Verdict::Answer(if r.fingerprint == ev.fingerprint() {
                    AppendOutcome::Duplicate(Some(Cursor::new(r.time_ms, r.seq, epoch.clone())))
                } else {
                    AppendOutcome::KeyConflict
                });
            }
        }
        if let Some((producer, pseq)) = &ev.producer {
            if let Some(&high) = self.producers.get(producer) {
                if *pseq <= high {
                    let cursor = self
                        .records
                        .get(&Key::Producer(producer.clone(), *pseq))
                        .map(|r| Cursor::new(r.time_ms, r.seq, epoch.clone()));
                    return Verdict::Answer(AppendOutcome::Duplicate(cursor));
                }
                if *pseq > high.saturating_add(1) {
                    return Verdict::Answer(AppendOutcome::SequenceGap { expected: high + 1 });
                }
            }
        }
        Verdict::New
    }

    /// Notes that `ev` was stored at `seq`.
    pub fn record(
        &mut self,
        ev_key: Option<&str>,
        producer: Option<(&str, u64)>,
        fingerprint: u128,
        seq: u64,
        time_ms: i64,
    ) {
        let rec = Record {
            seq,
            time_ms,
            fingerprint,
        };
        if let Some(key) = ev_key {
            let k = Key::Idempotency(key.to_owned());
            self.order.push_back((time_ms, k.clone()));
            self.records.insert(k, rec.clone());
        }
        if let Some((producer, pseq)) = producer {
            let high = self.producers.entry(producer.to_owned()).or_insert(pseq);
            *high = (*high).max(pseq);
            let k = Key::Producer(producer.to_owned(), pseq);
            self.order.push_back((time_ms, k.clone()));
            self.records.insert(k, rec);
        }
    }

    /// Producer high-water marks, for snapshots.
    pub fn producers(&self) -> &HashMap<String, u64> {
        &self.producers
    }

    /// Restores producer high-water marks from a snapshot.
    pub fn restore_producers(&mut self, marks: HashMap<String, u64>) {
        for (p, s) in marks {
            let high = self.producers.entry(p).or_insert(s);
            *high = (*high).max(s);
        }
    }

    /// Forgets key records older than the window.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.window_ms;
        while let Some((t, _)) = self.order.front() {
            if *t >= cutoff {
                break;
            }
            let (t, k) = self.order.pop_front().expect("front exists");
            // A key re-recorded later has a newer time: keep that record.
            if self.records.get(&k).is_some_and(|r| r.time_ms == t) {
                self.records.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(key: &str, body: &str) -> NewEvent {
        NewEvent {
            idempotency_key: Some(key.into()),
            ..NewEvent::data(body.to_owned())
        }
    }

    #[test]
    fn idempotency_key_replays_and_conflicts_then_expires() {
        let epoch = Epoch::parse("abcd").unwrap();
        let mut d = DedupIndex::new(1000);
        let ev = keyed("k", "a");
        assert!(matches!(d.check(&ev, 0, &epoch), Verdict::New));
        d.record(Some("k"), None, ev.fingerprint(), 7, 0);
        match d.check(&ev, 10, &epoch) {
            Verdict::Answer(AppendOutcome::Duplicate(Some(c))) => assert_eq!(c.seq, 7),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            d.check(&keyed("k", "b"), 10, &epoch),
            Verdict::Answer(AppendOutcome::KeyConflict)
        ));
        assert!(matches!(d.check(&ev, 1001, &epoch), Verdict::New));
    }

    #[test]
    fn producer_sequences() {
        let epoch = Epoch::parse("abcd").unwrap();
        let mut d = DedupIndex::new(1000);
        let with = |s| NewEvent {
            producer: Some(("p".into(), s)),
            ..NewEvent::data("x")
        };
        assert!(matches!(d.check(&with(5), 0, &epoch), Verdict::New));
        d.record(None, Some(("p", 5)), 0, 1, 0);
        assert!(matches!(
            d.check(&with(5), 0, &epoch),
            Verdict::Answer(AppendOutcome::Duplicate(Some(_)))
        ));
        assert!(matches!(
            d.check(&with(3), 0, &epoch),
            Verdict::Answer(AppendOutcome::Duplicate(None))
        ));
        assert!(matches!(
            d.check(&with(7), 0, &epoch),
            Verdict::Answer(AppendOutcome::SequenceGap { expected: 6 })
        ));
        assert!(matches!(d.check(&with(6), 0, &epoch), Verdict::New));
    }
}
