//! Rate limits per client address: publishes and stream opens past the
//! limit get a 429 with `Retry-After`, and nothing refused is stored.

use std::time::Duration;

use crate::support::*;

on_both_stores! {
    #[tokio::test]
    publish_rate_limit_answers_429_and_stores_nothing,
    #[tokio::test]
    stream_open_rate_limit_answers_429,
}

/// 2 publishes per second with a burst of 2, loopback not exempt: of 10
/// quick publishes the first 2 are stored and the others refused with 429,
/// Retry-After and `retry_after`; nothing refused is stored; after the
/// advertised wait a publish goes through again.
async fn publish_rate_limit_answers_429_and_stores_nothing(store: Store) {
    bounded(60, async {
        let b = BrokerProcess::start(
            store,
            &[
                ("SLUICE__RATE_LIMIT__PUBLISH_PER_SEC", "2"),
                ("SLUICE__RATE_LIMIT__PUBLISH_BURST", "2"),
                ("SLUICE__RATE_LIMIT__EXEMPT_LOOPBACK", "false"),
            ],
        )
        .await;
        let t = topic("rate");
        let mut accepted = 0;
        let mut retry_after = 0;
        for i in 0..10 {
            let r = b.publish(&t, &format!("{i}"), &[]).await;
            match r.status.as_u16() {
                201 => accepted += 1,
                429 => {
                    let body = r.assert_problem(429);
                    let ra: u64 = r
                        .header("retry-after")
                        .expect("429 without Retry-After")
                        .parse()
                        .expect("Retry-After in seconds");
                    assert!(ra >= 1);
                    assert_eq!(body["retry_after"].as_u64(), Some(ra), "{}", r.text);
                    retry_after = ra;
                }
                _ => panic!("{} {}", r.status, r.text),
            }
        }
        assert!(
            (2..=3).contains(&accepted),
            "burst 2 at 2/s: 2 (maybe 3) of 10 quick publishes pass, got {accepted}"
        );
        assert_eq!(
            b.count(&t).await,
            accepted,
            "refused publishes must not be stored"
        );
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let r = b.publish(&t, "after", &[]).await;
        assert_eq!(
            r.status, 201,
            "after Retry-After a publish passes: {}",
            r.text
        );
        let m = b.metrics().await;
        assert!(m.value("sluice_publish_rejected_total{reason=\"rate_limited\"}") >= 7.0);
    })
    .await;
}

/// 1 stream open per second with a burst of 2: the third quick open is a
/// 429 problem with Retry-After; publishing is not limited.
async fn stream_open_rate_limit_answers_429(store: Store) {
    bounded(60, async {
        let b = BrokerProcess::start(
            store,
            &[
                ("SLUICE__RATE_LIMIT__STREAMS_PER_SEC", "1"),
                ("SLUICE__RATE_LIMIT__STREAMS_BURST", "2"),
                ("SLUICE__RATE_LIMIT__EXEMPT_LOOPBACK", "false"),
            ],
        )
        .await;
        let t = topic("streams");
        let s1 = b.sse(&t, "", &[]).await;
        s1.assert_ok();
        let s2 = b.sse(&t, "", &[]).await;
        s2.assert_ok();
        let s3 = b.sse(&t, "", &[]).await;
        let body = s3.assert_problem(429);
        let ra: u64 = s3
            .header("retry-after")
            .expect("429 without Retry-After")
            .parse()
            .unwrap();
        assert!(ra >= 1);
        assert_eq!(body["retry_after"].as_u64(), Some(ra));
        for i in 0..5 {
            b.publish_ok(&t, &format!("{i}")).await;
        }
        let m = b.metrics().await;
        assert!(m.value("sluice_publish_rejected_total{reason=\"stream_rate_limited\"}") >= 1.0);
    })
    .await;
}
