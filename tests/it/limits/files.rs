//! A client after every file descriptor: with the broker's open-file limit
//! at 1,024, a client that creates 10,000 topics and opens as many streams
//! as it is let cannot stop another client from publishing and
//! subscribing; the broker's open files stay under its limit, and fall back
//! once the topics go idle. And with next to no descriptors left, new
//! connections get a fast `503` while those already open are served.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{stream, StreamExt as _};

use super::client_from;
use crate::support::{bounded, BrokerProcess, Setup, Store};

const LIMIT: usize = 1024;
const TOPICS: usize = 10_000;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn a_client_after_every_descriptor_locks_nobody_out() {
    bounded(240, async {
        // On tmpfs where there is one: creating 10,000 topic logs is
        // 10,000 directory fsyncs, which is not what this is about.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let b = BrokerProcess::with(
            Setup::new(Store::Embedded)
                .dir(dir.path())
                .open_files(LIMIT as u64)
                .env(&[
                    ("SLUICE__EMBEDDED__FSYNC", "never"),
                    ("SLUICE__TOPICS__IDLE_RELEASE_SECS", "1"),
                    ("SLUICE__RATE_LIMIT__EXEMPT_LOOPBACK", "false"),
                    ("SLUICE__RATE_LIMIT__TOPICS_PER_MINUTE", "0"),
                ]),
        )
        .await;
        let pid = b.pid;
        let baseline = open_fds(pid);
        // The other client: a stream and a publishing connection, open
        // before the flood.
        b.publish_ok("victim", "before").await;
        let mut victim_stream = b.sse("victim", "", &[]).await;
        victim_stream.assert_ok();
        let most = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let most = most.clone();
            tokio::spawn(async move {
                loop {
                    most.fetch_max(open_fds(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };

        let started = std::time::Instant::now();
        // The flood: 10,000 new topics, 32 at a time, from 127.0.0.2.
        let base = b.base_url();
        let flood = client_from("127.0.0.2");
        let created = stream::iter(0..TOPICS)
            .map(|i| {
                let (flood, base) = (flood.clone(), base.clone());
                async move {
                    let r = flood
                        .post(format!("{base}/v1/topics/flood-{i}/events"))
                        .body("x")
                        .send()
                        .await;
                    r.map(|r| r.status().as_u16()).unwrap_or(0)
                }
            })
            .buffer_unordered(32)
            .fold(0, |n, status| async move { n + usize::from(status == 201) })
            .await;
        // Then as many streams as it is let: one client may hold a quarter
        // of the connections the limit allows (the flood's included).
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0.. {
            let r = flood
                .get(format!("{base}/v1/topics/flood-{i}/events"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                held.push(r);
                continue;
            }
            assert_eq!(r.status(), 429);
            refused += 1;
            break;
        }
        eprintln!(
            "created {created} topics, holding {} streams ({refused} refusals) after {:?}, \
             broker fds: baseline {baseline}, most {}",
            held.len(),
            started.elapsed(),
            most.load(Ordering::Relaxed)
        );
        assert!(created > TOPICS / 2, "only {created} topics created");
        assert!(held.len() >= 150, "only {} streams", held.len());

        // The other client, meanwhile: its publishes are stored and its
        // stream delivers them.
        for i in 0..5 {
            let r = b.publish("victim", &format!("during-{i}"), &[]).await;
            assert_eq!(r.status, 201, "{}", r.text);
            let m = victim_stream.expect_event(Duration::from_secs(10)).await;
            assert_eq!(m.data, format!("during-{i}"));
        }
        assert!(most.load(Ordering::Relaxed) < LIMIT);

        // The flood ends: the files of its topics are closed once idle.
        drop(held);
        drop(flood);
        let fell = tokio::time::timeout(Duration::from_secs(30), async {
            while open_fds(pid) >= baseline + 50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if fell.is_err() {
            let mut kinds = std::collections::BTreeMap::new();
            for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
            {
                let target = std::fs::read_link(e.path()).map_or("?".into(), |p| {
                    let s = p.display().to_string();
                    s.split(['[', '/']).take(2).collect::<Vec<_>>().join("/")
                });
                *kinds.entry(target).or_insert(0) += 1;
            }
            panic!("open files did not fall back: {kinds:?}");
        }
        // And the other client opens a new stream and publishes.
        let mut again = b.sse("victim", "", &[]).await;
        again.assert_ok();
        b.publish_ok("victim", "after").await;
        assert_eq!(
            again.expect_event(Duration::from_secs(10)).await.data,
            "after"
        );
        sampler.abort();
        assert!(
            most.load(Ordering::Relaxed) < LIMIT,
            "open files reached the limit"
        );
    })
    .await;
}

#[tokio::test]
async fn near_the_open_file_limit_new_connections_get_503_and_open_ones_go_on() {
    bounded(60, async {
        // 128 descriptors, 64 kept free, 32 for the store: room for a few
        // connections only.
        let b = BrokerProcess::with(Setup::new(Store::Embedded).open_files(128)).await;
        let mut open = Vec::new();
        let answer = loop {
            assert!(
                open.len() < 60,
                "no refusal after {} connections",
                open.len()
            );
            let mut s = super::connect(b.port).await;
            use tokio::io::AsyncWriteExt as _;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let answer = super::read_answer(&mut s, Duration::from_secs(10)).await;
            if super::status_of(&answer) != 200 {
                break answer;
            }
            open.push(s);
        };
        let p = super::raw_problem(&answer, 503);
        assert!(
            p["detail"].as_str().unwrap().contains("open-file limit"),
            "{p}"
        );
        let head = answer.split_once("\r\n\r\n").unwrap().0;
        assert_eq!(super::header(head, "retry-after"), Some("1"), "{head}");
        assert!(!open.is_empty(), "some connections were served first");
        // The connections already open are served.
        for s in &mut open {
            assert_eq!(super::healthz_on(s).await, 200);
        }
        // Once they close, new ones are served again.
        drop(open);
        crate::support::wait_until(
            Duration::from_secs(10),
            "a new connection is served",
            || async {
                let mut s = super::connect(b.port).await;
                super::healthz_on(&mut s).await == 200
            },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_topic_that_cannot_be_opened_answers_503_and_does_not_retry_for_nobody() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        // A log whose meta.json cannot be read (it is a directory).
        std::fs::create_dir_all(dir.path().join("topics/broken/meta.json")).unwrap();
        let b = BrokerProcess::with(Setup::new(Store::Embedded).dir(dir.path())).await;
        for _ in 0..2 {
            let r = b.publish("broken", "x", &[]).await;
            r.assert_problem(503);
            assert!(r.header("retry-after").is_some());
        }
        // Other topics are served.
        b.publish_ok("fine", "x").await;
        // Nobody waits for the broken topic now: nothing is tried for it
        // (before, it was tried again every 500 ms, for ever, and each try
        // logged). Two seconds of nothing is the observation.
        let tries = || b.stderr_text().matches("cannot open topic").count();
        let now = tries();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(tries(), now, "{}", b.stderr_text());
        // One line at start, a few per request (the new actor's own load,
        // the request's), none after.
        assert!(now <= 9, "{}", b.stderr_text());
    })
    .await;
}
