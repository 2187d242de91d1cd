//! Store-level tests of damage in the middle of a log: intact records are
//! kept, lost positions stay taken and are reported, nothing is renumbered.

use std::{fs, path::Path, time::Duration};

use sluice_actors::{
    cursor::{now_ms, Cursor},
    event::{AppendOutcome, NewEvent},
    store::{GapReason, Store},
};

use super::{EmbeddedConfig, EmbeddedStore, Fsync};

fn cfg(segment_bytes: u64) -> EmbeddedConfig {
    EmbeddedConfig {
        fsync: Fsync::Always,
        fsync_interval: Duration::from_secs(1),
        segment_bytes,
        max_events: 1_000_000,
        max_bytes: 1 << 30,
        max_age_ms: None,
        dedup_window_ms: 300_000,
        max_open_files: 0,
        idle_release: Duration::from_secs(60),
    }
}

/// Publishes `n` events one by one (one record each).
async fn publish(store: &EmbeddedStore, n: usize) {
    for i in 0..n {
        let ev = NewEvent::data(format!("event-{i:03}-{}", "x".repeat(60)));
        let out = store.append("t", vec![ev], now_ms()).await.unwrap();
        assert!(matches!(out[0], AppendOutcome::Stored(_)));
    }
}

async fn seqs(store: &EmbeddedStore) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read("t", after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(page.iter().map(|e| e.seq));
    }
    out
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("topics/t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// Byte offset of record `i` (0-based) in a segment of equal-size records.
fn record_at(seg: &Path, count: usize, i: usize) -> usize {
    let len = fs::metadata(seg).unwrap().len() as usize;
    i * len / count
}

fn damage(seg: &Path, at: usize, bytes: &[u8]) {
    let mut raw = fs::read(seg).unwrap();
    raw[at..at + bytes.len()].copy_from_slice(bytes);
    fs::write(seg, raw).unwrap();
}

#[actix_rt::test]
async fn a_flipped_byte_loses_one_event_and_keeps_the_rest_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = {
        let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
        publish(&store, 5).await;
        store.bounds("t").await.unwrap().epoch
    };
    let seg = &segment_files(dir.path())[0];
    let at = record_at(seg, 5, 2) + 30;
    let mut raw = fs::read(seg).unwrap();
    raw[at] ^= 0x01;
    fs::write(seg, raw).unwrap();

    let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
    let b = store.bounds("t").await.unwrap();
    assert_eq!(b.epoch, epoch, "nothing was renumbered: no new epoch");
    assert_eq!((b.first_seq, b.latest_seq), (1, 5));
    assert_eq!(
        b.lost
            .iter()
            .map(|r| (r.first_seq, r.last_seq))
            .collect::<Vec<_>>(),
        [(3, 3)]
    );
    assert_eq!(seqs(&store).await, [1, 2, 4, 5]);
    // The holder of event 2 is told of the loss; the holder of 3 is not.
    let c2 = Cursor::new(0, 2, epoch.clone());
    let gap = b.resume_point(&c2).unwrap_err();
    assert_eq!((gap.reason, gap.lost), (GapReason::Damaged, Some(1)));
    assert_eq!(gap.next_cursor.seq, 3);
    assert_eq!(b.resume_point(&Cursor::new(0, 3, epoch.clone())), Ok(3));
    // The file as found is kept for inspection.
    assert!(seg.with_extension("log.damaged").exists());
    // Appends go on after the latest position.
    publish(&store, 1).await;
    assert_eq!(seqs(&store).await, [1, 2, 4, 5, 6]);
    drop(store);

    // Reopening finds the same loss, now known: nothing new to report.
    let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
    let b = store.bounds("t").await.unwrap();
    assert_eq!(b.epoch, epoch);
    assert_eq!(b.lost.len(), 1);
    assert_eq!(seqs(&store).await, [1, 2, 4, 5, 6]);
}

