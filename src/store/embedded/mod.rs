//! The embedded store: one append-only, segmented log per topic under
//! `data_dir/topics/<topic>/`. The default backend; needs nothing installed.
//!
//! - `record`: the checksummed record format (event + dedup info together).
//! - `segment`: one segment file and its offset index; torn-tail repair.
//! - `layout`: where a topic's files are; `meta.json`, the log's identity.
//! - `recovery`: what opening a log repairs (torn tails, holes, epoch forks).
//! - `topic_log`: a topic's segments, retention, dedup rebuild, epoch.
//! - `journal`: the write-ahead journal shared by every topic with
//!   `fsync = "always"` (group commit across topics); replayed at start.
//! - `delete`: deleting a topic's log (rename to a tombstone, then remove).
//! - `fuzzing` (tests and the `fuzzing` feature only, not part of the API):
//!   damage scenarios and checks of what reads the disk, run by `fuzz/`
//!   and by property tests.
//!
//! Blocking file I/O runs on the blocking thread pool. Appends to a topic
//! hold its lock; reads only plan under it and read without it.

pub mod check;
mod delete;
mod durability;
mod open_files;
// Not part of the API: the fuzz targets' and property tests' scenarios.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod journal;
mod layout;
mod record;
mod recovery;
mod segment;
mod topic_log;

use std::{
    collections::HashMap,
    fs,
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use async_trait::async_trait;
use durability::{SegmentWrite, Unsynced};
use journal::Journal;
use open_files::Loaded;
use sluice_actors::{
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::{AppendFuture, Store, StoreError, TopicBounds},
};
use topic_log::TopicLog;

/// Appends to one topic whose fsyncs may run at once (`fsync = "always"`):
/// a disk answers concurrent fsyncs far faster than the same ones in a row,
/// and publishes that arrive during an fsync need not wait for it to end.
const MAX_SYNCS_IN_FLIGHT: usize = 4;

/// When appended events reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before the publish is acknowledged (group commit per batch).
    Always,
    /// Every `fsync_interval_ms`: a crash can lose that much acknowledged data.
    Interval,
    /// Left to the OS: a machine crash can lose acknowledged data; a broker
    /// crash alone cannot (the data is in the page cache).
    Never,
}

/// Settings of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// fsync policy.
    pub fsync: Fsync,
    /// Period of `Fsync::Interval`.
    pub fsync_interval: Duration,
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u64,
    /// Retention: most events per topic.
    pub max_events: u64,
    /// Retention: most bytes per topic.
    pub max_bytes: u64,
    /// Retention: oldest event age, `None` for no age limit.
    pub max_age_ms: Option<i64>,
    /// How long idempotency keys are remembered.
    pub dedup_window_ms: i64,
    /// Most segment files kept open at once (0: a quarter of the process's
    /// open-file limit); see [`open_files`].
    pub max_open_files: usize,
    /// A log nobody used for this long is closed (its files and memory);
    /// the next use opens it again.
    pub idle_release: Duration,
}

type Shared = Arc<Mutex<TopicLog>>;

struct Inner {
    root: PathBuf,
    cfg: EmbeddedConfig,
    topics: Mutex<HashMap<String, Loaded>>,
    /// The file budget of the loaded logs.
    max_open_files: usize,
    /// With `fsync = "always"`: where small appends are made durable.
    journal: Option<Journal>,
}

/// The embedded, on-disk store.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store under `data_dir` and starts its
    /// maintenance thread (interval fsync, age retention).
    pub fn open(data_dir: &Path, cfg: EmbeddedConfig) -> std::io::Result<Self> {
        let root = data_dir.join("topics");
        fs::create_dir_all(&root)?;
        // The journal is replayed even when it is no longer used (`fsync`
        // changed since the last run): it may hold acknowledged appends.
        if let Some(at) = journal::verify(&data_dir.join(journal::FILE_NAME))?.damaged_at {
            tracing::warn!(
                at,
                "journal.log ends on a torn or damaged record (a crash while writing it, or \
                 damage): replay stops there, and a segment missing what followed is cut"
            );
        }
        let (journal, replayed) = Journal::open(data_dir, &root)?;
        if replayed.records > 0 {
            tracing::info!(
                records = replayed.records,
                applied = replayed.applied,
                skipped = replayed.skipped,
                "journal replayed into the topic logs"
            );
        }
        let journal = (cfg.fsync == Fsync::Always).then_some(journal);
        if let Err(e) = delete::remove_tombstones(&root) {
            // Not topics, whatever is left of them: no reason not to start.
            tracing::warn!(error = %e, "cannot remove the files of topics deleted before a crash");
        }
        let max_open_files = open_files::budget(&cfg);
        let inner = Arc::new(Inner {
            root,
            cfg,
            topics: Mutex::new(HashMap::new()),
            max_open_files,
            journal,
        });
        // Open every topic now: a torn tail is cut and logged at start, not
        // at the first request that happens to touch the topic.
        for entry in fs::read_dir(&inner.root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !layout::has_log(&entry.path()) {
                continue;
            }
            // Checked, then closed: files stay open only for topics in use.
            match inner.log(&name, false) {
                Ok(log) => inner.release(&name, log),
                Err(e) => tracing::error!(topic = name, error = %e, "cannot open topic log"),
            }
        }
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sluice-store-maint".into())
            .spawn(move || maintenance(weak))?;
        Ok(EmbeddedStore { inner })
    }

    /// How many more files the store may open within its budget (it may
    /// need them at any time: the front door keeps them free).
    pub fn file_headroom(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let inner = self.inner.clone();
        move || inner.file_headroom()
    }
}

