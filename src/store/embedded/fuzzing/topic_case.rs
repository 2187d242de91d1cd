//! A topic's directory: segments and `meta.json` built from known events,
//! damaged (also across files), opened and read as the store does,
//! reopened, appended to and damaged again.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use sluice_actors::{
    cursor::Epoch,
    event::AppendOutcome,
    store::{LostRange, TopicBounds},
};

use super::{damage, in_ranges, new_event, present, written_events, Choices, Written};
use crate::store::embedded::{
    layout::{self, Meta},
    recovery::OpenReport,
    segment,
    topic_log::TopicLog,
    EmbeddedConfig, Fsync,
};

/// The topic directory scenario (see the module).
pub fn topic_dir(input: &[u8], dir: &Path) {
    let mut c = Choices::new(input);
    let cfg = EmbeddedConfig {
        fsync: Fsync::Never,
        fsync_interval: Duration::from_secs(1),
        segment_bytes: 200 + c.below(4000) as u64,
        max_events: u64::MAX,
        max_bytes: u64::MAX,
        max_age_ms: None,
        dedup_window_ms: 300_000,
        max_open_files: 0,
        idle_release: Duration::from_secs(60),
    };
    let first_seq = if c.flag() { 1 } else { 1 + c.below(500) as u64 };
    let n = 1 + c.below(60);
    let events = written_events(&mut c, first_seq, n);
    write_log(&mut c, dir, &events);
    let mut expected: BTreeMap<u64, Written> =
        events.into_iter().map(|w| (w.event.seq, w)).collect();

    let rounds = 1 + c.byte() % 3;
    for round in 0..rounds {
        let (on_disk, first_base) = damage_files(&mut c, dir);
        let (mut log, report) = TopicLog::open(dir, &cfg).expect("a damaged log opens");
        let bounds = log.bounds();
        let held = read_all(&log, &bounds, &expected);
        let found = Found {
            on_disk,
            first_base,
        };
        check_reported(&report, &bounds, &held, &expected, &found, dir);
        check_pages(&mut c, &log, &held);
        drop(log);

        let (mut log, again) = TopicLog::open(dir, &cfg).expect("reopen");
        assert!(
            again.damaged.is_empty()
                && again.cut_bytes == 0
                && again.dropped_segments == 0
                && again.new_lost.is_empty(),
            "a repaired log needs no repair: {again:?}"
        );
        let b = log.bounds();
        assert_eq!(
            (&b.epoch, b.first_seq, b.latest_seq, &b.forks, seqs(&b.lost)),
            (
                &bounds.epoch,
                bounds.first_seq,
                bounds.latest_seq,
                &bounds.forks,
                seqs(&bounds.lost)
            )
        );
        assert_eq!(read_all(&log, &b, &expected), held);
        if round + 1 < rounds {
            append(&mut c, &mut log, &cfg, &b, &mut expected);
        }
    }
}

