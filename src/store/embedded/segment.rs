//! One segment file of a topic log: records appended back to back, named by
//! the sequence of its first record, with an in-memory offset index so any
//! sequence is found without scanning.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;

use super::record::{self, Next, PREFIX_LEN, TIME_OFFSET};

/// A segment: its file and where each record starts.
#[derive(Debug)]
pub struct Segment {
    /// Sequence of the first record.
    pub base: u64,
    /// The `.log` file.
    pub path: PathBuf,
    /// Shared read handle; reads use positioned I/O, so readers can hold it
    /// without the topic lock, even after the file is deleted.
    pub file: Arc<File>,
    /// Offset of each record; record `i` has sequence `base + i`.
    pub offsets: Vec<u32>,
    /// Bytes of whole records.
    pub len: u64,
    /// Time of the last record (0 when empty).
    pub last_time: i64,
}

/// File name of the segment starting at `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Parses a segment file name back into its base sequence.
pub fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

fn index_path(log: &Path) -> PathBuf {
    log.with_extension("idx")
}

/// What opening a segment found at its end.
#[derive(Debug, Default)]
pub struct Repair {
    /// Bytes cut from a torn or corrupt tail.
    pub cut_bytes: u64,
}

impl Segment {
    /// Creates an empty segment file (and makes its name durable).
    pub fn create(dir: &Path, base: u64) -> io::Result<Segment> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            len: 0,
            last_time: 0,
        })
    }

    /// Opens an existing segment. A sealed one with a valid index file is
    /// trusted; otherwise every record is checked, and the segment ends at
    /// its last whole record. A torn or corrupt tail after it is reported,
    /// not yet cut from the file: the caller first records what the cut
    /// removes (see [`Segment::cut_tail`]).
    pub fn open(path: PathBuf, base: u64, sealed: bool) -> io::Result<(Segment, Repair)> {
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let mut seg = Segment {
            base,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            len: file_len,
            last_time: 0,
        };
        if sealed && seg.load_index(file_len).is_some() {
            seg.last_time = seg.time_at(seg.offsets.len() - 1)?;
            return Ok((seg, Repair::default()));
        }
        let repair = seg.scan(file_len)?;
        Ok((seg, repair))
    }

    fn load_index(&mut self, file_len: u64) -> Option<()> {
        let raw = fs::read(index_path(&self.path)).ok()?;
        if raw.is_empty() || raw.len() % 4 != 0 {
            return None;
        }
        let offsets: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        // Cheap consistency check: the last indexed record must end exactly
        // at the end of the file.
        let last = *offsets.last()? as u64;
        let mut head = [0u8; 4];
        self.file.read_exact_at(&mut head, last).ok()?;
        let end = last + record::HEADER_LEN as u64 + u32::from_le_bytes(head) as u64;
        (end == file_len).then_some(())?;
        self.offsets = offsets;
        Some(())
    }

    fn scan(&mut self, file_len: u64) -> io::Result<Repair> {
        let mut buf = vec![0u8; file_len as usize];
        self.file.read_exact_at(&mut buf, 0)?;
        let mut at = 0usize;
        let mut expected = self.base;
        while at < buf.len() {
            match record::next(&buf[at..], None) {
                Next::Record(r, n) if r.event.seq == expected => {
                    self.offsets.push(at as u32);
                    self.last_time = r.event.time_ms;
                    expected += 1;
                    at += n;
                }
                _ => break,
            }
        }
        self.len = at as u64;
        Ok(Repair {
            cut_bytes: file_len - at as u64,
        })
    }

    /// Cuts the file back to its last whole record (what [`Segment::open`]
    /// found), durably, before anything is appended after it.
    pub fn cut_tail(&self) -> io::Result<()> {
        if self.file.metadata()?.len() > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Sequence after the last record.
    pub fn end_seq(&self) -> u64 {
        self.base + self.count()
    }

    /// Time of record `i`.
    pub fn time_at(&self, i: usize) -> io::Result<i64> {
        let mut b = [0u8; PREFIX_LEN];
        self.file.read_exact_at(&mut b, self.offsets[i] as u64)?;
        Ok(i64::from_le_bytes(
            b[TIME_OFFSET..TIME_OFFSET + 8].try_into().expect("8 bytes"),
        ))
    }

    /// Byte offset where record `i` starts (`len` for one past the end).
    pub fn offset_of(&self, i: usize) -> u64 {
        self.offsets.get(i).map_or(self.len, |&o| o as u64)
    }

    /// Appends encoded records (already checked) and indexes them.
    pub fn append(&mut self, buf: &[u8], starts: &[u32], last_time: i64) -> io::Result<()> {
        (&*self.file).write_all(buf)?;
        let base = self.len as u32;
        self.offsets.extend(starts.iter().map(|s| base + s));
        self.len += buf.len() as u64;
        self.last_time = last_time;
        Ok(())
    }

    /// Cuts the file back to `len` after a failed append.
    pub fn truncate_to(&mut self, len: u64, count: usize) -> io::Result<()> {
        self.offsets.truncate(count);
        self.len = len;
        self.file.set_len(len)
    }

    /// Writes the index file of a segment that will take no more records.
    pub fn seal(&self) -> io::Result<()> {
        let mut raw = Vec::with_capacity(self.offsets.len() * 4);
        for o in &self.offsets {
            raw.extend_from_slice(&o.to_le_bytes());
        }
        // No fsync: a lost or stale index is detected and rebuilt by a scan.
        fs::write(index_path(&self.path), raw)
    }

    /// Removes the segment's files.
    pub fn remove(&self) -> io::Result<()> {
        let _ = fs::remove_file(index_path(&self.path));
        fs::remove_file(&self.path)
    }
}

/// Reads whole records `[from, to)` of a segment without the topic lock.
pub struct ReadPlan {
    /// The segment file.
    pub file: Arc<File>,
    /// Byte range covering the records.
    pub start: u64,
    /// End of the byte range.
    pub end: u64,
}

impl ReadPlan {
    /// Reads the range and decodes its records; the event payloads share one
    /// buffer.
    pub fn read(&self) -> io::Result<Vec<sluice_actors::event::StoredEvent>> {
        let mut buf = vec![0u8; (self.end - self.start) as usize];
        self.file.read_exact_at(&mut buf, self.start)?;
        let shared = Bytes::from(buf);
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < shared.len() {
            match record::next(&shared[at..], Some(&shared)) {
                Next::Record(r, n) => {
                    out.push(r.event);
                    at += n;
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "corrupt record in a checked segment",
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// Makes directory entries (created or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
