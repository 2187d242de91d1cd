//! The state a session shares with its topic and with health snapshots.
//!
//! Counters are atomics so the topic actor can read a subscriber's progress
//! and a `/v1/connections` snapshot can read every session without a message
//! round trip to each.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use tokio::sync::Notify;

use crate::body::Outbox;

/// Shared state of one SSE session.
#[derive(Debug)]
pub struct SessionLink {
    /// Connection id, unique within this process.
    pub id: u64,
    /// The topic the session reads.
    pub topic: String,
    /// When the stream opened.
    pub connected_at: Instant,
    /// Last sequence the topic handed to the session (topic writes).
    pub delivered_seq: AtomicU64,
    /// Bytes handed to the session so far (topic writes).
    pub delivered_bytes: AtomicU64,
    /// Last sequence the session wrote to its socket (session writes).
    pub acked_seq: AtomicU64,
    /// Bytes of events written so far (session writes).
    pub acked_bytes: AtomicU64,
    /// Set by the topic when it stopped pushing live events to this session
    /// because too many are outstanding; whoever clears it resumes delivery.
    pub paused: AtomicBool,
    /// Set by the topic while the session is paused or catching up from the
    /// store, for health snapshots.
    pub lagging: AtomicBool,
    /// Events written to the socket.
    pub events_sent: AtomicU64,
    /// Bytes written to the socket, heartbeats and notices included.
    pub bytes_sent: AtomicU64,
    /// Milliseconds after `connected_at` of the last write.
    pub last_write_ms: AtomicI64,
    /// Milliseconds after `connected_at` since which a write has waited, or
    /// -1 when none is waiting.
    pub waiting_since_ms: AtomicI64,
    /// Frames waiting for the socket, queued by the topic and the session.
    pub(crate) outbox: Mutex<Outbox>,
    /// Signalled each time the body takes a chunk (a catch-up waits on it
    /// for room before it reads the next page).
    pub(crate) room: Notify,
}

impl SessionLink {
    /// A link for a session that starts after `after_seq`.
    pub fn new(id: u64, topic: String, after_seq: u64) -> Self {
        SessionLink {
            id,
            topic,
            connected_at: Instant::now(),
            delivered_seq: AtomicU64::new(after_seq),
            delivered_bytes: AtomicU64::new(0),
            acked_seq: AtomicU64::new(after_seq),
            acked_bytes: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            events_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            last_write_ms: AtomicI64::new(0),
            waiting_since_ms: AtomicI64::new(-1),
            outbox: Mutex::new(Outbox::new(after_seq)),
            room: Notify::new(),
        }
    }

    /// Sets the position a new subscription starts after, before anything
    /// is delivered to it.
    pub fn start_after(&self, after_seq: u64) {
        self.delivered_seq.store(after_seq, Ordering::SeqCst);
        self.acked_seq.store(after_seq, Ordering::SeqCst);
        self.outbox
            .lock()
            .expect("outbox poisoned")
            .reset(after_seq);
    }

    /// Milliseconds since the session opened.
    pub fn age_ms(&self) -> i64 {
        self.connected_at.elapsed().as_millis() as i64
    }

    /// Events handed to the session and not yet written.
    pub fn outstanding_events(&self) -> u64 {
        self.delivered_seq
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked_seq.load(Ordering::SeqCst))
    }

    /// Bytes handed to the session and not yet written.
    pub fn outstanding_bytes(&self) -> u64 {
        self.delivered_bytes
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked_bytes.load(Ordering::SeqCst))
    }
}

/// A stream's health, as `/v1/connections` and the metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Writes make progress.
    Healthy,
    /// A write has waited a quarter of the stall timeout (at most 90 s).
    Unresponsive,
    /// A write has waited half the stall timeout: eviction is near.
    Stalled,
}

impl Health {
    /// Every state, for metrics.
    pub const ALL: [Health; 3] = [Health::Healthy, Health::Unresponsive, Health::Stalled];

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Unresponsive => "UNRESPONSIVE",
            Health::Stalled => "STALLED",
        }
    }
}

/// Longest write wait that still counts as responsive.
const UNRESPONSIVE_MS: i64 = 90_000;

impl SessionLink {
    /// How long the pending write (if any) has waited, in ms.
    pub fn write_wait_ms(&self) -> i64 {
        match self.waiting_since_ms.load(Ordering::Relaxed) {
            w if w >= 0 => self.age_ms() - w,
            _ => 0,
        }
    }

    /// The stream's health given the stall timeout (after which the session
    /// evicts itself). The states are spread over that timeout so each can be
    /// seen before the eviction.
    pub fn health(&self, stall_ms: i64) -> Health {
        let wait = self.write_wait_ms();
        if wait > 0 && wait >= stall_ms / 2 {
            Health::Stalled
        } else if wait > 0 && wait >= (stall_ms / 4).min(UNRESPONSIVE_MS) {
            Health::Unresponsive
        } else {
            Health::Healthy
        }
    }
}
