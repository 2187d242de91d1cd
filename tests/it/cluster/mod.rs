//! Cluster mode: several broker instances over one Redis (issue 3, "What must
//! be shown"). Every test starts its own `redis-server` on a free loopback
//! port (AOF on, `appendfsync always`) and two or three `sluice` instances
//! sharing it, in this process unless a test needs a process (to SIGKILL
//! it, give it `SSL_CERT_FILE`, or read its own `/metrics`).

use std::time::Duration;

use crate::support::{redis::RedisServer, *};

mod delivery;
mod failover;
mod flushall;
mod outage;
mod rollback;
mod store_up;
mod tls_sentinel;
mod wait;

const T: Duration = Duration::from_secs(15);
const S5: Duration = Duration::from_secs(5);
const S10: Duration = Duration::from_secs(10);

/// The settings of an instance of the cluster that shares `redis`.
fn member(redis: &RedisServer, extra: &[(&str, &str)]) -> Setup {
    Setup::new(Store::Redis)
        .redis(&redis.url(), "sluicetest")
        .env(extra)
}

/// Starts one instance of the cluster that shares `redis`, in this process.
async fn instance(redis: &RedisServer, extra: &[(&str, &str)]) -> Broker {
    Broker::with(member(redis, extra)).await
}

/// Like [`instance`], as a subprocess.
async fn instance_process(redis: &RedisServer, extra: &[(&str, &str)]) -> BrokerProcess {
    BrokerProcess::with(member(redis, extra)).await
}

/// Asserts a `200` duplicate answer carrying `cursor`.
fn assert_replayed(a: &Resp, cursor: &str, what: &str) {
    assert_eq!(a.status, 200, "{what}: expected a 200 replay: {}", a.text);
    assert_eq!(
        a.header("idempotent-replayed").as_deref(),
        Some("true"),
        "{what}: a replay carries Idempotent-Replayed: true"
    );
    assert_eq!(
        a.cursor(),
        cursor,
        "{what}: replay must give the original cursor"
    );
    assert_eq!(
        a.header("event-cursor").as_deref(),
        Some(cursor),
        "{what}: Event-Cursor header"
    );
}
