//! The embedded store's files across restarts: a torn or corrupt tail record
//! is cut, a deleted topic directory starts a new epoch, many small segments
//! keep count retention. Properties of the on-disk log, so on that store only.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use super::T;
use crate::support::*;

/// Explicit, although it is the default: the tests rely on it.
const FSYNC: (&str, &str) = ("SLUICE__EMBEDDED__FSYNC", "always");

on_embedded_store! {
    #[tokio::test]
    torn_tail_is_cut_on_restart,
    #[tokio::test]
    torn_header_is_cut_on_restart,
    #[tokio::test]
    bad_crc_tail_record_is_cut_on_restart,
    #[tokio::test]
    wiped_log_gets_a_new_epoch,
    #[tokio::test]
    many_segments_survive_restart_and_count_retention,
}

fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("topics").join(topic)
}

fn last_segment(data_dir: &Path, topic: &str) -> PathBuf {
    let dir = topic_dir(data_dir, topic);
    assert!(dir.join("meta.json").is_file(), "{dir:?}/meta.json missing");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.len() == 24
                && name.ends_with(".log")
                && name[..20].bytes().all(|c| c.is_ascii_digit())
        })
        .collect();
    segs.sort();
    assert!(
        segs.first()
            .is_some_and(|p| p.ends_with("00000000000000000001.log")),
        "first segment is 00000000000000000001.log: {segs:?}"
    );
    segs.pop().unwrap()
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

async fn torn_tail(store: Store, garbage: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let t = "torn";
    let mut b = BrokerProcess::start_in(store, dir.path(), &[FSYNC]).await;
    let cs = b.publish_numbered(t, 1..11).await;
    let st = b.stop().await;
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    drop(b);

    let seg = last_segment(dir.path(), t);
    append(&seg, &garbage);

    let b = BrokerProcess::start_in(store, dir.path(), &[FSYNC]).await;
    let hist = b.all_events(t).await;
    let got: Vec<String> = hist.iter().map(cursor_of).collect();
    // Every complete event survives, nothing else. The log went on under a
    // new epoch (the cut might have removed a delivered event), so the same
    // events carry cursors of the new epoch.
    assert_eq!(
        got.iter().map(|c| cursor_seq(c)).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let epoch = cursor_epoch(&got[0]).to_owned();
    assert_ne!(
        epoch,
        cursor_epoch(&cs[0]),
        "a cut moves the log to a new epoch"
    );
    assert!(got.iter().all(|c| cursor_epoch(c) == epoch));
    for (i, e) in hist.iter().enumerate() {
        assert_eq!(seq_of(data_of(e)), i as u64 + 1);
    }
    let stderr = b.stderr_text();
    assert!(
        stderr.lines().any(|l| {
            let l = l.to_lowercase();
            l.contains("warn") && (l.contains("torn") || l.contains("truncat"))
        }),
        "a WARN line mentioning the torn tail is logged; stderr:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("new epoch")),
        "a WARN line says the log continues under a new epoch; stderr:\n{stderr}"
    );
    // The tail was cut on disk (or at least will be overwritten correctly):
    // new publishes continue the sequence and survive another restart.
    let r = b.get(&format!("/v1/topics/{t}")).await;
    assert_eq!(r.json["retained"], 10, "{}", r.text);
    assert_eq!(
        r.json["latest_cursor"].as_str(),
        Some(got[9].as_str()),
        "{}",
        r.text
    );
    let c11 = b.publish_ok(t, "{\"seq\":11}").await;
    assert_eq!(cursor_seq(&c11), 11);
    assert_eq!(cursor_epoch(&c11), epoch);
    // A cursor of the old epoch still names the same event: it resumes.
    let mut s = b.sse(t, "", &[("last-event-id", &cs[4])]).await;
    let ids: Vec<String> = s.expect_events(6, T).await.iter().map(msg_id).collect();
    assert_eq!(&ids[..5], &got[5..]);
    assert_eq!(ids[5], c11);
    drop(s);
    let mut b = b;
    assert!(b.stop().await.success());
    drop(b);

    let b = BrokerProcess::start_in(store, dir.path(), &[FSYNC]).await;
    let hist = b.all_events(t).await;
    let mut want = got.clone();
    want.push(c11);
    assert_eq!(
        hist.iter().map(cursor_of).collect::<Vec<_>>(),
        want,
        "after a second restart (nothing cut: the same epoch)"
    );
}

async fn torn_tail_is_cut_on_restart(store: Store) {
    // A length field saying 1000, then only 10 bytes of the record.
    let mut g = 1000u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    g.extend_from_slice(b"0123456789");
    bounded(90, torn_tail(store, g)).await;
}

async fn torn_header_is_cut_on_restart(store: Store) {
    // Only three bytes of a length field.
    bounded(90, torn_tail(store, vec![0x10, 0x00, 0x00])).await;
}

async fn bad_crc_tail_record_is_cut_on_restart(store: Store) {
    // A complete record whose body was not fully written (zeros) so the CRC
    // does not match.
    let body = [0u8; 10];
    let mut g = (body.len() as u32).to_le_bytes().to_vec();
    let crc = crc32fast::hash(b"0123456789");
    g.extend_from_slice(&crc.to_le_bytes());
    g.extend_from_slice(&body);
    bounded(90, torn_tail(store, g)).await;
}

async fn wiped_log_gets_a_new_epoch(store: Store) {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let t = "wiped";
        let mut b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let old = b.publish_numbered(t, 1..6).await;
        assert!(b.stop().await.success());
        drop(b);
        std::fs::remove_dir_all(topic_dir(dir.path(), t)).unwrap();

        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let new = b.publish_numbered(t, 1..11).await;
        assert_ne!(
            cursor_epoch(&new[0]),
            cursor_epoch(&old[0]),
            "a recreated log has another epoch"
        );
        // An old cursor is recognised, never mapped onto the new log.
        let s = b.sse(t, "", &[("last-event-id", &old[2])]).await;
        s.assert_problem(416);
        assert_eq!(
            s.header("x-latest-cursor").as_deref(),
            Some(new[9].as_str())
        );
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", &old[2])])
            .await;
        s.assert_ok();
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"));
        let ids: Vec<String> = s.expect_events(10, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, new);
    })
    .await;
}