impl Inner {
    /// The loaded log of `topic`, opening it from disk (or creating it when
    /// `create`) if needed.
    fn log(&self, topic: &str, create: bool) -> Result<Shared, StoreError> {
        let mut topics = self.topics.lock().expect("poisoned");
        if let Some(t) = topics.get_mut(topic) {
            return Ok(t.touch());
        }
        let dir = self.root.join(topic);
        let exists = layout::has_log(&dir);
        if exists || create {
            // Room for this log's files first: the least recently used
            // logs nobody holds are closed.
            self.make_room(&mut topics)?;
        }
        let log = if exists {
            let (mut log, report) = TopicLog::open(&dir, &self.cfg)?;
            if report.forked() {
                sluice_actors::metrics::metrics().store_recoveries.inc();
                let b = log.bounds();
                let kept = b.forks.last().expect("forked");
                tracing::warn!(
                    topic,
                    old_epoch = %kept.epoch,
                    new_epoch = %b.epoch,
                    kept_through_seq = kept.last_seq,
                    dropped_segments = report.dropped_segments,
                    "stored data was removed on recovery: the log continues under a new epoch; \
                     cursors of the old one up to the kept sequence still resume, later ones get 416"
                );
            }
            log
        } else if create {
            if dir.exists() {
                // A directory without its meta.json: not a log we can trust
                // for cursors. Keep it aside for inspection, start anew.
                let aside = self
                    .root
                    .join(format!(".broken-{topic}-{}", std::process::id()));
                tracing::error!(topic, aside = %aside.display(), "topic directory has no meta.json; moved aside");
                fs::rename(&dir, &aside)?;
            }
            TopicLog::create(&dir, &self.cfg)?
        } else {
            return Err(StoreError::UnknownTopic);
        };
        let files = log.open_files();
        let shared = Arc::new(Mutex::new(log));
        topics.insert(topic.to_owned(), Loaded::new(shared.clone(), files));
        Ok(shared)
    }

    /// Writes the batch now (so appends are stored in the order they are
    /// started), and returns the wait for its fsync. A write into the page
    /// cache is cheaper done here than handed to another thread and back.
    fn append(
        self: Arc<Self>,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>, StoreError>> + Send + 'static {
        let written = self.write(topic, batch, time_ms);
        let topic = topic.to_owned();
        async move {
            let (outcomes, unsynced) = written?;
            match unsynced {
                None => {}
                Some(Unsynced::Journaled(durable)) => {
                    durable.await.unwrap_or_else(|_| Err(journal::gone()))?
                }
                Some(Unsynced::Segment(u)) => blocking(move || self.sync(&topic, &u)).await?,
            }
            Ok(outcomes)
        }
    }

