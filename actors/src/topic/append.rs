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

/// The queue of publishes and the appends in flight.
pub(crate) struct AppendPipeline<R> {
    limits: AppendLimits,
    pending: VecDeque<(Vec<NewEvent>, R)>,
    /// Events in `pending`.
    pending_events: usize,
    /// Appends started and not yet answered by the store.
    in_flight: usize,
    /// One slot per append started and not yet finished, oldest first:
    /// its publishers, and its outcome once the store answers.
    slots: VecDeque<(Waiters<R>, Option<Outcome>)>,
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
    /// append, unless `max_in_flight` appends are already in flight.
    pub(crate) fn start(&mut self, max_in_flight: usize) -> Option<(u64, Vec<NewEvent>)> {
        if self.in_flight >= max_in_flight || self.pending.is_empty() {
            return None;
        }
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        while let Some((events, _)) = self.pending.front() {
            if !batch.is_empty() && batch.len() + events.len() > self.limits.max_coalesce {
                break;
            }
            let (events, reply) = self.pending.pop_front().expect("front exists");
            self.pending_events -= events.len();
            waiters.push((events.len(), reply));
            batch.extend(events);
        }
        self.in_flight += 1;
        let ticket = self.base + self.slots.len() as u64;
        self.slots.push_back((waiters, None));
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
        slot.1 = Some(res);
        self.in_flight -= 1;
        let mut done = Vec::new();
        while self.slots.front().is_some_and(|s| s.1.is_some()) {
            let (waiters, res) = self.slots.pop_front().expect("front exists");
            self.base += 1;
            let res = res.expect("answered");
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
        let (t0, b0) = p.start(2).unwrap();
        assert_eq!(b0.len(), 3, "coalescing stops at max_coalesce");
        let (t1, _) = p.start(2).unwrap();
        assert!(p.start(2).is_none());
        // The second append finishes first: nothing is answered yet.
        assert!(p.complete(t1, Ok(vec![])).is_empty());
        let done = p.complete(t0, Err(StoreError::UnknownTopic));
        assert_eq!(done.len(), 1, "a failure stops the answers after it");
        assert_eq!(done[0].1[0].1, 'a');
        p.restart();
        assert_eq!(p.in_flight(), 0);
        // A late answer from before the restart is ignored.
        p.admit(events(1), 'c').unwrap();
        let (t2, _) = p.start(1).unwrap();
        assert!(t2 > t1);
        let done = p.complete(t2, Ok(vec![]));
        assert_eq!(done[0].1[0].1, 'c');
    }
}
