//! The subscription's settings and what its operations answer.

use bytes::Bytes;

/// Where a subscriber stops and restarts receiving live events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Queued events at which live delivery pauses.
    pub high_events: u64,
    /// Queued bytes at which live delivery pauses.
    pub high_bytes: u64,
    /// Queued events at or below which a paused subscriber rejoins.
    pub low_events: u64,
    /// Queued bytes at or below which a paused subscriber rejoins.
    pub low_bytes: u64,
}

/// How events reach a subscriber now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// The topic offers it every new batch.
    Live,
    /// Over its high watermark: offers are refused until the body drains it.
    Paused,
    /// Waits for its topic to feed it from its position.
    Rejoining,
    /// A catch-up reads what it misses from the store.
    CatchingUp,
}

/// What became of a live batch offered by the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued (or nothing new in it).
    Queued,
    /// Not queued: the subscriber is paused or rejoining, and will be fed
    /// from its position later.
    Paused,
    /// The body is gone or the stream ended.
    Gone,
    /// The batch does not follow the subscriber's position; nothing was
    /// queued and the subscriber now waits, rejoining, to be fed.
    Gap {
        /// The sequence that should have come next.
        expected: u64,
        /// The one that came.
        got: u64,
    },
}

/// What became of a chunk the topic fed a rejoining subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Up to date: live again.
    Live,
    /// Queued; enough waits for the socket: paused until it drains.
    Paused,
    /// Queued, and the subscriber can take more now.
    More,
    /// Not rejoining (a stale request): nothing done.
    Ignored,
    /// The body is gone or the stream ended.
    Gone,
    /// The chunk does not follow the position; nothing was queued.
    Gap,
}

/// What became of a control frame (keep-alive, probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Queued.
    Queued,
    /// Not queued: something else waits, which is a write already.
    Busy,
    /// The body is gone.
    Gone,
}

/// A chunk for the socket.
#[derive(Debug)]
pub struct Taken {
    /// The bytes to write.
    pub bytes: Bytes,
    /// The subscriber drained to its low watermark while paused: the caller
    /// must tell the topic to feed it.
    pub resume: bool,
}

/// What waits for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Event frames queued.
    pub events: u64,
    /// Event frame bytes queued.
    pub bytes: usize,
    /// Anything (events or control frames) is queued.
    pub waiting: bool,
    /// Chunks taken so far.
    pub takes: u64,
    /// The body is gone.
    pub closed: bool,
}
