//! [`Subscription`]: the one owner of a subscriber's delivery state.
//!
//! Everything that keeps the promise "every event once, in order, with
//! bounded memory" for one subscriber sits here under one lock: the frames
//! waiting for the socket, the position (last event queued), the watermarks
//! and the flow state. Everyone else calls its operations:
//!
//! - the topic *offers* live batches ([`Subscription::offer`]) and *feeds*
//!   a subscriber that rejoins from its tail ([`Subscription::feed`]);
//! - a catch-up from the store queues pages ([`Subscription::push_page`]);
//! - the response body *takes* chunks ([`Subscription::poll_take`]), and a
//!   take that drains a paused subscriber to its low watermark returns a
//!   resume for the caller to forward to the topic.
//!
//! No actor lives here: the state machine is tested deterministically
//! (see `tests.rs`, a model-based property test).
//!
//! Flow states:
//!
//! ```text
//!            offer at high watermark             take at low watermark
//!   LIVE ───────────────────────────► PAUSED ─────────────────────────► REJOINING
//!    ▲                                                                   │  │
//!    └──────────── feed reaches the topic's latest event ◄──────────────┘  │
//!                                                   tail does not reach    │
//!                                  CATCHING_UP ◄─────────────────────────────┘
//!                                       └── caught_up ──► REJOINING
//! ```

mod answers;
mod health;
mod outbox;
#[cfg(test)]
mod tests;

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll, Waker},
    time::Instant,
};

use bytes::Bytes;
use tokio::sync::Notify;

pub use answers::{Backlog, Control, Fed, Flow, Offer, Taken, Watermarks};
use health::Stats;
pub use health::{Health, SessionInfo};
use outbox::Outbox;
pub use outbox::CHUNK_MAX;

use crate::{metrics::metrics, sse::FramedEvent};

/// The mutable state, all under one lock.
struct State {
    outbox: Outbox,
    /// Last sequence queued: everything up to it reaches the client unless
    /// the client goes away. Anything at or below is never queued again.
    position: u64,
    /// Time of the event at `position` (0 until known).
    position_time_ms: i64,
    flow: Flow,
    /// The body waits for frames.
    waker: Option<Waker>,
    /// The body is gone: the client disconnected.
    closed: bool,
    /// The stream ended: the body ends once the queue is drained.
    ended: bool,
}

