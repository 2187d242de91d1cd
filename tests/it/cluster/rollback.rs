//! A Redis restarted from an older AOF than the one the brokers saw (issue
//! 13): the log keeps its epoch but goes back, and its positions are handed
//! out again to new events. No cursor may name two events: streams open on
//! the old positions end (the client sees the end), and every old cursor
//! past what survived gets `416` (or `event: gap`) pointing at the last
//! event both logs share; no new event is skipped.

use super::*;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_redis_restored_from_an_older_aof_never_lets_a_cursor_name_two_events() {
    bounded(150, async {
        let mut redis = RedisServer::start().await;
        let a = instance(&redis, &[]).await;
        let b = instance(&redis, &[]).await;
        let t = topic("rollback");
        let mut old = a.publish_numbered(&t, 1..6).await;
        // The AOF as it is now (appendfsync always: every acknowledged
        // publish is in it): what an older backup holds.
        let aof = redis.dir().join("appendonlydir");
        let backup = tempfile::tempdir().unwrap();
        copy_dir(&aof, backup.path());
        old.extend(a.publish_numbered(&t, 6..11).await);
        let mut live = b.sse(&t, "", &[("last-event-id", &old[4])]).await;
        let seen: Vec<String> = live.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(seen, old[5..10]);

        redis.kill9().await;
        std::fs::remove_dir_all(&aof).unwrap();
        copy_dir(backup.path(), &aof);
        redis.restart().await;

        // The stream on the old positions ends, as the client sees it.
        let end = loop {
            match live.next_item(S10 + S5).await {
                Some(SseItem::Message(m)) => panic!("no event may follow: {m:?}"),
                Some(SseItem::Comment(_) | SseItem::Retry(_)) => continue,
                other => break other,
            }
        };
        assert!(matches!(end, Some(SseItem::Eof)), "{end:?}");

        // Positions 6 and 7 go to new events.
        let mut new = Vec::new();
        for i in 0..2 {
            let r = loop {
                let r = a.publish(&t, &format!("{{\"new\":{i}}}"), &[]).await;
                if r.status == 201 {
                    break r;
                }
                assert_eq!(r.status, 503, "{}", r.text);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            new.push(r.cursor());
        }
        assert_eq!(cursor_seq(&new[0]), 6);
        assert_eq!(
            cursor_epoch(&new[0]),
            cursor_epoch(&old[0]),
            "same log, gone back"
        );

        for inst in [&a, &b] {
            for c in &old[5..10] {
                let r = inst.history(&t, &format!("cursor={c}")).await;
                r.assert_problem(416);
                assert_eq!(r.header("x-next-cursor").as_deref(), Some(old[4].as_str()));
                inst.sse(&t, "", &[("last-event-id", c)])
                    .await
                    .assert_problem(416);
            }
        }
        // The subscriber's reconnect with on_gap=resume: told, then every
        // new event, none skipped.
        let mut s = b
            .sse(&t, "on_gap=resume", &[("last-event-id", &old[9])])
            .await;
        let gap = s.expect_event(T).await;
        assert_eq!(gap.event.as_deref(), Some("gap"));
        let got: Vec<String> = s.expect_events(2, T).await.iter().map(msg_id).collect();
        assert_eq!(got, new);
        // What survived still resumes exactly.
        let mut s = a.sse(&t, "", &[("last-event-id", &old[3])]).await;
        let got: Vec<String> = s.expect_events(3, T).await.iter().map(msg_id).collect();
        assert_eq!(got, [old[4].clone(), new[0].clone(), new[1].clone()]);
    })
    .await;
}
