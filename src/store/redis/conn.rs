//! How the Redis store reaches Redis: one server by URL (`redis://`, or
//! `rediss://` for TLS), whichever server Redis Sentinel names master of
//! a service, or a Redis Cluster. Either way the store gets multiplexed
//! connections ([`Handle`]) and does not care which it is; with Sentinel a
//! failover is followed by asking the sentinels again whenever a connection
//! is made, and a cluster connection follows `MOVED`/`ASK` and refreshes its
//! slot map by itself.
//!
//! A cluster is reached through one shared cluster connection (it holds one
//! multiplexed connection per master and pipelines every caller's commands
//! on it), not a pool of them: a pool would multiply the connections per
//! master by its size for no gain.
//!
//! One server (by URL or Sentinel) is reached through connections taken
//! from the pool once and then held ([`Lanes`]): deadpool-redis checks a
//! connection with a `PING` every time it hands one out, a round trip per
//! call, while a multiplexed connection can carry every caller's commands
//! at once. A held connection that fails is given up and the next call
//! takes a fresh one from the pool (with Sentinel: a new one to the master
//! the sentinels name then).
//!
//! Each thread that calls Redis has its own lane (up to `pool_size`), and
//! the lane's connection is made on that thread, so its driver task runs
//! there: a call is written, and its answer read, without waking another
//! thread. A topic's appends all go on one connection as a result (the
//! topic actor stays on its thread), and Redis runs them in that order.
//! When appends wait for replicas (`WAIT`, which holds back every later
//! call on its connection), they have lanes of their own.

use deadpool_redis::{
    redis::{
        self,
        aio::{ConnectionLike, MultiplexedConnection},
        cluster::{ClusterClient, ClusterClientBuilder},
        cluster_async::ClusterConnection,
        sentinel::SentinelClient,
        AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value,
    },
    sentinel, Pool, PoolConfig, Runtime, Timeouts,
};

use super::RedisConfig;

/// Connections of one store: the lanes' held connections for commands
/// (from a pool by URL, made through the sentinels with Sentinel, one
/// cluster connection each on a cluster), and a source of dedicated
/// connections for the tailer's blocking reads.
pub struct Connector {
    pool: Pools,
    lanes: Lanes,
    dedicated: Dedicated,
    /// Lanes per kind of call (`pool_size`).
    per_kind: usize,
    /// Appends have lanes of their own: they `WAIT` for replicas, which
    /// holds back every later call on their connection meanwhile.
    appends_apart: bool,
    /// The settings of connections the store makes itself.
    settings: AsyncConnectionConfig,
}

/// What a call does, for the lane it goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Reads and other commands.
    Command,
    /// An append (and its `WAIT`, when appends wait for replicas).
    Append,
}

/// Connections held out of the pool, one per lane.
struct Lanes {
    held: Vec<std::sync::Mutex<Option<Held>>>,
}

/// The calling thread's lane among `n`: threads are numbered in the order
/// they first call Redis, so the first `n` callers have a lane each.
fn lane_here(n: usize) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i) % n.max(1)
}

/// A connection kept by a lane: taken from the pool, or (with Sentinel)
/// made from the master the sentinels name.
enum Held {
    Direct(deadpool_redis::Connection),
    Made(MultiplexedConnection),
}

impl Held {
    fn handle(&self) -> MultiplexedConnection {
        match self {
            Held::Direct(c) => (**c).clone(),
            Held::Made(c) => c.clone(),
        }
    }

    /// Takes the connection out of its pool for good (it is dropped, and
    /// the pool makes a new one when asked).
    fn discard(self) {
        match self {
            Held::Direct(c) => drop(deadpool_redis::Connection::take(c)),
            Held::Made(c) => drop(c),
        }
    }
}

enum Pools {
    Direct(Pool),
    /// Lanes' connections are made through the sentinels (deadpool-redis's
    /// Sentinel pool takes no connection settings: its connections kept
    /// redis-rs's 500 ms response timeout whatever `redis.timeout_ms` said).
    Sentinel,
    Cluster(Box<Shared>),
}

