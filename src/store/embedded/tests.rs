//! Store-level tests of the embedded log: segments, reopen, retention,
//! dedup across restarts, torn tails.

use std::{fs::OpenOptions, io::Write, path::Path, sync::Arc, time::Duration};

use sluice_actors::{
    cursor::now_ms,
    event::{AppendOutcome, NewEvent},
    store::Store,
};

use super::{EmbeddedConfig, EmbeddedStore, Fsync};

fn cfg() -> EmbeddedConfig {
    EmbeddedConfig {
        fsync: Fsync::Always,
        fsync_interval: Duration::from_secs(1),
        segment_bytes: 4096,
        max_events: 1_000_000,
        max_bytes: 1 << 30,
        max_age_ms: None,
        dedup_window_ms: 300_000,
        max_open_files: 0,
        idle_release: Duration::from_secs(60),
    }
}

pub(super) async fn append_n(store: &EmbeddedStore, topic: &str, from: usize, n: usize) {
    let batch = (from..from + n)
        .map(|i| NewEvent::data(format!("event-{i:05}-{}", "x".repeat(40))))
        .collect();
    let out = store.append(topic, batch, now_ms()).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, AppendOutcome::Stored(_))));
}

async fn all(store: &EmbeddedStore, topic: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read(topic, after, 37).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(page.iter().map(|e| (e.seq, e.data_str().into_owned())));
    }
    out
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("topics/t"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[actix_rt::test]
async fn rolls_segments_and_reads_across_them_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
    let epoch = store.open_topic("t").await.unwrap().epoch;
    for i in 0..20 {
        append_n(&store, "t", i * 25, 25).await;
    }
    assert!(segments(dir.path()) > 3, "small segments roll");
    let before = all(&store, "t").await;
    assert_eq!(before.len(), 500);
    drop(store);
    let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
    let b = store.bounds("t").await.unwrap();
    assert_eq!((b.first_seq, b.latest_seq, b.epoch), (1, 500, epoch));
    assert_eq!(all(&store, "t").await, before);
    // A read from the middle lands on the right event without a scan.
    let page = store.read("t", 321, 2).await.unwrap();
    assert_eq!(page[0].seq, 322);
    assert!(page[0].data_str().starts_with("event-00321"));
}

#[actix_rt::test]
async fn retention_by_count_and_bytes_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedConfig {
            max_events: 100,
            ..cfg()
        },
    )
    .unwrap();
    store.open_topic("t").await.unwrap();
    for i in 0..20 {
        append_n(&store, "t", i * 25, 25).await;
    }
    let b = store.bounds("t").await.unwrap();
    assert_eq!((b.first_seq, b.latest_seq), (401, 500));
    let events = all(&store, "t").await;
    assert_eq!(events.first().unwrap().0, 401);
    assert_eq!(events.len(), 100);
    assert!(
        segments(dir.path()) <= 3,
        "segments wholly past retention are deleted"
    );
    drop(store);

    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedConfig {
            max_bytes: 1000,
            ..cfg()
        },
    )
    .unwrap();
    let b = store.bounds("t").await.unwrap();
    assert!(b.retained() > 0 && b.retained() < 100, "{b:?}");
}

#[actix_rt::test]
async fn dedup_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = |body: &str| NewEvent {
        idempotency_key: Some("k1".into()),
        ..NewEvent::data(body.to_owned())
    };
    let seq_ev = |s| NewEvent {
        producer: Some(("p".into(), s)),
        ..NewEvent::data("x")
    };
    {
        let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
        store.open_topic("t").await.unwrap();
        store
            .append("t", vec![keyed("a"), seq_ev(7)], now_ms())
            .await
            .unwrap();
        // Enough to seal segments, so the producer snapshot is exercised.
        for i in 0..10 {
            append_n(&store, "t", i * 25, 25).await;
        }
    }
    let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
    let out = store
        .append(
            "t",
            vec![keyed("a"), keyed("b"), seq_ev(7), seq_ev(9), seq_ev(8)],
            now_ms(),
        )
        .await
        .unwrap();
    assert!(matches!(&out[0], AppendOutcome::Duplicate(Some(c)) if c.seq == 1));
    assert_eq!(out[1], AppendOutcome::KeyConflict);
    assert!(matches!(&out[2], AppendOutcome::Duplicate(Some(c)) if c.seq == 2));
    assert_eq!(out[3], AppendOutcome::SequenceGap { expected: 8 });
    assert!(matches!(&out[4], AppendOutcome::Stored(_)));
}

