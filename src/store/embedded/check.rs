//! `sluice check`: verifies an embedded store's data directory offline
//! (every segment record, sequence continuity, epochs, the journal) and,
//! with `repair`, applies the rules start-up applies (see `recovery`).

use std::{fmt::Write as _, fs, io, path::Path};

use super::{journal, layout, recovery, EmbeddedConfig, EmbeddedStore};

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Topics checked.
    pub topics: usize,
    /// Events held (positions that hold one).
    pub events: u64,
    /// One line per problem found.
    pub problems: Vec<String>,
    /// One line per thing worth knowing that is not a problem (losses an
    /// earlier repair recorded, earlier epochs).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// Whether the data is exactly as written and needs no repair.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `data_dir` without changing anything.
pub fn check(data_dir: &Path) -> io::Result<CheckReport> {
    let mut report = CheckReport::default();
    let root = data_dir.join("topics");
    if !root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} holds no topics/ directory", data_dir.display()),
        ));
    }
    let j = journal::verify(&data_dir.join(journal::FILE_NAME))?;
    if let Some(at) = j.damaged_at {
        report.problems.push(format!(
            "journal.log: generation {}: {} records, then a torn or damaged record at byte {at} \
             (replay stops there)",
            j.generation, j.records
        ));
    }
    let mut names: Vec<String> = fs::read_dir(&root)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let dir = root.join(&name);
        if !layout::has_log(&dir) {
            report.problems.push(format!(
                "{name}: no meta.json (start-up moves the directory aside)"
            ));
            continue;
        }
        report.topics += 1;
        let meta = match layout::read_meta(&dir) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let epoch = meta.epoch.to_string();
        let (segments, meta, found) = recovery::open_segments(&dir, meta, false)?;
        let lost: u64 = found
            .lost
            .iter()
            .map(|r| r.last_seq + 1 - r.first_seq)
            .sum();
        let positions: u64 = segments.iter().map(|s| s.count()).sum();
        report.events += positions - lost;
        let p = &mut report.problems;
        if segments.is_empty() {
            p.push(format!("{name}: no segment file"));
        }
        for (path, damaged) in &found.damaged {
            let mut at = String::new();
            for d in damaged {
                let _ = write!(at, " {}+{}", d.offset, d.len);
            }
            p.push(format!(
                "{name}: {}: damaged bytes (offset+length):{at}",
                file(path)
            ));
        }
        if !found.new_lost.is_empty() {
            p.push(format!(
                "{name}: {} event(s) lost to damage at positions {}",
                found.new_lost_events(),
                ranges(&found.new_lost)
            ));
        }
        if found.cut_bytes > 0 {
            p.push(format!(
                "{name}: {}: torn tail of {} bytes after byte {} (repair cuts it and moves the \
                 log to a new epoch)",
                found.segment.as_deref().map_or("?".into(), file),
                found.cut_bytes,
                found.cut_offset
            ));
        }
        if found.dropped_segments > 0 {
            p.push(format!(
                "{name}: {} segment(s) overlap the ones before (repair sets them aside)",
                found.dropped_segments
            ));
        }
        let known: Vec<(u64, u64)> = meta
            .lost
            .iter()
            .map(|r| (r.first_seq, r.last_seq))
            .collect();
        if !known.is_empty() {
            report.notes.push(format!(
                "{name}: positions {} were lost in an earlier repair",
                ranges(&known)
            ));
        }
        if !meta.forks.is_empty() {
            report.notes.push(format!(
                "{name}: epoch {epoch}, {} earlier epoch(s) after recovery cuts",
                meta.forks.len()
            ));
        }
    }
    Ok(report)
}

/// Repairs `data_dir` the way start-up does (journal replay, then every
/// topic's recovery), then checks it again.
pub fn repair(data_dir: &Path, cfg: EmbeddedConfig) -> io::Result<CheckReport> {
    drop(EmbeddedStore::open(data_dir, cfg)?);
    check(data_dir)
}

fn file(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn ranges(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
