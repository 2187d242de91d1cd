//! Damage never turns into silent loss (issue 13), seen from a client of the
//! real binary: files are damaged between runs (a flipped byte in a middle
//! record, a garbage block over several records, a cut at an exact record
//! boundary, a page cache lost after a SIGKILL with `fsync = "never"`), and
//! every intact event is still read in order, while a resume from any
//! cursor a client could hold gets every later event or a `416` /
//! `event: gap` naming the loss. `sluice check` finds the damage.

use std::{path::Path, process::Command};

use super::T;
use crate::support::*;

on_embedded_store! {
    #[tokio::test]
    a_flipped_byte_in_a_middle_record_loses_that_event_only,
    #[tokio::test]
    a_garbage_block_over_several_records_keeps_the_records_after_it,
    #[tokio::test]
    a_cut_between_records_never_lets_an_old_cursor_skip_new_events,
    #[tokio::test]
    a_lost_page_cache_after_sigkill_gives_subscribers_a_gap_never_silence,
}

fn segment(data_dir: &Path, topic: &str) -> std::path::PathBuf {
    data_dir
        .join("topics")
        .join(topic)
        .join("00000000000000000001.log")
}

/// Where each record of a segment starts (`u32` length, `u32` CRC, body).
fn record_offsets(seg: &Path) -> Vec<usize> {
    let raw = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= raw.len() {
        out.push(at);
        at += 8 + u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

/// `sluice check --data-dir DIR`: exit code and stdout.
fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

/// Publishes `{"n":NNN}` for each `n`; returns the cursors.
async fn publish_fixed(b: &BrokerProcess, t: &str, ns: std::ops::Range<u32>) -> Vec<String> {
    let mut out = Vec::new();
    for n in ns {
        out.push(b.publish_ok(t, &format!("{{\"n\":{n:03}}}")).await);
    }
    out
}

/// A data directory where a broker stored `{"n":NNN}` for each `n` and
/// stopped: the topic's cursors.
async fn written(
    store: Store,
    t: &str,
    ns: std::ops::Range<u32>,
) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = BrokerProcess::start_in(store, dir.path(), &[]).await;
    let cursors = publish_fixed(&b, t, ns).await;
    assert!(b.stop().await.success());
    (dir, cursors)
}

fn datas(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_flipped_byte_in_a_middle_record_loses_that_event_only(store: Store) {
    bounded(120, async {
        let t = "flip";
        let (dir, old) = written(store, t, 1..6).await;
        assert_eq!(check(dir.path()).0, 0, "clean before the damage");
        let seg = segment(dir.path(), t);
        let offsets = record_offsets(&seg);
        let mut raw = std::fs::read(&seg).unwrap();
        raw[offsets[2] + 30] ^= 0x04;
        std::fs::write(&seg, raw).unwrap();
        let (code, out) = check(dir.path());
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("1 event(s) lost to damage at positions 3"),
            "{out}"
        );

        let mut b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        // A page stops before the lost position...
        let r = b.history(t, "from=earliest").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let evs = r.json["events"].as_array().unwrap();
        assert_eq!(datas(evs), ["{\"n\":001}", "{\"n\":002}"]);
        assert_eq!(r.json["next_cursor"], old[1].as_str(), "nothing renumbered");
        // ...and polling on is told of the loss, with where to go on.
        let r = b.history(t, &format!("cursor={}", old[1])).await;
        let p = r.assert_problem(416);
        assert_eq!(p["lost"], 1, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("damage"), "{p}");
        let next = r.header("x-next-cursor").unwrap();
        assert_eq!(cursor_seq(&next), 3);
        let r = b.history(t, &format!("cursor={next}")).await;
        assert_eq!(
            datas(r.json["events"].as_array().unwrap()),
            ["{\"n\":004}", "{\"n\":005}"]
        );
        assert_eq!(r.json["events"][0]["cursor"], old[3].as_str());

        // A stream from event 1 gets event 2, then ends (the client sees
        // the end); its reconnect from event 2 is refused, naming the loss.
        let mut s = b.sse(t, "", &[("last-event-id", &old[0])]).await;
        s.assert_ok();
        assert_eq!(msg_id(&s.expect_event(T).await), old[1]);
        assert!(
            matches!(s.next_item(T).await, Some(SseItem::Eof)),
            "stream ends at the loss"
        );
        b.sse(t, "", &[("last-event-id", &old[1])])
            .await
            .assert_problem(416);
        // With on_gap=resume: 2, the gap notice, 4, 5.
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", &old[0])])
            .await;
        assert_eq!(msg_id(&s.expect_event(T).await), old[1]);
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"));
        let notice: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
        assert_eq!(notice["lost"], 1, "{notice}");
        let rest: Vec<String> = s.expect_events(2, T).await.iter().map(msg_id).collect();
        assert_eq!(rest, old[3..5]);
        // Whoever held event 3 before the damage loses nothing.
        let mut s = b.sse(t, "", &[("last-event-id", &old[2])]).await;
        let got: Vec<String> = s.expect_events(2, T).await.iter().map(msg_id).collect();
        assert_eq!(got, old[3..5]);
        drop(s);

        let m = b.metrics().await;
        assert_eq!(m.value("sluice_store_damage_events_total"), 1.0);
        assert_eq!(
            m.value("sluice_store_recoveries_total"),
            0.0,
            "no new epoch"
        );
        let stderr = b.stderr_text();
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("ERROR") && l.contains("lost_events=1")),
            "{stderr}"
        );
        let new6 = b.publish_ok(t, "{\"n\":006}").await;
        assert_eq!(cursor_seq(&new6), 6);
        assert!(b.stop().await.success());
        drop(b);

        // Repaired: clean, the loss remembered, not counted again.
        let (code, out) = check(dir.path());
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("positions 3 were lost in an earlier repair"),
            "{out}"
        );
        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        assert_eq!(
            b.metrics().await.value("sluice_store_damage_events_total"),
            0.0
        );
        let r = b.history(t, &format!("cursor={}", old[2])).await;
        let got: Vec<String> = r.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(cursor_of)
            .collect();
        assert_eq!(got, [old[3].clone(), old[4].clone(), new6]);
    })
    .await;
}

