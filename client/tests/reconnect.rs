//! The subscription's reconnects, gaps, tokens and cursor store, and the
//! producer's retries, against a scripted server (tests/mock).

mod mock;

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use mock::{json, problem, stream, stream_open, Mock};
use sluice_client::{
    Backoff, Client, CursorStore, Error, Gap, Item, MemoryCursorStore, Start, SubscribeOptions,
    Subscription,
};

/// A short backoff, so that reconnects take milliseconds.
fn fast(url: &str) -> sluice_client::ClientBuilder {
    Client::builder(url).backoff(Backoff::new(
        Duration::from_millis(20),
        Duration::from_millis(200),
        0.15,
    ))
}

/// The next `n` items (panics after 5 s).
async fn take(sub: &mut Subscription, n: usize) -> Vec<Item> {
    let mut out = Vec::new();
    while out.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no item within 5 s after {out:?}"))
            .expect("stream ended");
        out.push(item.expect("an item, not an error"));
    }
    out
}

fn event_data(items: &[Item]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e.data.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn resumes_with_last_event_id_after_the_stream_ends() {
    let m = Mock::start(vec![
        stream("retry: 10\n\nid: c1\ndata: a\n\nid: c2\ndata: b\n\n"),
        stream_open("id: c3\ndata: c\n\n"),
    ])
    .await;
    let client = fast(&m.url).build().unwrap();
    let mut sub = client.subscribe("t", SubscribeOptions::new().start(Start::Earliest));
    let items = take(&mut sub, 6).await;
    assert_eq!(event_data(&items), ["a", "b", "c"]);
    assert_eq!(items[0], Item::Connected { after: None });
    assert!(
        matches!(&items[3], Item::Disconnected { attempt: 1, .. }),
        "{items:?}"
    );
    assert_eq!(
        items[4],
        Item::Connected {
            after: Some("c2".into())
        }
    );
    let reqs = m.requests();
    assert_eq!(reqs[0].target, "/v1/topics/t/events?from=earliest");
    assert_eq!(reqs[0].header("accept"), Some("text/event-stream"));
    assert_eq!(reqs[0].header("last-event-id"), None);
    assert_eq!(reqs[1].header("last-event-id"), Some("c2"));
    assert_eq!(sub.cursor(), Some("c3"));
}

#[tokio::test]
async fn start_latest_is_pinned_to_a_cursor_before_the_stream_opens() {
    let m = Mock::start(vec![
        json(200, r#"{"events":[],"next_cursor":"c5"}"#),
        stream("id: c6\ndata: x\n\n"),
        stream_open(""),
    ])
    .await;
    let client = fast(&m.url).build().unwrap();
    let mut sub = client.subscribe("t", SubscribeOptions::new());
    let items = take(&mut sub, 4).await;
    assert_eq!(
        items[0],
        Item::Connected {
            after: Some("c5".into())
        }
    );
    let reqs = m.requests();
    assert_eq!(reqs[0].target, "/v1/topics/t/events?limit=1&from=latest");
    assert_eq!(reqs[0].header("accept"), Some("application/json"));
    assert_eq!(reqs[1].header("last-event-id"), Some("c5"));
    // Disconnected before anything else came: still resumes, never "latest".
    assert_eq!(reqs[2].header("last-event-id"), Some("c6"));
}

#[tokio::test]
async fn a_416_is_a_gap_item_and_reading_goes_on_after_it() {
    let body = r#"{"type":"https://sluice.dev/problems/cursor-not-resumable","status":416,
        "detail":"cursor is older than retention: 5 events were removed",
        "requested":"c1","next_cursor":"c6","latest_cursor":"c9","lost":5}"#;
    let m = Mock::start(vec![
        problem(416, vec![("x-next-cursor", "c6".into())], body),
        stream_open("id: c7\ndata: x\n\n"),
    ])
    .await;
    let client = fast(&m.url).build().unwrap();
    let mut sub = client.subscribe(
        "t",
        SubscribeOptions::new().start(Start::After("c1".into())),
    );
    let items = take(&mut sub, 3).await;
    let Item::Gap(gap) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(
        (
            gap.requested.as_deref(),
            gap.resumed_after.as_str(),
            gap.lost
        ),
        (Some("c1"), "c6", Some(5))
    );
    assert!(gap.detail.as_deref().unwrap().contains("retention"));
    assert_eq!(
        items[1],
        Item::Connected {
            after: Some("c6".into())
        }
    );
    assert_eq!(event_data(&items), ["x"]);
    let reqs = m.requests();
    assert_eq!(reqs[0].header("last-event-id"), Some("c1"));
    assert_eq!(reqs[1].header("last-event-id"), Some("c6"));
}

#[tokio::test]
async fn an_event_gap_frame_is_a_gap_item_with_on_gap_resume() {
    let m = Mock::start(vec![stream_open(
        "id: c6\nevent: gap\ndata: {\"requested\":\"c1\",\"resumed_after\":\"c6\",\"lost\":5}\n\n\
         id: c7\nevent: gap2\ndata: x\n\n",
    )])
    .await;
    let client = fast(&m.url).build().unwrap();
    let options = SubscribeOptions::new()
        .start(Start::After("c1".into()))
        .on_gap_resume(true);
    let mut sub = client.subscribe("t", options);
    let items = take(&mut sub, 3).await;
    let want = Gap {
        requested: Some("c1".into()),
        resumed_after: "c6".into(),
        lost: Some(5),
        detail: None,
    };
    assert_eq!(items[1], Item::Gap(want));
    assert!(matches!(&items[2], Item::Event(e) if e.event_type.as_deref() == Some("gap2")));
    assert!(
        m.requests()[0].target.contains("on_gap=resume"),
        "{:?}",
        m.requests()[0]
    );
}

#[tokio::test]
async fn retry_after_and_the_servers_retry_set_the_waits() {
    let m = Mock::start(vec![
        problem(503, vec![("retry-after", "1".into())], r#"{"status":503}"#),
        stream("retry: 300\n\nid: c1\ndata: a\n\n"),
        stream_open(""),
    ])
    .await;
    // The default schedule: base 1 s.
    let client = Client::new(&m.url).unwrap();
    let mut sub = client.subscribe("t", SubscribeOptions::new().start(Start::Earliest));
    let items = take(&mut sub, 5).await;
    let Item::Disconnected { delay, reason, .. } = &items[0] else {
        panic!("{items:?}")
    };
    assert!(reason.contains("503"), "{reason}");
    assert!(
        *delay >= Duration::from_secs(1) && *delay <= Duration::from_millis(1150),
        "{delay:?}"
    );
    // After the stream that said `retry: 300`: 300 ms ± 15 %, not 1 s.
    let Item::Disconnected { delay, attempt, .. } = &items[3] else {
        panic!("{items:?}")
    };
    assert_eq!(*attempt, 1);
    assert!(
        *delay >= Duration::from_millis(255) && *delay <= Duration::from_millis(345),
        "{delay:?}"
    );
    let reqs = m.requests();
    assert!(reqs[1].at - reqs[0].at >= Duration::from_secs(1));
    let second = reqs[2].at - reqs[1].at;
    assert!(
        second >= Duration::from_millis(255) && second < Duration::from_millis(900),
        "{second:?}"
    );
}

/// A provider that hands out t1, t2, … and counts its calls.
fn counting_provider(
    client: sluice_client::ClientBuilder,
) -> (Client, Arc<std::sync::atomic::AtomicU32>) {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = calls.clone();
    let client = client
        .token_provider(move || {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { Ok(format!("t{n}")) }
        })
        .build()
        .unwrap();
    (client, calls)
}

#[tokio::test]
async fn a_401_asks_the_token_provider_again() {
    let m = Mock::start(vec![
        problem(
            401,
            vec![("www-authenticate", "Bearer".into())],
            r#"{"status":401}"#,
        ),
        stream_open("id: c1\ndata: a\n\n"),
    ])
    .await;
    let (client, calls) = counting_provider(fast(&m.url));
    let mut sub = client.subscribe("t", SubscribeOptions::new().start(Start::Earliest));
    let items = take(&mut sub, 2).await;
    assert_eq!(event_data(&items), ["a"]);
    let reqs = m.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer t1"));
    assert_eq!(reqs[1].header("authorization"), Some("Bearer t2"));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn auth_expired_renews_the_token_and_resumes_from_the_last_event() {
    let m = Mock::start(vec![
        // The broker's last frame when the token expires; the connection
        // stays open, so the reconnect is the client's own doing.
        stream_open(
            "id: c1\ndata: a\n\nid: c1\nevent: auth-expired\ndata: {\"expired_at\":\"x\"}\n\n",
        ),
        stream_open("id: c2\ndata: b\n\n"),
    ])
    .await;
    let (client, _) = counting_provider(fast(&m.url));
    let mut sub = client.subscribe("t", SubscribeOptions::new().start(Start::Earliest));
    let items = take(&mut sub, 5).await;
    assert_eq!(event_data(&items), ["a", "b"]);
    assert!(
        matches!(&items[2], Item::Disconnected { attempt: 0, delay, .. } if delay.is_zero()),
        "{items:?}"
    );
    let reqs = m.requests();
    assert_eq!(reqs[1].header("authorization"), Some("Bearer t2"));
    assert_eq!(reqs[1].header("last-event-id"), Some("c1"));
}

#[tokio::test]
async fn a_fixed_token_refused_ends_the_stream_with_the_error() {
    let m = Mock::start(vec![problem(
        401,
        vec![],
        r#"{"status":401,"title":"Unauthorized"}"#,
    )])
    .await;
    let client = fast(&m.url).token("bad").build().unwrap();
    let mut sub = client.subscribe("t", SubscribeOptions::new().start(Start::Earliest));
    let err = sub.next().await.unwrap().unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(sub.next().await.is_none());
    assert_eq!(m.requests()[0].header("authorization"), Some("Bearer bad"));
}

#[tokio::test]
async fn a_restarted_subscription_resumes_from_its_cursor_store() {
    let m = Mock::start(vec![
        stream_open("id: c1\ndata: a\n\nid: c2\ndata: b\n\n"),
        stream_open("id: c3\ndata: c\n\n"),
    ])
    .await;
    let client = fast(&m.url).build().unwrap();
    let store = Arc::new(MemoryCursorStore::new());
    let options = SubscribeOptions::new()
        .start(Start::Earliest)
        .shared_cursor_store(store.clone());
    let mut sub = client.subscribe("t", options.clone());
    assert_eq!(event_data(&take(&mut sub, 3).await), ["a", "b"]);
    // "b" is saved once the next item is asked for: the caller is done with it.
    assert_eq!(store.get().as_deref(), Some("c1"));
    let _ = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
    assert_eq!(store.get().as_deref(), Some("c2"));
    drop(sub);
    let mut again = client.subscribe("t", options);
    assert_eq!(event_data(&take(&mut again, 2).await), ["c"]);
    assert_eq!(m.requests()[1].header("last-event-id"), Some("c2"));
    assert_eq!(store.load().await.unwrap().as_deref(), Some("c2"));
}

#[tokio::test]
async fn a_producer_retries_with_the_same_sequence_and_renumbers_on_409() {
    let ok = |seq: u64| {
        json(
            201,
            &format!(r#"{{"topic":"t","cursor":"c{seq}","duplicate":false}}"#),
        )
    };
    let m = Mock::start(vec![
        problem(503, vec![("retry-after", "0".into())], r#"{"status":503}"#),
        ok(1),
        // A handle restored with a sequence past the broker's: it says 2.
        problem(409, vec![], r#"{"status":409,"expected_seq":2}"#),
        ok(2),
    ])
    .await;
    let client = fast(&m.url).build().unwrap();
    let mut p = client.producer_with_id("t", "p1", 1);
    assert_eq!(p.send("a").await.unwrap().cursor.as_deref(), Some("c1"));
    assert_eq!(p.next_seq(), 2);
    let mut p = client.producer_with_id("t", "p1", 3);
    assert_eq!(p.send("b").await.unwrap().cursor.as_deref(), Some("c2"));
    assert_eq!(p.next_seq(), 3);
    let seqs: Vec<_> = m
        .requests()
        .iter()
        .map(|r| r.header("producer-seq").unwrap().to_owned())
        .collect();
    assert_eq!(seqs, ["1", "1", "3", "2"]);
    assert!(m
        .requests()
        .iter()
        .all(|r| r.header("producer-id") == Some("p1")));
}

#[tokio::test]
async fn a_refusal_is_an_error_with_the_problem() {
    let m = Mock::start(vec![problem(
        413,
        vec![],
        r#"{"type":"https://sluice.dev/problems/payload-too-large","title":"Payload Too Large","status":413,"detail":"body exceeds 1048576 bytes"}"#,
    )])
    .await;
    let client = fast(&m.url).build().unwrap();
    match client.publish("t", "x").await {
        Err(Error::Api(p)) => {
            assert_eq!(p.status, 413);
            assert_eq!(p.detail.as_deref(), Some("body exceeds 1048576 bytes"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.requests().len(), 1, "a 413 is not retried");
}
