//! One segment: the record reader on raw bytes, and a segment of known
//! records, damaged, opened, repaired and reopened.

use std::{fs, path::Path};

use bytes::Bytes;

use super::{damage, in_ranges, present, written_events, Choices, Written};
use crate::store::embedded::{
    record::{self, Next},
    segment::{self, ReadPlan, Segment},
};

/// The record decoder and `resync` on arbitrary bytes: no panic, both ways
/// of decoding (shared buffer or copy) agree, and where `resync` goes on
/// there is an intact record of a sequence it accepts.
pub fn record_bytes(input: &[u8]) {
    let Some((&min, buf)) = input.split_first() else {
        return;
    };
    let shared = Bytes::copy_from_slice(buf);
    match (
        record::next(buf, None),
        record::next(&shared, Some(&shared)),
    ) {
        (Next::Record(a, n), Next::Record(b, m)) => {
            assert_eq!(
                (a.event, a.key, a.producer, n),
                (b.event, b.key, b.producer, m)
            );
            assert!(n <= buf.len());
        }
        (Next::Truncated, Next::Truncated) | (Next::Corrupt, Next::Corrupt) => {}
        (a, b) => panic!("decoders disagree: {a:?} / {b:?}"),
    }
    let min_seq = u64::from(min);
    if let Some(at) = record::resync(buf, min_seq) {
        assert!(at > 0 && at < buf.len());
        match record::next(&buf[at..], None) {
            Next::Record(r, _) => assert!(r.event.seq >= min_seq),
            other => panic!("resync went on at {at}, where there is {other:?}"),
        }
    }
}

/// A segment of known records, damaged, then opened and repaired as the
/// store does, read back position by position and reopened.
pub fn segment(input: &[u8], dir: &Path) {
    let mut c = Choices::new(input);
    let base = 1 + u64::from(c.byte()) * 1000;
    let sealed = c.flag();
    let n = 1 + c.below(40);
    let written = written_events(&mut c, base, n);
    let mut file: Vec<u8> = Vec::new();
    let mut starts = Vec::new();
    for w in &written {
        starts.push(file.len());
        file.extend_from_slice(&w.bytes);
    }
    let copy = file.clone();
    for _ in 0..c.byte() % 6 {
        damage(&mut c, &mut file, &starts, &copy);
    }
    let path = dir.join(segment::file_name(base));
    fs::write(&path, &file).expect("write segment");
    // A sealed segment ends where the next one starts.
    let next_base = sealed.then_some(base + n as u64);

    let (mut seg, scan) = Segment::open(path.clone(), base, next_base).expect("open");
    assert_eq!(seg.count(), seg.offsets.len() as u64);
    if let Some(next) = next_base {
        assert_eq!(seg.end_seq(), next, "a sealed segment keeps its positions");
        assert_eq!(scan.torn_bytes, 0, "a sealed segment has no torn tail");
    }
    seg.repair(&scan).expect("repair");
    assert_eq!(fs::metadata(&path).expect("stat").len(), seg.len);

    let held = check_positions(&seg, &scan.lost, &written);
    for w in &written {
        let seq = w.event.seq;
        if held.contains(&seq) || in_ranges(seq, scan.lost.iter().copied()) {
            continue;
        }
        // Only the end of an active segment can go unreported: cut with
        // the torn tail (the log then forks), or gone from the disk.
        assert!(
            next_base.is_none() && seq >= seg.end_seq(),
            "event {seq} is neither read back nor reported lost"
        );
        assert!(
            scan.torn_bytes > 0 || !present(std::slice::from_ref(&file), &w.bytes),
            "event {seq} is on disk, after the kept end, and nothing was cut"
        );
    }

    let (again, rescan) = Segment::open(path, base, next_base).expect("reopen");
    assert_eq!(
        (rescan.torn_bytes, rescan.damaged.len()),
        (0, 0),
        "a repaired segment needs no repair"
    );
    assert_eq!(rescan.lost, scan.lost);
    assert_eq!((again.offsets, again.len), (seg.offsets, seg.len));
}

/// Reads every position of a repaired `seg`: a held one is the record
/// written at its sequence, byte for byte; an empty one is in `lost`.
/// Returns the sequences held.
fn check_positions(seg: &Segment, lost: &[(u64, u64)], written: &[Written]) -> Vec<u64> {
    let raw = fs::read(&seg.path).expect("read segment");
    let by_seq = |seq: u64| written.iter().find(|w| w.event.seq == seq);
    let mut held = Vec::new();
    for i in 0..seg.count() as usize {
        let seq = seg.base + i as u64;
        let (start, end) = (seg.offset_of(i), seg.offset_of(i + 1));
        if !seg.holds(i) {
            assert!(
                in_ranges(seq, lost.iter().copied()),
                "{seq}: empty, not lost"
            );
            continue;
        }
        assert!(
            !in_ranges(seq, lost.iter().copied()),
            "{seq}: held and lost"
        );
        let w = by_seq(seq).unwrap_or_else(|| panic!("{seq}: an event never written"));
        assert!(
            raw[start as usize..end as usize] == w.bytes[..],
            "{seq}: not the event written there"
        );
        let plan = ReadPlan {
            file: seg.file.clone(),
            start,
            end,
        };
        assert_eq!(plan.read().expect("read"), std::slice::from_ref(&w.event));
        held.push(seq);
    }
    // All at once, as a read across the segment does.
    let plan = ReadPlan {
        file: seg.file.clone(),
        start: 0,
        end: seg.len,
    };
    let all: Vec<u64> = plan.read().expect("read").iter().map(|e| e.seq).collect();
    assert_eq!(all, held, "sequences in file order, strictly increasing");
    held
}
