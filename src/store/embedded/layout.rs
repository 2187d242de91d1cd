//! Where a topic's files live and what identifies its log: the one place
//! that knows the `meta.json` name and format. The topic log, the journal
//! (which learns a topic's epoch when it replays) and the store's topic
//! listing all use it, and none of them uses another for it.

use std::{fs, io, path::Path};

use serde::{Deserialize, Serialize};
use sluice_actors::{
    cursor::Epoch,
    store::{Fork, LostRange},
};

use super::segment;

/// The file that identifies a topic's log.
const META: &str = "meta.json";

/// `meta.json`: what identifies the log.
#[derive(Serialize, Deserialize)]
pub struct Meta {
    /// The log's incarnation.
    pub epoch: Epoch,
    /// When it was created.
    pub created_ms: i64,
    /// Earlier epochs, oldest first, and where each was kept: recovery
    /// that removes stored data moves the log to a new epoch (see
    /// `sluice_actors::store::Fork`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<Fork>,
    /// Positions lost to damage that recovery found (see
    /// `sluice_actors::store::TopicBounds::lost`): a loss is logged and
    /// counted once, when it is found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<LostRange>,
}

/// Whether `dir` holds a topic's log (its `meta.json` exists).
pub fn has_log(dir: &Path) -> bool {
    dir.join(META).exists()
}

/// Reads the log's identity at `dir`.
pub fn read_meta(dir: &Path) -> io::Result<Meta> {
    serde_json::from_slice(&fs::read(dir.join(META))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{META}: {e}")))
}

/// The epoch of the log at `dir`, if there is a readable one.
pub fn read_epoch(dir: &Path) -> Option<String> {
    read_meta(dir).ok().map(|m| m.epoch.to_string())
}

/// Writes the log's identity at `dir`, durably.
pub fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    write_durably(dir, META, &serde_json::to_vec(meta)?)
}

/// Writes `name` in `dir` atomically and durably (temp file, fsync, rename,
/// fsync of the directory).
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    segment::sync_dir(dir)
}
