//! `sluice_store_up` follows the store: 1 while Redis answers, 0 once it
//! is gone (with a WARN line saying why), 1 again when it is back. A
//! process, for a `/metrics` of its own.

use super::*;

#[tokio::test]
async fn store_up_follows_redis_down_and_back() {
    bounded(120, async {
        let mut redis = RedisServer::start().await;
        let b = instance_process(&redis, &[]).await;
        let api: &Api = &b;
        wait_until(T, "store_up 1 with Redis running", || async {
            api.metrics().await.get("sluice_store_up") == Some(1.0)
        })
        .await;
        redis.kill9().await;
        wait_until(S10 + S5, "store_up 0 once Redis is gone", || async {
            api.metrics().await.get("sluice_store_up") == Some(0.0)
        })
        .await;
        assert!(
            b.stderr_text()
                .lines()
                .any(|l| l.contains("WARN") && l.contains("store not ready")),
            "the outage is logged at WARN:\n{}",
            b.stderr_text()
        );
        redis.restart().await;
        let api: &Api = &b;
        wait_until(S10 + S5, "store_up 1 when Redis is back", || async {
            api.metrics().await.get("sluice_store_up") == Some(1.0)
        })
        .await;
    })
    .await;
}
