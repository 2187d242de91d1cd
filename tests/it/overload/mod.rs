//! Recovery and publisher backpressure (issue 4): injected store faults
//! restart the topic actor without losing or duplicating an acknowledged
//! event; a full topic queue answers 503 and a rate limit 429, both with
//! `Retry-After` and nothing stored; every metric of DESIGN.md is exported.
//!
//! The broker runs as a subprocess: faults are injected through its
//! environment (`SLUICE_TEST_FAULTS`), and the tests read counters of its
//! own `/metrics` (the registry is process-wide).

use std::time::Duration;

use crate::support::*;

mod faults;
mod metrics;
mod rate_limit;

/// Publishes `{"p":p,"s":s}` with `Idempotency-Key: p{p}-{s}`, sending the
/// same request again on 503 until it is stored (201, or 200 as a replay).
/// Returns the cursor and the number of 503s.
async fn publish_until_stored(b: &Api, topic: &str, p: usize, s: u64) -> (String, u32) {
    let body = format!("{{\"p\":{p},\"s\":{s}}}");
    let key = format!("p{p}-{s}");
    let mut refused = 0;
    loop {
        let r = b.publish(topic, &body, &[("idempotency-key", &key)]).await;
        match r.status.as_u16() {
            200 | 201 => return (r.cursor(), refused),
            503 => {
                r.assert_problem(503);
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                refused += 1;
                assert!(refused < 50, "{key}: 50 refusals in a row");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => panic!("{key}: {} {}", r.status, r.text),
        }
    }
}

fn ps(data: &str) -> (usize, u64) {
    let v: serde_json::Value = serde_json::from_str(data).expect("json payload");
    (v["p"].as_u64().unwrap() as usize, v["s"].as_u64().unwrap())
}

/// Reads a stream until it holds `total` events; asserts per-publisher order
/// with no gap or duplicate and increasing ids; returns the ids in order.
async fn read_checked(
    sse: &mut SseStream,
    who: &str,
    total: usize,
    publishers: usize,
    mut next: Vec<u64>,
    mut ids: Vec<String>,
) -> Vec<String> {
    if next.is_empty() {
        next = vec![0; publishers];
    }
    while ids.len() < total {
        let m = sse.expect_event(Duration::from_secs(30)).await;
        let id = msg_id(&m);
        if let Some(prev) = ids.last() {
            assert!(id > *prev, "{who}: id {id} after {prev}");
        }
        let (p, s) = ps(&m.data);
        assert_eq!(
            s, next[p],
            "{who}: publisher {p} sent {s} where {} was due",
            next[p]
        );
        next[p] += 1;
        ids.push(id);
    }
    ids
}
