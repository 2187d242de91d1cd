//! Slow loris: many connections with half-sent heads and trickled bodies
//! while a normal client publishes and reads a stream. The normal client
//! is served as if they were not there, and every slow connection is cut
//! off (`408`, closed) by its deadline.

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::{connect, read_answer, status_of};
use crate::support::{bounded, Broker, Store};

const HEADS: usize = 100;
const BODIES: usize = 50;

#[tokio::test]
async fn slow_clients_neither_hold_up_others_nor_stay() {
    bounded(90, async {
        let b = Broker::start(
            Store::Embedded,
            &[
                ("SLUICE__REQUEST_HEAD_TIMEOUT_SECS", "2"),
                ("SLUICE__REQUEST_BODY_TIMEOUT_SECS", "2"),
            ],
        )
        .await;
        b.publish_ok("normal", "before").await;
        let mut stream = b.sse("normal", "", &[]).await;
        stream.assert_ok();
        let port = b.port;
        let mut slow = Vec::new();
        for i in 0..HEADS + BODIES {
            slow.push(tokio::spawn(async move {
                let mut s = connect(port).await;
                let start: &[u8] = if i < HEADS {
                    b"POST /v1/topics/loris/events HTTP/1.1\r\nHost: x\r\nContent-Le"
                } else {
                    b"POST /v1/topics/loris/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
                };
                s.write_all(start).await.unwrap();
                // A byte every 300 ms (never a whole head or body) until the
                // broker answers or closes; at most 20 s.
                for _ in 0..66 {
                    let answer = read_answer(&mut s, Duration::from_millis(300)).await;
                    if !answer.is_empty() {
                        return status_of(&answer);
                    }
                    if s.write_all(b"a").await.is_err() {
                        return 0;
                    }
                }
                panic!("a slow connection was still open after 20 s");
            }));
        }
        // The normal client meanwhile: every publish answered, every event
        // delivered, each within a generous bound.
        for i in 0..20 {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                b.publish("normal", &format!("e{i}"), &[]),
            )
            .await
            .expect("a publish answered within 5 s");
            assert_eq!(r.status, 201, "{}", r.text);
            let m = stream.expect_event(Duration::from_secs(5)).await;
            assert_eq!(m.data, format!("e{i}"));
        }
        let mut timed_out = 0;
        for s in slow {
            let status = s.await.unwrap();
            assert!(status == 408 || status == 0, "a slow connection got {status}");
            timed_out += usize::from(status == 408);
        }
        assert!(timed_out >= (HEADS + BODIES) / 2, "{timed_out} answered 408");
        assert_eq!(b.get("/v1/topics/loris").await.status, 404, "nothing stored");
        // And the broker still serves new clients.
        b.publish_ok("normal", "after").await;
    })
    .await;
}
