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
    /// The earlier epochs of this log, oldest first: recovery removed stored
    /// data (a cut tail) and the log went on under a new epoch, so that the
    /// positions it removed are never handed out again under the same
    /// cursor. A cursor of an earlier epoch still names the same event up to
    /// where that epoch was kept.
    pub forks: Vec<Fork>,
    /// Retained positions whose events were lost to damage (a record that
    /// failed its checksum between intact ones), in order: the positions
    /// stay taken, so no cursor ever names another event, and a reader that
    /// reaches one is told of the loss instead of skipping it silently.
    pub lost: Vec<LostRange>,
}

/// Consecutive positions of a log whose events were lost to damage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LostRange {
    /// The first lost position.
    pub first_seq: u64,
    /// The last lost position.
    pub last_seq: u64,
    /// A time for the cursor of `last_seq`: that of the next event kept (or
    /// of the last one before when none follows), so cursors stay ordered.
    pub time_ms: i64,
}

/// Where an earlier epoch of a log ended: its events up to `last_seq` are
/// the log's own events at the same positions; whatever it held after was
/// lost to damage or a crash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fork {
    /// The earlier epoch.
    pub epoch: Epoch,
    /// Its last event that the log kept.
    pub last_seq: u64,
    /// That event's time (0 when `last_seq` is 0).
    pub last_time_ms: i64,
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
            forks: Vec::new(),
            lost: Vec::new(),
        }
    }

    /// The lost range holding `seq`, if any.
    pub fn lost_at(&self, seq: u64) -> Option<&LostRange> {
        let i = self.lost.partition_point(|r| r.last_seq < seq);
        self.lost.get(i).filter(|r| r.first_seq <= seq)
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
    /// prevents it: `c` is of another log, names a position recovery removed
    /// (an earlier epoch, past where it was kept), is ahead of the latest
    /// event, or older than the oldest retained one.
    pub fn resume_point(&self, c: &Cursor) -> Result<u64, Box<Gap>> {
        let gap = |reason, next_cursor, lost| {
            Err(Box::new(Gap {
                requested: c.clone(),
                next_cursor,
                latest_cursor: self.latest_cursor(),
                lost,
                reason,
            }))
        };
        if c.epoch != self.epoch {
            let Some(i) = self.forks.iter().position(|f| f.epoch == c.epoch) else {
                return gap(GapReason::OtherLog, self.boundary_cursor(), None);
            };
            // Kept up to the smallest end of this fork and every later one.
            let kept = self.forks[i..]
                .iter()
                .min_by_key(|f| f.last_seq)
                .expect("one fork at least");
            if c.seq > kept.last_seq {
                let next = if kept.last_seq + 1 >= self.first_seq {
                    Cursor::new(kept.last_time_ms, kept.last_seq, self.epoch.clone())
                } else {
                    self.boundary_cursor()
                };
                return gap(GapReason::Recovered, next, None);
            }
        }
        if c.seq > self.latest_seq {
            gap(GapReason::Ahead, self.boundary_cursor(), None)
        } else if c.seq + 1 < self.first_seq {
            let lost = self.first_seq - 1 - c.seq;
            gap(GapReason::Trimmed, self.boundary_cursor(), Some(lost))
        } else if let Some(r) = self.lost_at(c.seq + 1) {
            // Resuming would skip the lost events without a word.
            let next = Cursor::new(r.time_ms, r.last_seq, self.epoch.clone());
            gap(GapReason::Damaged, next, Some(r.last_seq - c.seq))
        } else {
            Ok(c.seq)
        }
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
    /// Why the cursor cannot be resumed.
    pub reason: GapReason,
}

/// Why a cursor cannot be resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// Older than the oldest retained event: retention removed what follows.
    Trimmed,
    /// Ahead of the latest event.
    Ahead,
    /// Of another log (the topic was deleted and recreated).
    OtherLog,
    /// Past where recovery kept the log (damage or a crash removed stored
    /// events; the log went on under a new epoch): `next_cursor` is the last
    /// event kept.
    Recovered,
    /// The events after the cursor were lost to damage in the middle of the
    /// log (see [`TopicBounds::lost`]): `next_cursor` is the last lost
    /// position, and `lost` how many follow the cursor.
    Damaged,
}

/// Store → topic: events another broker instance appended to the topic.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct ExternalAppends {
    /// Events in log order, each after the previous one.
    pub events: Vec<StoredEvent>,
    /// The epoch of the log they belong to: a topic that moved to another
    /// log (deleted and recreated, or wiped) meanwhile drops them instead of
    /// taking them for events of its new log.
    pub epoch: Epoch,
}

/// Where a store sends the appends it learns of from other instances.
pub type AppendSink = actix::Recipient<ExternalAppends>;

