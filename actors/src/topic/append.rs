//! The append pipeline: publishes wait in a bounded queue, leave it as
//! coalesced batches (one store append each, several in flight when the
//! store allows), and are answered strictly in the order of their tickets,
//! whatever order the store finishes in.
//!
//! A plain struct; `R` is how a publisher is answered.

use std::collections::VecDeque;

use crate::{
    event::{AppendOutcome, NewEvent},
    store::StoreError,
};

/// Which bound refused a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Too many publish requests wait for the store.
    Requests,
    /// Too many events wait for the store.
    Events,
}

/// Bounds of the pipeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendLimits {
    /// Most publish requests waiting.
    pub max_requests: usize,
    /// Most events waiting.
    pub max_events: usize,
    /// Most events in one append.
    pub max_coalesce: usize,
}

/// Publishers waiting for one append, each with its number of events.
pub(crate) type Waiters<R> = Vec<(usize, R)>;

/// What the store answered for one append.
pub(crate) type Outcome = Result<Vec<AppendOutcome>, StoreError>;

/// A finished append, in ticket order: its outcome and its publishers.
pub(crate) type Finished<R> = (Outcome, Waiters<R>);

/// An append started and not yet finished.
struct Slot<R> {
    waiters: Waiters<R>,
    /// It carries producer sequences.
    sequenced: bool,
    /// The store's answer, once it came.
    outcome: Option<Outcome>,
}

/// Whether a publish carries producer sequences.
fn sequenced(events: &[NewEvent]) -> bool {
    events.iter().any(|e| e.producer.is_some())
}

/// How many appends [`AppendPipeline::start`] may have in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    /// Most appends in flight.
    pub max: usize,
    /// Appends carrying producer sequences go one at a time (the store may
    /// reorder appends in flight together).
    pub sequenced_alone: bool,
}

/// The queue of publishes and the appends in flight.
pub(crate) struct AppendPipeline<R> {
    limits: AppendLimits,
    pending: VecDeque<(Vec<NewEvent>, R)>,
    /// Events in `pending`.
    pending_events: usize,
    /// Appends started and not yet answered by the store.
    in_flight: usize,
    /// Of those, the ones carrying producer sequences.
    sequenced_in_flight: usize,
    /// One slot per append started and not yet finished, oldest first.
    slots: VecDeque<Slot<R>>,
    /// Ticket of `slots[0]`.
    base: u64,
}

impl<R> AppendPipeline<R> {
    pub(crate) fn new(limits: AppendLimits) -> Self {
        AppendPipeline {
            limits,
            pending: VecDeque::new(),
            pending_events: 0,
            in_flight: 0,
            sequenced_in_flight: 0,
            slots: VecDeque::new(),
            base: 0,
        }
    }

    /// Appends started and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Publishes wait that no append has taken yet.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues a publish, or gives its reply back with the bound it hit.
    pub(crate) fn admit(&mut self, events: Vec<NewEvent>, reply: R) -> Result<(), (Full, R)> {
        if self.pending.len() >= self.limits.max_requests {
            return Err((Full::Requests, reply));
        }
        if self.pending_events + events.len() > self.limits.max_events {
            return Err((Full::Events, reply));
        }
        self.pending_events += events.len();
        self.pending.push_back((events, reply));
        Ok(())
    }

    /// Takes everything waiting (up to the coalescing bound) as the next
    /// append, unless `limit` says no more may be in flight. With
    /// `sequenced_alone`, publishes carrying producer sequences wait while
    /// another such append is in flight, and so does everything queued
    /// behind them (publishes are taken in order).
    pub(crate) fn start(&mut self, limit: InFlight) -> Option<(u64, Vec<NewEvent>)> {
        if self.in_flight >= limit.max || self.pending.is_empty() {
            return None;
        }
        let hold_sequenced = limit.sequenced_alone && self.sequenced_in_flight > 0;
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        let mut carries = false;
        while let Some((events, _)) = self.pending.front() {
            if !batch.is_empty() && batch.len() + events.len() > self.limits.max_coalesce {
                break;
            }
            let seq = sequenced(events);
            if seq && hold_sequenced {
                break;
            }
            carries |= seq;
            let (events, reply) = self.pending.pop_front().expect("front exists");
            self.pending_events -= events.len();
            waiters.push((events.len(), reply));
            batch.extend(events);
        }
        if waiters.is_empty() {
            return None;
        }
        self.in_flight += 1;
        self.sequenced_in_flight += usize::from(carries);
        let ticket = self.base + self.slots.len() as u64;
        self.slots.push_back(Slot {
            waiters,
            sequenced: carries,
            outcome: None,
        });
        Some((ticket, batch))
    }

