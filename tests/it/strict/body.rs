//! Request bodies: `Content-Encoding` and `Expect: 100-continue`.

use std::io::Write as _;

use tokio::io::AsyncWriteExt as _;

use super::{raw_exchange, raw_header, read_answers, T};
use crate::support::{bounded, Broker, Store};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_decompressed_within_the_size_limits() {
    bounded(60, async {
        let b = Broker::start(
            Store::Embedded,
            &[("SLUICE__LIMITS__MAX_EVENT_BYTES", "65536")],
        )
        .await;
        let gz = [("content-encoding", "gzip")];
        let r = b
            .publish_bytes("gz", gzip("héllo, gzip".as_bytes()), &gz)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let lines = "{\"data\":\"a\"}\n{\"data\":{\"n\":2},\"type\":\"t\"}\n";
        let r = b
            .request(
                reqwest::Method::POST,
                "/v1/topics/gz/batch",
                &[
                    ("content-type", "application/x-ndjson"),
                    ("content-encoding", "x-gzip"),
                ],
                Some(gzip(lines.as_bytes())),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data: Vec<String> = b
            .all_events("gz")
            .await
            .iter()
            .map(|e| e["data"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(data, ["héllo, gzip", "a", "{\"n\":2}"]);

        // A bomb: 32 MiB of zeros in about 32 KiB, against limits of 64 KiB
        // (an event) and 16 MiB (a batch).
        let bomb = gzip(&vec![0u8; 32 << 20]);
        assert!(bomb.len() < 65536);
        let r = b.publish_bytes("gz", bomb.clone(), &gz).await;
        let p = r.assert_problem(413);
        assert!(
            p["detail"].as_str().unwrap().contains("once decompressed"),
            "{}",
            r.text
        );
        let r = b
            .request(
                reqwest::Method::POST,
                "/v1/topics/gz/batch",
                &gz,
                Some(bomb),
            )
            .await;
        r.assert_problem(413);
        // Not gzip, or cut short: 400.
        let mut cut = gzip(b"cut short");
        cut.truncate(cut.len() - 4);
        for body in [b"plain text".to_vec(), cut] {
            let r = b.publish_bytes("gz", body, &gz).await;
            let p = r.assert_problem(400);
            assert!(
                p["detail"].as_str().unwrap().contains("not valid gzip"),
                "{}",
                r.text
            );
        }
        assert_eq!(b.all_events("gz").await.len(), 3, "nothing more stored");
    })
    .await;
}

#[tokio::test]
async fn other_content_encodings_are_415_and_identity_is_no_coding() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for coding in ["br", "bogus", "deflate", "gzip, gzip", "identity, br"] {
            let r = b
                .publish("enc", "plain", &[("content-encoding", coding)])
                .await;
            let p = r.assert_problem(415);
            assert_eq!(
                r.header("accept-encoding").as_deref(),
                Some("gzip, identity")
            );
            assert!(
                p["detail"].as_str().unwrap().contains("not supported"),
                "{}",
                r.text
            );
            let r = b
                .request(
                    reqwest::Method::POST,
                    "/v1/topics/enc/batch",
                    &[("content-encoding", coding)],
                    Some(b"{\"data\":\"x\"}\n".to_vec()),
                )
                .await;
            r.assert_problem(415);
        }
        assert_eq!(b.get("/v1/topics/enc").await.status, 404, "nothing stored");
        let r = b
            .publish("enc", "plain", &[("content-encoding", "identity")])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    })
    .await;
}

#[tokio::test]
async fn expect_100_continue_gets_a_refusal_at_once_and_an_invitation_only_when_the_body_is_read() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        for (head, status) in [
            // 2 GB: over limits.max_event_bytes.
            (
                "POST /v1/topics/big/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000000\r\n\r\n",
                "413",
            ),
            (
                "POST /v1/topics/big/batch HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000000\r\n\r\n",
                "413",
            ),
            // A topic name that cannot be.
            (
                "POST /v1/topics/-bad/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                "400",
            ),
            (
                "POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Encoding: br\r\nContent-Length: 5\r\n\r\n",
                "415",
            ),
        ] {
            // The body is never sent: the answer must come without it.
            let answer = raw_exchange(b.port, head.as_bytes(), 1, T).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{head:?} got {answer:?}"
            );
            assert!(!answer.contains("100 Continue"), "{answer}");
            let (h, _) = answer.split_once("\r\n\r\n").unwrap();
            assert_eq!(raw_header(h, "connection"), Some("close"), "{h}");
        }
        assert_eq!(b.get("/v1/topics/big").await.status, 404);

        // A head that passes is invited, and its body is stored.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
        s.write_all(
            b"POST /v1/topics/ok/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .unwrap();
        let invited = read_answers(&mut s, 1, std::time::Duration::from_secs(2)).await;
        assert_eq!(invited, "HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"hello").await.unwrap();
        let answer = read_answers(&mut s, 1, T).await;
        assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
        assert_eq!(b.all_events("ok").await[0]["data"], "hello");
    })
    .await;
}