/// One subscriber's delivery state. Shared (`Arc`) by its topic, its
/// session, its response body and health snapshots.
pub struct Subscription {
    /// Connection id, unique within this process.
    pub id: u64,
    /// The topic it reads.
    pub topic: Arc<str>,
    /// When the stream opened.
    pub connected_at: Instant,
    marks: Watermarks,
    state: Mutex<State>,
    /// Signalled each time the body takes a chunk or goes away (a catch-up
    /// waits on it for room).
    room: Notify,
    /// Figures for health snapshots, outside the lock: they decide nothing.
    stats: Stats,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription that has received nothing yet and waits to be fed.
    pub fn new(id: u64, topic: Arc<str>, marks: Watermarks) -> Self {
        Subscription {
            id,
            topic,
            connected_at: Instant::now(),
            marks,
            state: Mutex::new(State {
                outbox: Outbox::default(),
                position: 0,
                position_time_ms: 0,
                flow: Flow::Rejoining,
                waker: None,
                closed: false,
                ended: false,
            }),
            room: Notify::new(),
            stats: Stats {
                waiting_since_ms: AtomicI64::new(-1),
                ..Stats::default()
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A std mutex: held for a few field updates, never across an await.
        self.state.lock().expect("subscription lock poisoned")
    }

    /// Sets the position the subscription starts after, before anything is
    /// queued.
    pub fn start_after(&self, seq: u64, time_ms: i64) {
        let mut s = self.lock();
        s.position = seq;
        s.position_time_ms = time_ms;
    }

    /// Puts the frames that open the stream (`retry:`, a gap notice) in
    /// front of anything already queued.
    pub fn open(&self, frames: Vec<Bytes>) {
        self.lock().outbox.push_front_raw(frames);
    }

    /// The position: last sequence queued and its time.
    pub fn position(&self) -> (u64, i64) {
        let s = self.lock();
        (s.position, s.position_time_ms)
    }

    /// The flow state.
    pub fn flow(&self) -> Flow {
        self.lock().flow
    }

    /// What waits for the socket.
    pub fn backlog(&self) -> Backlog {
        let s = self.lock();
        Backlog {
            events: s.outbox.events,
            bytes: s.outbox.bytes,
            waiting: !s.outbox.is_empty(),
            takes: s.outbox.takes,
            closed: s.closed,
        }
    }

    /// Queues the part of `batch` after the position; `Ok(true)` when it
    /// queued anything (the body is to be woken), `Err` says why nothing
    /// could be (closed, or a gap).
    fn queue(
        &self,
        s: &mut State,
        batch: &Arc<[FramedEvent]>,
        live: bool,
        page: Option<Bytes>,
    ) -> Result<bool, Offer> {
        if s.closed || s.ended {
            return Err(Offer::Gone);
        }
        let from = batch.partition_point(|e| e.seq <= s.position);
        let Some(last) = batch.last().filter(|_| from < batch.len()) else {
            return Ok(false);
        };
        let first = batch[from].seq;
        if first != s.position + 1 {
            return Err(Offer::Gap {
                expected: s.position + 1,
                got: first,
            });
        }
        s.position = last.seq;
        s.position_time_ms = last.time_ms;
        s.outbox.push_events(batch, from, live, page);
        Ok(true)
    }

    /// Releases the lock, then wakes the body if it waits: a body polled at
    /// once on another thread must not find the lock still held.
    fn wake_unlocked(mut s: MutexGuard<'_, State>) {
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn over_high(&self, s: &State) -> bool {
        s.outbox.events >= self.marks.high_events || s.outbox.bytes as u64 >= self.marks.high_bytes
    }

    fn at_low(&self, s: &State) -> bool {
        s.outbox.events <= self.marks.low_events && s.outbox.bytes as u64 <= self.marks.low_bytes
    }

    /// The topic offers a live batch (stored events, in log order). A
    /// subscriber at its high watermark pauses instead: its backlog never
    /// exceeds the high watermark plus one batch.
    pub fn offer(&self, batch: &Arc<[FramedEvent]>) -> Offer {
        let mut s = self.lock();
        if s.closed || s.ended {
            return Offer::Gone;
        }
        if s.flow != Flow::Live {
            return Offer::Paused;
        }
        if self.over_high(&s) {
            s.flow = Flow::Paused;
            metrics().subscriber_pauses.inc();
            return Offer::Paused;
        }
        match self.queue(&mut s, batch, true, None) {
            Ok(queued) => {
                if queued {
                    Self::wake_unlocked(s);
                }
                Offer::Queued
            }
            Err(gap @ Offer::Gap { .. }) => {
                s.flow = Flow::Rejoining;
                gap
            }
            Err(other) => other,
        }
    }

    /// The topic feeds a rejoining subscriber `chunk` (from its tail, after
    /// the position); `reaches_latest` says the chunk ends at the topic's
    /// latest event (an empty chunk with it makes an up-to-date subscriber
    /// live).
    pub fn feed(&self, chunk: &Arc<[FramedEvent]>, reaches_latest: bool) -> Fed {
        let mut s = self.lock();
        if s.flow != Flow::Rejoining {
            return if s.closed || s.ended {
                Fed::Gone
            } else {
                Fed::Ignored
            };
        }
        let new_events = chunk.last().is_some_and(|e| e.seq > s.position);
        if new_events && !self.at_low(&s) {
            // Fed while it still holds a backlog (a topic restart, a late
            // rejoin): the body resumes it at its low watermark, so a feed
            // never takes it past the high watermark plus one chunk.
            s.flow = Flow::Paused;
            metrics().subscriber_pauses.inc();
            return Fed::Paused;
        }
        // A catch-up from memory: not live delivery, so its events stay out
        // of the publish→delivery latency histogram.
        let queued = match self.queue(&mut s, chunk, false, None) {
            Ok(queued) => queued,
            Err(Offer::Gap { .. }) => return Fed::Gap,
            Err(_) => return Fed::Gone,
        };
        let fed = if reaches_latest {
            s.flow = Flow::Live;
            Fed::Live
        } else if self.at_low(&s) {
            Fed::More
        } else {
            // Decided under the lock the body takes with: its next take at
            // the low watermark sees the pause and resumes it.
            s.flow = Flow::Paused;
            metrics().subscriber_pauses.inc();
            Fed::Paused
        };
        if queued {
            Self::wake_unlocked(s);
        }
        fed
    }

    /// The topic's tail does not reach back to the position: a catch-up
    /// from the store starts. False when the subscriber is not rejoining.
    pub fn begin_catch_up(&self) -> bool {
        let mut s = self.lock();
        if s.flow != Flow::Rejoining || s.closed || s.ended {
            return false;
        }
        s.flow = Flow::CatchingUp;
        true
    }

    /// A catch-up queues a page read from the store (`batch`'s frames are
    /// consecutive slices of `page`).
    pub fn push_page(&self, batch: &Arc<[FramedEvent]>, page: Bytes) -> Offer {
        let mut s = self.lock();
        match self.queue(&mut s, batch, false, Some(page)) {
            Ok(queued) => {
                if queued {
                    Self::wake_unlocked(s);
                }
                Offer::Queued
            }
            Err(e) => e,
        }
    }

    /// A catch-up found events trimmed by retention: queues the `event: gap`
    /// notice and moves the position past the lost events.
    pub fn push_gap_notice(&self, notice: Bytes, resumed_after: u64) -> Offer {
        let mut s = self.lock();
        if s.closed || s.ended {
            return Offer::Gone;
        }
        s.position = s.position.max(resumed_after);
        s.outbox.push_raw(notice);
        Self::wake_unlocked(s);
        Offer::Queued
    }

    /// The catch-up reached the end of the store: the topic feeds the rest.
    pub fn caught_up(&self) {
        let mut s = self.lock();
        if s.flow == Flow::CatchingUp {
            s.flow = Flow::Rejoining;
        }
    }

    /// The topic restarts: a live or paused subscriber waits to be fed
    /// again (a catch-up in progress goes on and rejoins when done).
    pub fn hold(&self) {
        let mut s = self.lock();
        if matches!(s.flow, Flow::Live | Flow::Paused) {
            s.flow = Flow::Rejoining;
        }
    }

    /// Queues a control frame; with `only_if_idle`, only when nothing else
    /// waits (a keep-alive behind queued events adds nothing).
    pub fn push_control(&self, frame: Bytes, only_if_idle: bool) -> Control {
        let mut s = self.lock();
        if s.closed {
            return Control::Gone;
        }
        if only_if_idle && !s.outbox.is_empty() {
            return Control::Busy;
        }
        s.outbox.push_raw(frame);
        Self::wake_unlocked(s);
        Control::Queued
    }

    /// Ends the stream with a last frame, made by `last` from the position
    /// (last sequence queued and its time) under the same lock that queues
    /// events: the frame names exactly the last event the client gets, and
    /// nothing is queued after it. The body ends once it is taken. False
    /// (and no frame) when the stream had already ended or the client is
    /// gone.
    pub fn finish(&self, last: impl FnOnce(u64, i64) -> Bytes) -> bool {
        let mut s = self.lock();
        if s.closed || s.ended {
            return false;
        }
        let frame = last(s.position, s.position_time_ms);
        s.outbox.push_raw(frame);
        s.ended = true;
        Self::wake_unlocked(s);
        true
    }

    /// Ends the stream once what is queued is taken; with `discard`, at once.
    pub fn end(&self, discard: bool) {
        let mut s = self.lock();
        s.ended = true;
        if discard {
            s.outbox.clear();
        }
        Self::wake_unlocked(s);
    }

    /// The body takes the next chunk: `Ready(None)` once the stream ended
    /// and everything queued was taken.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Taken>> {
        let mut s = self.lock();
        // The clock is read only when there is something to take.
        let taken = if s.outbox.is_empty() {
            None
        } else {
            s.outbox.take(crate::cursor::now_ms())
        };
        let Some(chunk) = taken else {
            if s.ended {
                return Poll::Ready(None);
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        let resume = s.flow == Flow::Paused && self.at_low(&s);
        if resume {
            s.flow = Flow::Rejoining;
        }
        drop(s);
        self.stats
            .bytes_sent
            .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        let age = self.age_ms();
        self.stats.last_write_ms.store(age, Ordering::Relaxed);
        if chunk.events > 0 {
            self.stats.last_event_write_ms.store(age, Ordering::Relaxed);
            self.stats
                .events_sent
                .fetch_add(chunk.events, Ordering::Relaxed);
            metrics().delivered.inc_by(chunk.events);
        }
        self.room.notify_one();
        Poll::Ready(Some(Taken {
            bytes: chunk.bytes,
            resume,
        }))
    }

    /// The body is gone: nothing more is queued, and a waiting catch-up
    /// learns of it.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.outbox.clear();
        s.waker = None;
        drop(s);
        self.room.notify_one();
    }

    /// The watermarks.
    pub fn watermarks(&self) -> Watermarks {
        self.marks
    }

    /// Resolves at the body's next take or when the body goes away.
    pub async fn taken(&self) {
        self.room.notified().await;
    }
}
