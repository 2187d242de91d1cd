//! The shared write-ahead journal of `fsync = "always"`.
//!
//! Each topic has its own segment files, so without a journal a publish can
//! share its `fdatasync` only with publishes to the same topic: with many
//! topics almost every publish is an `fdatasync` of its own. Small appends
//! of every topic are therefore made durable together instead: one write and
//! one `fdatasync` of one file per round, however many topics the round
//! holds (group commit across topics).
//!
//! The rules that keep it exact:
//! - an append is written into its segment (page cache) first and then
//!   submitted here, under its topic's lock, so the journal holds each
//!   segment's writes in file order;
//! - an append is acknowledged once the round that holds it is fdatasynced;
//! - a checkpoint (journal past [`CHECKPOINT_BYTES`], and at shutdown)
//!   fdatasyncs every segment written since the last one, then empties the
//!   journal: what it held is durable in the segments;
//! - at start, before any topic log is opened, [`replay`] writes every whole
//!   record back into its segment at its offset (the same bytes, when the
//!   segment kept them), fdatasyncs those segments and empties the journal.
//!   A record whose segment or topic is gone (retention deleted a sealed
//!   segment, which had been fdatasynced when sealed) is skipped, and so is
//!   one whose topic has another epoch (a topic recreated in its place).
//!
//! Record layout, little-endian: `len u32 | crc32(body) u32 | body`, body =
//! `topic_len u16 | topic | epoch_len u16 | epoch | base u64 | offset u64 |
//! bytes`. A torn or corrupt record ends the journal, as a torn tail ends a
//! segment: nothing after it was acknowledged.

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Condvar, Mutex,
    },
};

use sluice_actors::cursor::Epoch;
use tokio::sync::oneshot;

use super::segment;

/// The journal file, in the data directory.
pub const FILE_NAME: &str = "journal.log";
/// Appends larger than this skip the journal and fdatasync their own
/// segment: they would double the bytes written, and they are few.
pub const MAX_JOURNALED_WRITE: usize = 16 << 10;
/// Journal size that triggers a checkpoint.
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Most bytes written in one round.
const ROUND_BYTES: usize = 4 << 20;
const HEADER_LEN: usize = 8;

/// The answer to a submitted append: `Ok` once it is durable.
pub type Durable = oneshot::Receiver<io::Result<()>>;

/// An append to make durable.
pub struct Entry {
    /// Topic name (its directory under `topics/`).
    pub topic: Arc<str>,
    /// The topic log's epoch: a replay writes only into the same log.
    pub epoch: Epoch,
    /// Segment base sequence (its file name).
    pub base: u64,
    /// Where the bytes start in the segment.
    pub offset: u64,
    /// The bytes written there.
    pub bytes: Vec<u8>,
    /// The segment, for the checkpoint's fdatasync.
    pub file: Arc<File>,
}

enum Msg {
    Append(Entry, oneshot::Sender<io::Result<()>>),
    Checkpoint(oneshot::Sender<io::Result<()>>),
}

/// Handle on the journal thread. Dropping it checkpoints and waits for the
/// thread to end, so a store reopened on the same directory in the same
/// process never races the old thread's last checkpoint.
pub struct Journal {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    failed: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Whole records read.
    pub records: usize,
    /// Records written back into their segment.
    pub applied: usize,
    /// Records whose segment, topic or epoch is gone, or that start past
    /// their segment's end.
    pub skipped: usize,
    /// Bytes after the last whole record (a torn write of a crash).
    pub torn_bytes: usize,
}

impl Journal {
    /// Replays what a previous run left in the journal under `data_dir`
    /// into the segments under `root`, empties it, and starts the thread.
    pub fn open(data_dir: &Path, root: &Path) -> io::Result<(Journal, ReplayReport)> {
        let path = data_dir.join(FILE_NAME);
        let report = replay(&path, root)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.set_len(0)?;
        file.sync_all()?;
        segment::sync_dir(data_dir)?;
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let thread_failed = failed.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-journal".into())
            .spawn(move || run(file, rx, thread_failed))?;
        Ok((
            Journal {
                tx: Mutex::new(Some(tx)),
                failed,
                thread: Some(thread),
            },
            report,
        ))
    }