/// Durable storage of topic logs and their dedup state.
///
/// Appends to one topic are issued by its topic actor alone, up to
/// [`max_appends_in_flight`](Store::max_appends_in_flight) at a time; the
/// store still must be safe for concurrent readers and other topics.
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
    /// orders the batch in this call, or at the latest when the future is
    /// first polled, so appends started in turn are stored in that order
    /// while earlier ones are still becoming durable; unless it
    /// [may reorder](Self::appends_may_reorder) them.
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

    /// Whether appends in flight together may now and then be stored in
    /// another order than they were started (a remote store whose
    /// connection was remade under them, or that had to resend one). Each
    /// append's outcomes still name the seqs it got, and the topic reads
    /// what it missed; but a producer's next sequence must not overtake
    /// the one before, so appends carrying producer sequences then go one
    /// at a time.
    fn appends_may_reorder(&self) -> bool {
        false
    }

    /// Up to `limit` retained events with a sequence above `after_seq`, in
    /// order. Starts at the oldest retained event when `after_seq` is older.
    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Like [`read`](Self::read), but ends once the events read hold
    /// `max_bytes` of data (at least one event, however large), so a page
    /// of large events is bounded in memory as well as in count. This
    /// default reads small pages until then: at most
    /// [`BOUNDED_READ_PAGE`] events past the bound.
    async fn read_bounded(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out: Vec<StoredEvent> = Vec::new();
        let mut bytes = 0usize;
        let mut after = after_seq;
        while out.len() < limit && (out.is_empty() || bytes < max_bytes) {
            let want = (limit - out.len()).min(BOUNDED_READ_PAGE);
            let page = self.read(topic, after, want).await?;
            let got = page.len();
            for e in page {
                if !out.is_empty() && bytes + e.data.len() > max_bytes {
                    return Ok(out);
                }
                bytes += e.data.len();
                after = e.seq;
                out.push(e);
            }
            if got < want {
                break;
            }
        }
        Ok(out)
    }

    /// Names of every topic the store holds.
    async fn topics(&self) -> Result<Vec<String>, StoreError>;

    /// Deletes a topic: its log, its dedup state (idempotency keys, producer
    /// sequences) and its place in [`topics`](Self::topics), durably before
    /// it returns; `UnknownTopic` if it does not exist. Afterwards no append
    /// meant for the deleted log is stored (a writer that still holds its
    /// epoch is refused), and the next [`open_topic`](Self::open_topic)
    /// creates a new log under a new epoch, so no cursor of the old log is
    /// ever mapped onto the new one. An interrupted delete leaves either the
    /// whole topic or nothing of it.
    ///
    /// Callers go through the topic's actor, which lets the appends in
    /// flight finish first and ends the topic's streams.
    async fn delete_topic(&self, topic: &str) -> Result<(), StoreError>;

    /// `Ok` when the store takes writes, else the reason.
    async fn ready(&self) -> Result<(), String>;

    /// What works less well than it should while the store is ready, if
    /// anything (for `/readyz`): e.g. other instances' appends reaching
    /// this one late.
    fn degraded(&self) -> Option<String> {
        None
    }

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

/// Events per read of [`Store::read_bounded`]'s default.
pub const BOUNDED_READ_PAGE: usize = 16;

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// The completion of [`Store::start_append`].
pub type AppendFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<AppendOutcome>, StoreError>> + Send>,
>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fork(epoch: &Epoch, last_seq: u64) -> Fork {
        Fork {
            epoch: epoch.clone(),
            last_seq,
            last_time_ms: last_seq as i64 * 10,
        }
    }

    #[test]
    fn cursors_of_earlier_epochs_resume_up_to_where_they_were_kept() {
        let (e1, e2, e3) = (Epoch::generate(), Epoch::generate(), Epoch::generate());
        // e1 kept through 10, then e2 kept through 7 (a second cut), now e3.
        let b = TopicBounds {
            epoch: e3.clone(),
            first_seq: 3,
            first_time_ms: 30,
            latest_seq: 20,
            latest_time_ms: 200,
            forks: vec![fork(&e1, 10), fork(&e2, 7)],
            lost: Vec::new(),
        };
        let at = |e: &Epoch, seq| Cursor::new(seq as i64 * 10, seq, e.clone());
        assert_eq!(b.resume_point(&at(&e3, 15)), Ok(15));
        assert_eq!(b.resume_point(&at(&e2, 7)), Ok(7));
        assert_eq!(b.resume_point(&at(&e1, 7)), Ok(7), "kept through both cuts");
        for c in [at(&e1, 8), at(&e1, 10), at(&e2, 8)] {
            let gap = b.resume_point(&c).unwrap_err();
            assert_eq!(gap.reason, GapReason::Recovered, "{c}");
            assert_eq!(gap.next_cursor, at(&e3, 7), "after the last event kept");
        }
        // Retention still applies to an earlier epoch's cursors.
        let gap = b.resume_point(&at(&e1, 1)).unwrap_err();
        assert_eq!((gap.reason, gap.lost), (GapReason::Trimmed, Some(1)));
        let other = b.resume_point(&at(&Epoch::generate(), 5)).unwrap_err();
        assert_eq!(other.reason, GapReason::OtherLog);
        let ahead = b.resume_point(&at(&e3, 21)).unwrap_err();
        assert_eq!(ahead.reason, GapReason::Ahead);
    }

    #[test]
    fn a_cursor_before_lost_events_is_told_of_the_loss() {
        let e = Epoch::generate();
        let mut b = TopicBounds::empty(e.clone());
        b.latest_seq = 20;
        b.latest_time_ms = 200;
        b.lost = vec![
            LostRange {
                first_seq: 5,
                last_seq: 7,
                time_ms: 80,
            },
            LostRange {
                first_seq: 12,
                last_seq: 12,
                time_ms: 130,
            },
        ];
        let at = |seq: u64| Cursor::new(seq as i64 * 10, seq, e.clone());
        for (seq, lost, next) in [(4, 3, 7), (5, 2, 7), (6, 1, 7), (11, 1, 12)] {
            let gap = b.resume_point(&at(seq)).unwrap_err();
            assert_eq!(
                (gap.reason, gap.lost),
                (GapReason::Damaged, Some(lost)),
                "{seq}"
            );
            assert_eq!(gap.next_cursor.seq, next);
        }
        // Whoever holds the last lost position (or any other) loses nothing.
        for seq in [0, 3, 7, 8, 12, 20] {
            assert_eq!(b.resume_point(&at(seq)), Ok(seq));
        }
        assert!(b.lost_at(6).is_some() && b.lost_at(8).is_none());
    }
}
