//! How the Redis store reaches Redis: one server by URL (`redis://`, or
//! `rediss://` for TLS), or whichever server Redis Sentinel names master of
//! a service. Either way the store gets multiplexed connections and does
//! not care which it is; with Sentinel a failover is followed by asking the
//! sentinels again whenever a connection is made.

use deadpool_redis::{
    redis::{self, aio::MultiplexedConnection, sentinel::SentinelClient, AsyncConnectionConfig},
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
}

enum Dedicated {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A pooled connection; it goes back to its pool when dropped.
pub enum Pooled {
    Direct(deadpool_redis::Connection),
    Sentinel(sentinel::Connection),
}

impl Pooled {
    /// A handle on the connection (multiplexed connections are cheap
    /// handles); valid while `self` is held.
    pub fn handle(&self) -> MultiplexedConnection {
        match self {
            Pooled::Direct(c) => (**c).clone(),
            Pooled::Sentinel(c) => (**c).clone(),
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
        if is_tls(&cfg.url) || cfg.sentinels.iter().any(|u| is_tls(u)) {
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

    /// A pooled connection (waits at most the pool's wait timeout).
    pub async fn get(&self) -> Result<Pooled, String> {
        match &self.pool {
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
        };
        client
            .get_multiplexed_async_connection_with_config(cfg)
            .await
    }
}