#[actix_rt::test]
async fn torn_tail_is_cut_and_the_log_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
        store.open_topic("t").await.unwrap();
        append_n(&store, "t", 0, 10).await;
    }
    let seg = dir.path().join("topics/t/00000000000000000001.log");
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A record header that promises 1000 bytes, followed by 10.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&1000u32.to_le_bytes()).unwrap();
    f.write_all(&[7u8; 14]).unwrap();
    drop(f);
    let store = Arc::new(EmbeddedStore::open(dir.path(), cfg()).unwrap());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(all(&store, "t").await.len(), 10);
    append_n(&store, "t", 10, 1).await;
    let events = all(&store, "t").await;
    assert_eq!(events.len(), 11);
    assert_eq!(events[10].0, 11);
}

#[actix_rt::test]
async fn age_retention_expires_everything_but_keeps_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedConfig {
            max_age_ms: Some(1),
            ..cfg()
        },
    )
    .unwrap();
    store.open_topic("t").await.unwrap();
    append_n(&store, "t", 0, 5).await;
    std::thread::sleep(Duration::from_millis(5));
    drop(store);
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedConfig {
            max_age_ms: Some(1),
            ..cfg()
        },
    )
    .unwrap();
    let b = store.bounds("t").await.unwrap();
    assert_eq!((b.first_seq, b.latest_seq, b.retained()), (6, 5, 0));
    assert!(all(&store, "t").await.is_empty());
    append_n(&store, "t", 5, 1).await;
    assert_eq!(store.bounds("t").await.unwrap().latest_seq, 6);
}

#[actix_rt::test]
async fn appends_started_together_are_stored_in_start_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), cfg()).unwrap());
    let topic: Arc<str> = Arc::from("t");
    // Several fsyncs in flight at once, across segment rolls (4 KiB
    // segments), awaited in reverse: sequences follow the order of the
    // starts, not of the completions.
    let started: Vec<_> = (0..8)
        .map(|i| {
            let batch = (0..20)
                .map(|j| NewEvent::data(format!("a{i}-{j}-{}", "y".repeat(60))))
                .collect();
            store.clone().start_append(topic.clone(), batch, now_ms())
        })
        .collect();
    for (i, append) in started.into_iter().enumerate().rev() {
        let out = append.await.unwrap();
        for (j, o) in out.iter().enumerate() {
            match o {
                AppendOutcome::Stored(ev) => assert_eq!(ev.seq, (i * 20 + j + 1) as u64),
                other => panic!("{other:?}"),
            }
        }
    }
    drop(store);
    let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
    let evs = all(&store, "t").await;
    assert_eq!(evs.len(), 160);
    assert!(evs[21].1.starts_with("a1-1-"), "{:?}", evs[21]);
}

/// Segment files of `topic` and their lengths.
pub(super) fn segment_lens(dir: &Path, topic: &str) -> Vec<(std::path::PathBuf, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("topics").join(topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    out.sort();
    out
}

/// Copies a data directory as a power cut would leave it after the
/// checkpoint recorded in `synced`: every segment cut back to its length
/// then (or missing if created since), the journal as it is.
pub(super) fn power_cut_copy(from: &Path, to: &Path, synced: &[(std::path::PathBuf, u64)]) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let is_segment = entry.extension().is_some_and(|x| x == "log")
            && entry.file_name().unwrap() != super::journal::FILE_NAME;
        if !is_segment {
            std::fs::copy(&entry, &dest).unwrap();
        } else if let Some((_, len)) = synced.iter().find(|(p, _)| *p == entry) {
            let bytes = std::fs::read(&entry).unwrap();
            std::fs::write(&dest, &bytes[..*len as usize]).unwrap();
        } else {
            // Created after the checkpoint: its name is durable, not its data.
            std::fs::write(&dest, b"").unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[actix_rt::test]
async fn acknowledged_appends_survive_a_power_cut_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cut = tempfile::tempdir().unwrap();
    let big = EmbeddedConfig {
        segment_bytes: 1 << 20,
        ..cfg()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), big.clone()).unwrap());
    let topics = ["a", "b", "c"];
    for t in topics {
        append_n(&store, t, 0, 1).await;
    }
    // Everything so far is in the segments; the journal starts over.
    store.flush().await.unwrap();
    let synced: Vec<_> = topics
        .iter()
        .flat_map(|t| segment_lens(dir.path(), t))
        .collect();
    // Small appends to three topics at once, every one acknowledged.
    let mut tasks = Vec::new();
    for t in topics {
        for i in 1..=40 {
            let store = store.clone();
            tasks.push(actix_rt::spawn(
                async move { append_n(&store, t, i, 1).await },
            ));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    power_cut_copy(dir.path(), cut.path(), &synced);
    for t in topics {
        let lost = segment_lens(cut.path(), t);
        assert!(lost
            .iter()
            .zip(segment_lens(dir.path(), t))
            .any(|(c, d)| c.1 < d.1));
    }

    let reopened = EmbeddedStore::open(cut.path(), big.clone()).unwrap();
    for t in topics {
        let events = all(&reopened, t).await;
        assert_eq!(events.len(), 41, "topic {t}");
        for (i, (seq, _)) in events.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
        }
        let mut datas: Vec<_> = events.iter().map(|(_, d)| d.clone()).collect();
        datas.sort();
        datas.dedup();
        assert_eq!(datas.len(), 41, "every append once");
        let lens = |d: &Path| {
            segment_lens(d, t)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
        };
        assert_eq!(lens(cut.path()), lens(dir.path()));
    }
    // Appends go on after the last event, and a second restart (a new
    // journal generation) replays nothing stale.
    append_n(&reopened, "a", 41, 1).await;
    drop(reopened);
    let again = EmbeddedStore::open(cut.path(), big).unwrap();
    assert_eq!(all(&again, "a").await.len(), 42);
    assert_eq!(all(&again, "b").await.len(), 41);
}

