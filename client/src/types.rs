//! The values the API sends and receives.

use serde::{Deserialize, Serialize};

/// Where a subscription or a history read starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// The oldest retained event.
    Earliest,
    /// The next event published (the default).
    #[default]
    Latest,
    /// The event after this cursor.
    After(String),
}

impl Start {
    /// `earliest`, `latest`, or anything else as a cursor.
    pub fn parse(s: &str) -> Start {
        match s {
            "earliest" => Start::Earliest,
            "latest" => Start::Latest,
            c => Start::After(c.to_owned()),
        }
    }
}

/// An event to publish: its data, and optionally its type and an
/// idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NewEvent {
    /// The event's data, stored as sent.
    pub data: String,
    /// `Event-Type` (1 to 64 of `[A-Za-z0-9._-]`, not `gap` or
    /// `auth-expired`, which the broker refuses), delivered as `event:`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// `Idempotency-Key` (1 to 255 printable ASCII characters): a repeat
    /// within the broker's dedup window stores nothing and answers the
    /// original cursor, so a retry is safe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl NewEvent {
    /// An event with this data and nothing else.
    pub fn new(data: impl Into<String>) -> NewEvent {
        NewEvent {
            data: data.into(),
            ..NewEvent::default()
        }
    }

    /// Sets the event type.
    pub fn with_type(mut self, event_type: impl Into<String>) -> NewEvent {
        self.event_type = Some(event_type.into());
        self
    }

    /// Sets the idempotency key.
    pub fn with_key(mut self, key: impl Into<String>) -> NewEvent {
        self.idempotency_key = Some(key.into());
        self
    }
}

impl From<&str> for NewEvent {
    fn from(data: &str) -> NewEvent {
        NewEvent::new(data)
    }
}

impl From<String> for NewEvent {
    fn from(data: String) -> NewEvent {
        NewEvent::new(data)
    }
}

/// The answer to a single publish.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// The event's cursor; `None` only for a producer-sequence duplicate
    /// whose original is past the broker's dedup window.
    pub cursor: Option<String>,
    /// Nothing was stored: the idempotency key or producer sequence was
    /// already stored (the cursor is the original's).
    pub duplicate: bool,
}

/// One line's result in a batch publish, in line order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchResult {
    /// The event's cursor (the original's for a duplicate); `None` when
    /// this line failed.
    pub cursor: Option<String>,
    /// The line's idempotency key was already stored.
    #[serde(default)]
    pub duplicate: bool,
    /// Why this line was not stored (the other lines were), e.g. an
    /// idempotency key reused with other data.
    #[serde(default)]
    pub error: Option<String>,
    /// The status that line would have had alone (`422`).
    #[serde(default)]
    pub status: Option<u16>,
}

/// An event read from a topic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Event {
    /// Its cursor: resume after it to get the events that follow.
    pub cursor: String,
    /// Its `Event-Type`, if it had one.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Its data.
    pub data: String,
    /// The time the broker stored it (RFC 3339), in history reads only
    /// (a stream's cursor carries it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// Events that could not be delivered: trimmed by retention, lost to
/// damage, or of a log that was deleted or wiped. Reported, never skipped
/// silently; reading goes on after [`resumed_after`](Gap::resumed_after).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Gap {
    /// The cursor the client asked to resume from.
    #[serde(default)]
    pub requested: Option<String>,
    /// Where reading goes on: every event after it that is still retained.
    pub resumed_after: String,
    /// How many events were lost, when the broker knows.
    #[serde(default)]
    pub lost: Option<u64>,
    /// The broker's explanation (from a `416`), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lost {
            Some(n) => write!(f, "{n} event(s) lost")?,
            None => write!(f, "an unknown number of events lost")?,
        }
        if let Some(r) = &self.requested {
            write!(f, " after {r}")?;
        }
        write!(f, "; resuming after {}", self.resumed_after)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// A topic in the list of topics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TopicSummary {
    /// Its name.
    pub topic: String,
    /// Events retained.
    pub retained: u64,
    /// SSE streams open on the instance that answered.
    pub subscribers: u64,
}

/// One topic's information.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TopicInfo {
    /// Its name.
    pub topic: String,
    /// The oldest retained event's cursor; `None` when none is retained.
    pub oldest_cursor: Option<String>,
    /// The latest event's cursor; `None` when it never had an event.
    pub latest_cursor: Option<String>,
    /// Events retained.
    pub retained: u64,
    /// SSE streams open on the instance that answered.
    pub subscribers: u64,
}

/// One page of a topic's history.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryPage {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Read on from here: the last event's cursor, or the start position
    /// when the page is empty.
    pub next_cursor: Option<String>,
}