    fn write(
        &self,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<(Vec<AppendOutcome>, Option<Unsynced>), StoreError> {
        let log = self.log(topic, true)?;
        let res =
            log.lock()
                .expect("poisoned")
                .write(batch, time_ms, &self.cfg, self.journal.as_ref());
        res.map_err(|e| {
            tracing::error!(topic, error = %e, "append failed");
            self.forget(topic);
            StoreError::from(e)
        })
    }

    /// fsyncs a write; a failure drops its log (if it is still the loaded
    /// one), so the next use reopens it from what is on disk.
    fn sync(&self, topic: &str, u: &SegmentWrite) -> Result<(), StoreError> {
        u.sync().map_err(|e| {
            tracing::error!(topic, error = %e, "fsync failed");
            let mut topics = self.topics.lock().expect("poisoned");
            if topics
                .get(topic)
                .is_some_and(|l| l.log.lock().expect("poisoned").wrote(u))
            {
                topics.remove(topic);
            }
            StoreError::from(e)
        })
    }

    /// Drops a log whose last operation failed, so the next use reopens it
    /// from what is really on disk.
    fn forget(&self, topic: &str) {
        self.topics.lock().expect("poisoned").remove(topic);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn open_topic(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        let (inner, topic) = (self.inner.clone(), topic.to_owned());
        blocking(move || Ok(inner.log(&topic, true)?.lock().expect("poisoned").bounds())).await
    }

    async fn bounds(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        let (inner, topic) = (self.inner.clone(), topic.to_owned());
        blocking(move || Ok(inner.log(&topic, false)?.lock().expect("poisoned").bounds())).await
    }

    async fn append(
        &self,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.inner.clone().append(topic, batch, time_ms).await
    }

    fn start_append(
        self: Arc<Self>,
        topic: Arc<str>,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> AppendFuture {
        Box::pin(self.inner.clone().append(&topic, batch, time_ms))
    }

    fn max_appends_in_flight(&self) -> usize {
        if self.inner.cfg.fsync == Fsync::Always {
            MAX_SYNCS_IN_FLIGHT
        } else {
            1
        }
    }

    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_bounded(topic, after_seq, limit, usize::MAX).await
    }

    async fn read_bounded(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (inner, topic) = (self.inner.clone(), topic.to_owned());
        blocking(move || {
            // Planned from the offset index: what is read is bounded before
            // a byte of it is in memory.
            let plans = inner
                .log(&topic, false)?
                .lock()
                .expect("poisoned")
                .plan_read(after_seq, limit, max_bytes as u64);
            let mut out = Vec::new();
            for p in plans {
                out.extend(p.read()?);
            }
            Ok(out)
        })
        .await
    }

    async fn topics(&self) -> Result<Vec<String>, StoreError> {
        let root = self.inner.root.clone();
        blocking(move || {
            let mut names: Vec<String> = fs::read_dir(&root)?
                .filter_map(|e| e.ok())
                .filter(|e| layout::has_log(&e.path()))
                .filter_map(|e| e.file_name().into_string().ok())
                // Not topics: a deleted one's tombstone, for one.
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        let (inner, topic) = (self.inner.clone(), topic.to_owned());
        blocking(move || inner.delete(&topic)).await
    }

    async fn ready(&self) -> Result<(), String> {
        if let Some(why) = self.inner.journal.as_ref().and_then(Journal::failure) {
            return Err(why);
        }
        let root = self.inner.root.clone();
        blocking(move || {
            // Writable directory = the store takes writes.
            let probe = root.join(".ready-probe");
            fs::write(&probe, b"ok")
                .and_then(|()| fs::remove_file(&probe))
                .map_err(|e| unavailable(format!("data directory not writable: {e}")))
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if let Some(journal) = &self.inner.journal {
            journal.checkpoint().await?;
        }
        let inner = self.inner.clone();
        blocking(move || {
            sync_all(&inner);
            Ok(())
        })
        .await
    }
}

fn sync_all(inner: &Inner) {
    let logs: Vec<(String, Shared)> = inner
        .topics
        .lock()
        .expect("poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.log.clone()))
        .collect();
    for (topic, log) in logs {
        // The fsync runs without the log's lock: appends go on meanwhile.
        let Some(file) = log.lock().expect("poisoned").take_dirty() else {
            continue;
        };
        if let Err(e) = file.sync_data() {
            tracing::error!(topic, error = %e, "fsync failed");
            log.lock().expect("poisoned").dirty = true;
        }
    }
}

/// Background duties: interval fsync and age-based retention. Ends when the
/// store is dropped.
fn maintenance(inner: Weak<Inner>) {
    let tick = match inner.upgrade() {
        Some(i) if i.cfg.fsync == Fsync::Interval => {
            i.cfg.fsync_interval.min(Duration::from_secs(1))
        }
        _ => Duration::from_secs(1),
    };
    let mut since_retention = Duration::ZERO;
    loop {
        std::thread::sleep(tick);
        let Some(inner) = inner.upgrade() else { return };
        if inner.cfg.fsync == Fsync::Interval {
            sync_all(&inner);
        }
        since_retention += tick;
        if since_retention >= Duration::from_secs(1) {
            since_retention = Duration::ZERO;
            inner.release_idle();
            let logs: Vec<Shared> = inner
                .topics
                .lock()
                .expect("poisoned")
                .values()
                .map(|l| l.log.clone())
                .collect();
            for log in logs {
                if let Err(e) = log.lock().expect("poisoned").enforce_retention(&inner.cfg) {
                    tracing::error!(error = %e, "retention failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod tests;
