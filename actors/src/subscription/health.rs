//! What health snapshots (`/v1/connections`, the state gauges) read of a
//! subscription: figures written as the stream writes, outside the lock
//! that keeps delivery correct, since they decide nothing.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc,
};

use super::{Flow, Subscription};

/// Health figures, written by the body and the session.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) events_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    /// Milliseconds after `connected_at` of the last write.
    pub(super) last_write_ms: AtomicI64,
    /// Milliseconds after `connected_at` of the last write with events in
    /// it (the heartbeat counts from it: a probe is no heartbeat).
    pub(super) last_event_write_ms: AtomicI64,
    /// Milliseconds after `connected_at` since which a write has waited, or
    /// -1 when none is waiting.
    pub(super) waiting_since_ms: AtomicI64,
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

/// One stream as `/v1/connections` shows it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Connection id.
    pub id: u64,
    /// The topic it reads.
    pub topic: Arc<str>,
    /// Its health given the stall timeout.
    pub health: Health,
    /// Not live (paused, rejoining or catching up).
    pub lagging: bool,
    /// Event frames waiting for the socket.
    pub queued_events: u64,
    /// Their bytes.
    pub queued_bytes: u64,
    /// Bytes written, heartbeats and notices included.
    pub bytes_sent: u64,
    /// Events written.
    pub events_sent: u64,
    /// Milliseconds since the last write.
    pub last_write_ms_ago: i64,
    /// Seconds since the stream opened.
    pub connected_secs: i64,
}

impl Subscription {
    /// Milliseconds since the stream opened.
    pub fn age_ms(&self) -> i64 {
        self.connected_at.elapsed().as_millis() as i64
    }

    /// Milliseconds after opening of the last write.
    pub fn last_write_ms(&self) -> i64 {
        self.stats.last_write_ms.load(Ordering::Relaxed)
    }

    /// Milliseconds after opening of the last write that carried events.
    pub fn last_event_write_ms(&self) -> i64 {
        self.stats.last_event_write_ms.load(Ordering::Relaxed)
    }

    /// Shows (`Some(since)`, ms after opening) or clears a waiting write.
    pub fn set_waiting_since(&self, since: Option<i64>) {
        self.stats
            .waiting_since_ms
            .store(since.unwrap_or(-1), Ordering::Relaxed);
    }

    /// How long the pending write (if any) has waited, in ms.
    pub fn write_wait_ms(&self) -> i64 {
        match self.stats.waiting_since_ms.load(Ordering::Relaxed) {
            w if w >= 0 => self.age_ms() - w,
            _ => 0,
        }
    }

    /// The stream's health given the stall timeout (after which the session
    /// evicts itself). The states are spread over that timeout so each can
    /// be seen before the eviction.
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

    /// A snapshot for `/v1/connections`.
    pub fn info(&self, stall_ms: i64) -> SessionInfo {
        let b = self.backlog();
        let age = self.age_ms();
        SessionInfo {
            id: self.id,
            topic: self.topic.clone(),
            health: self.health(stall_ms),
            lagging: self.flow() != Flow::Live,
            queued_events: b.events,
            queued_bytes: b.bytes as u64,
            bytes_sent: self.stats.bytes_sent.load(Ordering::Relaxed),
            events_sent: self.stats.events_sent.load(Ordering::Relaxed),
            last_write_ms_ago: age - self.last_write_ms(),
            connected_secs: age / 1000,
        }
    }
}
