//! Following the store: the topic's view of its log (bounds, epoch), what
//! it knows others stored (another instance's appends, seen through the
//! store's watch or a fresh read of the bounds), and the decisions that
//! follow: adopt a reset log, fill a hole, where a subscription starts.
//!
//! A plain struct: the topic actor performs the store calls it asks for.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use crate::{
    cursor::{Cursor, Epoch},
    event::StoredEvent,
    store::{Gap, GapReason, SharedStore, StoreError, TopicBounds},
};

/// Where a subscription starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// After this cursor.
    After(Cursor),
    /// At the oldest retained event.
    Earliest,
    /// At the next event published.
    Latest,
}

/// Where a subscription starts, once checked against the log.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The log's epoch.
    pub epoch: Epoch,
    /// The stream delivers every event after this sequence.
    pub after_seq: u64,
    /// Time of the event at `after_seq`, when known.
    pub after_time_ms: i64,
    /// Set when the requested cursor was not resumable and `resume_on_gap`
    /// made the subscription start at the oldest retained event instead.
    pub gap: Option<Gap>,
}

/// What freshly loaded bounds mean for the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adopted {
    /// The same log, continued: the tail stays; fill what others stored.
    Continued,
    /// A log this topic did not follow: the tail starts empty.
    Fresh,
    /// The log was wiped and recreated (new epoch): every subscriber's
    /// position belongs to the old log, so their streams end.
    Reset,
}

/// What to do with events the store says were stored.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Apply {
    /// Nothing new (or not loaded, or a fill will bring them).
    Nothing,
    /// A hole before them: fill from the store first.
    Fill,
    /// `events[from..]` are new and follow the log: make them live.
    Fresh { from: usize },
}

/// The topic's view of its log.
#[derive(Default)]
pub(crate) struct Follower {
    /// `None` until loaded (and while the topic reloads).
    bounds: Option<TopicBounds>,
    /// Highest sequence known to be stored (by us or another instance).
    known_latest: u64,
    /// A fill from the store is in flight.
    filling: bool,
}

impl Follower {
    pub(crate) fn bounds(&self) -> Option<&TopicBounds> {
        self.bounds.as_ref()
    }

    /// The latest applied sequence, once loaded.
    pub(crate) fn latest(&self) -> Option<u64> {
        self.bounds.as_ref().map(|b| b.latest_seq)
    }

    pub(crate) fn epoch(&self) -> Option<&Epoch> {
        self.bounds.as_ref().map(|b| &b.epoch)
    }

    /// Takes bounds read from the store after a (re)start or a reset.
    pub(crate) fn adopt(&mut self, b: TopicBounds) -> Adopted {
        let reset = self.is_reset(&b);
        match self.bounds.take() {
            // A restart over the same log (after a store error): what this
            // topic applied stays applied and its tail stays, so subscribers
            // go on from memory instead of all falling back to the store at
            // once (which, with a struggling store, makes the next error
            // more likely). Whatever the store took meanwhile is filled.
            Some(old)
                if old.epoch == b.epoch
                    && old.latest_seq <= b.latest_seq
                    && b.first_seq <= old.latest_seq + 1 =>
            {
                self.known_latest = self.known_latest.max(b.latest_seq);
                self.bounds = Some(TopicBounds {
                    latest_seq: old.latest_seq,
                    latest_time_ms: old.latest_time_ms,
                    ..b
                });
                Adopted::Continued
            }
            _ => {
                // Older positions are served from the store.
                self.known_latest = b.latest_seq;
                self.bounds = Some(b);
                if reset {
                    Adopted::Reset
                } else {
                    Adopted::Fresh
                }
            }
        }
    }

    /// Fresh bounds show a new epoch (the log was wiped meanwhile), or the
    /// same log shorter than what this topic applied: the store lost
    /// acknowledged events (a Redis restarted from an older snapshot, a
    /// failover to a replica that lagged) and will hand their positions out
    /// again.
    pub(crate) fn is_reset(&self, fresh: &TopicBounds) -> bool {
        self.bounds
            .as_ref()
            .is_some_and(|b| b.epoch != fresh.epoch || fresh.latest_seq < b.latest_seq)
    }

    /// Takes bounds of a log found to have gone back under this topic (see
    /// [`Follower::is_reset`]), whatever they say.
    pub(crate) fn adopt_rewound(&mut self, b: TopicBounds) {
        self.known_latest = b.latest_seq;
        self.filling = false;
        self.bounds = Some(b);
    }

    /// Takes the start of the log from fresh store bounds; the latest
    /// position stays ours, since appends in flight are not ours to show.
    pub(crate) fn refresh_first(&mut self, fresh: &TopicBounds) {
        let Some(b) = self.bounds.as_mut() else {
            return;
        };
        if fresh.epoch == b.epoch && fresh.first_seq > b.first_seq {
            b.first_seq = fresh.first_seq.min(b.latest_seq + 1);
            b.first_time_ms = if b.first_seq > b.latest_seq {
                b.latest_time_ms
            } else {
                fresh.first_time_ms
            };
        }
    }

    /// Learns of events stored by others while the topic did not watch.
    /// Returns the store's latest sequence if it is one the topic will
    /// apply next (same log, no own append in flight whose events are not
    /// ours to show before they are acknowledged), and whether a fill must
    /// start.
    pub(crate) fn learn_latest(
        &mut self,
        fresh: &TopicBounds,
        appends_in_flight: usize,
    ) -> (Option<u64>, bool) {
        let Some(b) = &self.bounds else {
            return (None, false);
        };
        if appends_in_flight > 0 || fresh.epoch != b.epoch {
            return (None, false);
        }
        let mut fill = false;
        if fresh.latest_seq > self.known_latest {
            self.known_latest = fresh.latest_seq;
            fill = !self.filling;
        }
        (Some(fresh.latest_seq), fill)
    }

