//! Deleting a topic's log, durably and all at once.
//!
//! The topic's directory is renamed to a tombstone name (one atomic step
//! in the data directory) and the data directory is fsynced; only then is
//! the tombstone removed. A crash before the rename reaches the disk leaves
//! the whole topic, one after it leaves nothing of it: the tombstone is not
//! a topic (its name starts with a dot, which no topic name does), start-up
//! removes what is left of it, and the journal's replay skips every record
//! of the topic, since its directory is gone (or, once recreated, holds
//! another epoch).

use std::{
    fs, io,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use sluice_actors::store::StoreError;

use super::{layout, segment, Inner};

/// What a tombstone's name starts with.
const TOMBSTONE: &str = ".deleted-";

impl Inner {
    /// Deletes `topic`'s log: see the module doc.
    pub(super) fn delete(&self, topic: &str) -> Result<(), StoreError> {
        let dir = self.root.join(topic);
        let tomb = self.root.join(tombstone_name(topic));
        {
            // Under the map's lock nobody opens or creates the topic
            // meanwhile; under the log's, no write of it is under way.
            let mut topics = self.topics.lock().expect("poisoned");
            let loaded = topics.get(topic).map(|l| l.log.clone());
            let _writes = loaded.as_ref().map(|log| log.lock().expect("poisoned"));
            if !layout::has_log(&dir) {
                return Err(StoreError::UnknownTopic);
            }
            fs::rename(&dir, &tomb)?;
            topics.remove(topic);
        }
        // The 204 means deleted for good: the rename is on disk before it.
        segment::sync_dir(&self.root)?;
        if let Err(e) = fs::remove_dir_all(&tomb) {
            // Start-up removes it; the topic is gone either way.
            tracing::warn!(topic, tombstone = %tomb.display(), error = %e, "cannot remove a deleted topic's files");
        }
        Ok(())
    }
}

/// A name no other tombstone has, even one a crashed run left.
fn tombstone_name(topic: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{TOMBSTONE}{topic}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes what deletes interrupted by a crash left under `root` (the
/// topics directory), at start.
pub(super) fn remove_tombstones(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(TOMBSTONE)) {
            tracing::info!(path = %entry.path().display(), "removing the files of a topic deleted before a crash");
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use sluice_actors::{
        cursor::now_ms,
        event::NewEvent,
        store::{Store, StoreError},
    };

    use super::super::{EmbeddedConfig, EmbeddedStore, Fsync};

    fn cfg() -> EmbeddedConfig {
        EmbeddedConfig {
            fsync: Fsync::Always,
            fsync_interval: Duration::from_secs(1),
            segment_bytes: 1 << 20,
            max_events: 1_000_000,
            max_bytes: 1 << 30,
            max_age_ms: None,
            dedup_window_ms: 300_000,
            max_open_files: 0,
            idle_release: Duration::from_secs(60),
        }
    }

    fn keyed(data: &str, key: &str) -> NewEvent {
        NewEvent {
            idempotency_key: Some(key.into()),
            ..NewEvent::data(data.to_owned())
        }
    }

    /// A copy of the data directory as a crash would leave it (the store is
    /// still open: nothing was checkpointed).
    fn crash_copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
                crash_copy(&entry.path(), &dest);
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
    }

    #[actix_rt::test]
    async fn a_deleted_topic_is_gone_and_comes_back_as_a_new_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
        let old = store.open_topic("t").await.unwrap().epoch;
        store
            .append("t", vec![keyed("a", "k1"), keyed("b", "k2")], now_ms())
            .await
            .unwrap();
        store.open_topic("u").await.unwrap();

        store.delete_topic("t").await.unwrap();
        assert!(matches!(
            store.bounds("t").await,
            Err(StoreError::UnknownTopic)
        ));
        assert!(matches!(
            store.read("t", 0, 10).await,
            Err(StoreError::UnknownTopic)
        ));
        assert_eq!(store.topics().await.unwrap(), ["u"]);
        assert!(!dir.path().join("topics/t").exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("topics"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["u"], "no tombstone left behind");
        assert!(matches!(
            store.delete_topic("t").await,
            Err(StoreError::UnknownTopic)
        ));

        // The next open creates a new log: new epoch, no events, and the
        // idempotency keys of the old log are forgotten.
        let fresh = store.open_topic("t").await.unwrap();
        assert_ne!(fresh.epoch, old);
        assert_eq!((fresh.latest_seq, fresh.retained()), (0, 0));
        let out = store
            .append("t", vec![keyed("a", "k1")], now_ms())
            .await
            .unwrap();
        assert!(
            matches!(out[0], sluice_actors::event::AppendOutcome::Stored(ref e) if e.seq == 1),
            "{out:?}"
        );
    }

    #[actix_rt::test]
    async fn the_journal_does_not_bring_a_deleted_topic_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
        for topic in ["t", "u"] {
            store.open_topic(topic).await.unwrap();
            for i in 0..5 {
                let ev = NewEvent::data(format!("{topic}-{i}"));
                store.append(topic, vec![ev], now_ms()).await.unwrap();
            }
        }
        store.delete_topic("t").await.unwrap();
        // The journal still holds t's appends.
        crash_copy(dir.path(), crashed.path());
        // A crash between the rename and the removal leaves a tombstone.
        let tomb = crashed.path().join("topics/.deleted-v-1-2-3");
        std::fs::create_dir_all(&tomb).unwrap();
        std::fs::copy(
            crashed.path().join("topics/u/meta.json"),
            tomb.join("meta.json"),
        )
        .unwrap();
        drop(store);

        let reopened = EmbeddedStore::open(crashed.path(), cfg()).unwrap();
        assert_eq!(reopened.topics().await.unwrap(), ["u"]);
        assert!(matches!(
            reopened.bounds("t").await,
            Err(StoreError::UnknownTopic)
        ));
        assert!(!crashed.path().join("topics/t").exists());
        assert!(!tomb.exists(), "the tombstone is removed at start");
        assert_eq!(reopened.read("u", 0, 10).await.unwrap().len(), 5);
    }
}