    /// Records the store's answer for `ticket` and returns the appends now
    /// finished in order: every answered one at the front, stopping after
    /// the first failure (the topic restarts then).
    pub(crate) fn complete(&mut self, ticket: u64, res: Outcome) -> Vec<Finished<R>> {
        // A ticket from before a restart has no slot any more.
        let Some(slot) = ticket
            .checked_sub(self.base)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return Vec::new();
        };
        if slot.outcome.is_some() {
            return Vec::new();
        }
        slot.outcome = Some(res);
        self.in_flight -= 1;
        self.sequenced_in_flight -= usize::from(slot.sequenced);
        let mut done = Vec::new();
        while self.slots.front().is_some_and(|s| s.outcome.is_some()) {
            let Slot {
                waiters, outcome, ..
            } = self.slots.pop_front().expect("front exists");
            self.base += 1;
            let res = outcome.expect("answered");
            let failed = res.is_err();
            done.push((res, waiters));
            if failed {
                break;
            }
        }
        done
    }

    /// Takes every waiting publish out, to be answered with an error (the
    /// store cannot be reached: nothing of it was attempted).
    pub(crate) fn fail_pending(&mut self) -> Vec<R> {
        self.pending_events = 0;
        self.pending.drain(..).map(|(_, r)| r).collect()
    }

    /// The topic restarts: the appends in flight were dropped with its
    /// context (their publishers learn of it when their replies drop).
    pub(crate) fn restart(&mut self) {
        self.in_flight = 0;
        self.sequenced_in_flight = 0;
        self.base += self.slots.len() as u64;
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AppendLimits {
        AppendLimits {
            max_requests: 3,
            max_events: 5,
            max_coalesce: 4,
        }
    }

    fn events(n: usize) -> Vec<NewEvent> {
        (0..n).map(|i| NewEvent::data(format!("{i}"))).collect()
    }

    #[test]
    fn bounds_requests_and_events() {
        let mut p = AppendPipeline::new(limits());
        assert!(p.admit(events(2), 'a').is_ok());
        assert!(p.admit(events(2), 'b').is_ok());
        assert_eq!(p.admit(events(2), 'c').unwrap_err(), (Full::Events, 'c'));
        assert!(p.admit(events(1), 'd').is_ok());
        assert_eq!(p.admit(events(0), 'e').unwrap_err(), (Full::Requests, 'e'));
    }

    #[test]
    fn answers_in_ticket_order_and_stops_at_a_failure() {
        let mut p = AppendPipeline::new(AppendLimits {
            max_events: 10,
            ..limits()
        });
        p.admit(events(3), 'a').unwrap();
        p.admit(events(3), 'b').unwrap();
        let two = InFlight {
            max: 2,
            sequenced_alone: false,
        };
        let (t0, b0) = p.start(two).unwrap();
        assert_eq!(b0.len(), 3, "coalescing stops at max_coalesce");
        let (t1, _) = p.start(two).unwrap();
        assert!(p.start(two).is_none());
        // The second append finishes first: nothing is answered yet.
        assert!(p.complete(t1, Ok(vec![])).is_empty());
        let done = p.complete(t0, Err(StoreError::UnknownTopic));
        assert_eq!(done.len(), 1, "a failure stops the answers after it");
        assert_eq!(done[0].1[0].1, 'a');
        p.restart();
        assert_eq!(p.in_flight(), 0);
        // A late answer from before the restart is ignored.
        p.admit(events(1), 'c').unwrap();
        let (t2, _) = p.start(InFlight { max: 1, ..two }).unwrap();
        assert!(t2 > t1);
        let done = p.complete(t2, Ok(vec![]));
        assert_eq!(done[0].1[0].1, 'c');
    }

    fn sequenced_events(producer: &str, seq: u64) -> Vec<NewEvent> {
        let mut e = NewEvent::data("x".to_owned());
        e.producer = Some((producer.to_owned(), seq));
        vec![e]
    }

    #[test]
    fn producer_sequences_go_one_append_at_a_time_when_the_store_may_reorder() {
        let limits = AppendLimits {
            max_requests: 10,
            max_events: 10,
            max_coalesce: 1,
        };
        let may_reorder = InFlight {
            max: 4,
            sequenced_alone: true,
        };
        let mut p = AppendPipeline::new(limits);
        p.admit(sequenced_events("p", 1), 'a').unwrap();
        p.admit(events(1), 'b').unwrap();
        p.admit(sequenced_events("p", 2), 'c').unwrap();
        p.admit(events(1), 'd').unwrap();
        let (ta, _) = p.start(may_reorder).unwrap();
        let (tb, _) = p.start(may_reorder).unwrap();
        // 'c' waits for 'a', and 'd' (queued behind it) with it.
        assert!(p.start(may_reorder).is_none());
        assert_eq!(p.in_flight(), 2);
        assert_eq!(p.complete(tb, Ok(vec![])).len(), 0);
        assert!(p.start(may_reorder).is_none(), "'a' is still in flight");
        assert_eq!(p.complete(ta, Ok(vec![])).len(), 2);
        let (_, c) = p.start(may_reorder).unwrap();
        assert_eq!(c[0].producer, Some(("p".to_owned(), 2)));
        assert!(p.start(may_reorder).is_some(), "'d' carries none");
        // A store that keeps the order lets them all go at once.
        let mut p = AppendPipeline::new(limits);
        p.admit(sequenced_events("p", 1), 'a').unwrap();
        p.admit(sequenced_events("p", 2), 'c').unwrap();
        let in_order = InFlight {
            sequenced_alone: false,
            ..may_reorder
        };
        assert!(p.start(in_order).is_some());
        assert!(p.start(in_order).is_some());
    }
}
