//! What opening a topic's log repairs, and the rules it follows:
//!
//! - every record of every segment is verified (length, CRC, sequence);
//! - damage between intact records (a flipped byte, a garbage block, zeros)
//!   is removed and the positions it held are *lost*: they stay taken, so
//!   no later event is renumbered and no cursor names two events, and a
//!   reader that reaches them is told (`TopicBounds::lost`, 416 or
//!   `event: gap`); the same for positions missing at the end of a sealed
//!   segment;
//! - a torn tail of the active segment (nothing intact after it) is cut,
//!   and so are segments that overlap the ones before; when stored data is
//!   cut, positions it held may have been handed out and will be handed out
//!   again, so the log moves to a new epoch first (see
//!   `sluice_actors::store::Fork`);
//! - what is removed is recorded in `meta.json` before it is removed, and
//!   every new loss is logged at `ERROR` with the file, the byte offsets and
//!   the positions, and counted.
//!
//! [`open_segments`] with `repair = false` only reports (`sluice check`).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use sluice_actors::{
    cursor::Epoch,
    metrics::metrics,
    store::{Fork, LostRange},
};

use super::{
    layout::{self, Meta},
    segment::{self, DamagedBytes, Segment},
};

/// What opening a log found and (when repairing) did.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Bytes cut off a torn tail of the active segment.
    pub cut_bytes: u64,
    /// The segment they were cut from.
    pub segment: Option<PathBuf>,
    /// Where in it the cut starts (the end of its last whole record).
    pub cut_offset: u64,
    /// Segments that overlap the ones before, left out of the log.
    pub dropped_segments: usize,
    /// Damage between intact records (or at a sealed segment's end), per
    /// segment.
    pub damaged: Vec<(PathBuf, Vec<DamagedBytes>)>,
    /// Positions found lost that `meta.json` did not know of yet.
    pub new_lost: Vec<(u64, u64)>,
    /// Every lost position of the log, with times for their cursors.
    pub lost: Vec<LostRange>,
}

impl OpenReport {
    /// Stored data was cut, so the log moved to a new epoch.
    pub fn forked(&self) -> bool {
        self.cut_bytes > 0 || self.dropped_segments > 0
    }

    /// Events newly lost to damage.
    pub fn new_lost_events(&self) -> u64 {
        self.new_lost.iter().map(|(a, b)| b + 1 - a).sum()
    }
}

/// The latest sequence of `segments` (0 when empty) and its time.
pub fn latest(segments: &[Segment]) -> (u64, i64) {
    let latest_seq = segments.last().map_or(0, |s| s.end_seq() - 1);
    let latest_time = segments
        .iter()
        .rev()
        .find(|s| s.count() > 0 && s.len > 0)
        .map_or(0, |s| s.last_time);
    (latest_seq, latest_time)
}

