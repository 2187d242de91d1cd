//! Which topic logs stay loaded (their segment files open, their indexes
//! and dedup state in memory): those in use, within a budget of open
//! files. A log nobody used for `idle_release` is closed, and so is the
//! least recently used one when a log to open would pass the budget; the
//! next use opens it again from disk (with the same epoch and cursors).
//! So the files the store holds open follow the topics in use, never the
//! topics it holds.
//!
//! Closing a log makes what was written to it durable first when the
//! store's fsync policy promised that (`interval`; with `always`, the
//! journal's record of it is settled, see [`super::journal::Journal::release`]).

use std::{collections::HashMap, sync::Arc, time::Instant};

use sluice_actors::store::StoreError;

use super::{EmbeddedConfig, Fsync, Inner, Shared};

/// Fewest files the budget allows, whatever the process limit.
const MIN_BUDGET: usize = 16;

/// The file budget: the configured one, else a quarter of the process's
/// open-file limit (the rest is for connections and the reserve).
pub(super) fn budget(cfg: &EmbeddedConfig) -> usize {
    let derived = || crate::fds::soft_limit().map_or(4096, |l| l / 4);
    match cfg.max_open_files {
        0 => derived().max(MIN_BUDGET),
        n => n.max(1),
    }
}

/// A loaded log.
pub(super) struct Loaded {
    pub(super) log: Shared,
    used: Instant,
    /// Segment files it held open when loaded (one more may come when its
    /// active segment rolls; retention closes old ones).
    files: usize,
}

impl Loaded {
    pub(super) fn new(log: Shared, files: usize) -> Self {
        Loaded {
            log,
            used: Instant::now(),
            files,
        }
    }

    /// The log, marked used now.
    pub(super) fn touch(&mut self) -> Shared {
        self.used = Instant::now();
        self.log.clone()
    }

    /// Nobody holds the log but the map: no write or read is under way.
    fn unused(&self) -> bool {
        Arc::strong_count(&self.log) == 1
    }
}

impl Inner {
    /// Closes the least recently used logs nobody holds until one more log
    /// fits the budget; an error when none can be closed.
    pub(super) fn make_room(&self, topics: &mut HashMap<String, Loaded>) -> Result<(), StoreError> {
        let mut open: usize = topics.values().map(|l| l.files).sum();
        while open + 1 > self.max_open_files {
            let Some(oldest) = topics
                .iter()
                .filter(|(_, l)| l.unused())
                .min_by_key(|(_, l)| l.used)
                .map(|(name, _)| name.clone())
            else {
                return Err(StoreError::Unavailable(format!(
                    "too many topics are in use at once (their logs hold the {} files \
                     embedded.max_open_files allows); retry",
                    self.max_open_files
                )));
            };
            let loaded = topics.remove(&oldest).expect("listed");
            open -= loaded.files;
            self.release(&oldest, loaded.log);
        }
        Ok(())
    }

    /// Files the budget still allows.
    pub(super) fn file_headroom(&self) -> usize {
        let topics = self.topics.lock().expect("poisoned");
        let open: usize = topics.values().map(|l| l.files).sum();
        self.max_open_files.saturating_sub(open)
    }

    /// Closes the logs nobody used for `idle_release`.
    pub(super) fn release_idle(&self) {
        let idle: Vec<(String, Shared)> = {
            let mut topics = self.topics.lock().expect("poisoned");
            let names: Vec<String> = topics
                .iter()
                .filter(|(_, l)| l.unused() && l.used.elapsed() >= self.cfg.idle_release)
                .map(|(n, _)| n.clone())
                .collect();
            names
                .into_iter()
                .map(|n| {
                    let l = topics.remove(&n).expect("listed");
                    (n, l.log)
                })
                .collect()
        };
        for (name, log) in idle {
            self.release(&name, log);
        }
    }

    /// Drops a log taken out of the map, after making durable what the
    /// fsync policy promised would be.
    pub(super) fn release(&self, topic: &str, log: Shared) {
        let mut log = log.lock().expect("poisoned");
        let res = match self.cfg.fsync {
            Fsync::Always => match (&self.journal, log.active_file()) {
                (Some(journal), Some(file)) => journal.release(&file),
                _ => Ok(()),
            },
            Fsync::Interval => log.take_dirty().map_or(Ok(()), |f| f.sync_data()),
            Fsync::Never => Ok(()),
        };
        if let Err(e) = res {
            // Kept in the journal (which fails its next checkpoint) or
            // dirty in the log just dropped: said loudly either way.
            tracing::error!(topic, error = %e, "fsync of a log being closed failed");
        }
    }
}
