//! Journal bytes verified and replayed into a data directory: no panic, no
//! write outside the data directory's topics, none into a topic whose
//! epoch the journal does not name.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use sluice_actors::cursor::Epoch;

use super::{damage, new_event, random_bytes, Choices, Written};
use crate::store::embedded::{
    journal,
    layout::{self, Meta},
    record, segment,
    topic_log::TopicLog,
    EmbeddedConfig, Fsync,
};

/// Topics of the data directory and their epochs.
const TOPICS: [(&str, &str); 3] = [("t", "journalt"), ("u", "journalu"), ("v", "journalv")];
/// A log outside the data directory, and one inside it but not a topic.
const OUTSIDE: (&str, &str) = ("outside/t", "outsidex");
const NOT_A_TOPIC: (&str, &str) = ("data/x", "insidey0");

/// The journal scenario (see the module).
pub fn journal(input: &[u8], dir: &Path) {
    let mut c = Choices::new(input);
    let data = dir.join("data");
    let root = data.join("topics");
    for (name, epoch) in TOPICS {
        make_log(&mut c, &root.join(name), epoch);
    }
    make_log(&mut c, &dir.join(OUTSIDE.0), OUTSIDE.1);
    make_log(&mut c, &dir.join(NOT_A_TOPIC.0), NOT_A_TOPIC.1);

    let bytes = if c.byte().is_multiple_of(4) {
        c.rest().to_vec()
    } else {
        journal_bytes(&mut c, dir)
    };
    let path = data.join(journal::FILE_NAME);
    fs::write(&path, &bytes).expect("journal");
    let before = files(dir);

    let check = journal::verify(&path).expect("verify");
    match journal::replay(&path, &root) {
        Ok(r) => assert_eq!((r.generation, r.records), (check.generation, check.records)),
        // Only a file that is not a journal at all stops the start.
        Err(_) => assert_eq!((check.generation, check.damaged_at), (0, Some(0))),
    }

    let after = files(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "replay creates and removes no file"
    );
    let contains = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for (p, old) in &before {
        if after[p] == *old {
            continue;
        }
        let topic = TOPICS
            .iter()
            .find(|(name, _)| p.starts_with(root.join(name)))
            .unwrap_or_else(|| panic!("replay wrote {} (not a topic's log)", p.display()));
        assert!(
            contains(topic.0) && contains(topic.1),
            "replay wrote into topic {} whose epoch {} the journal never names",
            topic.0,
            topic.1
        );
    }

    // Whatever replay wrote, the logs open.
    let cfg = EmbeddedConfig {
        fsync: Fsync::Never,
        fsync_interval: Duration::from_secs(1),
        segment_bytes: 1 << 20,
        max_events: u64::MAX,
        max_bytes: u64::MAX,
        max_age_ms: None,
        dedup_window_ms: 300_000,
        max_open_files: 0,
        idle_release: Duration::from_secs(60),
    };
    for (name, _) in TOPICS {
        TopicLog::open(&root.join(name), &cfg).expect("a log opens after replay");
    }
}

/// A log at `dir` with `epoch`: one or two segments of a few records.
fn make_log(c: &mut Choices, dir: &Path, epoch: &str) {
    fs::create_dir_all(dir).expect("dir");
    let meta = Meta {
        epoch: Epoch::parse(epoch).expect("epoch"),
        created_ms: 0,
        forks: Vec::new(),
        lost: Vec::new(),
    };
    layout::write_meta(dir, &meta).expect("meta.json");
    let n = c.below(4) as u64;
    let mut bytes = Vec::new();
    for seq in 1..=n {
        bytes.extend(Written::new(&new_event(c, seq), seq, 1, 0).bytes);
    }
    fs::write(dir.join(segment::file_name(1)), bytes).expect("segment");
    if c.flag() {
        fs::write(dir.join(segment::file_name(n + 1)), b"").expect("segment");
    }
}

/// A journal of well-formed records (a header, records of this and other
/// generations naming any path and epoch), then damaged.
fn journal_bytes(c: &mut Choices, dir: &Path) -> Vec<u8> {
    let generation = 1 + u64::from(c.byte() % 3);
    let mut buf = b"SLJ1".to_vec();
    buf.extend_from_slice(&generation.to_le_bytes());
    let mut starts = Vec::new();
    for _ in 0..c.byte() % 8 {
        starts.push(buf.len());
        let record_generation = match c.byte() % 8 {
            0 => generation - 1,
            1 => generation + 1,
            _ => generation,
        };
        let topic = topic_name(c, dir);
        let epochs = [TOPICS[0].1, TOPICS[1].1, TOPICS[2].1, OUTSIDE.1];
        let epoch = epochs.get(c.byte() as usize % 6).unwrap_or(&NOT_A_TOPIC.1);
        let base = u64::from(c.byte() % 3);
        let offset = u64::from(c.u16() % 700);
        let bytes = if c.flag() {
            let seq = 1 + u64::from(c.byte() % 8);
            Written::new(&new_event(c, seq), seq, 1, 0).bytes
        } else {
            random_bytes(u64::from(c.u16()), c.below(200))
        };
        // The layout of journal/mod.rs, written here on its own.
        let start = record::open_frame(&mut buf);
        buf.extend_from_slice(&record_generation.to_le_bytes());
        buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        buf.extend_from_slice(topic.as_bytes());
        buf.extend_from_slice(&(epoch.len() as u16).to_le_bytes());
        buf.extend_from_slice(epoch.as_bytes());
        buf.extend_from_slice(&base.to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.extend_from_slice(&bytes);
        record::seal_frame(&mut buf, start);
    }
    let copy = buf.clone();
    for _ in 0..c.byte() % 3 {
        damage(c, &mut buf, &starts, &copy);
    }
    let zeros = c.below(64);
    buf.resize(buf.len() + zeros, 0);
    buf
}

/// A topic name as a journal record may carry it: a topic's, one that
/// climbs out of `topics/`, an absolute path, or not a name at all.
fn topic_name(c: &mut Choices, dir: &Path) -> String {
    let outside = dir.join(OUTSIDE.0).display().to_string();
    let names = [
        "t",
        "u",
        "v",
        "w",
        "",
        ".",
        "..",
        "../../outside/t",
        &outside,
        "../x",
        "./t",
        "t/",
        "../topics/u",
        "t/../v",
    ];
    match names.get(c.byte() as usize % 15) {
        Some(name) => name.to_string(),
        None => String::from_utf8_lossy(&random_bytes(u64::from(c.byte()), 3)).into_owned(),
    }
}

/// Every file under `dir` and its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("dir").filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).expect("read"));
            }
        }
    }
    out
}