/// Opens the segments of the log at `dir` (at least one) and, with
/// `repair`, repairs them, returning its identity as it now is.
pub fn open_segments(
    dir: &Path,
    mut meta: Meta,
    repair: bool,
) -> io::Result<(Vec<Segment>, Meta, OpenReport)> {
    let mut bases: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| segment::parse_name(e.file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    let mut report = OpenReport::default();
    let mut segments: Vec<Segment> = Vec::new();
    let mut scans = Vec::new();
    let mut lost: Vec<(u64, u64)> = Vec::new();
    let mut dropped: &[u64] = &[];
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        if segments.last().is_some_and(|prev| prev.end_seq() != base) {
            // Overlaps the segment before (whose positions it would
            // renumber): the later ones cannot be trusted to continue it.
            tracing::error!(dir = %dir.display(), base, "segment overlaps the one before; ignoring it and later ones");
            dropped = &bases[i..];
            report.dropped_segments = dropped.len();
            break;
        }
        let (seg, scan) = Segment::open(dir.join(segment::file_name(base)), base, next_base)?;
        if scan.torn_bytes > 0 {
            report.cut_bytes += scan.torn_bytes;
            report.segment = Some(seg.path.clone());
            report.cut_offset = seg.len;
        }
        if !scan.damaged.is_empty() {
            report
                .damaged
                .push((seg.path.clone(), scan.damaged.clone()));
        }
        lost.extend(&scan.lost);
        segments.push(seg);
        scans.push(scan);
    }
    if segments.is_empty() {
        if !repair {
            return Ok((segments, meta, report));
        }
        segments.push(Segment::create(dir, 1)?);
        scans.push(Default::default());
    }
    report.new_lost = lost
        .iter()
        .flat_map(|&(a, b)| uncovered(a, b, &meta.lost))
        .collect();
    report.lost = lost
        .iter()
        .map(|&(first_seq, last_seq)| LostRange {
            first_seq,
            last_seq,
            time_ms: time_after(&segments, last_seq),
        })
        .collect();
    if !repair {
        return Ok((segments, meta, report));
    }
    let forked = report.forked();
    if forked {
        // Positions being cut may have been handed out (a tail written but
        // lost with the page cache, damage): recorded durably first.
        let (last_seq, last_time_ms) = latest(&segments);
        meta.forks.push(Fork {
            epoch: meta.epoch.clone(),
            last_seq,
            last_time_ms,
        });
        meta.epoch = Epoch::generate();
    }
    if forked || meta.lost != report.lost {
        meta.lost = report.lost.clone();
        layout::write_meta(dir, &meta)?;
    }
    log_damage(dir, &report);
    for (seg, scan) in segments.iter_mut().zip(&scans) {
        seg.repair(scan)?;
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

/// The parts of `[a, b]` that no range of `known` covers.
fn uncovered(a: u64, b: u64, known: &[LostRange]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut from = a;
    for k in known.iter().filter(|k| k.last_seq >= a && k.first_seq <= b) {
        if k.first_seq > from {
            out.push((from, k.first_seq - 1));
        }
        from = from.max(k.last_seq + 1);
    }
    if from <= b {
        out.push((from, b));
    }
    out
}

/// A time for the cursor of lost position `seq`: that of the next event the
/// log holds, else of the latest.
fn time_after(segments: &[Segment], seq: u64) -> i64 {
    segments
        .iter()
        .find(|s| s.end_seq() > seq + 1)
        .and_then(|s| s.time_at((seq + 1).saturating_sub(s.base) as usize).ok())
        .unwrap_or_else(|| latest(segments).1)
}

/// Says loudly what was lost or cut, and counts it.
fn log_damage(dir: &Path, report: &OpenReport) {
    let m = metrics();
    for (path, damaged) in &report.damaged {
        let bytes: u64 = damaged.iter().map(|d| d.len).sum();
        m.store_damage_bytes.inc_by(bytes);
        let at: Vec<String> = damaged
            .iter()
            .map(|d| format!("{}+{}", d.offset, d.len))
            .collect();
        tracing::error!(
            segment = %path.display(),
            damaged_bytes = bytes,
            at = %at.join(","),
            "damaged records removed from a segment (intact records before and after are kept; \
             the file as found is kept as *.log.damaged)"
        );
    }
    if !report.new_lost.is_empty() {
        let events = report.new_lost_events();
        m.store_damage_events.inc_by(events);
        let ranges: Vec<String> = report
            .new_lost
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        tracing::error!(
            dir = %dir.display(),
            lost_events = events,
            positions = %ranges.join(","),
            "events lost to damage: their positions stay taken, and readers reaching them are told of the loss"
        );
    }
    if report.cut_bytes > 0 {
        m.store_damage_bytes.inc_by(report.cut_bytes);
        tracing::warn!(
            segment = %report.segment.as_deref().unwrap_or(Path::new("?")).display(),
            offset = report.cut_offset,
            cut_bytes = report.cut_bytes,
            "torn tail detected: cut the incomplete last record"
        );
    }
}
