//! One segment file of a topic log: records appended back to back, named by
//! the sequence of its first record, with an in-memory offset index (built
//! by verifying every record when the segment is opened) so any sequence is
//! found without scanning.

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

/// The offset index of a sealed segment written by earlier versions: no
/// longer read (every segment is verified record by record when opened, so
/// an index can never be trusted over its segment); removed when found.
fn index_path(log: &Path) -> PathBuf {
    log.with_extension("idx")
}

/// Bytes of a segment that are not an intact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedBytes {
    /// Where they start in the file as found.
    pub offset: u64,
    /// How many.
    pub len: u64,
}

/// What verifying a segment found: what [`Segment::repair`] removes.
#[derive(Debug, Default)]
pub struct Scan {
    /// Bytes after the last intact record with nothing intact after them:
    /// a torn write, or damage at the end.
    pub torn_bytes: u64,
    /// Damaged bytes between intact records.
    pub damaged: Vec<DamagedBytes>,
    /// Positions of this segment that hold no event (first, last): skipped
    /// by damage now or in an earlier repair, or lost at the end of a
    /// sealed segment (the next one starts later).
    pub lost: Vec<(u64, u64)>,
    /// Where the intact records are in the file as found, when damage
    /// between them means the file is rewritten without it.
    rewrite: Option<Vec<(usize, usize)>>,
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

    /// Opens an existing segment and verifies every record (length, CRC,
    /// sequence), changing nothing: what is not intact is reported in the
    /// [`Scan`] and removed by [`Segment::repair`], once the caller has
    /// recorded what the repair removes. A sealed segment (`next_base` is
    /// where the next one starts) ends just before `next_base`: positions
    /// it lacks there are lost, not torn.
    ///
    /// A position skipped by damage keeps an empty entry in `offsets` (the
    /// offset of the next record), so record `i` is still sequence
    /// `base + i` and no later event is renumbered.
    pub fn open(path: PathBuf, base: u64, next_base: Option<u64>) -> io::Result<(Segment, Scan)> {
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        let mut buf = vec![0u8; file.metadata()?.len() as usize];
        file.read_exact_at(&mut buf, 0)?;
        let mut scan = Scan::default();
        // (start, len, seq, time) of each intact record, in file order.
        let mut kept: Vec<(usize, usize, u64, i64)> = Vec::new();
        let (mut at, mut expected) = (0usize, base);
        while at < buf.len() {
            match record::next(&buf[at..], None) {
                Next::Record(r, n) if r.event.seq >= expected => {
                    kept.push((at, n, r.event.seq, r.event.time_ms));
                    expected = r.event.seq + 1;
                    at += n;
                }
                _ => match record::resync(&buf[at..], expected) {
                    Some(skip) => {
                        scan.damaged.push(DamagedBytes {
                            offset: at as u64,
                            len: skip as u64,
                        });
                        at += skip;
                    }
                    None => break,
                },
            }
        }
        scan.torn_bytes = (buf.len() - at) as u64;
        let end_seq = match next_base {
            // A sealed segment's tail cannot have been a write in progress:
            // it was fsynced when sealed, so whatever is missing is damage,
            // and so are bytes after its last position (`next == expected`):
            // not a torn tail, whose cut would move the log to a new epoch.
            Some(next) if next >= expected => {
                if scan.torn_bytes > 0 {
                    scan.damaged.push(DamagedBytes {
                        offset: at as u64,
                        len: scan.torn_bytes,
                    });
                    scan.torn_bytes = 0;
                }
                next
            }
            _ => expected,
        };
        let mut seg = Segment {
            base,
            path,
            file: Arc::new(file),
            offsets: Vec::with_capacity((end_seq - base) as usize),
            len: 0,
            last_time: kept.last().map_or(0, |k| k.3),
        };
        // Offsets as they are once the repair has run: intact records back
        // to back, damage removed.
        let mut next_seq = base;
        for &(_, n, seq, _) in &kept {
            if seq > next_seq {
                scan.lost.push((next_seq, seq - 1));
            }
            seg.offsets.extend(std::iter::repeat_n(
                seg.len as u32,
                (seq + 1 - next_seq) as usize,
            ));
            seg.len += n as u64;
            next_seq = seq + 1;
        }
        if end_seq > next_seq {
            scan.lost.push((next_seq, end_seq - 1));
            seg.offsets.extend(std::iter::repeat_n(
                seg.len as u32,
                (end_seq - next_seq) as usize,
            ));
        }
        if !scan.damaged.is_empty() {
            scan.rewrite = Some(kept.iter().map(|k| (k.0, k.1)).collect());
        }
        Ok((seg, scan))
    }