async fn a_garbage_block_over_several_records_keeps_the_records_after_it(store: Store) {
    bounded(120, async {
        let t = "garbage";
        let (dir, old) = written(store, t, 1..11).await;
        let seg = segment(dir.path(), t);
        let offsets = record_offsets(&seg);
        let mut raw = std::fs::read(&seg).unwrap();
        // From inside record 4 to inside record 7.
        for (i, byte) in raw[offsets[3] + 5..offsets[6] + 9].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        std::fs::write(&seg, raw).unwrap();
        let (code, out) = check(dir.path());
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("positions 4-7"), "{out}");

        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let r = b.history(t, &format!("cursor={}", old[2])).await;
        let p = r.assert_problem(416);
        assert_eq!(p["lost"], 4, "{p}");
        let next = r.header("x-next-cursor").unwrap();
        let r = b.history(t, &format!("cursor={next}")).await;
        let got: Vec<String> = r.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(cursor_of)
            .collect();
        assert_eq!(got, old[7..10], "records 8-10 kept, at their positions");
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", &old[1])])
            .await;
        assert_eq!(msg_id(&s.expect_event(T).await), old[2]);
        let gap = s.expect_event(T).await;
        let notice: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
        assert_eq!(
            (gap.event.as_deref(), &notice["lost"]),
            (Some("gap"), &serde_json::json!(4))
        );
        let rest: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(rest, old[7..10]);
        assert_eq!(
            b.metrics().await.value("sluice_store_damage_events_total"),
            4.0
        );
    })
    .await;
}