    /// Queues an append; the answer comes once it is durable. Call it under
    /// the topic's lock, right after the segment write, so a segment's
    /// writes reach the journal in file order.
    pub fn submit(&self, entry: Entry) -> Durable {
        let (done, durable) = oneshot::channel();
        if self.failed.load(Ordering::Acquire) {
            let _ = done.send(Err(failed_error()));
        } else {
            // A send fails only when the thread is gone: `done` is dropped
            // with the message and the waiter sees that.
            let _ = self.send(Msg::Append(entry, done));
        }
        durable
    }

    fn send(&self, msg: Msg) -> Result<(), ()> {
        match self.tx.lock().expect("poisoned").as_ref() {
            Some(tx) => tx.send(msg).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Makes everything journaled so far durable in its segment and empties
    /// the journal (at shutdown).
    pub async fn checkpoint(&self) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        if self.send(Msg::Checkpoint(done)).is_err() {
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Why appends cannot be made durable, if they cannot.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .load(Ordering::Acquire)
            .then(|| failed_error().to_string())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.tx.lock().expect("poisoned").take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The error of a wait whose journal thread ended.
pub fn gone() -> io::Error {
    io::Error::other("the journal thread is gone")
}

fn failed_error() -> io::Error {
    io::Error::other("a write or fdatasync of the journal failed; restart the broker")
}

/// fdatasyncs of the journal that may run at once: a disk answers
/// overlapping flushes far faster than the same ones in a row, and a round
/// written while one flush runs need not wait for it to end.
const FLUSHERS: usize = 4;

type Waiter = oneshot::Sender<io::Result<()>>;

/// What the writer and the flushers share.
struct Rounds {
    state: Mutex<RoundState>,
    /// Flushers wait here for a round to flush.
    work: Condvar,
    /// The writer waits here for every round to be flushed (checkpoint).
    flushed: Condvar,
}

#[derive(Default)]
struct RoundState {
    /// Rounds written to the journal file (numbered from 1).
    written: u64,
    /// Highest round an fdatasync has been started for.
    flushing: u64,
    /// Every round up to this one is durable and answered.
    durable: u64,
    /// Rounds written but not answered yet, oldest first.
    waiting: VecDeque<(u64, Vec<Waiter>)>,
    closing: bool,
}

/// The journal's writer thread: one write per round, each round taking
/// every append queued meanwhile; the flushers make rounds durable and
/// answer them, in order.
fn run(file: File, rx: mpsc::Receiver<Msg>, failed: Arc<AtomicBool>) {
    let file = Arc::new(file);
    let rounds = Arc::new(Rounds {
        state: Mutex::new(RoundState::default()),
        work: Condvar::new(),
        flushed: Condvar::new(),
    });
    let flushers: Vec<_> = (0..FLUSHERS)
        .map(|i| {
            let (file, rounds, failed) = (file.clone(), rounds.clone(), failed.clone());
            std::thread::Builder::new()
                .name(format!("sluice-journal-flush-{i}"))
                .spawn(move || flush(&file, &rounds, &failed))
                .expect("spawn a journal flusher")
        })
        .collect();
    let mut len = 0u64;
    let mut dirty: HashMap<*const File, Arc<File>> = HashMap::new();
    let mut buf = Vec::new();
    let mut waiters = Vec::new();
    let mut checkpoints = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Append(entry, done) => {
                    encode(&mut buf, &entry);
                    dirty.entry(Arc::as_ptr(&entry.file)).or_insert(entry.file);
                    waiters.push(done);
                }
                Msg::Checkpoint(done) => checkpoints.push(done),
            }
            next = if buf.len() < ROUND_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !buf.is_empty() {
            let res = if failed.load(Ordering::Acquire) {
                Err(failed_error())
            } else {
                file.write_all_at(&buf, len)
            };
            match res {
                Ok(()) => {
                    len += buf.len() as u64;
                    let mut st = rounds.state.lock().expect("poisoned");
                    st.written += 1;
                    let round = st.written;
                    st.waiting.push_back((round, std::mem::take(&mut waiters)));
                    rounds.work.notify_one();
                }
                Err(e) => {
                    fail(&failed, &e);
                    for done in waiters.drain(..) {
                        let _ = done.send(Err(copy_error(&e)));
                    }
                }
            }
            buf.clear();
        }
        if len >= CHECKPOINT_BYTES || !checkpoints.is_empty() {
            let res = wait_flushed(&rounds).and_then(|()| checkpoint(&file, &mut dirty, &mut len));
            if let Err(e) = &res {
                tracing::error!(error = %e, "journal checkpoint failed");
            }
            for done in checkpoints.drain(..) {
                let _ = done.send(res.as_ref().map(|_| ()).map_err(copy_error));
            }
        }
    }
    // Every handle is gone (the store was dropped): leave nothing to replay.
    if let Err(e) = wait_flushed(&rounds).and_then(|()| checkpoint(&file, &mut dirty, &mut len)) {
        tracing::error!(error = %e, "journal checkpoint failed");
    }
    rounds.state.lock().expect("poisoned").closing = true;
    rounds.work.notify_all();
    for f in flushers {
        let _ = f.join();
    }
}

/// A flusher: fdatasyncs the journal whenever a round was written since the
/// last fdatasync started, then answers every round it covered. An
/// fdatasync covers every round written before it started, so rounds are
/// answered in order however the flushes overlap.
fn flush(file: &File, rounds: &Rounds, failed: &AtomicBool) {
    loop {
        let target = {
            let mut st = rounds.state.lock().expect("poisoned");
            while st.written <= st.flushing && !st.closing {
                st = rounds.work.wait(st).expect("poisoned");
            }
            if st.written <= st.flushing {
                return;
            }
            st.flushing = st.written;
            st.written
        };
        let res = file.sync_data();
        let mut st = rounds.state.lock().expect("poisoned");
        match res {
            Ok(()) if !failed.load(Ordering::Acquire) => {
                st.durable = st.durable.max(target);
                while st.waiting.front().is_some_and(|(r, _)| *r <= st.durable) {
                    let (_, waiters) = st.waiting.pop_front().expect("front");
                    for done in waiters {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            res => {
                let e = res.err().unwrap_or_else(failed_error);
                fail(failed, &e);
                st.durable = st.durable.max(target);
                for (_, waiters) in st.waiting.drain(..) {
                    for done in waiters {
                        let _ = done.send(Err(copy_error(&e)));
                    }
                }
            }
        }
        rounds.flushed.notify_all();
    }
}

/// Waits until every written round has been flushed and answered.
fn wait_flushed(rounds: &Rounds) -> io::Result<()> {
    let mut st = rounds.state.lock().expect("poisoned");
    while st.durable < st.written {
        st = rounds.flushed.wait(st).expect("poisoned");
    }
    Ok(())
}

/// Marks the journal failed: the page cache may have dropped what did not
/// reach the disk, so no later append can be trusted either.
fn fail(failed: &AtomicBool, e: &io::Error) {
    if !failed.swap(true, Ordering::AcqRel) {
        tracing::error!(error = %e, "journal write or fdatasync failed; no more appends are acknowledged");
    }
}

fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// fdatasyncs every segment written since the last checkpoint, then
/// empties the journal.
fn checkpoint(
    file: &File,
    dirty: &mut HashMap<*const File, Arc<File>>,
    len: &mut u64,
) -> io::Result<()> {
    for seg in dirty.values() {
        seg.sync_data()?;
    }
    dirty.clear();
    if *len > 0 {
        file.set_len(0)?;
        file.sync_data()?;
        *len = 0;
    }
    Ok(())
}

fn encode(buf: &mut Vec<u8>, e: &Entry) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.extend_from_slice(&(e.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(e.topic.as_bytes());
    let epoch = e.epoch.as_str();
    buf.extend_from_slice(&(epoch.len() as u16).to_le_bytes());
    buf.extend_from_slice(epoch.as_bytes());
    buf.extend_from_slice(&e.base.to_le_bytes());
    buf.extend_from_slice(&e.offset.to_le_bytes());
    buf.extend_from_slice(&e.bytes);
    let body = &buf[start + HEADER_LEN..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded record.
struct Record<'a> {
    topic: &'a str,
    epoch: &'a str,
    base: u64,
    offset: u64,
    bytes: &'a [u8],
}

/// The record at the start of `buf` and its length, or `None` for a torn
/// or corrupt one.
fn decode(buf: &[u8]) -> Option<(Record<'_>, usize)> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let body = buf.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut at = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let topic_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(take(topic_len)?).ok()?;
    let epoch_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let epoch = std::str::from_utf8(take(epoch_len)?).ok()?;
    let base = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let offset = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let bytes = &body[at..];
    Some((
        Record {
            topic,
            epoch,
            base,
            offset,
            bytes,
        },
        HEADER_LEN + len,
    ))
}

/// Writes every whole record of the journal at `path` back into its
/// segment under `root` and fdatasyncs those segments. The journal itself
/// is left as it is (the caller empties it).
pub fn replay(path: &Path, root: &Path) -> io::Result<ReplayReport> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReplayReport::default()),
        Err(e) => return Err(e),
    };
    let mut report = ReplayReport::default();
    let mut epochs: HashMap<String, Option<String>> = HashMap::new();
    let mut files: HashMap<PathBuf, Option<File>> = HashMap::new();
    let mut at = 0;
    while let Some((r, n)) = decode(&data[at..]) {
        at += n;
        report.records += 1;
        let dir = root.join(r.topic);
        let epoch = epochs
            .entry(r.topic.to_owned())
            .or_insert_with(|| super::topic_log::read_epoch(&dir));
        if epoch.as_deref() != Some(r.epoch) {
            report.skipped += 1;
            continue;
        }
        let seg_path = dir.join(segment::file_name(r.base));
        let file = match files.entry(seg_path) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let f = match OpenOptions::new().write(true).open(v.key()) {
                    Ok(f) => Some(f),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                v.insert(f)
            }
        };
        let Some(file) = file else {
            report.skipped += 1;
            continue;
        };
        // Past the end means an earlier write of this segment is missing
        // (it was never acknowledged): a hole would only be cut again.
        if r.offset > file.metadata()?.len() {
            report.skipped += 1;
            continue;
        }
        file.write_all_at(r.bytes, r.offset)?;
        report.applied += 1;
    }
    report.torn_bytes = data.len() - at;
    for file in files.values().flatten() {
        file.sync_data()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &str, offset: u64, bytes: &[u8], file: &Arc<File>) -> Entry {
        Entry {
            topic: topic.into(),
            epoch: Epoch::parse("e1").unwrap(),
            base: 1,
            offset,
            bytes: bytes.to_vec(),
            file: file.clone(),
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_one_ends_the_journal() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let mut buf = Vec::new();
        encode(&mut buf, &entry("t", 7, b"abc", &file));
        encode(&mut buf, &entry("u", 10, b"defg", &file));
        let (r, n) = decode(&buf).unwrap();
        assert_eq!(
            (r.topic, r.epoch, r.base, r.offset, r.bytes),
            ("t", "e1", 1, 7, &b"abc"[..])
        );
        let (r, m) = decode(&buf[n..]).unwrap();
        assert_eq!((r.topic, r.offset, r.bytes), ("u", 10, &b"defg"[..]));
        assert_eq!(n + m, buf.len());
        assert!(decode(&buf[n..buf.len() - 1]).is_none(), "torn");
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode(&bad[n..]).is_none(), "corrupt");
    }
}
