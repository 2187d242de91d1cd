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

/// Connections of one store: a pool for commands and a source of dedicated
/// connections for the tailer's blocking reads.
pub struct Connector {
    pool: Pools,
    dedicated: Dedicated,
}

enum Pools {
    Direct(Pool),
    Sentinel(sentinel::Pool),
    Cluster(Box<Shared>),
}

/// The one cluster connection of a store, made on first use (the cluster
/// may be down at start) and kept: it reconnects to nodes by itself.
struct Shared {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

enum Dedicated {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// Cluster mode follows other instances' appends through sharded
    /// pub/sub (`follow.rs`), not blocking reads.
    Cluster,
}

/// A pooled connection; it goes back to its pool when dropped.
pub enum Pooled {
    Direct(deadpool_redis::Connection),
    Sentinel(sentinel::Connection),
    Cluster(ClusterConnection),
}

impl Pooled {
    /// A handle on the connection (multiplexed connections are cheap
    /// handles); valid while `self` is held.
    pub fn handle(&self) -> Handle {
        match self {
            Pooled::Direct(c) => Handle::Single((**c).clone()),
            Pooled::Sentinel(c) => Handle::Single((**c).clone()),
            Pooled::Cluster(c) => Handle::Cluster(c.clone()),
        }
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
        let pool_cfg = PoolConfig {
            max_size: cfg.pool_size,
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
                    conn: tokio::sync::OnceCell::new(),
                })),
                dedicated: Dedicated::Cluster,
            });
        }
        if cfg.sentinels.is_empty() {
            let client =
                redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
            let mut c = deadpool_redis::Config::from_url(cfg.url.clone());
            c.pool = Some(pool_cfg);
            let pool = c
                .create_pool(Some(Runtime::Tokio1))
                .map_err(|e| format!("redis pool: {e}"))?;
            return Ok(Connector {
                pool: Pools::Direct(pool),
                dedicated: Dedicated::Direct(client),
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
        let mut c = sentinel::Config::from_urls(
            cfg.sentinels.clone(),
            cfg.sentinel_master.clone(),
            sentinel::SentinelServerType::Master,
        )
        .with_node_connection_info(Some(node.clone()));
        c.pool = Some(pool_cfg);
        let pool = c
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| format!("redis sentinel pool: {e}"))?;
        let client = SentinelClient::build(
            cfg.sentinels.clone(),
            cfg.sentinel_master.clone(),
            Some(node.into()),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| format!("redis.sentinels: {e}"))?;
        Ok(Connector {
            pool: Pools::Sentinel(pool),
            dedicated: Dedicated::Sentinel(tokio::sync::Mutex::new(client)),
        })
    }

    /// Whether the store speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.pool, Pools::Cluster(_))
    }

    /// A pooled connection (waits at most the pool's wait timeout).
    pub async fn get(&self) -> Result<Pooled, String> {
        match &self.pool {
            Pools::Cluster(s) => {
                // A failed first connection leaves the cell empty: the next
                // call tries again.
                let conn = s
                    .conn
                    .get_or_try_init(|| s.client.get_async_connection())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Pooled::Cluster(conn.clone()))
            }
            Pools::Direct(p) => p.get().await.map(Pooled::Direct).map_err(|e| e.to_string()),
            Pools::Sentinel(p) => p
                .get()
                .await
                .map(Pooled::Sentinel)
                .map_err(|e| e.to_string()),
        }
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