    /// Where a subscription starts; `store_latest` is the store's latest
    /// sequence and its time when freshly known (the topic may not have
    /// applied it yet).
    pub(crate) fn check_start(
        &self,
        start: &Start,
        resume_on_gap: bool,
        store_latest: Option<(u64, i64)>,
    ) -> Result<Subscribed, Box<Gap>> {
        let b = self.bounds.as_ref().expect("checked once bounds load");
        let ok = |after_seq, after_time_ms, gap| Subscribed {
            epoch: b.epoch.clone(),
            after_seq,
            after_time_ms,
            gap,
        };
        match start {
            Start::Earliest => Ok(ok(b.first_seq - 1, b.first_time_ms, None)),
            Start::Latest => {
                // The start's time too: it makes the cursor of where the
                // stream began (an `event: auth-expired` before any event
                // names it, and a resume from it is checked against it).
                let (seq, time_ms) = match store_latest {
                    Some((seq, time_ms)) if seq > b.latest_seq => (seq, time_ms),
                    _ => (b.latest_seq, b.latest_time_ms),
                };
                Ok(ok(seq, time_ms, None))
            }
            Start::After(c) => match b.resume_point(c) {
                Ok(after) => Ok(ok(after, c.time_ms, None)),
                // Ahead of what this topic has applied, not of the store:
                // another instance stored it and its events are still on
                // their way here (the watch or the fill brings them, and
                // the subscription gets those after the cursor).
                Err(gap)
                    if gap.reason == GapReason::Ahead
                        && c.epoch == b.epoch
                        && store_latest.is_some_and(|(seq, _)| c.seq <= seq) =>
                {
                    Ok(ok(c.seq, c.time_ms, None))
                }
                // From where the gap says everything still held follows.
                Err(gap) if resume_on_gap => {
                    Ok(ok(gap.next_cursor.seq, gap.next_cursor.time_ms, Some(*gap)))
                }
                Err(gap) => Err(gap),
            },
        }
    }

    /// Takes stored events in log order: the suffix that follows the log is
    /// applied to the bounds; a hole before it asks for a fill. Events the
    /// topic already applied are skipped (with a shared store, its own
    /// appends also come back through the store's watch).
    pub(crate) fn apply(&mut self, events: &[StoredEvent]) -> Apply {
        let Some(last) = events.last() else {
            return Apply::Nothing;
        };
        self.known_latest = self.known_latest.max(last.seq);
        if self.filling {
            return Apply::Nothing;
        }
        let Some(b) = self.bounds.as_mut() else {
            return Apply::Nothing;
        };
        let from = events.partition_point(|e| e.seq <= b.latest_seq);
        let Some(first) = events.get(from) else {
            return Apply::Nothing;
        };
        if first.seq != b.latest_seq + 1 {
            return Apply::Fill;
        }
        for ev in &events[from..] {
            if b.latest_seq + 1 == b.first_seq {
                b.first_time_ms = ev.time_ms;
            }
            b.latest_seq = ev.seq;
            b.latest_time_ms = ev.time_ms;
        }
        Apply::Fresh { from }
    }

    /// Starts a fill when the topic has not applied everything it knows was
    /// stored: returns the sequence to read after.
    pub(crate) fn start_fill(&mut self) -> Option<u64> {
        let latest = self.latest()?;
        if latest >= self.known_latest {
            self.filling = false;
            return None;
        }
        self.filling = true;
        Some(latest)
    }

    /// A fill's read answered (`Apply` runs next on what it read).
    pub(crate) fn fill_done(&mut self) {
        self.filling = false;
    }

    /// The store had nothing more to fill with (trimmed, or not yet
    /// visible): what the topic knows of is not readable.
    pub(crate) fn fill_exhausted(&mut self) {
        self.known_latest = self.latest().unwrap_or(0);
    }

    /// The topic restarts: nothing is being filled any more.
    pub(crate) fn restart(&mut self) {
        self.filling = false;
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;

/// A read of the topic's bounds from the store, awaited by many callers.
pub(crate) type SharedBounds = Shared<LocalBoxFuture<'static, Result<TopicBounds, StoreError>>>;

/// The next read of the bounds from the store. Every caller is answered by
/// a read that started after it asked (so a log wiped or trimmed just before
/// is seen), yet a burst of thousands of reconnects costs a few store calls,
/// not one each: callers that arrive while a read is in flight share the one
/// queued behind it.
#[derive(Default)]
pub(crate) struct BoundsReads {
    next: Option<(Arc<AtomicBool>, SharedBounds)>,
}

impl BoundsReads {
    /// The read that answers a caller asking now.
    pub(crate) fn read(&mut self, store: &SharedStore, name: &Arc<str>) -> SharedBounds {
        if let Some((started, read)) = &self.next {
            if !started.load(Ordering::Acquire) {
                return read.clone();
            }
        }
        let previous = self.next.take().map(|(_, r)| r);
        let started = Arc::new(AtomicBool::new(false));
        let (store, name, flag) = (store.clone(), name.clone(), started.clone());
        let read = async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            flag.store(true, Ordering::Release);
            store.open_topic(&name).await
        }
        .boxed_local()
        .shared();
        self.next = Some((started, read.clone()));
        read
    }
}
