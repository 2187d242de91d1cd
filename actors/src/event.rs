//! Events as they enter the broker and as the log stores them.

use bytes::Bytes;

use crate::cursor::{Cursor, Epoch};

/// An event a publisher asks to store, validated by the HTTP layer.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The payload; valid UTF-8 (checked before it gets here).
    pub data: Bytes,
    /// Delivered as the SSE `event:` field.
    pub event_type: Option<String>,
    /// `Idempotency-Key`: a repeat within the dedup window stores nothing.
    pub idempotency_key: Option<String>,
    /// `Producer-Id` and `Producer-Seq`.
    pub producer: Option<(String, u64)>,
}

impl NewEvent {
    /// A plain event with no type and no dedup headers.
    pub fn data(data: impl Into<Bytes>) -> Self {
        NewEvent {
            data: data.into(),
            event_type: None,
            idempotency_key: None,
            producer: None,
        }
    }

    /// Fingerprint of what makes two publishes "the same event": used to tell
    /// a retry (same key, same body) from a conflicting reuse of a key.
    pub fn fingerprint(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.event_type.as_deref().unwrap_or("").as_bytes());
        h.update(&[0xff]);
        h.update(&self.data);
        h.digest128()
    }
}

/// An event as stored in a topic's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Time the broker stored it, ms since the Unix epoch.
    pub time_ms: i64,
    /// SSE `event:` field.
    pub event_type: Option<String>,
    /// The payload, valid UTF-8.
    pub data: Bytes,
}

impl StoredEvent {
    /// The event's cursor in a log of the given epoch.
    pub fn cursor(&self, epoch: &Epoch) -> Cursor {
        Cursor::new(self.time_ms, self.seq, epoch.clone())
    }

    /// The payload as text. The HTTP layer only admits UTF-8 and the log
    /// checksums what it stores, so the lossy path is never taken in practice.
    pub fn data_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// What the store did with one event of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly stored.
    Stored(StoredEvent),
    /// A repeat of an event already stored; nothing was stored. The original
    /// cursor when still known.
    Duplicate(Option<Cursor>),
    /// The `Idempotency-Key` is stored with a different body.
    KeyConflict,
    /// `Producer-Seq` skips ahead of the next expected sequence.
    SequenceGap {
        /// The sequence the producer should send next.
        expected: u64,
    },
}
