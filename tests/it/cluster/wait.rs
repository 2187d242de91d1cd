//! Appends that wait for a replica (`redis.wait_replicas`): the `WAIT`
//! that follows an append holds back every later call on its connection
//! until the replica answers (or the wait times out), so appends go on
//! connections of their own, and reads made meanwhile by the same thread
//! are not held back; and a wait runs as long as configured, past the
//! client library's default response timeout.

use std::process::Command;

use super::{instance, T};
use crate::support::{redis::RedisServer, *};

fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid.expect("a running server").to_string();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// A Redis server and its replica, in sync.
async fn master_and_replica() -> (RedisServer, RedisServer) {
    let master = RedisServer::start().await;
    let port = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).await;
    wait_until(T, "the replica in sync", || async {
        master
            .cli(&["INFO", "replication"])
            .contains("state=online")
    })
    .await;
    (master, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waiting_for_a_replica_holds_back_no_read() {
    bounded(90, async {
        let (master, replica) = master_and_replica().await;
        // One worker thread: the topic's appends and the reads of history
        // are made on the same thread. The wait is long enough that only
        // the replica's answer ends it within the test.
        let b = instance(
            &master,
            &[
                ("SLUICE__WORKERS", "1"),
                ("SLUICE__REDIS__WAIT_REPLICAS", "1"),
                ("SLUICE__REDIS__WAIT_TIMEOUT_MS", "60000"),
                ("SLUICE__REDIS__TIMEOUT_MS", "90000"),
            ],
        )
        .await;
        let t = topic("wait");
        b.publish_ok(&t, "{\"seq\":0}").await;

        signal(&replica, "STOP");
        let (base, topic) = (b.base_url(), t.clone());
        let waiting = tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/topics/{topic}/events"))
                .body("{\"seq\":1}")
                .send()
                .await
                .expect("publish sent")
                .status()
                .as_u16()
        });
        wait_until(T, "the append to wait for the replica", || async {
            master
                .cli(&["INFO", "clients"])
                .contains("blocked_clients:1")
        })
        .await;
        let read = tokio::time::timeout(T, b.history(&t, "from=earliest"))
            .await
            .expect("a read is not held back by the append's WAIT");
        assert_eq!(read.status, 200, "{}", read.text);
        let data: Vec<&str> = read.json["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events: {}", read.text))
            .iter()
            .filter_map(|e| e["data"].as_str())
            .collect();
        // The waiting append is written on the master already; only its
        // acknowledgement waits for the replica.
        assert_eq!(data, ["{\"seq\":0}", "{\"seq\":1}"], "{}", read.text);
        assert!(
            !waiting.is_finished(),
            "the append still waits for the replica"
        );

        signal(&replica, "CONT");
        assert_eq!(
            waiting.await.expect("publish task"),
            201,
            "acknowledged once replicated"
        );
    })
    .await;
}

/// A wait longer than redis-rs's default response timeout (500 ms) is the
/// configured one: with the replica stopped, the append answers that the
/// replica did not acknowledge it in `wait_timeout_ms`, not that Redis
/// "timed out" (the client library gave up at 500 ms whatever
/// `redis.timeout_ms` said), whether the server is given by URL or found
/// through Sentinel.
async fn a_long_wait_runs_its_course(through_sentinel: bool) {
    bounded(90, async {
        let (master, replica) = master_and_replica().await;
        let sentinel = match through_sentinel {
            true => Some(RedisServer::start_sentinel(master.port).await),
            false => None,
        };
        let sentinels = sentinel
            .as_ref()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .unwrap_or_default();
        let mut env = vec![
            ("SLUICE__REDIS__WAIT_REPLICAS", "1"),
            ("SLUICE__REDIS__WAIT_TIMEOUT_MS", "1500"),
            ("SLUICE__REDIS__TIMEOUT_MS", "5000"),
        ];
        if through_sentinel {
            env.push(("SLUICE__REDIS__SENTINELS", sentinels.as_str()));
            env.push(("SLUICE__REDIS__SENTINEL_MASTER", "mymaster"));
        }
        let b = instance(&master, &env).await;
        let t = topic("long-wait");
        b.publish_ok(&t, "{\"seq\":0}").await;
        signal(&replica, "STOP");
        let r = b.publish(&t, "{\"seq\":1}", &[]).await;
        let prob = r.assert_problem(503);
        assert!(
            prob["detail"]
                .as_str()
                .is_some_and(|d| d.contains("0 of 1 within 1500 ms")),
            "{}",
            r.text
        );
        signal(&replica, "CONT");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_half_a_second_runs_its_course() {
    a_long_wait_runs_its_course(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_half_a_second_runs_its_course_through_sentinel() {
    a_long_wait_runs_its_course(true).await;
}
