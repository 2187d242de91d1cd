//! `[redis]`: where the Redis store is (one server, Sentinel or a Redis
//! Cluster) and how appends wait for replicas.

use serde::Deserialize;

use super::ConfigError;

/// The `[redis]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RedisSettings {
    pub url: String,
    pub sentinels: Vec<String>,
    pub sentinel_master: String,
    pub master_password: String,
    pub cluster_nodes: Vec<String>,
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
    pub pool_size: usize,
    pub appends_in_flight: usize,
    pub timeout_ms: u64,
    pub key_prefix: String,
    pub follow_sweep_ms: u64,
}

impl RedisSettings {
    /// Checks the table; only called when the Redis store is chosen.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail =
            |key: &str, accepted: &str| Err(ConfigError(format!("{key}: must be {accepted}")));
        let url_ok = |u: &str| {
            ["redis://", "rediss://", "redis+unix://"]
                .iter()
                .any(|p| u.starts_with(p))
        };
        if !url_ok(&self.url) {
            return fail("redis.url", "a redis://, rediss:// or redis+unix:// URL");
        }
        // Which entry is wrong, never its text: a URL may hold a password.
        let wrong_entry = |list: &[String], ok: &dyn Fn(&str) -> bool| {
            list.iter().position(|u| !ok(u)).map(|i| {
                if list[i].trim().is_empty() {
                    format!("entry {} is empty (a trailing or doubled comma?)", i + 1)
                } else {
                    format!("entry {} is not such a URL", i + 1)
                }
            })
        };
        if let Some(why) = wrong_entry(&self.sentinels, &url_ok) {
            return fail(
                "redis.sentinels",
                &format!("a list of redis:// or rediss:// URLs of sentinels; {why}"),
            );
        }
        let node_ok = |u: &str| url_ok(u) && !u.starts_with("redis+unix://");
        if let Some(why) = wrong_entry(&self.cluster_nodes, &node_ok) {
            return fail(
                "redis.cluster_nodes",
                &format!("a list of redis:// or rediss:// URLs of cluster nodes; {why}"),
            );
        }
        if !self.cluster_nodes.is_empty() && !self.sentinels.is_empty() {
            return fail(
                "redis.cluster_nodes and redis.sentinels",
                "one of them (a Redis Cluster fails over by itself)",
            );
        }
        if self.wait_replicas > 0 && self.wait_timeout_ms >= self.timeout_ms {
            // Else a wait that runs out is a call that times out, and
            // every held connection is given up for it.
            return fail(
                "redis.wait_timeout_ms",
                "below redis.timeout_ms when wait_replicas is set",
            );
        }
        if self.wait_replicas > 0 && self.wait_timeout_ms == 0 {
            return fail(
                "redis.wait_timeout_ms",
                "at least 1 when wait_replicas is set",
            );
        }
        if !self.sentinels.is_empty() && self.sentinel_master.is_empty() {
            return fail(
                "redis.sentinel_master",
                "the service name Sentinel monitors",
            );
        }
        if self.pool_size == 0 || self.timeout_ms == 0 || self.appends_in_flight == 0 {
            return fail(
                "redis.pool_size, redis.appends_in_flight and redis.timeout_ms",
                "at least 1",
            );
        }
        if self.follow_sweep_ms == 0 {
            return fail("redis.follow_sweep_ms", "at least 1");
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return fail("redis.key_prefix", "a non-empty prefix without braces");
        }
        Ok(())
    }
}
