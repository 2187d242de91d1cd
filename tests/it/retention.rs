//! Retention by count, age and bytes, and what a cursor older than retention
//! gets (416, X-Next-Cursor, on_gap=resume). Many segments across a restart:
//! `crash::segments`.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

on_both_stores! {
    #[tokio::test]
    max_events_keeps_the_last_ones,
    #[tokio::test]
    max_age_expires_events,
    #[tokio::test]
    max_bytes_bounds_the_log,
}

const T: Duration = Duration::from_secs(15);

async fn max_events_keeps_the_last_ones(store: Store) {
    bounded(90, async {
        let b = Broker::start(store, &[("SLUICE__RETENTION__MAX_EVENTS", "10")]).await;
        let t = "count";
        let cs = b.publish_numbered(t, 1..26).await; // seq 1..=25, cs[i] is seq i+1
        let bb = &b;
        wait_until(T, "history holds exactly the last 10", || async move {
            bb.count(t).await == 10
        })
        .await;
        let hist = b.all_events(t).await;
        let ids: Vec<String> = hist.iter().map(cursor_of).collect();
        assert_eq!(ids, cs[15..].to_vec(), "the last 10 events, in order");

        let r = b.get(&format!("/v1/topics/{t}")).await;
        assert_eq!(r.json["retained"], 10, "{}", r.text);
        assert_eq!(
            r.json["oldest_cursor"].as_str(),
            Some(cs[15].as_str()),
            "{}",
            r.text
        );
        assert_eq!(
            r.json["latest_cursor"].as_str(),
            Some(cs[24].as_str()),
            "{}",
            r.text
        );

        // The cursor of event 3 is older than retention: 416.
        let s = b.sse(t, "", &[("last-event-id", &cs[2])]).await;
        let p = s.assert_problem(416).clone();
        let next = s.header("x-next-cursor").expect("X-Next-Cursor");
        let latest = s.header("x-latest-cursor").expect("X-Latest-Cursor");
        assert_eq!(latest, cs[24]);
        assert_eq!(p["next_cursor"].as_str(), Some(next.as_str()));
        assert_eq!(p["latest_cursor"].as_str(), Some(latest.as_str()));
        assert_eq!(p["lost"].as_u64(), Some(12), "events 4..=15 were lost: {p}");
        assert_eq!(cursor_epoch(&next), cursor_epoch(&cs[0]));
        assert!(
            cursor_seq(&next) < 16,
            "next cursor is before the oldest retained"
        );

        // The history poll says the same.
        let r = b.history(t, &format!("cursor={}", cs[2])).await;
        r.assert_problem(416);
        assert_eq!(r.header("x-next-cursor").as_deref(), Some(next.as_str()));
        assert_eq!(r.json["lost"].as_u64(), Some(12), "{}", r.text);

        // Resuming from X-Next-Cursor delivers exactly the 10 retained events.
        for (q, h) in [
            (format!("cursor={next}"), vec![]),
            (String::new(), vec![("last-event-id", next.as_str())]),
        ] {
            let mut s = b.sse(t, &q, &h).await;
            s.assert_ok();
            let got: Vec<String> = s.expect_events(10, T).await.iter().map(msg_id).collect();
            assert_eq!(got, cs[15..].to_vec());
            s.expect_no_event(Duration::from_millis(500)).await;
        }
        let r = b.history(t, &format!("cursor={next}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let got: Vec<String> = r.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(cursor_of)
            .collect();
        assert_eq!(got, cs[15..].to_vec());

        // The oldest retained cursor itself is fine: nothing lost after it.
        let mut s = b.sse(t, &format!("cursor={}", cs[15]), &[]).await;
        s.assert_ok();
        assert_eq!(msg_id(&s.expect_event(T).await), cs[16]);
        // And so is the one just before it (event 15): event 16 follows.
        let mut s = b.sse(t, &format!("cursor={}", cs[14]), &[]).await;
        s.assert_ok();
        assert_eq!(msg_id(&s.expect_event(T).await), cs[15]);

        // on_gap=resume: a gap notice, then the 10 retained events.
        let mut live = Vec::new();
        for (q, h) in [
            (format!("on_gap=resume&cursor={}", cs[2]), vec![]),
            (
                "on_gap=resume".to_string(),
                vec![("last-event-id", cs[2].as_str())],
            ),
        ] {
            let mut s = b.sse(t, &q, &h).await;
            s.assert_ok();
            let gap = s.expect_event(T).await;
            assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
            let g: Value = serde_json::from_str(&gap.data).expect("gap data JSON");
            assert_eq!(g["requested"].as_str(), Some(cs[2].as_str()), "{g}");
            assert_eq!(g["lost"].as_u64(), Some(12), "{g}");
            let ra = g["resumed_after"].as_str().expect("resumed_after");
            assert_eq!(cursor_seq(ra), 15, "resumed after event 15: {g}");
            assert_eq!(cursor_epoch(ra), cursor_epoch(&cs[0]));
            let got: Vec<String> = s.expect_events(10, T).await.iter().map(msg_id).collect();
            assert_eq!(got, cs[15..].to_vec());
            live.push(s);
        }
        // Live afterwards.
        let c = b.publish_ok(t, "{\"seq\":26}").await;
        for s in live.iter_mut() {
            assert_eq!(msg_id(&s.expect_event(T).await), c);
        }
        // on_gap=resume when nothing is lost changes nothing.
        let mut s = b
            .sse(t, &format!("on_gap=resume&cursor={}", cs[23]), &[])
            .await;
        s.assert_ok();
        let m = s.expect_event(T).await;
        assert_eq!(m.event, None, "no gap notice without a gap: {m:?}");
        assert_eq!(msg_id(&m), cs[24]);
    })
    .await;
}

async fn max_age_expires_events(store: Store) {
    bounded(90, async {
        let b = Broker::start(store, &[("SLUICE__RETENTION__MAX_AGE_SECS", "2")]).await;
        let t = "age";
        let cs = b.publish_numbered(t, 1..4).await;
        let bb = &b;
        wait_until(
            Duration::from_secs(30),
            "every event expired",
            || async move { bb.count(t).await == 0 },
        )
        .await;
        wait_until(T, "topic info retained = 0", || async move {
            bb.get(&format!("/v1/topics/{t}")).await.json["retained"] == 0
        })
        .await;

        // The topic still knows where it is: the next event is 4.
        let c4 = b.publish_ok(t, "{\"seq\":4}").await;
        assert_eq!(cursor_seq(&c4), 4);
        assert_eq!(cursor_epoch(&c4), cursor_epoch(&cs[0]));
        // Resuming after event 3 lost nothing.
        let mut s = b.sse(t, "", &[("last-event-id", &cs[2])]).await;
        s.assert_ok();
        assert_eq!(msg_id(&s.expect_event(T).await), c4);
        // Resuming after event 1 lost 2 and 3: 416 (if 4 has not expired yet,
        // X-Next-Cursor resumes right before it).
        let s = b.sse(t, "", &[("last-event-id", &cs[0])]).await;
        s.assert_problem(416);
        assert!(s.header("x-next-cursor").is_some());
        assert_eq!(s.header("x-latest-cursor").as_deref(), Some(c4.as_str()));
    })
    .await;
}

async fn max_bytes_bounds_the_log(store: Store) {
    bounded(90, async {
        let b = Broker::start(
            store,
            &[
                ("SLUICE__RETENTION__MAX_BYTES", "2000"),
                ("SLUICE__EMBEDDED__SEGMENT_BYTES", "4096"),
            ],
        )
        .await;
        let t = "bytes";
        let mut cs = Vec::new();
        for i in 0..50 {
            let body = format!("{i:03}{}", "x".repeat(97));
            assert_eq!(body.len(), 100);
            cs.push(b.publish_ok(t, &body).await);
        }
        let bb = &b;
        let hist = wait_for(
            T,
            "at most 20 events of 100 bytes retained",
            || async move {
                let h = bb.all_events(t).await;
                (h.len() <= 20).then_some(h)
            },
        )
        .await;
        assert!(!hist.is_empty(), "the newest event is kept");
        let ids: Vec<String> = hist.iter().map(cursor_of).collect();
        assert_eq!(
            ids,
            cs[50 - ids.len()..].to_vec(),
            "retention keeps a contiguous newest suffix"
        );
    })
    .await;
}
