//! Writes of a topic log that are not durable yet, and the fsyncs that make
//! them so. Shared between the log and those fsyncs, which run without the
//! log's lock.

use std::{
    collections::BTreeMap,
    fs, io,
    sync::{Arc, Mutex},
};

use super::journal::Durable;

/// One log's writes waiting for their fsync.
#[derive(Clone, Default)]
pub struct Writes(Arc<Mutex<Pending>>);

#[derive(Default)]
struct Pending {
    /// Start offsets in the active segment, with how many writes start
    /// there (a write that stores nothing new starts where the next one does).
    starts: BTreeMap<u64, usize>,
    /// An fsync failed: nothing written to this log since its last good
    /// fsync can be acknowledged, and it takes no more writes.
    failed: bool,
}

impl Writes {
    /// Whether an fsync of this log failed: it takes no more writes.
    pub fn failed(&self) -> bool {
        self.0.lock().expect("poisoned").failed
    }

    /// A write to `file` starting at `start`, to be fsynced by the caller.
    pub fn start(&self, file: Arc<fs::File>, start: u64) -> SegmentWrite {
        *self
            .0
            .lock()
            .expect("poisoned")
            .starts
            .entry(start)
            .or_default() += 1;
        SegmentWrite {
            file,
            start,
            writes: self.clone(),
        }
    }

    /// The active segment was sealed (fsynced): every write to it is durable.
    pub fn all_synced(&self) {
        self.0.lock().expect("poisoned").starts.clear();
    }
}

/// A write that is not durable yet.
pub enum Unsynced {
    /// Submitted to the shared journal: durable once this answers.
    Journaled(Durable),
    /// Durable once its segment is fdatasynced ([`SegmentWrite::sync`]).
    Segment(SegmentWrite),
}

/// A write made durable by an fdatasync of its own segment.
pub struct SegmentWrite {
    file: Arc<fs::File>,
    start: u64,
    writes: Writes,
}

impl SegmentWrite {
    /// fsyncs the write (blocking). Several may run at once for one log:
    /// the disk serves concurrent fsyncs much better than one after another.
    ///
    /// A failed fsync leaves the page cache in an unknown state, so the
    /// first failure cuts the segment back to the oldest write still
    /// waiting for its fsync (none of those was acknowledged: publishers
    /// are answered in log order) and fails every later sync of this log;
    /// the caller drops the log, which is reopened from what is on disk.
    pub fn sync(&self) -> io::Result<()> {
        let res = self.file.sync_data();
        let mut d = self.writes.0.lock().expect("poisoned");
        // Gone from `starts` means a segment roll fsynced it already.
        let was_pending = match d.starts.get_mut(&self.start) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                d.starts.remove(&self.start);
                true
            }
            None => false,
        };
        if d.failed {
            return Err(io::Error::other("an earlier fsync of this log failed"));
        }
        match res {
            Err(e) if was_pending => {
                d.failed = true;
                let cut = d
                    .starts
                    .keys()
                    .next()
                    .map_or(self.start, |&p| p.min(self.start));
                if let Err(t) = self.file.set_len(cut) {
                    tracing::error!(error = %t, "cannot cut a write whose fsync failed");
                }
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Whether this write went to the log whose writes are `writes`.
    pub fn of(&self, writes: &Writes) -> bool {
        Arc::ptr_eq(&self.writes.0, &writes.0)
    }
}