    /// Removes what [`Segment::open`] found not intact, durably, before
    /// anything is appended: a torn tail is cut; damage between intact
    /// records is removed by writing the intact records to a new file that
    /// replaces this one (the file as found is kept beside it as
    /// `*.log.damaged`, for inspection).
    pub fn repair(&mut self, scan: &Scan) -> io::Result<()> {
        let _ = fs::remove_file(index_path(&self.path));
        let Some(extents) = &scan.rewrite else {
            return self.cut_tail();
        };
        let mut old = vec![0u8; self.file.metadata()?.len() as usize];
        self.file.read_exact_at(&mut old, 0)?;
        let mut clean = Vec::with_capacity(self.len as usize);
        for &(start, n) in extents {
            clean.extend_from_slice(&old[start..start + n]);
        }
        let dir = self.path.parent().expect("segment in a directory");
        let tmp = self.path.with_extension("log.repair");
        let mut f = File::create(&tmp)?;
        f.write_all(&clean)?;
        f.sync_all()?;
        let damaged = self.path.with_extension("log.damaged");
        let _ = fs::remove_file(&damaged);
        fs::hard_link(&self.path, &damaged)?;
        fs::rename(&tmp, &self.path)?;
        sync_dir(dir)?;
        self.file = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)?,
        );
        Ok(())
    }

    /// Cuts the file back to its last whole record (what [`Segment::open`]
    /// found), durably, before anything is appended after it.
    fn cut_tail(&self) -> io::Result<()> {
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

    /// Whether position `i` holds an event (it was not lost to damage).
    pub fn holds(&self, i: usize) -> bool {
        self.offset_of(i) != self.offset_of(i + 1)
    }

    /// Time of record `i`; for a lost position, that of the next event of
    /// this segment (or of its last one), which keeps times ordered.
    pub fn time_at(&self, i: usize) -> io::Result<i64> {
        let Some(i) = (i..self.offsets.len()).find(|&j| self.holds(j)) else {
            return Ok(self.last_time);
        };
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

#[cfg(test)]
mod tests {
    use sluice_actors::event::NewEvent;

    use super::*;

    /// Records `first..=last`, back to back.
    fn records(first: u64, last: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in first..=last {
            record::encode(&mut buf, &NewEvent::data(format!("event {seq}")), seq, 7);
        }
        buf
    }

    /// Found by the fuzz target `segment`: bytes after the last position of
    /// a sealed segment were taken for a torn tail, so recovery cut them
    /// and moved the log to a new epoch although no position was lost.
    #[test]
    fn bytes_after_a_complete_sealed_segment_are_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let intact = records(1, 3);
        let mut raw = intact.clone();
        raw.extend_from_slice(&[0xA5; 40]);
        fs::write(&path, &raw).unwrap();
        let (mut seg, scan) = Segment::open(path.clone(), 1, Some(4)).unwrap();
        assert_eq!(scan.torn_bytes, 0);
        let at = intact.len() as u64;
        assert_eq!(
            scan.damaged,
            [DamagedBytes {
                offset: at,
                len: 40
            }]
        );
        assert_eq!(scan.lost, []);
        assert_eq!((seg.end_seq(), seg.len), (4, at));
        seg.repair(&scan).unwrap();
        assert_eq!(fs::read(&path).unwrap(), intact);
        assert_eq!(fs::read(path.with_extension("log.damaged")).unwrap(), raw);

        // The log it belongs to keeps its epoch.
        let (topic, epoch) = (dir.path().join("t"), "e1");
        fs::create_dir(&topic).unwrap();
        let meta = format!(r#"{{"epoch":"{epoch}","created_ms":0}}"#);
        fs::write(topic.join("meta.json"), meta).unwrap();
        fs::write(topic.join(file_name(1)), &raw).unwrap();
        fs::write(topic.join(file_name(4)), records(4, 5)).unwrap();
        let meta = super::super::layout::read_meta(&topic).unwrap();
        let (segs, meta, report) =
            super::super::recovery::open_segments(&topic, meta, true).unwrap();
        assert!(!report.forked(), "{report:?}");
        assert_eq!((meta.epoch.as_str(), meta.forks.len()), (epoch, 0));
        assert_eq!(segs.last().unwrap().end_seq(), 6);
    }
}
