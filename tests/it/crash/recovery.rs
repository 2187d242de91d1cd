//! A cursor never names two events (issue 13): when recovery removes stored
//! events (here a tail cut into acknowledged records, as a crash with
//! `fsync = "never"` or damage leaves it), the log goes on under a new
//! epoch. What a client sees: cursors up to the last kept event still
//! resume exactly; a cursor past it gets `416` (or, with `on_gap=resume`,
//! an `event: gap`) pointing at the last kept event, never silence.

use super::T;
use crate::support::*;

on_embedded_store! {
    #[tokio::test]
    a_cut_into_acknowledged_events_never_reuses_their_cursors,
}

fn segment(data_dir: &std::path::Path, topic: &str) -> std::path::PathBuf {
    data_dir
        .join("topics")
        .join(topic)
        .join("00000000000000000001.log")
}

async fn a_cut_into_acknowledged_events_never_reuses_their_cursors(store: Store) {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let t = "cut";
        let mut b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let old = b.publish_numbered(t, 1..6).await;
        assert!(b.stop().await.success());
        drop(b);
        // Ten bytes off the last record: event 5, acknowledged, is lost.
        let seg = segment(dir.path(), t);
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();

        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let kept: Vec<String> = b.all_events(t).await.iter().map(cursor_of).collect();
        assert_eq!(kept.len(), 4, "events 1-4 are intact: {kept:?}");
        let epoch = cursor_epoch(&kept[0]).to_owned();
        assert_ne!(epoch, cursor_epoch(&old[0]));

        let m = b.metrics().await;
        assert_eq!(m.value("sluice_store_recoveries_total"), 1.0);
        assert!(m.value("sluice_store_damage_bytes_total") > 0.0);
        let stderr = b.stderr_text();
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("WARN") && l.contains("kept_through_seq=4")),
            "the recovery is logged with where the log was kept:\n{stderr}"
        );

        // The lost event's cursor: refused, pointing at the last kept one.
        let r = b.history(t, &format!("cursor={}", old[4])).await;
        let p = r.assert_problem(416);
        assert!(
            p["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("recovery"),
            "{p}"
        );
        assert_eq!(r.header("x-next-cursor").as_deref(), Some(kept[3].as_str()));
        let s = b.sse(t, "", &[("last-event-id", &old[4])]).await;
        s.assert_problem(416);

        // Position 5 is taken again, by a new event under the new epoch.
        let new5 = b.publish_ok(t, "{\"seq\":55}").await;
        assert_eq!(cursor_seq(&new5), 5);
        assert_eq!(cursor_epoch(&new5), epoch);
        assert_ne!(new5, old[4], "no cursor names two events");

        // Still refused after the new event 5 exists: the old cursor 5
        // named another event.
        let s = b.sse(t, "", &[("last-event-id", &old[4])]).await;
        s.assert_problem(416);
        let r = b.history(t, &format!("cursor={}", old[4])).await;
        r.assert_problem(416);

        // The old cursor 4 names an event that was kept: it resumes and
        // gets the new event 5.
        let mut s = b.sse(t, "", &[("last-event-id", &old[3])]).await;
        s.assert_ok();
        let m = s.expect_event(T).await;
        assert_eq!((msg_id(&m), &*m.data), (new5.clone(), "{\"seq\":55}"));
        drop(s);

        // on_gap=resume: the loss is reported, then the stream goes on
        // after the last kept event.
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", &old[4])])
            .await;
        s.assert_ok();
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"));
        let notice: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
        assert_eq!(notice["requested"], old[4].as_str());
        assert_eq!(notice["resumed_after"], kept[3].as_str());
        let m = s.expect_event(T).await;
        assert_eq!(msg_id(&m), new5);
        drop(s);

        // A second restart cuts nothing: the epoch stays.
        let mut b = b;
        assert!(b.stop().await.success());
        drop(b);
        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let after: Vec<String> = b.all_events(t).await.iter().map(cursor_of).collect();
        let mut want = kept.clone();
        want.push(new5);
        assert_eq!(after, want);
    })
    .await;
}
