//! Crash safety and restarts: SIGKILL mid-stream loses no acknowledged event,
//! a torn tail is cut on start, SIGTERM closes streams cleanly, a wiped log
//! gets a new epoch.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(15);
/// Explicit, although it is the default: the tests rely on it.
const FSYNC: (&str, &str) = ("SLUICE__EMBEDDED__FSYNC", "always");

fn cursor_of(ev: &Value) -> String {
    ev["cursor"].as_str().expect("cursor").to_string()
}

fn data_of(ev: &Value) -> String {
    ev["data"].as_str().expect("data").to_string()
}

/// A publisher that publishes `{"p":tag,"seq":i}` until its first failure
/// (the broker died), recording every acknowledged (cursor, data).
async fn publish_until_error(
    base: String,
    topic: String,
    tag: &'static str,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    count: Arc<AtomicUsize>,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0u64.. {
        let data = format!("{{\"p\":\"{tag}\",\"seq\":{i}}}");
        let r = client
            .post(format!("{base}/v1/topics/{topic}/events"))
            .body(data.clone())
            .send()
            .await;
        let Ok(r) = r else { return };
        if r.status() != 201 {
            return;
        }
        let Ok(v) = r.json::<Value>().await else {
            return;
        };
        let c = v["cursor"].as_str().expect("cursor").to_string();
        acked.lock().unwrap().push((c, data));
        count.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    bounded(120, sigkill_mid_stream("always")).await;
}

