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

/// Redis restarted while the instance sat idle: every connection the
/// instance holds is stale, and none of the first reads after the restart
/// may fail for it (a held connection found gone is given up with the
/// others, and a read is tried again on a fresh one).
#[tokio::test]
async fn reads_right_after_an_idle_redis_restart_succeed() {
    bounded(60, async {
        let mut redis = RedisServer::start().await;
        let b = instance(&redis, &[]).await;
        let t = topic("idle-restart");
        let cursors = b.publish_numbered(&t, 0..3).await;
        // Reads take the held connections in turn: all of them are made.
        for _ in 0..8 {
            assert_eq!(b.get("/readyz").await.status, 200);
        }
        redis.restart().await;
        for i in 0..8 {
            let r = b.get("/readyz").await;
            assert_eq!(
                r.status, 200,
                "/readyz call {i} after the restart: {}",
                r.text
            );
        }
        let page = b.get(&format!("/v1/topics/{t}/events?from=earliest")).await;
        assert_eq!(page.status, 200, "history after the restart: {}", page.text);
        let got: Vec<&str> = page.json["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["cursor"].as_str().expect("cursor"))
            .collect();
        assert_eq!(got, cursors, "the log, reloaded from the AOF");
    })
    .await;
}

/// An instance whose tailer cannot read (here: its Redis user may not
/// `XREAD`; as well a refused connection) while its commands work gets
/// none of the other instance's appends on its live streams: its
/// `/readyz` says so in `degraded` (still `200`: it stores and serves its
/// own), its log warns once; once the tailer reads again the stream gets
/// what it missed, and `/readyz` says nothing more.
#[tokio::test]
async fn a_tailer_that_cannot_read_is_reported_and_catches_up_when_it_can() {
    bounded(120, async {
        let redis = RedisServer::start().await;
        redis.cli(&[
            "ACL", "SETUSER", "noxread", "on", ">pw", "~*", "&*", "+@all", "-xread",
        ]);
        let a = instance(&redis, &[]).await;
        let url = format!("redis://noxread:pw@127.0.0.1:{}", redis.port);
        let b = BrokerProcess::with(Setup::new(Store::Redis).redis(&url, "sluicetest")).await;
        let t = topic("tailer");
        let first = a.publish_ok(&t, "{\"seq\":0}").await;
        let mut live = b.sse(&t, "", &[("last-event-id", &first)]).await;
        live.assert_ok();
        let bb: &Api = &b;
        let why = wait_for(T, "B's /readyz to say its tailer cannot read", || {
            bb.degraded()
        })
        .await;
        assert!(
            why.starts_with("tailer: read failed") && why.contains("no permissions"),
            "{why}"
        );
        assert_eq!(
            a.degraded().await,
            None,
            "A follows nothing: nothing to say"
        );
        let missed = a.publish_ok(&t, "{\"seq\":1}").await;
        redis.cli(&["ACL", "SETUSER", "noxread", "+xread"]);
        let got = live.expect_events(1, T).await;
        assert_eq!(msg_id(&got[0]), missed, "the event B's tailer missed");
        wait_for(T, "B's /readyz to stop saying it", || async move {
            bb.degraded().await.is_none().then_some(())
        })
        .await;
        let warned: Vec<String> = b
            .stderr_text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("tailer:"))
            .map(str::to_owned)
            .collect();
        assert_eq!(warned.len(), 1, "one WARN, not one per retry: {warned:?}");
    })
    .await;
}