async fn a_cut_between_records_never_lets_an_old_cursor_skip_new_events(store: Store) {
    bounded(120, async {
        let t = "boundary";
        let (dir, old) = written(store, t, 1..7).await;
        // Two whole records off the end: the file looks like a shorter log.
        let seg = segment(dir.path(), t);
        let offsets = record_offsets(&seg);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(offsets[4] as u64).unwrap();
        drop(f);

        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        // Before anything new: the old cursor 6 is ahead of the log.
        let r = b.history(t, &format!("cursor={}", old[5])).await;
        r.assert_problem(416);
        assert_eq!(r.header("x-next-cursor").as_deref(), Some(old[3].as_str()));
        // Positions 5 and 6 go to new events...
        let new = publish_fixed(&b, t, 105..108).await;
        assert_eq!(cursor_seq(&new[0]), 5);
        // ...so the old cursors 5 and 6 name other events now: refused,
        // pointing at event 4, the last one both logs share.
        for c in &old[4..6] {
            let r = b.history(t, &format!("cursor={c}")).await;
            let p = r.assert_problem(416);
            assert!(p["detail"].as_str().unwrap().contains("recovery"), "{p}");
            assert_eq!(r.header("x-next-cursor").as_deref(), Some(old[3].as_str()));
            b.sse(t, "", &[("last-event-id", c)])
                .await
                .assert_problem(416);
        }
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", &old[5])])
            .await;
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"));
        let got: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, new, "every new event, none skipped");
        // The old cursor 4 still names its event.
        let mut s = b.sse(t, "", &[("last-event-id", &old[3])]).await;
        let got: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, new);
    })
    .await;
}

async fn a_lost_page_cache_after_sigkill_gives_subscribers_a_gap_never_silence(store: Store) {
    bounded(180, async {
        let dir = tempfile::tempdir().unwrap();
        let t = "pagecache";
        let env = [("SLUICE__EMBEDDED__FSYNC", "never")];
        let mut b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let mut sub = b.sse(t, "from=earliest", &[]).await;
        sub.assert_ok();
        let seg = segment(dir.path(), t);
        let mut acked = publish_fixed(&b, t, 0..40).await;
        // What an fdatasync now would keep: all the OS is sure to have.
        let synced = std::fs::metadata(&seg).unwrap().len();
        // Publishing goes on (the last ones unanswered) while it is killed.
        let publisher = {
            let base = b.base_url();
            let t = t.to_owned();
            tokio::spawn(async move {
                let client = http_client();
                let mut out = Vec::new();
                for n in 40..400u32 {
                    let r = client
                        .post(format!("{base}/v1/topics/{t}/events"))
                        .body(format!("{{\"n\":{n:03}}}"))
                        .send()
                        .await;
                    let Ok(r) = r else { break };
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        break;
                    };
                    out.push(v["cursor"].as_str().unwrap().to_owned());
                }
                out
            })
        };
        // The subscriber sees events past what will survive.
        let seen: Vec<String> = sub.expect_events(60, T).await.iter().map(msg_id).collect();
        b.kill9().await;
        drop(b);
        acked.extend(publisher.await.unwrap());
        let last_seen = seen.last().unwrap().clone();
        // The page cache is lost: the file is what the fdatasync kept.
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(synced).unwrap();
        drop(f);

        let b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let kept: Vec<String> = b.all_events(t).await.iter().map(cursor_of).collect();
        assert!(
            kept.len() < 60,
            "the cut removed what the subscriber saw last"
        );
        publish_fixed(&b, t, 500..505).await;
        let after = b.all_events(t).await;
        // The subscriber's reconnect: never a silent 200.
        let s = b.sse(t, "", &[("last-event-id", &last_seen)]).await;
        assert_eq!(s.status, 416, "the subscriber is told: {}", s.error_text);
        let next = s.header("x-next-cursor").unwrap();
        drop(s);
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", &last_seen)])
            .await;
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"));
        // From the gap on, every event the log holds after `next`, in order.
        let want: Vec<String> = after
            .iter()
            .map(cursor_of)
            .filter(|c| cursor_seq(c) > cursor_seq(&next))
            .collect();
        let got: Vec<String> = s
            .expect_events(want.len(), T)
            .await
            .iter()
            .map(msg_id)
            .collect();
        assert_eq!(got, want);
        // No acknowledged cursor names an event it was not given for: a
        // poll from it either resumes from that very event or is refused.
        let by_seq: std::collections::HashMap<u64, String> = after
            .iter()
            .map(|e| {
                (
                    cursor_seq(&cursor_of(e)),
                    e["data"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (i, c) in acked.iter().enumerate() {
            let r = b.history(t, &format!("cursor={c}&limit=1")).await;
            match r.status.as_u16() {
                200 => assert_eq!(
                    by_seq.get(&cursor_seq(c)),
                    Some(&format!("{{\"n\":{i:03}}}")),
                    "cursor {c} resumed, so its position must hold its event"
                ),
                416 => {}
                s => panic!("cursor {c}: {s} {}", r.text),
            }
        }
    })
    .await;
}