/// The cluster connections of a store, one per lane (a thread's, as for
/// one server), each made on first use (the cluster may be down at start)
/// and kept: they reconnect to nodes by themselves.
struct Shared {
    client: ClusterClient,
    conns: Vec<tokio::sync::OnceCell<ClusterConnection>>,
}

enum Dedicated {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// Cluster mode follows other instances' appends through sharded
    /// pub/sub (`follow.rs`), not blocking reads.
    Cluster,
}

/// A connection for one call: a handle on a lane's held connection, or on
/// a cluster connection.
pub struct Pooled {
    handle: Handle,
    /// A lane holds it (a cluster connection reconnects by itself instead).
    held: bool,
}

impl Pooled {
    /// A handle on the connection (multiplexed connections are cheap
    /// handles).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

/// A connection to one server or to a cluster; commands and scripts run
/// on either alike (a cluster routes them by their first key).
#[derive(Clone)]
pub enum Handle {
    /// One server (given by URL or by Sentinel).
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

impl Lanes {
    fn new(n: usize) -> Self {
        Lanes {
            held: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
        }
    }

    fn held(&self, lane: usize) -> Option<MultiplexedConnection> {
        self.held[lane]
            .lock()
            .expect("poisoned")
            .as_ref()
            .map(Held::handle)
    }

    /// Keeps `fresh` in `lane` unless another call filled it meanwhile
    /// (then `fresh` goes back to its pool); the lane's connection.
    fn keep(&self, lane: usize, fresh: Held) -> MultiplexedConnection {
        let mut slot = self.held[lane].lock().expect("poisoned");
        slot.get_or_insert(fresh).handle()
    }