#[actix_rt::test]
async fn a_garbage_block_over_several_records_and_zeros_keep_what_follows() {
    for fill in [0x00u8, 0xA7] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
            publish(&store, 10).await;
        }
        let seg = &segment_files(dir.path())[0];
        let (from, to) = (record_at(seg, 10, 3) + 5, record_at(seg, 10, 6) + 9);
        damage(seg, from, &vec![fill; to - from]);
        let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
        // Records 4 to 7 (0-based 3..=6) are touched; 8 to 10 are intact.
        assert_eq!(seqs(&store).await, [1, 2, 3, 8, 9, 10], "fill {fill:#x}");
        let b = store.bounds("t").await.unwrap();
        assert_eq!(b.lost[0].first_seq, 4);
        assert_eq!(b.lost[0].last_seq, 7);
        assert_eq!(b.forks, []);
    }
}

#[actix_rt::test]
async fn damage_at_the_end_of_a_sealed_segment_keeps_the_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), cfg(4096)).unwrap();
        publish(&store, 200).await;
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // Cut half of the last record of the first (sealed) segment.
    let first = &files[0];
    let len = fs::metadata(first).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(first).unwrap();
    f.set_len(len - 40).unwrap();
    drop(f);
    let store = EmbeddedStore::open(dir.path(), cfg(4096)).unwrap();
    let b = store.bounds("t").await.unwrap();
    assert_eq!(b.forks, [], "no position is handed out again");
    assert_eq!(b.latest_seq, 200);
    assert_eq!(b.lost.len(), 1);
    let lost = b.lost[0].first_seq;
    assert_eq!(b.lost[0].last_seq, lost);
    let expect: Vec<u64> = (1..=200).filter(|&s| s != lost).collect();
    assert_eq!(seqs(&store).await, expect);
    assert_eq!(segment_files(dir.path()).len(), files.len());
}

#[actix_rt::test]
async fn a_torn_active_tail_still_moves_the_log_to_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = {
        let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
        publish(&store, 5).await;
        store.bounds("t").await.unwrap().epoch
    };
    let seg = &segment_files(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
    let b = store.bounds("t").await.unwrap();
    assert_ne!(b.epoch, epoch);
    assert_eq!(b.lost, []);
    assert_eq!(seqs(&store).await, [1, 2, 3, 4]);
}

/// Where each record of the journal's current generation starts.
fn journal_records(path: &Path) -> Vec<usize> {
    let raw = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 12;
    while at + 16 <= raw.len() && raw[at + 8..at + 16] == raw[4..12] {
        out.push(at);
        at += 8 + u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

#[actix_rt::test]
async fn a_damaged_journal_round_stops_the_replay_and_never_yields_a_wrong_event() {
    use super::tests::{append_n, power_cut_copy, segment_lens};
    let (dir, cut) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
    let topics = ["a", "b"];
    for t in topics {
        append_n(&store, t, 0, 1).await;
    }
    store.flush().await.unwrap();
    let synced: Vec<_> = topics
        .iter()
        .flat_map(|t| segment_lens(dir.path(), t))
        .collect();
    for i in 1..=20 {
        for t in topics {
            append_n(&store, t, i, 1).await;
        }
    }
    let mut original = std::collections::HashMap::new();
    for t in topics {
        original.insert(t, store.read(t, 0, 1000).await.unwrap());
    }
    power_cut_copy(dir.path(), cut.path(), &synced);
    drop(store);
    let journal = cut.path().join(super::journal::FILE_NAME);
    let records = journal_records(&journal);
    assert!(records.len() >= 40, "{}", records.len());
    let mut raw = fs::read(&journal).unwrap();
    raw[records[20] + 30] ^= 0x10;
    fs::write(&journal, raw).unwrap();
    let found = super::check::check(cut.path()).unwrap();
    assert!(
        found.problems.iter().any(|p| p.contains("journal.log")),
        "{:?}",
        found.problems
    );

    let reopened = EmbeddedStore::open(cut.path(), cfg(1 << 20)).unwrap();
    let mut kept = 0;
    for t in topics {
        let events = reopened.read(t, 0, 1000).await.unwrap();
        // A prefix of what was stored, every event the very one stored at
        // its position: replay stopped at the damage, nothing after it
        // was applied out of order or from a payload.
        for (got, want) in events.iter().zip(&original[t]) {
            assert_eq!((got.seq, &got.data), (want.seq, &want.data), "topic {t}");
        }
        assert!(events.len() <= original[t].len());
        kept += events.len();
    }
    assert!(kept < 42, "the cut lost what only the journal held: {kept}");
    assert!(
        kept >= 2 + 20,
        "what came before the damaged round was replayed: {kept}"
    );
}

#[actix_rt::test]
async fn an_offset_index_file_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), cfg(4096)).unwrap();
        publish(&store, 120).await;
    }
    // Index files of an earlier version, truncated and wrong.
    let files = segment_files(dir.path());
    for f in &files {
        fs::write(f.with_extension("idx"), [1u8, 0, 0]).unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), cfg(4096)).unwrap();
    assert_eq!(seqs(&store).await, (1..=120).collect::<Vec<_>>());
    assert!(files.iter().all(|f| !f.with_extension("idx").exists()));
}

