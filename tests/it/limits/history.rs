//! History pages bounded in bytes as well as events, and written as the
//! client reads: clients that ask for the largest page and never read it
//! hold megabytes of the broker's memory, not hundreds.

use std::time::Duration;

use crate::support::{bounded, rss_kib, Broker, BrokerProcess, Setup, Store};

#[tokio::test]
async fn a_history_page_ends_at_its_byte_budget_with_a_cursor_to_page_on() {
    bounded(60, async {
        let b = Broker::start(
            Store::Embedded,
            &[("SLUICE__LIMITS__MAX_HISTORY_PAGE_BYTES", "100000")],
        )
        .await;
        let data: Vec<String> = (0..5)
            .map(|i| format!("{i}{}", "x".repeat(40_000)))
            .collect();
        for d in &data {
            b.publish_ok("pages", d).await;
        }
        b.publish_ok("pages", &"y".repeat(150_000)).await;
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut query = "from=earliest&limit=1000".to_owned();
        loop {
            let r = b.history("pages", &query).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let events = r.json["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            sizes.push(events.len());
            seen.extend(
                events
                    .iter()
                    .map(|e| e["data"].as_str().unwrap().to_owned()),
            );
            query = format!(
                "cursor={}&limit=1000",
                r.json["next_cursor"].as_str().unwrap()
            );
        }
        // Two 40 kB events fit in 100 kB, three do not; an event larger
        // than the budget is a page of its own.
        assert_eq!(sizes, [2, 2, 1, 1]);
        assert_eq!(&seen[..5], &data[..]);
        assert_eq!(seen[5].len(), 150_000);
    })
    .await;
}

#[tokio::test]
async fn clients_that_never_read_the_largest_page_hold_bounded_memory() {
    bounded(120, async {
        let b = BrokerProcess::with(
            Setup::new(Store::Embedded).env(&[("SLUICE__EMBEDDED__FSYNC", "never")]),
        )
        .await;
        // 40 events of 1 MiB of NUL bytes: each is 6 MiB of JSON.
        let nul = "\0".repeat(1 << 20);
        for _ in 0..40 {
            b.publish_ok("nul", &nul).await;
        }
        let before = rss_kib(b.pid);
        let mut readers = Vec::new();
        for _ in 0..2 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let mut s = sock.connect(([127, 0, 0, 1], b.port).into()).await.unwrap();
            use tokio::io::AsyncWriteExt as _;
            s.write_all(
                b"GET /v1/topics/nul/events?from=earliest&limit=1000 HTTP/1.1\r\nHost: x\r\n\
Accept: application/json\r\n\r\n",
            )
            .await
            .unwrap();
            readers.push(s);
        }
        // Until the broker has begun to answer both (a peek reads nothing).
        for s in &readers {
            let mut b1 = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(60), s.peek(&mut b1))
                .await
                .expect("an answer begins")
                .unwrap();
        }
        // Whatever it builds for them, it has had time to build.
        let mut after = rss_kib(b.pid);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = after.max(rss_kib(b.pid));
        }
        let grown_mib = after.saturating_sub(before) / 1024;
        eprintln!(
            "broker RSS before {} MiB, with two unread largest pages {} MiB (+{grown_mib} MiB)",
            before / 1024,
            after / 1024
        );
        assert!(
            grown_mib < 48,
            "two unread pages grew the broker by {grown_mib} MiB"
        );
        drop(readers);
    })
    .await;
}
