//! Fan-out and flow control: the topic's in-memory tail of recent events
//! and its subscribers, each a [`Subscription`] that decides for itself
//! whether a live batch is queued or the subscriber pauses.
//!
//! A plain struct, driven by the topic actor and, in tests, by a model:
//! what must happen outside (a catch-up from the store, a stream that must
//! end) comes back as [`Order`]s instead of being sent from here.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::{
    messages::EndReason,
    sse::FramedEvent,
    subscription::{Fed, Offer, Subscription},
};

/// What the caller must do for a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Read from the store after its position (its catch-up has begun).
    CatchUp(u64),
    /// End its stream.
    End(u64, EndReason),
}

/// Sizes of the tail and of the chunks fed from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutLimits {
    /// Most events kept in the tail.
    pub tail_events: usize,
    /// Most bytes kept in the tail.
    pub tail_bytes: usize,
    /// Most events fed to a rejoining subscriber at once (its high
    /// watermark: one feed never takes it further past that).
    pub chunk_events: usize,
}

/// The tail and the subscribers of one topic; `P` is how the caller reaches
/// a subscriber's session.
pub(crate) struct Fanout<P> {
    limits: FanoutLimits,
    tail: VecDeque<FramedEvent>,
    tail_bytes: usize,
    subs: HashMap<u64, (Arc<Subscription>, P)>,
}

impl<P> Fanout<P> {
    pub(crate) fn new(limits: FanoutLimits) -> Self {
        Fanout {
            limits,
            tail: VecDeque::new(),
            tail_bytes: 0,
            subs: HashMap::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Registers a subscriber (it waits, rejoining, to be fed).
    pub(crate) fn add(&mut self, sub: Arc<Subscription>, port: P) {
        self.subs.insert(sub.id, (sub, port));
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.subs.remove(&id);
    }

    /// How to reach subscriber `id`.
    pub(crate) fn port(&self, id: u64) -> Option<&P> {
        self.subs.get(&id).map(|(_, p)| p)
    }

    /// Forgets the tail: the log restarts past its latest stored event.
    pub(crate) fn clear_tail(&mut self) {
        self.tail.clear();
        self.tail_bytes = 0;
    }

    /// Removes every subscriber, returning how to reach each (the log was
    /// reset: their positions mean nothing any more).
    pub(crate) fn drain(&mut self) -> Vec<(u64, P)> {
        self.subs.drain().map(|(id, (_, p))| (id, p)).collect()
    }

    /// The topic restarts: every subscriber waits to be fed again.
    pub(crate) fn hold_all(&mut self) {
        for (sub, _) in self.subs.values() {
            sub.hold();
        }
    }

    /// Makes a stored batch live: extends the tail and offers it to every
    /// subscriber; `batch` ends at the topic's latest event.
    pub(crate) fn publish(&mut self, batch: &Arc<[FramedEvent]>) -> Vec<Order> {
        self.push_tail(batch);
        let latest = batch[batch.len() - 1].seq;
        let mut behind = Vec::new();
        let mut gone = Vec::new();
        for (id, (sub, _)) in &self.subs {
            match sub.offer(batch) {
                Offer::Queued | Offer::Paused => {}
                Offer::Gone => gone.push(*id),
                Offer::Gap { expected, got } => {
                    // Not contiguous (e.g. it started after events still
                    // being applied here): feed it from its position.
                    tracing::debug!(conn = id, expected, got, "subscriber behind a live batch");
                    behind.push(*id);
                }
            }
        }
        for id in gone {
            self.subs.remove(&id);
        }
        behind
            .into_iter()
            .filter_map(|id| self.feed(id, latest))
            .collect()
    }

    /// Feeds every rejoining subscriber (after the topic reloaded).
    pub(crate) fn feed_all(&mut self, latest: u64) -> Vec<Order> {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.feed(id, latest))
            .collect()
    }

    /// Brings a rejoining subscriber from its position towards `latest`:
    /// from the tail while the tail covers the position and the subscriber
    /// takes more, else by a catch-up from the store.
    pub(crate) fn feed(&mut self, id: u64, latest: u64) -> Option<Order> {
        let sub = self.subs.get(&id)?.0.clone();
        loop {
            let (position, _) = sub.position();
            let tail_first = self.tail.front().map_or(latest + 1, |e| e.seq);
            let chunk: Arc<[FramedEvent]> = if position >= latest {
                Arc::from([])
            } else if position + 1 < tail_first {
                if sub.begin_catch_up() {
                    return Some(Order::CatchUp(id));
                }
                return self.gone_unless_rejoining(&sub);
            } else {
                let skip = (position + 1 - tail_first) as usize;
                let take = self.limits.chunk_events.max(1);
                self.tail.iter().skip(skip).take(take).cloned().collect()
            };
            let reaches = chunk.last().is_none_or(|e| e.seq >= latest);
            match sub.feed(&chunk, reaches) {
                Fed::More => continue,
                Fed::Live | Fed::Paused | Fed::Ignored => return None,
                Fed::Gone => {
                    self.subs.remove(&id);
                    return None;
                }
                Fed::Gap => {
                    // Cannot happen (the chunk starts after the position),
                    // but never risk a gap: the stream ends and the client
                    // resumes from its last id. Its session unsubscribes.
                    tracing::error!(conn = id, position, "tail does not follow a position");
                    return Some(Order::End(id, EndReason::Gap));
                }
            }
        }
    }

    /// A catch-up could not begin: the subscriber is gone, or it was not
    /// rejoining (a stale request, nothing to do).
    fn gone_unless_rejoining(&mut self, sub: &Subscription) -> Option<Order> {
        if sub.backlog().closed {
            self.subs.remove(&sub.id);
        }
        None
    }

    fn push_tail(&mut self, batch: &[FramedEvent]) {
        for ev in batch {
            self.tail_bytes += ev.frame.len();
            self.tail.push_back(ev.clone());
        }
        while self.tail.len() > self.limits.tail_events || self.tail_bytes > self.limits.tail_bytes
        {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.frame.len();
        }
    }
}
