//! What opening a topic's log repairs: the segments are scanned, a torn or
//! damaged tail is cut, segments after a hole are set aside, and when any
//! stored data is removed the log moves to a new epoch first (see
//! `sluice_actors::store::Fork`), so that no position it removed is ever
//! handed out again under its old cursor.

use std::{fs, io, path::Path};

use sluice_actors::{cursor::Epoch, store::Fork};

use super::{
    layout::{self, Meta},
    segment::{self, Segment},
};

/// What opening a log had to repair, for the log line.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Bytes cut off a torn tail.
    pub cut_bytes: u64,
    /// The segment they were cut from.
    pub segment: Option<std::path::PathBuf>,
    /// Where in it the cut starts (the end of its last whole record).
    pub cut_offset: u64,
    /// Segments after a hole, left out of the log.
    pub dropped_segments: usize,
}

impl OpenReport {
    /// Stored data was removed, so the log moved to a new epoch.
    pub fn forked(&self) -> bool {
        self.cut_bytes > 0 || self.dropped_segments > 0
    }
}

/// The latest sequence of `segments` (0 when empty) and its time.
pub fn latest(segments: &[Segment]) -> (u64, i64) {
    let latest_seq = segments.last().map_or(0, |s| s.end_seq() - 1);
    let latest_time = segments
        .iter()
        .rev()
        .find(|s| s.count() > 0)
        .map_or(0, |s| s.last_time);
    (latest_seq, latest_time)
}

/// Opens the segments of the log at `dir` (at least one) and repairs them,
/// returning its identity as it now is.
pub fn open_segments(dir: &Path, mut meta: Meta) -> io::Result<(Vec<Segment>, Meta, OpenReport)> {
    let mut bases: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| segment::parse_name(e.file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    let mut report = OpenReport::default();
    let mut segments: Vec<Segment> = Vec::new();
    let mut dropped: &[u64] = &[];
    for (i, &base) in bases.iter().enumerate() {
        let sealed = i + 1 < bases.len();
        let (seg, repair) = Segment::open(dir.join(segment::file_name(base)), base, sealed)?;
        if segments.last().is_some_and(|prev| prev.end_seq() != base) {
            // A hole between segments (a cut tail in a sealed one): later
            // segments cannot be trusted to continue the log.
            tracing::error!(dir = %dir.display(), base, "segment does not continue the log; ignoring it and later ones");
            dropped = &bases[i..];
            report.dropped_segments = dropped.len();
            break;
        }
        if repair.cut_bytes > 0 {
            report.cut_bytes += repair.cut_bytes;
            report.segment = Some(seg.path.clone());
            report.cut_offset = seg.len;
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        segments.push(Segment::create(dir, 1)?);
    }
    if report.forked() {
        // Stored data is being removed, and with it positions that may have
        // been handed out (a tail written but lost with the page cache,
        // damage). Recorded durably before anything is cut.
        let (last_seq, last_time_ms) = latest(&segments);
        meta.forks.push(Fork {
            epoch: meta.epoch.clone(),
            last_seq,
            last_time_ms,
        });
        meta.epoch = Epoch::generate();
        layout::write_meta(dir, &meta)?;
    }
    for seg in &segments {
        seg.cut_tail()?;
    }
    // Kept for inspection under a name no segment will take again (a later
    // segment of the log may start at the same sequence).
    for &base in dropped {
        let from = dir.join(segment::file_name(base));
        fs::rename(&from, from.with_extension("log.dropped"))?;
        let _ = fs::remove_file(from.with_extension("idx"));
    }
    Ok((segments, meta, report))
}