    fn discard_all(&self) {
        for slot in &self.held {
            let gone = slot.lock().expect("poisoned").take();
            if let Some(held) = gone {
                held.discard();
            }
        }
    }
}

/// Whether a URL asks for TLS.
fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://")
}

impl Connector {
    /// Builds the pools; connects lazily, so Redis may be down at start.
    pub fn new(cfg: &RedisConfig) -> Result<Self, String> {
        if is_tls(&cfg.url)
            || cfg.sentinels.iter().any(|u| is_tls(u))
            || cfg.cluster_nodes.iter().any(|u| is_tls(u))
        {
            // rustls needs one process-wide crypto provider; a second
            // install (another store in the same process) is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let appends_apart = cfg.wait_replicas > 0;
        // The store's own deadline, not redis-rs's default 500 ms response
        // timeout, bounds a call (a `WAIT` may take longer).
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout));
        let slots = cfg.pool_size * if appends_apart { 2 } else { 1 };
        let pool_cfg = PoolConfig {
            max_size: slots,
            timeouts: Timeouts {
                wait: Some(cfg.timeout),
                create: Some(cfg.timeout),
                recycle: Some(cfg.timeout),
            },
            ..Default::default()
        };
        if !cfg.cluster_nodes.is_empty() {
            let client = cluster_builder(cfg)
                .build()
                .map_err(|e| format!("redis.cluster_nodes: {e}"))?;
            return Ok(Connector {
                pool: Pools::Cluster(Box::new(Shared {
                    client,
                    conns: (0..slots).map(|_| tokio::sync::OnceCell::new()).collect(),
                })),
                lanes: Lanes::new(0),
                dedicated: Dedicated::Cluster,
                per_kind: cfg.pool_size,
                appends_apart,
                settings,
            });
        }
        if cfg.sentinels.is_empty() {
            let client =
                redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
            let manager =
                deadpool_redis::Manager::new_with_config(cfg.url.as_str(), settings.clone())
                    .map_err(|e| format!("redis.url: {e}"))?;
            let pool = Pool::builder(manager)
                .config(pool_cfg)
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|e| format!("redis pool: {e}"))?;
            return Ok(Connector {
                pool: Pools::Direct(pool),
                lanes: Lanes::new(slots),
                dedicated: Dedicated::Direct(client),
                per_kind: cfg.pool_size,
                appends_apart,
                settings,
            });
        }
        // The servers are reached the way the sentinels are: over TLS when
        // their URLs are rediss://.
        let node = sentinel::SentinelNodeConnectionInfo {
            tls_mode: cfg
                .sentinels
                .iter()
                .any(|u| is_tls(u))
                .then_some(sentinel::TlsMode::Secure),
            redis_connection_info: (!cfg.master_password.is_empty()).then(|| {
                deadpool_redis::RedisConnectionInfo {
                    password: Some(cfg.master_password.clone()),
                    ..Default::default()
                }
            }),
        };
        let client = SentinelClient::build(
            cfg.sentinels.clone(),
            cfg.sentinel_master.clone(),
            Some(node.into()),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| format!("redis.sentinels: {e}"))?;
        Ok(Connector {
            pool: Pools::Sentinel,
            lanes: Lanes::new(slots),
            dedicated: Dedicated::Sentinel(tokio::sync::Mutex::new(client)),
            per_kind: cfg.pool_size,
            appends_apart,
            settings,
        })
    }

    /// Whether the store speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.pool, Pools::Cluster(_))
    }

    /// A connection for one call: the calling thread's lane's held
    /// connection, taken from the pool first if the lane has none (waits at
    /// most the pool's wait timeout).
    pub async fn get(&self) -> Result<Pooled, String> {
        self.get_for(Use::Command).await
    }

    /// [`get`](Self::get), for a call that does `what`: appends have lanes
    /// of their own when they wait for replicas.
    pub async fn get_for(&self, what: Use) -> Result<Pooled, String> {
        let apart = self.appends_apart && what == Use::Append;
        let slot = lane_here(self.per_kind) + if apart { self.per_kind } else { 0 };
        let pool = match &self.pool {
            Pools::Cluster(s) => {
                // A failed first connection leaves the cell empty: the next
                // call tries again.
                let conn = s.conns[slot]
                    .get_or_try_init(|| s.client.get_async_connection())
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Pooled {
                    handle: Handle::Cluster(conn.clone()),
                    held: false,
                });
            }
            pool => pool,
        };
        if let Some(held) = self.lanes.held(slot) {
            return Ok(Pooled {
                handle: Handle::Single(held),
                held: true,
            });
        }
        let fresh = match pool {
            Pools::Direct(p) => Held::Direct(p.get().await.map_err(|e| e.to_string())?),
            Pools::Sentinel => Held::Made(
                self.dedicated(&self.settings)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Pools::Cluster(_) => unreachable!("answered above"),
        };
        Ok(Pooled {
            handle: Handle::Single(self.lanes.keep(slot, fresh)),
            held: true,
        })
    }

    /// Gives up the connection `used` was on after `error`, when the error
    /// says the connection itself is gone or unusable (closed, timed out,
    /// or now a read-only replica after a failover), so the next call on
    /// its lane takes a fresh one. `None` stands for no answer in time.
    ///
    /// Every held connection is given up then, not only that one: they all
    /// go to the same server, so when one finds it restarted or demoted
    /// the others are as stale, and each would otherwise fail one call of
    /// its own to find out. Whether they were given up is returned.
    pub fn failed(&self, used: &Pooled, error: Option<&redis::RedisError>) -> bool {
        let gone = error.is_none_or(|e| {
            e.is_unrecoverable_error()
                || e.is_io_error()
                || e.is_connection_dropped()
                || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        });
        let give_up = gone && used.held;
        if give_up {
            self.lanes.discard_all();
        }
        give_up
    }

    /// A connection of its own (not pooled), for blocking reads.
    pub async fn dedicated(
        &self,
        cfg: &AsyncConnectionConfig,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let client = match &self.dedicated {
            Dedicated::Direct(c) => c.clone(),
            Dedicated::Sentinel(s) => s.lock().await.async_get_client().await?,
            Dedicated::Cluster => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "no dedicated connection in cluster mode",
                )))
            }
        };
        client
            .get_multiplexed_async_connection_with_config(cfg)
            .await
    }
}

/// A cluster client for the configured nodes, with the store's deadlines.
pub fn cluster_builder(cfg: &super::RedisConfig) -> ClusterClientBuilder {
    ClusterClientBuilder::new(cfg.cluster_nodes.clone())
        .connection_timeout(cfg.timeout)
        .response_timeout(cfg.timeout)
}