/// A broker crash alone (not the machine) loses nothing whatever the fsync
/// policy: the OS still has every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync_interval_loses_nothing() {
    bounded(120, sigkill_mid_stream("interval")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync_never_loses_nothing() {
    bounded(120, sigkill_mid_stream("never")).await;
}

async fn sigkill_mid_stream(fsync: &'static str) {
    {
        let dir = tempfile::tempdir().unwrap();
        let env = [("SLUICE__EMBEDDED__FSYNC", fsync)];
        let mut b = Broker::start_in(dir.path(), &env).await;
        let t = "crash";

        let acked_a = Arc::new(Mutex::new(Vec::new()));
        let acked_b = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let pa = tokio::spawn(publish_until_error(
            b.base_url(),
            t.into(),
            "a",
            acked_a.clone(),
            count.clone(),
        ));
        let pb = tokio::spawn(publish_until_error(
            b.base_url(),
            t.into(),
            "b",
            acked_b.clone(),
            count.clone(),
        ));

        // A live subscriber reads along.
        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let mut seen: Vec<(String, String)> = Vec::new();
        while seen.len() < 100 {
            let m = s.expect_event(T).await;
            seen.push((msg_id(&m), m.data.to_string()));
        }
        let c2 = count.clone();
        wait_until(T, "500 acknowledged publishes", || {
            let c = c2.clone();
            async move { c.load(Ordering::SeqCst) >= 500 }
        })
        .await;

        b.kill9().await;
        tokio::time::timeout(T, pa)
            .await
            .expect("publisher a stops")
            .unwrap();
        tokio::time::timeout(T, pb)
            .await
            .expect("publisher b stops")
            .unwrap();
        // Drain what the subscriber had received before the crash.
        while let Some(m) = s.next_event(Duration::from_secs(2)).await {
            seen.push((msg_id(&m), m.data.to_string()));
        }
        drop(s);
        let acked_a = acked_a.lock().unwrap().clone();
        let acked_b = acked_b.lock().unwrap().clone();
        assert!(acked_a.len() + acked_b.len() >= 500);

        let b2 = Broker::start_in(dir.path(), &env).await;
        let hist = b2.all_events(t).await;
        let hist_pairs: Vec<(String, String)> =
            hist.iter().map(|e| (cursor_of(e), data_of(e))).collect();
        eprintln!(
            "sigkill (fsync {fsync}): acked a={} b={}, delivered before the crash={}, in the log after restart={}",
            acked_a.len(),
            acked_b.len(),
            seen.len(),
            hist_pairs.len()
        );
        // Strictly increasing cursors, consecutive sequences from 1.
        for (i, (c, _)) in hist_pairs.iter().enumerate() {
            assert_eq!(
                cursor_seq(c),
                i as u64 + 1,
                "consecutive positions after restart"
            );
            if i > 0 {
                assert!(hist_pairs[i - 1].0 < *c, "cursor order");
            }
        }
        let index: std::collections::HashMap<&str, &str> = hist_pairs
            .iter()
            .map(|(c, d)| (c.as_str(), d.as_str()))
            .collect();
        for (c, d) in acked_a.iter().chain(acked_b.iter()) {
            assert_eq!(
                index.get(c.as_str()).copied(),
                Some(d.as_str()),
                "acknowledged event {c} {d} lost or changed after SIGKILL"
            );
        }
        for (c, d) in &seen {
            assert_eq!(
                index.get(c.as_str()).copied(),
                Some(d.as_str()),
                "event {c} delivered before the crash is not in the log after it"
            );
        }
        // Each publisher's events are in its order, without holes up to the
        // last acknowledged one.
        for (tag, acked) in [("a", &acked_a), ("b", &acked_b)] {
            let seqs: Vec<u64> = hist_pairs
                .iter()
                .filter_map(|(_, d)| {
                    let v: Value = serde_json::from_str(d).ok()?;
                    (v["p"] == tag).then(|| v["seq"].as_u64().unwrap())
                })
                .collect();
            assert!(
                seqs.len() >= acked.len(),
                "{tag}: {} stored < {} acked",
                seqs.len(),
                acked.len()
            );
            assert_eq!(
                seqs,
                (0..seqs.len() as u64).collect::<Vec<_>>(),
                "publisher {tag} order"
            );
        }

        // The subscriber resumes from its last id: exactly the rest.
        let last = seen.last().unwrap().0.clone();
        let pos = hist_pairs.iter().position(|(c, _)| *c == last).unwrap();
        let rest = &hist_pairs[pos + 1..];
        let mut s = b2.sse(t, "", &[("last-event-id", &last)]).await;
        s.assert_ok();
        let got: Vec<(String, String)> = s
            .expect_events(rest.len(), T)
            .await
            .iter()
            .map(|m| (msg_id(m), m.data.to_string()))
            .collect();
        assert_eq!(got, rest, "resume after the crash: no gap, no duplicate");
        // Publishing continues the same log.
        let c = b2.publish_ok(t, "after").await;
        assert_eq!(cursor_seq(&c), hist_pairs.len() as u64 + 1);
        assert_eq!(
            cursor_epoch(&c),
            cursor_epoch(&hist_pairs[0].0),
            "same epoch after restart"
        );
        let m = s.expect_event(T).await;
        assert_eq!(msg_id(&m), c);
    }
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

async fn torn_tail(garbage: Vec<u8>) {
    if common::embedded_only("torn-tail repair of segment files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = "torn";
    let mut b = Broker::start_in(dir.path(), &[FSYNC]).await;
    let cs = b.publish_numbered(t, 1..11).await;
    let st = b.stop().await;
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    drop(b);

    let seg = last_segment(dir.path(), t);
    append(&seg, &garbage);

    let b = Broker::start_in(dir.path(), &[FSYNC]).await;
    let hist = b.all_events(t).await;
    let got: Vec<String> = hist.iter().map(cursor_of).collect();
    assert_eq!(got, cs, "every complete event survives, nothing else");
    for (i, e) in hist.iter().enumerate() {
        assert_eq!(seq_of(&data_of(e)), i as u64 + 1);
    }
    let stderr = b.stderr_text();
    assert!(
        stderr.lines().any(|l| {
            let l = l.to_lowercase();
            l.contains("warn") && (l.contains("torn") || l.contains("truncat"))
        }),
        "a WARN line mentioning the torn tail is logged; stderr:\n{stderr}"
    );
    // The tail was cut on disk (or at least will be overwritten correctly):
    // new publishes continue the sequence and survive another restart.
    let r = b.get(&format!("/v1/topics/{t}")).await;
    assert_eq!(r.json["retained"], 10, "{}", r.text);
    assert_eq!(
        r.json["latest_cursor"].as_str(),
        Some(cs[9].as_str()),
        "{}",
        r.text
    );
    let c11 = b.publish_ok(t, "{\"seq\":11}").await;
    assert_eq!(cursor_seq(&c11), 11);
    assert!(c11 > cs[9]);
    assert_eq!(cursor_epoch(&c11), cursor_epoch(&cs[0]));
    let mut s = b.sse(t, "", &[("last-event-id", &cs[4])]).await;
    let ids: Vec<String> = s.expect_events(6, T).await.iter().map(msg_id).collect();
    assert_eq!(&ids[..5], &cs[5..]);
    assert_eq!(ids[5], c11);
    drop(s);
    let mut b = b;
    assert!(b.stop().await.success());
    drop(b);

    let b = Broker::start_in(dir.path(), &[FSYNC]).await;
    let hist = b.all_events(t).await;
    let mut want = cs.clone();
    want.push(c11);
    assert_eq!(
        hist.iter().map(cursor_of).collect::<Vec<_>>(),
        want,
        "after a second restart"
    );
}

#[tokio::test]
async fn torn_tail_is_cut_on_restart() {
    // A length field saying 1000, then only 10 bytes of the record.
    let mut g = 1000u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    g.extend_from_slice(b"0123456789");
    bounded(90, torn_tail(g)).await;
}

#[tokio::test]
async fn torn_header_is_cut_on_restart() {
    // Only three bytes of a length field.
    bounded(90, torn_tail(vec![0x10, 0x00, 0x00])).await;
}

#[tokio::test]
async fn bad_crc_tail_record_is_cut_on_restart() {
    // A complete record whose body was not fully written (zeros) so the CRC
    // does not match.
    let body = [0u8; 10];
    let mut g = (body.len() as u32).to_le_bytes().to_vec();
    let crc = crc32fast::hash(b"0123456789");
    g.extend_from_slice(&crc.to_le_bytes());
    g.extend_from_slice(&body);
    bounded(90, torn_tail(g)).await;
}

#[tokio::test]
async fn sigterm_closes_streams_cleanly_and_exits_zero() {
    bounded(60, async {
        let mut b = Broker::start(&[
            ("SLUICE__SHUTDOWN_GRACE_SECS", "5"),
            ("SLUICE__STREAM__HEARTBEAT_SECS", "1"),
        ])
        .await;
        let t = "term";
        let c = b.publish_ok(t, "one").await;
        let mut s1 = b.sse(t, "from=earliest", &[]).await;
        let mut s2 = b.sse("term-idle", "", &[]).await;
        s1.assert_ok();
        s2.assert_ok();
        assert_eq!(msg_id(&s1.expect_event(T).await), c);
        // s2 is started (its retry frame arrived).
        assert!(s2.next_item(T).await.is_some());

        let started = tokio::time::Instant::now();
        b.terminate();
        for (name, s) in [("s1", &mut s1), ("s2", &mut s2)] {
            let end = loop {
                match s.next_item(Duration::from_secs(8)).await {
                    None => panic!("{name}: stream still open 8 s after SIGTERM"),
                    Some(SseItem::Message(m)) => {
                        panic!("{name}: unexpected event during shutdown: {m:?}")
                    }
                    Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => continue,
                    Some(end) => break end,
                }
            };
            assert_eq!(
                end,
                SseItem::Eof,
                "{name}: stream must end cleanly, not reset"
            );
        }
        let st = b
            .wait_exit(Duration::from_secs(8))
            .await
            .expect("process exits within shutdown_grace_secs after SIGTERM");
        assert_eq!(st.code(), Some(0), "exit status 0 on SIGTERM: {st:?}");
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "took {:?} for a 5 s grace",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn graceful_restart_keeps_cursors_and_resume() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let t = "restart";
        let mut b = Broker::start_in(dir.path(), &[]).await;
        let cs = b.publish_numbered(t, 1..21).await;
        let r = b
            .publish(t, "{\"seq\":21}", &[("idempotency-key", "k21")])
            .await;
        assert_eq!(r.status, 201);
        let c21 = r.cursor();
        let r = b
            .publish(
                t,
                "{\"seq\":22}",
                &[("producer-id", "p"), ("producer-seq", "1")],
            )
            .await;
        assert_eq!(r.status, 201);
        let c22 = r.cursor();
        assert!(b.stop().await.success(), "clean exit on SIGTERM");
        drop(b);

        let b = Broker::start_in(dir.path(), &[]).await;
        let hist = b.all_events(t).await;
        let mut want = cs.clone();
        want.push(c21.clone());
        want.push(c22.clone());
        assert_eq!(hist.iter().map(cursor_of).collect::<Vec<_>>(), want);

        let mut s = b.sse(t, "", &[("last-event-id", &cs[9])]).await;
        s.assert_ok();
        let ms = s.expect_events(12, T).await;
        assert_eq!(seq_of(&ms[0].data), 11);
        assert_eq!(msg_id(&ms[11]), c22);

        // Dedup state survives the restart (within the window).
        let r = b
            .publish(t, "{\"seq\":21}", &[("idempotency-key", "k21")])
            .await;
        assert_eq!(
            r.status, 200,
            "idempotency key remembered across restart: {}",
            r.text
        );
        assert_eq!(r.cursor(), c21);
        let r = b
            .publish(
                t,
                "{\"seq\":22}",
                &[("producer-id", "p"), ("producer-seq", "1")],
            )
            .await;
        assert_eq!(
            r.status, 200,
            "producer sequence remembered across restart: {}",
            r.text
        );
        let r = b
            .publish(
                t,
                "{\"seq\":23}",
                &[("producer-id", "p"), ("producer-seq", "3")],
            )
            .await;
        assert_eq!(
            r.status, 409,
            "producer high-water mark survives restart: {}",
            r.text
        );

        let c23 = b.publish_ok(t, "{\"seq\":23}").await;
        assert_eq!(cursor_seq(&c23), 23);
        assert!(c23 > c22, "cursors keep increasing across a restart");
        assert_eq!(cursor_epoch(&c23), cursor_epoch(&c22));
        assert_eq!(msg_id(&s.expect_event(T).await), c23);
    })
    .await;
}

#[tokio::test]
async fn wiped_log_gets_a_new_epoch() {
    if common::embedded_only("wiping the data directory") {
        return;
    }
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let t = "wiped";
        let mut b = Broker::start_in(dir.path(), &[]).await;
        let old = b.publish_numbered(t, 1..6).await;
        assert!(b.stop().await.success());
        drop(b);
        std::fs::remove_dir_all(topic_dir(dir.path(), t)).unwrap();

        let b = Broker::start_in(dir.path(), &[]).await;
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

/// SIGTERM while publishers are busy: every publish that got a 201 before the
/// process went away is in the log after a restart, and the exit is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_publishing_keeps_every_acknowledged_event() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let env = [("SLUICE__SHUTDOWN_GRACE_SECS", "5")];
        let mut b = Broker::start_in(dir.path(), &env).await;
        let t = "termpub";
        let acked_a = Arc::new(Mutex::new(Vec::new()));
        let acked_b = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let pa = tokio::spawn(publish_until_error(
            b.base_url(),
            t.into(),
            "a",
            acked_a.clone(),
            count.clone(),
        ));
        let pb = tokio::spawn(publish_until_error(
            b.base_url(),
            t.into(),
            "b",
            acked_b.clone(),
            count.clone(),
        ));
        let c2 = count.clone();
        wait_until(T, "300 acknowledged publishes", || {
            let c = c2.clone();
            async move { c.load(Ordering::SeqCst) >= 300 }
        })
        .await;
        b.terminate();
        let st = b
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exit within the grace period");
        assert_eq!(st.code(), Some(0), "{st:?}");
        tokio::time::timeout(T, pa)
            .await
            .expect("publisher a stops")
            .unwrap();
        tokio::time::timeout(T, pb)
            .await
            .expect("publisher b stops")
            .unwrap();
        drop(b);

        let b = Broker::start_in(dir.path(), &env).await;
        let hist = b.all_events(t).await;
        let index: std::collections::HashMap<String, String> =
            hist.iter().map(|e| (cursor_of(e), data_of(e))).collect();
        for (c, d) in acked_a
            .lock()
            .unwrap()
            .iter()
            .chain(acked_b.lock().unwrap().iter())
        {
            assert_eq!(
                index.get(c),
                Some(d),
                "acknowledged {c} {d} missing after SIGTERM"
            );
        }
        for (i, e) in hist.iter().enumerate() {
            assert_eq!(cursor_seq(&cursor_of(e)), i as u64 + 1);
        }
    })
    .await;
}