#[actix_rt::test]
async fn without_the_journal_a_power_cut_would_lose_them() {
    // The same cut with the journal emptied: the check above can fail.
    let dir = tempfile::tempdir().unwrap();
    let cut = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), cfg()).unwrap();
    append_n(&store, "a", 0, 1).await;
    store.flush().await.unwrap();
    let synced = segment_lens(dir.path(), "a");
    append_n(&store, "a", 1, 1).await;
    power_cut_copy(dir.path(), cut.path(), &synced);
    std::fs::write(cut.path().join(super::journal::FILE_NAME), b"").unwrap();
    let reopened = EmbeddedStore::open(cut.path(), cfg()).unwrap();
    assert_eq!(all(&reopened, "a").await.len(), 1);
}

#[actix_rt::test]
async fn appends_survive_a_power_cut_after_the_journal_wrapped() {
    // More than the journal file holds, so it checkpoints and starts a new
    // generation mid-run; then a cut leaves each segment only what that
    // checkpoint made durable, and the journal must hold the rest.
    let dir = tempfile::tempdir().unwrap();
    let cut = tempfile::tempdir().unwrap();
    let big = EmbeddedConfig {
        segment_bytes: 64 << 20,
        ..cfg()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), big.clone()).unwrap());
    let journal = dir.path().join(super::journal::FILE_NAME);
    let start = super::journal::generation(&journal);
    let (topics, per_topic) = (["a", "b"], 800);
    for chunk in 0..per_topic / 40 {
        let mut tasks = Vec::new();
        for t in topics {
            for i in chunk * 40..(chunk + 1) * 40 {
                let store = store.clone();
                tasks.push(actix_rt::spawn(async move {
                    let data = format!("{i:05}-{}", "y".repeat(12_000));
                    let out = store
                        .append(t, vec![NewEvent::data(data)], now_ms())
                        .await
                        .unwrap();
                    assert!(matches!(out[0], AppendOutcome::Stored(_)));
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    assert!(
        super::journal::generation(&journal) > start,
        "the journal wrapped"
    );
    let firsts = super::journal::first_offsets(&journal);
    let synced: Vec<_> = topics
        .iter()
        .flat_map(|t| {
            segment_lens(dir.path(), t).into_iter().map(|(p, len)| {
                let base =
                    super::segment::parse_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
                let kept = firsts.get(&(t.to_string(), base)).copied().unwrap_or(len);
                (p, kept)
            })
        })
        .collect();
    assert!(synced
        .iter()
        .any(|(p, kept)| *kept < std::fs::metadata(p).unwrap().len()));
    power_cut_copy(dir.path(), cut.path(), &synced);

    let reopened = EmbeddedStore::open(cut.path(), big).unwrap();
    for t in topics {
        let events = all(&reopened, t).await;
        assert_eq!(events.len(), per_topic, "topic {t}");
        let mut datas: Vec<_> = events.iter().map(|(_, d)| d[..5].to_string()).collect();
        datas.sort();
        datas.dedup();
        assert_eq!(datas.len(), per_topic, "every append once");
    }
}
