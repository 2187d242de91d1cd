//! Where a stream starts: `from`, `cursor`, `X-Resume-Cursor`,
//! `Last-Event-ID` and their order; malformed positions (400) and cursors
//! that cannot be resumed (416, `on_gap=resume`).

use std::time::Duration;

use serde_json::Value;

use super::T;
use crate::support::*;

on_both_stores! {
    #[tokio::test]
    start_position_rules,
    #[tokio::test]
    malformed_start_positions_are_400,
    #[tokio::test]
    unresumable_cursors_are_416,
}

async fn start_position_rules(store: Store) {
    bounded(90, async {
        let b = Broker::start(store, &[]).await;
        let t = "start";
        let cs = b.publish_numbered(t, 1..6).await; // seq 1..=5
        let first_seq = |m: &Message| seq_of(&m.data);

        // from=earliest
        let mut s = b.sse(t, "from=earliest", &[]).await;
        let ms = s.expect_events(5, T).await;
        let ids: Vec<String> = ms.iter().map(msg_id).collect();
        assert_eq!(ids, cs, "from=earliest delivers everything in order");

        // cursor query
        let mut s = b.sse(t, &format!("cursor={}", cs[1]), &[]).await;
        assert_eq!(first_seq(&s.expect_event(T).await), 3);

        // X-Resume-Cursor beats cursor
        let mut s = b
            .sse(
                t,
                &format!("cursor={}", cs[1]),
                &[("x-resume-cursor", &cs[0])],
            )
            .await;
        assert_eq!(first_seq(&s.expect_event(T).await), 2);

        // Last-Event-ID beats both
        let mut s = b
            .sse(
                t,
                &format!("cursor={}&from=earliest", cs[1]),
                &[("x-resume-cursor", &cs[0]), ("last-event-id", &cs[2])],
            )
            .await;
        let m = s.expect_event(T).await;
        assert_eq!(first_seq(&m), 4);
        assert_eq!(msg_id(&m), cs[3]);

        // cursor beats from
        let mut s = b
            .sse(t, &format!("from=latest&cursor={}", cs[3]), &[])
            .await;
        assert_eq!(first_seq(&s.expect_event(T).await), 5);

        // seq-0 cursor: before the first event.
        let zero = with_seq(&cs[0], 0);
        let mut s = b.sse(t, &format!("cursor={zero}"), &[]).await;
        s.assert_ok();
        assert_eq!(first_seq(&s.expect_event(T).await), 1);

        // cursor of the latest event: nothing until the next publish.
        let mut at_latest = b.sse(t, "", &[("last-event-id", &cs[4])]).await;
        at_latest.assert_ok();

        // from=latest (also the default): only events published afterwards.
        let mut latest = b.sse(t, "from=latest", &[]).await;
        let mut default = b.sse(t, "", &[]).await;
        latest.assert_ok();
        default.assert_ok();
        // Make sure each stream has started (its opening retry is read).
        for s in [&mut latest, &mut default, &mut at_latest] {
            match s.next_item(T).await {
                Some(SseItem::Retry(_)) => {}
                Some(SseItem::Message(m)) if m.retry.is_some() => {
                    panic!("unexpected message before any publish: {m:?}")
                }
                other => panic!("expected the opening retry, got {other:?}"),
            }
        }
        let c6 = b.publish_ok(t, "{\"seq\":6}").await;
        for s in [&mut latest, &mut default, &mut at_latest] {
            let m = s.expect_event(T).await;
            assert_eq!(
                msg_id(&m),
                c6,
                "first event is the one published after subscribing"
            );
        }
    })
    .await;
}

async fn malformed_start_positions_are_400(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "malformed";
        let c = b.publish_ok(t, "x").await;
        let bads = [
            "garbage".to_string(),
            c.to_uppercase(),
            format!("{c},{c}"),
            format!("{}-{}", &c[..20], "zz"),
            c[..c.len() - 1].to_string() + "-",
            "x".repeat(65),
        ];
        for bad in &bads {
            let enc = bad.replace(',', "%2C");
            let s = b.sse(t, &format!("cursor={enc}"), &[]).await;
            assert_eq!(s.status, 400, "cursor={bad:?}: {}", s.error_text);
            s.assert_problem(400);
            let s = b.sse(t, "", &[("last-event-id", bad)]).await;
            s.assert_problem(400);
            let s = b.sse(t, "", &[("x-resume-cursor", bad)]).await;
            s.assert_problem(400);
            let r = b.history(t, &format!("cursor={enc}")).await;
            r.assert_problem(400);
        }
        for from in ["middle", "EARLIEST", "", "0"] {
            let s = b.sse(t, &format!("from={from}"), &[]).await;
            assert_eq!(s.status, 400, "from={from:?}: {}", s.error_text);
            s.assert_problem(400);
            let r = b.history(t, &format!("from={from}")).await;
            r.assert_problem(400);
        }
    })
    .await;
}

