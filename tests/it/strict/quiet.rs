//! Malformed requests do not flood the log: never `ERROR`, at most one
//! `WARN` line per 10 s whatever their number.

use reqwest::Method;

use super::{raw_exchange, T};
use crate::support::{bounded, BrokerProcess, Store};

#[tokio::test]
async fn malformed_requests_are_logged_at_warn_at_most_once_per_ten_seconds() {
    bounded(90, async {
        let b = BrokerProcess::start(Store::Embedded, &[]).await;
        let started = std::time::Instant::now();
        let fields: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        let mut refused = 0;
        for i in 0..40 {
            let raw: Vec<u8> = match i % 4 {
                0 => b"GARBAGE\r\n\r\n".to_vec(),
                1 => huge.clone().into_bytes(),
                2 => b"POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
                _ => b"GET /v1/topics/t/events?limit=1&limit=2 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            };
            let answer = raw_exchange(b.port, &raw, 1, T).await;
            assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
            refused += 1;
        }
        for _ in 0..10 {
            let r = b
                .request(Method::POST, "/v1/topics/t/batch", &[], Some(b"not json\n".to_vec()))
                .await;
            r.assert_problem(400);
            refused += 1;
        }
        // The broker still serves.
        b.publish_ok("t", "fine").await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let log = b.stderr_text();
        let lines: Vec<&str> = log.lines().collect();
        assert!(!lines.iter().any(|l| l.contains("ERROR")), "{refused} refused; log:\n{log}");
        let warned = lines.iter().filter(|l| l.contains("WARN")).count();
        let windows = 1 + started.elapsed().as_secs() as usize / 10;
        assert!(warned >= 1, "the first one is logged:\n{log}");
        assert!(warned <= windows, "{warned} WARN lines in {windows} window(s):\n{log}");
        assert!(log.contains("malformed request refused"), "{log}");
    })
    .await;
}
