//! The Store trait: what the actors need from durable storage.

use std::{io, sync::Arc};

use async_trait::async_trait;

use crate::{
    cursor::{Cursor, Epoch},
    event::{AppendOutcome, NewEvent, StoredEvent},
};

/// A store failure. Every variant means "nothing was stored by this call".
#[derive(Debug, thiserror::Error, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation of the store failed (the embedded log's disk). The
    /// error itself, shared so that every waiter of a failed write gets it.
    #[error("store I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The store cannot take the request now (backend down, task failed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The topic's log was wiped and recreated under another epoch since the
    /// caller loaded it.
    #[error("topic log was reset (new epoch)")]
    EpochChanged,
    /// The topic is not known to the store (only from read-only calls).
    #[error("unknown topic")]
    UnknownTopic,
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(Arc::new(e))
    }
}

/// The extent of one topic's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicBounds {
    /// The log's incarnation.
    pub epoch: Epoch,
    /// Sequence of the oldest retained event; `latest_seq + 1` when none is.
    pub first_seq: u64,
    /// Time of the oldest retained event (or of the latest when none is
    /// retained); used to build the boundary cursor.
    pub first_time_ms: i64,
    /// Sequence of the latest event ever stored; 0 for a new log.
    pub latest_seq: u64,
    /// Time of the latest event; 0 for a new log.
    pub latest_time_ms: i64,
}

impl TopicBounds {
    /// Bounds of a log that has never held an event.
    pub fn empty(epoch: Epoch) -> Self {
        TopicBounds {
            epoch,
            first_seq: 1,
            first_time_ms: 0,
            latest_seq: 0,
            latest_time_ms: 0,
        }
    }

    /// How many events are retained.
    pub fn retained(&self) -> u64 {
        self.latest_seq + 1 - self.first_seq
    }

    /// The cursor just before the oldest retained event: resuming from it
    /// delivers everything still retained.
    pub fn boundary_cursor(&self) -> Cursor {
        Cursor::new(self.first_time_ms, self.first_seq - 1, self.epoch.clone())
    }

    /// The sequence a resume from `c` continues after, or the gap that
    /// prevents it: `c` is of another epoch, ahead of the latest event, or
    /// older than the oldest retained one.
    pub fn resume_point(&self, c: &Cursor) -> Result<u64, Box<Gap>> {
        let lost = if c.epoch != self.epoch || c.seq > self.latest_seq {
            None
        } else if c.seq + 1 < self.first_seq {
            Some(self.first_seq - 1 - c.seq)
        } else {
            return Ok(c.seq);
        };
        Err(Box::new(Gap {
            requested: c.clone(),
            next_cursor: self.boundary_cursor(),
            latest_cursor: self.latest_cursor(),
            lost,
        }))
    }

    /// The cursor of the latest event (the boundary cursor of an empty log).
    pub fn latest_cursor(&self) -> Cursor {
        Cursor::new(self.latest_time_ms, self.latest_seq, self.epoch.clone())
    }
}

/// A cursor that cannot be resumed, with what the client can do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The cursor the client asked for.
    pub requested: Cursor,
    /// Resuming after this delivers everything still retained.
    pub next_cursor: Cursor,
    /// The latest event's cursor.
    pub latest_cursor: Cursor,
    /// Events skipped by resuming from `next_cursor`, when known.
    pub lost: Option<u64>,
}

/// Store → topic: events another broker instance appended to the topic.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct ExternalAppends {
    /// Events in log order, each after the previous one.
    pub events: Vec<StoredEvent>,
}

/// Where a store sends the appends it learns of from other instances.
pub type AppendSink = actix::Recipient<ExternalAppends>;

/// Durable storage of topic logs and their dedup state.
///
/// Appends to one topic are issued one at a time by its topic actor; the store
/// still must be safe for concurrent readers and other topics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Opens a topic, creating its log (with a new epoch) if absent.
    async fn open_topic(&self, topic: &str) -> Result<TopicBounds, StoreError>;

    /// Bounds of an existing topic; `UnknownTopic` if it was never created.
    async fn bounds(&self, topic: &str) -> Result<TopicBounds, StoreError>;

    /// Appends a batch atomically with its dedup records. Events are checked
    /// against dedup state in order (a key repeated inside the batch is a
    /// duplicate of its first occurrence); stored ones get consecutive
    /// sequences stamped with `time_ms` or later. Returns one outcome per
    /// event, and returns only once the stored events are as durable as the
    /// store promises.
    async fn append(
        &self,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError>;

    /// [`append`](Self::append), started now. A store whose
    /// [`max_appends_in_flight`](Self::max_appends_in_flight) is above 1
    /// orders the batch in this call, before the future is first polled, so
    /// appends started in turn are stored in that order while earlier ones
    /// are still becoming durable.
    fn start_append(
        self: Arc<Self>,
        topic: Arc<str>,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> AppendFuture {
        Box::pin(async move { self.append(&topic, batch, time_ms).await })
    }

    /// How many appends to one topic its actor may have in flight at once
    /// (through [`start_append`](Self::start_append)).
    fn max_appends_in_flight(&self) -> usize {
        1
    }

    /// Up to `limit` retained events with a sequence above `after_seq`, in
    /// order. Starts at the oldest retained event when `after_seq` is older.
    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Names of every topic the store holds.
    async fn topics(&self) -> Result<Vec<String>, StoreError>;

    /// `Ok` when the store takes writes, else the reason.
    async fn ready(&self) -> Result<(), String>;

    /// Makes everything appended so far durable (used at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Asks to be sent, on `sink`, the events appended to `topic`'s log of
    /// `epoch` after `after_seq` by any instance sharing the store (this one's included:
    /// receivers skip what they already have). A store that no other
    /// instance writes to ignores it.
    fn watch(&self, _topic: &str, _epoch: &Epoch, _after_seq: u64, _sink: AppendSink) {}

    /// Stops `watch`.
    fn unwatch(&self, _topic: &str) {}
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// The completion of [`Store::start_append`].
pub type AppendFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<AppendOutcome>, StoreError>> + Send>,
>;
