//! A stream ends when its token expires: its last frame is
//! `event: auth-expired` carrying the id of the last event delivered, then
//! the body ends; a reconnect with a fresh token and that id as
//! `Last-Event-ID` misses nothing published meanwhile. The same holds for
//! a stream still catching up from the store when its token expires.

use std::time::{Duration, Instant};

use super::*;

on_both_stores! {
    #[tokio::test]
    a_stream_ends_at_expiry_and_a_renewed_token_resumes_exactly,
}

mod catching_up {
    use super::*;

    on_embedded_store! {
        #[tokio::test]
        a_stream_catching_up_ends_at_expiry_too,
    }
}

/// The RFC 3339 form of `secs` the broker writes (`expired_at`).
fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Reads until the `auth-expired` frame; returns the events before it and
/// the frame.
async fn read_to_expiry(s: &mut SseStream, timeout: Duration) -> (Vec<Message>, Message) {
    let mut events = Vec::new();
    loop {
        let m = s.expect_event(timeout).await;
        if m.event.as_deref() == Some("auth-expired") {
            return (events, m);
        }
        events.push(m);
    }
}

async fn a_stream_ends_at_expiry_and_a_renewed_token_resumes_exactly(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &HS256).await;
        let t = "expiring";
        let publisher = As {
            api: &b,
            token: hs256(&claims(rights(&[t], &[], false))),
        };
        let first = publisher.publish(t, "e1").await.cursor();

        // A reader whose token expires in a few seconds.
        let exp = now_secs() + 3;
        let mut short = claims(rights(&[], &[t], false));
        short["exp"] = exp.into();
        let reader = As {
            api: &b,
            token: hs256(&short),
        };
        let mut s = reader.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        assert_eq!(msg_id(&s.expect_event(T).await), first);
        let second = publisher.publish(t, "e2").await.cursor();

        let (before, notice) = read_to_expiry(&mut s, T).await;
        let ended = now_secs();
        assert_eq!(
            before.iter().map(msg_id).collect::<Vec<_>>(),
            [second.as_str()]
        );
        // Not before the token's expiry, and soon after it.
        assert!(
            ended >= exp && ended <= exp + 2,
            "ended at {ended}, exp {exp}"
        );
        // Its id is the last event delivered; its data says when.
        assert_eq!(msg_id(&notice), second);
        let data: serde_json::Value = serde_json::from_str(&notice.data).unwrap();
        assert_eq!(data, serde_json::json!({"expired_at": rfc3339(exp)}));
        // Then the body ends: the client sees EOF, nothing else.
        assert_eq!(s.next_item(T).await, Some(SseItem::Eof));

        // Published while the client fetches a new token.
        let gap: Vec<String> = [
            publisher.publish(t, "e3").await.cursor(),
            publisher.publish(t, "e4").await.cursor(),
        ]
        .into();

        // The same token is refused now; a fresh one resumes exactly.
        reader
            .sse(t, "", &[("last-event-id", &msg_id(&notice))])
            .await
            .assert_problem(401);
        let renewed = As {
            api: &b,
            token: hs256(&claims(rights(&[], &[t], false))),
        };
        let mut s = renewed
            .sse(t, "", &[("last-event-id", &msg_id(&notice))])
            .await;
        s.assert_ok();
        let got = s.expect_events(2, T).await;
        assert_eq!(got.iter().map(msg_id).collect::<Vec<_>>(), gap);
        assert_eq!(got[0].data.to_string(), "e3");
        s.expect_no_event(Duration::from_millis(300)).await;

        // A stream opened with no event yet delivered names where it began.
        let mut short = claims(rights(&[], &[t], false));
        short["exp"] = (now_secs() + 2).into();
        let latest = gap[1].clone();
        let mut s = As {
            api: &b,
            token: hs256(&short),
        }
        .sse(t, "", &[])
        .await;
        let (before, notice) = read_to_expiry(&mut s, T).await;
        assert!(before.is_empty());
        assert_eq!(msg_id(&notice), latest);
        assert_eq!(s.next_item(T).await, Some(SseItem::Eof));
    })
    .await;
}

/// A catch-up holds its session until it is done: the token's expiry must
/// end it all the same. A stream starts at the earliest of many events,
/// its client reads nothing until the token has expired, then reads all:
/// it gets the events queued before the expiry, the notice naming the
/// last of them, and the end, not the rest of the log.
async fn a_stream_catching_up_ends_at_expiry_too(store: Store) {
    bounded(120, async {
        let b = Broker::start(
            store,
            &[
                HS256[0],
                HS256[1],
                // A small tail: the stream must catch up from the store.
                ("SLUICE__TOPICS__TAIL_EVENTS", "16"),
            ],
        )
        .await;
        let t = "long";
        let root = As {
            api: &b,
            token: root_token(),
        };
        let line = format!("{{\"data\":\"{}\"}}\n", "x".repeat(1000));
        for _ in 0..20 {
            let r = root
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/topics/{t}/batch"),
                    Some(&line.repeat(1000)),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let total = 20_000;

        let exp = now_secs() + 2;
        let mut short = claims(rights(&[], &[t], false));
        short["exp"] = exp.into();
        let auth = bearer(&hs256(&short));
        let mut s = b
            .raw_sse(
                &format!("/v1/topics/{t}/events?from=earliest"),
                &[("authorization", &auth)],
                Some(16 * 1024),
            )
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        // Read nothing until well after the expiry.
        let wait = Duration::from_millis(((exp + 1) * 1000 - now_ms()).max(0) as u64);
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        let (before, notice) = read_to_expiry(&mut s, Duration::from_secs(30)).await;
        assert!(
            !before.is_empty() && before.len() < total / 2,
            "{} of {total} events before the notice",
            before.len()
        );
        assert_eq!(msg_id(&notice), msg_id(before.last().unwrap()));
        let ids: Vec<u64> = before.iter().map(|m| cursor_seq(&msg_id(m))).collect();
        assert_eq!(ids, (1..=before.len() as u64).collect::<Vec<_>>());
        assert_eq!(s.next_item(T).await, Some(SseItem::Eof));
        assert!(started.elapsed() < Duration::from_secs(20));
    })
    .await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