/// `meta.json` and the segments of `events`, split where chosen.
fn write_log(c: &mut Choices, dir: &Path, events: &[Written]) {
    let meta = Meta {
        epoch: Epoch::parse("fuzz0").expect("epoch"),
        created_ms: 0,
        forks: Vec::new(),
        lost: Vec::new(),
    };
    layout::write_meta(dir, &meta).expect("meta.json");
    let mut cuts: Vec<usize> = (0..c.byte() % 4).map(|_| c.below(events.len())).collect();
    cuts.extend([0, events.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    for pair in cuts.windows(2) {
        let part = &events[pair[0]..pair[1]];
        let bytes: Vec<u8> = part.iter().flat_map(|w| w.bytes.clone()).collect();
        fs::write(dir.join(segment::file_name(part[0].event.seq)), bytes).expect("segment");
    }
}

/// The segment files of `dir`, in order.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| segment::parse_name(e.file_name().to_str().unwrap_or("")).is_some())
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Damages the segment files (or deletes one); returns what they hold then
/// and where the first one starts.
fn damage_files(c: &mut Choices, dir: &Path) -> (Vec<Vec<u8>>, u64) {
    for _ in 0..c.byte() % 5 {
        let files = segment_files(dir);
        if files.is_empty() {
            break;
        }
        let target = &files[c.below(files.len())];
        if c.byte().is_multiple_of(16) {
            fs::remove_file(target).expect("delete segment");
            continue;
        }
        let other = fs::read(&files[c.below(files.len())]).expect("read");
        let mut bytes = fs::read(target).expect("read");
        damage(c, &mut bytes, &[], &other);
        fs::write(target, bytes).expect("write");
    }
    let files = segment_files(dir);
    let first_base = files.first().map_or(u64::MAX, |p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        segment::parse_name(name).expect("segment name")
    });
    let bytes = files.iter().map(|p| fs::read(p).expect("read")).collect();
    (bytes, first_base)
}

fn seqs(lost: &[LostRange]) -> Vec<(u64, u64)> {
    lost.iter().map(|r| (r.first_seq, r.last_seq)).collect()
}

/// Reads the whole log as the store does; every event is the one written
/// at its sequence, in strictly increasing order. Returns the sequences.
fn read_all(log: &TopicLog, b: &TopicBounds, expected: &BTreeMap<u64, Written>) -> Vec<u64> {
    let events: Vec<_> = log
        .plan_read(0, 1 << 20, u64::MAX)
        .iter()
        .flat_map(|p| p.read().expect("read"))
        .collect();
    let mut last = 0;
    for e in &events {
        assert!(
            e.seq > last,
            "sequences strictly increase: {} after {last}",
            e.seq
        );
        last = e.seq;
        let w = expected
            .get(&e.seq)
            .unwrap_or_else(|| panic!("{}: an event never written", e.seq));
        assert_eq!(*e, w.event, "{}: not the event written there", e.seq);
        assert!((b.first_seq..=b.latest_seq).contains(&e.seq));
        assert!(!in_ranges(e.seq, seqs(&b.lost)), "{}: read and lost", e.seq);
    }
    events.iter().map(|e| e.seq).collect()
}

/// The segment files as the damage left them, before the log opened.
struct Found {
    /// Their bytes.
    on_disk: Vec<Vec<u8>>,
    /// The first one's base: positions before it are outside the log (as
    /// after retention) wherever their bytes may be.
    first_base: u64,
}

/// Every event written and not read back is reported (see the module).
fn check_reported(
    report: &OpenReport,
    b: &TopicBounds,
    held: &[u64],
    expected: &BTreeMap<u64, Written>,
    found: &Found,
    dir: &Path,
) {
    let files = segment_files(dir);
    if report.cut_bytes > 0 {
        assert_eq!(
            report.segment.as_ref(),
            files.last(),
            "only the active segment has a torn tail"
        );
    }
    if report.forked() {
        let kept = b.forks.last().map(|f| f.last_seq);
        assert_eq!(
            kept,
            Some(b.latest_seq),
            "a cut records a fork at the kept end"
        );
    }
    for (&seq, w) in expected {
        if held.binary_search(&seq).is_ok() || in_ranges(seq, seqs(&report.lost)) {
            continue;
        }
        let forked = b.forks[w.epoch_index.min(b.forks.len())..]
            .iter()
            .any(|f| f.last_seq < seq);
        let gone = !present(&found.on_disk, &w.bytes);
        assert!(
            (seq > b.latest_seq && (forked || gone))
                || (seq < b.first_seq && (gone || seq < found.first_base)),
            "event {seq} is neither read back nor reported (bounds {}..={}, forks {:?}, \
             lost {:?}, on disk: {})",
            b.first_seq,
            b.latest_seq,
            b.forks,
            seqs(&report.lost),
            !gone
        );
    }
    for r in &b.lost {
        assert!(r.first_seq <= r.last_seq && r.last_seq <= b.latest_seq);
    }
}

/// Pages of chosen sizes from chosen starts hold exactly the next events.
fn check_pages(c: &mut Choices, log: &TopicLog, held: &[u64]) {
    for _ in 0..1 + c.byte() % 3 {
        let limit = 1 + c.below(7);
        let latest = held.last().copied().unwrap_or(0);
        let mut after = if c.flag() {
            0
        } else {
            c.below(latest as usize + 2) as u64
        };
        loop {
            let page: Vec<u64> = log
                .plan_read(after, limit, u64::MAX)
                .iter()
                .flat_map(|p| p.read().expect("read"))
                .map(|e| e.seq)
                .collect();
            let from = held.partition_point(|&s| s <= after);
            let want = &held[from..(from + limit).min(held.len())];
            assert_eq!(page, want, "page of {limit} after {after}");
            match page.last() {
                Some(&last) => after = last,
                None => break,
            }
        }
    }
}

/// Appends a few events to the repaired log (new positions, maybe in a new
/// epoch) and expects them instead of what their positions held before.
fn append(
    c: &mut Choices,
    log: &mut TopicLog,
    cfg: &EmbeddedConfig,
    b: &TopicBounds,
    expected: &mut BTreeMap<u64, Written>,
) {
    let batch: Vec<_> = (0..c.byte() % 6)
        .map(|i| new_event(c, 1000 + i as u64))
        .collect();
    let time_ms = 1_800_000_000_000;
    let (out, _) = log
        .write(batch.clone(), time_ms, cfg, None)
        .expect("append");
    for (ev, outcome) in batch.iter().zip(out) {
        if let AppendOutcome::Stored(s) = outcome {
            assert!(s.seq > b.latest_seq);
            let w = Written::new(ev, s.seq, s.time_ms, b.forks.len());
            assert_eq!(w.event, s);
            expected.insert(s.seq, w);
        }
    }
}
