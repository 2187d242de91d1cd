//! What the suites share: brokers to talk to, an SSE reader, cursor helpers,
//! and waiting with a deadline.
//!
//! A broker runs on the store it is given ([`Store`], part of its
//! [`Setup`]), in one of two ways with the same request helpers ([`Api`],
//! which both handles dereference to):
//!
//! - [`Broker`]: in this process, through `sluice::server::run` on port 0,
//!   on a thread of its own. For every test that does not need a process.
//! - [`BrokerProcess`]: the real `sluice` binary. For tests that SIGKILL,
//!   SIGTERM or restart it, read its log, exit code, pid or RSS, or set
//!   something only the process environment carries (store fault injection,
//!   `SSL_CERT_FILE`), or read `/metrics` (one registry per process).
//!
//! Suites that hold for both stores write each test once as
//! `async fn name(store: Store)` and list it in [`on_both_stores!`], which
//! makes `embedded::name` and `redis::name` tests of it (so
//! `cargo test --test it redis::` runs the Redis half). The Redis brokers
//! share one private `redis-server` per test process, each with its own key
//! prefix.

#![allow(dead_code)]

mod api;
pub mod certs;
mod cursor;
mod in_process;
mod process;
mod proxy;
pub mod redis;
pub mod redis_cluster;
mod sse;

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::time::Instant;

pub use api::{assert_problem, header_map, header_str, http_client, try_publish, Api, Resp};
pub use cursor::*;
pub use in_process::Broker;
pub use process::{rss_kib, run_expecting_exit, BrokerProcess, RssSampler};
pub use proxy::Proxy;
pub use sluice_client::sse::Message;
pub use sse::{SseItem, SseStream};

/// Makes one test per store of each listed `async fn name(store: Store)`:
/// `embedded::name` and `redis::name`, with the given test attribute.
macro_rules! on_both_stores {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod embedded {
            $( $(#[$attr])* async fn $name() {
                super::$name($crate::support::Store::Embedded).await
            } )*
        }
        mod redis {
            $( $(#[$attr])* async fn $name() {
                super::$name($crate::support::Store::Redis).await
            } )*
        }
    };
}

/// Like [`on_both_stores!`] for properties of the embedded store's files
/// (segments, torn tails): `embedded::name` only.
macro_rules! on_embedded_store {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod embedded {
            $( $(#[$attr])* async fn $name() {
                super::$name($crate::support::Store::Embedded).await
            } )*
        }
    };
}

/// Where a broker keeps its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// The on-disk log in the broker's data directory.
    Embedded,
    /// Redis: the test process's shared `redis-server` unless
    /// [`Setup::redis`] names another.
    Redis,
}

/// How to start a broker: its store, its settings as `SLUICE__…`
/// variables, and optionally its data directory and a `--config` file.
#[derive(Clone, Debug)]
pub struct Setup {
    store: Store,
    redis: Option<(String, String)>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    listen: Option<u16>,
    open_files: Option<u64>,
}

impl Setup {
    pub fn new(store: Store) -> Setup {
        Setup {
            store,
            redis: None,
            env: Vec::new(),
            dir: None,
            config: None,
            listen: None,
            open_files: None,
        }
    }

    /// Adds environment variables (settings, or for a process anything).
    pub fn env(mut self, vars: &[(&str, &str)]) -> Setup {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Runs on an existing data directory (for restarts); the caller owns
    /// it. Without it each broker gets a temporary one.
    pub fn dir(mut self, dir: &Path) -> Setup {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// A process listens on this loopback port instead of port 0 (to be
    /// restarted where its clients reconnect). A port taken meanwhile by
    /// another process fails the start: see [`BrokerProcess::restart`].
    pub fn listen(mut self, port: u16) -> Setup {
        self.listen = Some(port);
        self
    }

    /// A process runs with this open-file limit (soft and hard), set by
    /// `prlimit` before it starts.
    pub fn open_files(mut self, n: u64) -> Setup {
        self.open_files = Some(n);
        self
    }

    /// A configuration file, as `--config` gives it.
    pub fn config(mut self, file: &Path) -> Setup {
        self.config = Some(file.to_path_buf());
        self
    }

    /// Redis at `url` with `key_prefix` (several instances of one cluster
    /// share both) instead of the shared test server.
    pub fn redis(mut self, url: &str, key_prefix: &str) -> Setup {
        assert_eq!(
            self.store,
            Store::Redis,
            "a Redis URL for a {:?} store",
            self.store
        );
        self.redis = Some((url.to_string(), key_prefix.to_string()));
        self
    }

    /// The data directory, and the temporary directory to keep alive when
    /// none was given.
    fn data_dir(&self) -> (PathBuf, Option<tempfile::TempDir>) {
        match &self.dir {
            Some(d) => (d.clone(), None),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                (tmp.path().to_path_buf(), Some(tmp))
            }
        }
    }

    /// Every variable the broker gets: the store's, then the caller's.
    /// Starts the shared `redis-server` on first use.
    async fn vars(&self, data_dir: &Path) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        if self.store == Store::Redis {
            let (url, prefix) = match &self.redis {
                Some(r) => r.clone(),
                None => {
                    // One prefix per data directory: brokers stay apart,
                    // and a restart on the same directory finds its data.
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    data_dir.hash(&mut h);
                    (redis::shared().await.url(), format!("t{:016x}", h.finish()))
                }
            };
            vars.push(("SLUICE__STORE".to_string(), "redis".to_string()));
            vars.push(("SLUICE__REDIS__URL".to_string(), url));
            vars.push(("SLUICE__REDIS__KEY_PREFIX".to_string(), prefix));
        }
        vars.extend(self.env.iter().cloned());
        vars
    }
}

/// Runs a test body with a hard time limit.
pub async fn bounded<F: Future<Output = ()>>(secs: u64, fut: F) {
    if tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .is_err()
    {
        panic!("test did not finish within {secs} s");
    }
}

/// Polls `f` every 50 ms until it returns true; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `f` every 50 ms until it returns `Some`; panics after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh unique-looking topic name per call (tests share nothing anyway,
/// this just makes logs readable).
pub fn topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}