fn check_416(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    json: &Value,
    text: &str,
) -> (String, String) {
    assert_problem(
        416,
        reqwest::StatusCode::from_u16(status).unwrap(),
        headers,
        json,
        text,
    );
    let next = header_str(headers, "x-next-cursor").expect("X-Next-Cursor header on 416");
    let latest = header_str(headers, "x-latest-cursor").expect("X-Latest-Cursor header on 416");
    assert_cursor(&next);
    assert_cursor(&latest);
    assert_eq!(json["next_cursor"].as_str(), Some(next.as_str()), "{text}");
    assert_eq!(
        json["latest_cursor"].as_str(),
        Some(latest.as_str()),
        "{text}"
    );
    assert!(
        json.get("lost").is_some() && (json["lost"].is_null() || json["lost"].is_u64()),
        "problem has `lost` (number or null): {text}"
    );
    (next, latest)
}

async fn unresumable_cursors_are_416(store: Store) {
    bounded(90, async {
        let b = Broker::start(store, &[]).await;
        let t = "gone";
        let cs = b.publish_numbered(t, 1..6).await;

        // Another epoch, same sequence.
        let foreign = with_other_epoch(&cs[1]);
        for (query, headers) in [
            (format!("cursor={foreign}"), vec![]),
            (String::new(), vec![("last-event-id", foreign.as_str())]),
            (String::new(), vec![("x-resume-cursor", foreign.as_str())]),
        ] {
            let s = b.sse(t, &query, &headers).await;
            let (next, latest) =
                check_416(s.status.as_u16(), &s.headers, &s.error_json, &s.error_text);
            assert_eq!(latest, cs[4], "X-Latest-Cursor is the latest event");
            assert_eq!(
                cursor_epoch(&next),
                cursor_epoch(&cs[0]),
                "next cursor is of the live epoch"
            );
            // Resuming from X-Next-Cursor delivers every retained event.
            let mut r = b.sse(t, "", &[("last-event-id", &next)]).await;
            r.assert_ok();
            let ids: Vec<String> = r.expect_events(5, T).await.iter().map(msg_id).collect();
            assert_eq!(ids, cs, "X-Next-Cursor resumes with the least loss");
        }
        let r = b.history(t, &format!("cursor={foreign}")).await;
        check_416(r.status.as_u16(), &r.headers, &r.json, &r.text);

        // Ahead of the latest event.
        let ahead = with_seq(&cs[4], 99);
        let s = b.sse(t, &format!("cursor={ahead}"), &[]).await;
        let (_, latest) = check_416(s.status.as_u16(), &s.headers, &s.error_json, &s.error_text);
        assert_eq!(latest, cs[4]);
        let r = b.history(t, &format!("cursor={ahead}")).await;
        check_416(r.status.as_u16(), &r.headers, &r.json, &r.text);
        // Just one ahead is ahead too.
        let s = b
            .sse(t, &format!("cursor={}", with_seq(&cs[4], 6)), &[])
            .await;
        check_416(s.status.as_u16(), &s.headers, &s.error_json, &s.error_text);

        // on_gap=resume: 200, first event is `event: gap`, then the log.
        let mut s = b
            .sse(t, "on_gap=resume", &[("last-event-id", foreign.as_str())])
            .await;
        s.assert_ok();
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
        let g: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(g["requested"].as_str(), Some(foreign.as_str()), "{g}");
        let resumed_after = g["resumed_after"]
            .as_str()
            .expect("resumed_after")
            .to_string();
        assert_cursor(&resumed_after);
        assert!(g.get("lost").is_some(), "{g}");
        // If the notice carries an id (EventSource remembers it), resuming
        // from it must not hit the gap again.
        if let Some(id) = gap.id.as_deref() {
            assert_eq!(
                id, resumed_after,
                "gap notice id is where the stream resumed"
            );
        }
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, cs, "after the gap notice, the oldest retained onwards");
        let m = s.next_event(Duration::from_millis(500)).await;
        assert!(m.is_none(), "nothing more: {m:?}");
        let mut s = b.sse(t, "", &[("last-event-id", &resumed_after)]).await;
        s.assert_ok();
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(
            ids, cs,
            "resuming from resumed_after replays the retained log"
        );

        // on_gap=resume replaces the 416 of a cursor ahead of the log too.
        // Ahead in the same epoch means the log went back (issue 13): the
        // stream resumes after the last event stored no later than the
        // cursor's, which the client has (here the latest), so it neither
        // replays what it has nor skips what comes next.
        let mut s = b
            .sse(t, &format!("on_gap=resume&cursor={ahead}"), &[])
            .await;
        s.assert_ok();
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
        let g: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(g["requested"].as_str(), Some(ahead.as_str()), "{g}");
        assert_eq!(g["resumed_after"].as_str(), Some(cs[4].as_str()), "{g}");
        let next = b.publish_ok(t, "6").await;
        assert_eq!(
            msg_id(&s.expect_event(T).await),
            next,
            "nothing replayed, nothing skipped"
        );
    })
    .await;
}
