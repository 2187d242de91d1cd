//! The crate's `Subscription` stream against two instances sharing a
//! Redis store, reached through a proxy that moves it between them: every
//! event exactly once across network loss, moves, SIGKILLed instances and
//! a restart of the subscriber from its `FileCursorStore`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use sluice_client::{Client, FileCursorStore, Item, Start, SubscribeOptions};

use super::{assert_exactly_once_in_order, Numbered, N};
use crate::support::{redis::RedisServer, *};

/// What a subscriber task saw.
#[derive(Default)]
struct Seen {
    data: Vec<String>,
    connects: Vec<Option<String>>,
    disconnects: Vec<String>,
    gaps: usize,
    errors: Vec<String>,
}

/// A subscriber "process": a task reading the stream into `seen` until
/// aborted (its restart is a new task on the same cursor file).
fn subscriber(
    client: &Client,
    topic: &str,
    cursor: &std::path::Path,
    seen: &Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    let options = SubscribeOptions::new()
        .start(Start::Earliest)
        .cursor_store(FileCursorStore::new(cursor));
    let mut sub = client.subscribe(topic, options);
    let seen = seen.clone();
    tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            let mut s = seen.lock().unwrap();
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    s.errors.push(e.to_string());
                    break;
                }
            };
            match item {
                Item::Event(e) => s.data.push(e.data),
                Item::Gap(_) => s.gaps += 1,
                Item::Connected { after } => {
                    eprintln!("connected after {after:?} at {} events", s.data.len());
                    s.connects.push(after)
                }
                Item::Disconnected { reason, .. } => {
                    eprintln!("disconnected at {} events: {reason}", s.data.len());
                    s.disconnects.push(reason)
                }
                other => panic!("unexpected item {other:?}"),
            }
        }
    })
}

async fn wait_seen(seen: &Arc<Mutex<Seen>>, at_least: usize, what: &str) {
    wait_until(Duration::from_secs(40), what, || {
        let n = seen.lock().unwrap().data.len();
        async move { n >= at_least }
    })
    .await;
}

/// What must be shown (issue 15): the same 10,000 numbered events through
/// the crate's `Stream`, on a pair of instances over one Redis. The
/// subscriber reaches them through a proxy; during the run it is cut off
/// and moved from A to B, A is SIGKILLed and restarted, the subscriber is
/// restarted from its cursor file, B is SIGKILLed under it (it moves back
/// to A) and restarted. It gets every event once, in order, and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_gets_every_event_once_across_instance_kills_moves_and_its_own_restart() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        let member = |port| {
            Setup::new(Store::Redis)
                .redis(&redis.url(), "clientstest")
                .listen(port)
        };
        let (setup_a, setup_b) = (member(free_port()), member(free_port()));
        let mut a = BrokerProcess::with(setup_a.clone()).await;
        let mut b = BrokerProcess::with(setup_b.clone()).await;
        let proxy = Proxy::start(a.port).await;
        let client = Client::new(&format!("http://127.0.0.1:{}", proxy.port)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cursor = dir.path().join("cursor");
        let topic = "stream-numbered";
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let started = Instant::now();

        let mut task = subscriber(&client, topic, &cursor, &seen);
        let urls = [a.base_url(), b.base_url()];
        // Each step comes while events flow: the publisher may not go
        // past the step's gate before the step is done.
        let publisher = Numbered::start(&urls, topic, N, 50, Duration::from_millis(20), 2_500);

        wait_seen(&seen, 1_500, "1,500 events").await;
        // Network loss, and the balancer sends it to B.
        proxy.switch(b.port);
        proxy.cut();
        publisher.allow(4_000);
        wait_seen(&seen, 3_000, "3,000 events (on B)").await;
        // A dies (the publisher loses it) and comes back meanwhile.
        a.kill9().await;
        let restart_a = tokio::spawn(async move { BrokerProcess::restart(&setup_a).await });
        publisher.allow(5_500);
        wait_seen(&seen, 4_500, "4,500 events").await;
        // The subscriber "process" stops and starts again on its file,
        // and connects (to B) before the next step.
        task.abort();
        let _ = task.await;
        let connects = seen.lock().unwrap().connects.len();
        task = subscriber(&client, topic, &cursor, &seen);
        wait_until(
            Duration::from_secs(20),
            "the restarted subscriber connects",
            || {
                let n = seen.lock().unwrap().connects.len();
                async move { n > connects }
            },
        )
        .await;
        publisher.allow(7_000);
        wait_seen(&seen, 6_000, "6,000 events (restarted)").await;
        // The instance it reads from dies under it; it moves back to A.
        let a = restart_a.await.unwrap();
        proxy.switch(a.port);
        b.kill9().await;
        eprintln!("B killed at {} events", seen.lock().unwrap().data.len());
        let restart_b = tokio::spawn(async move { BrokerProcess::restart(&setup_b).await });
        publisher.allow(N);
        wait_seen(&seen, 7_500, "7,500 events (on A)").await;
        let b = restart_b.await.unwrap();

        publisher.finish().await;
        wait_seen(&seen, N as usize, "all events").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        task.abort();
        let _ = task.await;
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        eprintln!(
            "{} events, {} connects, {} disconnects in {:?}: {:?}",
            s.data.len(),
            s.connects.len(),
            s.disconnects.len(),
            started.elapsed(),
            s.disconnects
        );
        assert_exactly_once_in_order(&s.data, N, "Subscription stream");
        assert_eq!(s.gaps, 0, "no event was lost, so no gap");
        // Cut once, restarted once, B killed under it: at least three
        // reconnects, each resuming from a cursor.
        assert!(s.connects.len() >= 4, "{:?}", s.connects);
        assert!(
            s.connects[1..].iter().all(Option::is_some),
            "{:?}",
            s.connects
        );
        drop((a, b));
    })
    .await;
}