async fn many_segments_survive_restart_and_count_retention(store: Store) {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("SLUICE__EMBEDDED__SEGMENT_BYTES", "4096"),
            ("SLUICE__RETENTION__MAX_EVENTS", "60"),
        ];
        let t = "segs";
        let mut b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let body: String = (1..=100)
            .map(|i| {
                format!(
                    "{{\"data\":{{\"seq\":{i},\"pad\":\"{}\"}}}}\n",
                    "z".repeat(100)
                )
            })
            .collect();
        let r = b.batch(t, &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let cs: Vec<String> = r.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["cursor"].as_str().unwrap().to_string())
            .collect();
        let bb = &b;
        wait_until(T, "60 retained", || async move { bb.count(t).await == 60 }).await;
        let segs = std::fs::read_dir(dir.path().join("topics").join(t))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count();
        assert!(segs > 1, "4096-byte segments roll over: {segs} segment(s)");
        assert!(b.stop().await.success());
        drop(b);

        let b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let hist = b.all_events(t).await;
        let ids: Vec<String> = hist.iter().map(cursor_of).collect();
        assert_eq!(ids, cs[40..].to_vec(), "the same 60 events after restart");
        for (k, e) in hist.iter().enumerate() {
            assert_eq!(seq_of(e["data"].as_str().unwrap()), 41 + k as u64);
        }
        let c = b.publish_ok(t, "{\"seq\":101}").await;
        assert_eq!(cursor_seq(&c), 101);
        let bb = &b;
        wait_until(T, "oldest retained is 42", || async move {
            bb.all_events(t)
                .await
                .first()
                .map(|e| cursor_seq(e["cursor"].as_str().unwrap()))
                == Some(42)
        })
        .await;
        let s = b.sse(t, "", &[("last-event-id", &cs[5])]).await;
        let p = s.assert_problem(416);
        assert_eq!(p["lost"].as_u64(), Some(35), "events 7..=41 lost: {p}");
    })
    .await;
}