#[actix_rt::test]
async fn check_finds_each_damage_and_passes_clean_data() {
    use super::check::check;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), cfg(4096)).unwrap();
        publish(&store, 120).await;
    }
    let clean = check(dir.path()).unwrap();
    assert!(clean.clean(), "{:?}", clean.problems);
    assert_eq!((clean.topics, clean.events), (1, 120));
    let files = segment_files(dir.path());
    let original: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let restore = || {
        for (f, raw) in files.iter().zip(&original) {
            fs::write(f, raw).unwrap();
        }
    };
    let cut = |f: &Path, by: u64| {
        let file = fs::OpenOptions::new().write(true).open(f).unwrap();
        file.set_len(file.metadata().unwrap().len() - by).unwrap();
    };
    let last = files.last().unwrap();
    for (what, damage) in [
        ("a torn tail", Box::new(|| cut(last, 1)) as Box<dyn Fn()>),
        (
            "half a record off a sealed segment",
            Box::new(|| cut(&files[0], 40)),
        ),
        (
            "a flipped byte",
            Box::new(|| {
                let mut raw = fs::read(&files[1]).unwrap();
                raw[100] ^= 1;
                fs::write(&files[1], raw).unwrap();
            }),
        ),
        (
            "a missing meta.json",
            Box::new(|| {
                fs::rename(
                    dir.path().join("topics/t/meta.json"),
                    dir.path().join("meta.aside"),
                )
                .unwrap();
            }),
        ),
    ] {
        damage();
        let found = check(dir.path()).unwrap();
        assert!(!found.clean(), "{what} not found");
        // The check changed nothing.
        let again = check(dir.path()).unwrap();
        assert_eq!(found.problems, again.problems, "{what}");
        if dir.path().join("meta.aside").exists() {
            fs::rename(
                dir.path().join("meta.aside"),
                dir.path().join("topics/t/meta.json"),
            )
            .unwrap();
        }
        restore();
        assert!(check(dir.path()).unwrap().clean(), "restored after {what}");
    }
}

/// Found by the fuzz target `topic_dir`: when the log started with two lost
/// ranges that follow each other (the end of a sealed segment, the start of
/// the next one), only the first was skipped, so the oldest position was a
/// lost one and the bounds changed at the next start without new damage.
#[actix_rt::test]
async fn the_oldest_position_holds_an_event_after_adjacent_lost_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let topic = dir.path().join("topics/t");
    fs::create_dir_all(&topic).unwrap();
    fs::write(topic.join("meta.json"), br#"{"epoch":"e1","created_ms":0}"#).unwrap();
    // Segment 1 (sealed: positions 1 and 2) lost everything; segment 3
    // lost its first two records.
    fs::write(topic.join(format!("{:020}.log", 1)), [0u8; 64]).unwrap();
    let mut raw = Vec::new();
    for seq in 5..=6 {
        let ev = NewEvent::data(format!("event {seq}"));
        super::record::encode(&mut raw, &ev, seq, now_ms());
    }
    fs::write(topic.join(format!("{:020}.log", 3)), raw).unwrap();
    for _ in 0..2 {
        let store = EmbeddedStore::open(dir.path(), cfg(1 << 20)).unwrap();
        let b = store.bounds("t").await.unwrap();
        assert_eq!((b.first_seq, b.latest_seq, b.lost), (5, 6, vec![]));
        assert_eq!(seqs(&store).await, [5, 6]);
    }
}
