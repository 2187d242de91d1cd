//! Where a subscriber keeps its position, so that a restarted process
//! resumes where it stopped.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Keeps a subscriber's last cursor. A [`Subscription`](crate::Subscription)
/// loads it when it starts and saves each cursor once the event is handled
/// (see [`SubscribeOptions::cursor_store`](crate::SubscribeOptions::cursor_store)).
///
/// Implement it to keep cursors in a database (in the same transaction as
/// what the events changed, for exactly-once effects).
#[async_trait::async_trait]
pub trait CursorStore: Send + Sync {
    /// The saved cursor, `None` when nothing was saved yet.
    async fn load(&self) -> io::Result<Option<String>>;
    /// Saves `cursor`, replacing the one saved before.
    async fn save(&self, cursor: &str) -> io::Result<()>;
}

/// Keeps the cursor in memory only (for tests, or to share one position
/// between subscriptions of one process).
#[derive(Debug, Default)]
pub struct MemoryCursorStore(Mutex<Option<String>>);

impl MemoryCursorStore {
    /// An empty store.
    pub fn new() -> MemoryCursorStore {
        MemoryCursorStore::default()
    }

    /// The cursor saved last.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl CursorStore for MemoryCursorStore {
    async fn load(&self) -> io::Result<Option<String>> {
        Ok(self.get())
    }

    async fn save(&self, cursor: &str) -> io::Result<()> {
        *self.0.lock().unwrap() = Some(cursor.to_owned());
        Ok(())
    }
}

/// Keeps the cursor in a file, replaced atomically: the new cursor is
/// written to a temporary file beside it, which is then renamed over it,
/// so a process killed at any moment leaves the old cursor or the new one,
/// never a torn one.
///
/// Without [`sync`](FileCursorStore::sync) the rename is not flushed to the
/// disk: that survives the process being killed (the page cache keeps it),
/// not a power cut, at no measurable cost per event. With it each save
/// `fsync`s the file and its directory (a few milliseconds on most disks).
#[derive(Debug, Clone)]
pub struct FileCursorStore {
    path: PathBuf,
    sync: bool,
}

impl FileCursorStore {
    /// A store in the file at `path` (created by the first save; its
    /// directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> FileCursorStore {
        FileCursorStore {
            path: path.into(),
            sync: false,
        }
    }

    /// Also flush each save to the disk (survives a power cut).
    pub fn sync(mut self, sync: bool) -> FileCursorStore {
        self.sync = sync;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file (blocking).
    pub fn load_now(&self) -> io::Result<Option<String>> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => {
                let c = s.trim();
                Ok((!c.is_empty()).then(|| c.to_owned()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the file (blocking): temporary file, then rename.
    pub fn save_now(&self, cursor: &str) -> io::Result<()> {
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = self.path.with_file_name(tmp_name);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(cursor.as_bytes())?;
        f.write_all(b"\n")?;
        if self.sync {
            f.sync_data()?;
        }
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if self.sync {
            let dir = match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl CursorStore for FileCursorStore {
    // A cursor is at most 64 bytes: the file calls are quick enough to run
    // in place rather than on a blocking thread.
    async fn load(&self) -> io::Result<Option<String>> {
        self.load_now()
    }

    async fn save(&self, cursor: &str) -> io::Result<()> {
        self.save_now(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCursorStore::new(dir.path().join("cursor"));
        assert_eq!(store.load().await.unwrap(), None);
        store.save("c1").await.unwrap();
        store.save("c2").await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some("c2"));
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let synced = FileCursorStore::new(dir.path().join("s")).sync(true);
        synced.save("c3").await.unwrap();
        assert_eq!(synced.load_now().unwrap().as_deref(), Some("c3"));
    }

    #[tokio::test]
    async fn an_empty_file_is_no_cursor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c"), " \n").unwrap();
        let store = FileCursorStore::new(dir.path().join("c"));
        assert_eq!(store.load().await.unwrap(), None);
    }
}
