//! Configuration: the built-in `config/default.toml`, an optional file,
//! `SLUICE__SECTION__KEY` environment variables and CLI flags, in that order.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::store::{
    embedded::{EmbeddedConfig, Fsync},
    redis::RedisConfig,
};

mod auth;
mod limits;
mod redis;
pub use auth::AuthSettings;
pub use limits::Limits;
pub use redis::RedisSettings;

/// The defaults, also the documented reference.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Parses one of a fixed set of lowercase names, with an error that names the
/// key and every accepted value (serde's own message names neither well).
fn one_of<T: Copy>(key: &str, value: &str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            ConfigError(format!(
                "{key}: {value:?} is not one of {}",
                names.join(", ")
            ))
        })
}

/// A setting that is one of a few names.
pub trait Choice: Sized + Copy + 'static {
    /// Accepted names and their values.
    const CHOICES: &'static [(&'static str, Self)];
}

impl Choice for StoreKind {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("embedded", StoreKind::Embedded),
        ("redis", StoreKind::Redis),
    ];
}

impl Choice for Fsync {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("always", Fsync::Always),
        ("interval", Fsync::Interval),
        ("never", Fsync::Never),
    ];
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

/// A named choice as written in the configuration, checked on load.
#[derive(Clone, Debug)]
pub struct Named<T> {
    raw: String,
    value: Option<T>,
}

impl<'de, T> Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Named {
            raw: String::deserialize(d)?,
            value: None,
        })
    }
}

impl<T: Choice> Named<T> {
    fn resolve(&mut self, key: &str) -> Result<(), ConfigError> {
        self.value = Some(one_of(key, &self.raw, T::CHOICES)?);
        Ok(())
    }

    /// The checked value.
    pub fn get(&self) -> T {
        self.value.expect("resolved when the settings were loaded")
    }
}

/// Storage backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The on-disk log.
    Embedded,
    /// Redis Streams, shared by several instances.
    Redis,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting; see `config/default.toml` for meanings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Settings {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "optional_addr")]
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub store: Named<StoreKind>,
    pub shutdown_grace_secs: u64,
    pub request_head_timeout_secs: u64,
    pub request_body_timeout_secs: u64,
    pub workers: usize,
    pub topic_arbiters: usize,
    pub embedded: EmbeddedSettings,
    pub redis: RedisSettings,
    pub retention: RetentionSettings,
    pub limits: Limits,
    pub stream: StreamSettings,
    pub topics: TopicSettings,
    pub cors: CorsSettings,
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
    pub tls: TlsSettings,
    pub auth: AuthSettings,
}

/// `[tls]`: serve HTTPS (h2 over ALPN, HTTP/1.1 fallback) when both files
/// are set; see `crate::tls`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub watch_secs: u64,
}

impl TlsSettings {
    /// Whether TLS is on (both files set; validated to be both or neither).
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// An address, or none for `""`.
fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("{s:?} is not an address such as 127.0.0.1:9090"))
    })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RateLimitSettings {
    pub publish_per_sec: u32,
    pub publish_burst: u32,
    pub streams_per_sec: u32,
    pub streams_burst: u32,
    pub topics_per_minute: u32,
    pub exempt_loopback: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct EmbeddedSettings {
    pub fsync: Named<Fsync>,
    pub fsync_interval_ms: u64,
    pub segment_bytes: u64,
    pub max_open_files: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RetentionSettings {
    pub max_age_secs: u64,
    pub max_events: u64,
    pub max_bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct StreamSettings {
    pub heartbeat_secs: u64,
    pub liveness_probe_secs: u64,
    pub retry_ms: u64,
    pub stall_timeout_secs: u64,
    pub high_watermark_events: u64,
    pub high_watermark_bytes: u64,
    pub low_watermark_events: u64,
    pub low_watermark_bytes: u64,
}

impl StreamSettings {
    /// The `retry:` duration.
    pub fn retry(&self) -> Duration {
        Duration::from_millis(self.retry_ms)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TopicSettings {
    pub tail_events: usize,
    pub tail_bytes: usize,
    pub mailbox_capacity: usize,
    pub max_pending_events: usize,
    pub idle_release_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LogSettings {
    pub format: Named<LogFormat>,
    pub level: String,
}

/// Command-line values that override the configuration.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--config`.
    pub file: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Loads and validates the layered configuration.
    pub fn load(o: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(o, None)
    }

    /// Like [`Settings::load`], but when `env` is given its entries stand in
    /// for the process environment (read the same way: `SLUICE__*` names,
    /// lists split at commas). For tests that run brokers with different
    /// settings in one process.
    pub fn load_with_env(
        o: &Overrides,
        env: Option<Vec<(String, String)>>,
    ) -> Result<Settings, ConfigError> {
        let mut b = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(f) = &o.file {
            b = b.add_source(
                File::from(f.clone())
                    .format(FileFormat::Toml)
                    .required(true),
            );
        }
        b = b.add_source(
            Environment::with_prefix("SLUICE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("cors.allowed_origins")
                .with_list_parse_key("redis.sentinels")
                .with_list_parse_key("redis.cluster_nodes")
                .with_list_parse_key("auth.hs256_secrets")
                .with_list_parse_key("auth.public_key_files")
                .source(env.map(|vars| vars.into_iter().collect())),
        );
        let set = |b: config::ConfigBuilder<_>, k: &str, v: Option<String>| match v {
            Some(v) => b.set_override(k, v),
            None => Ok(b),
        };
        let err = |e: config::ConfigError| ConfigError(e.to_string());
        b = set(b, "listen", o.listen.clone()).map_err(err)?;
        b = set(
            b,
            "data_dir",
            o.data_dir.as_ref().map(|p| p.display().to_string()),
        )
        .map_err(err)?;
        b = set(b, "log.format", o.log_format.clone()).map_err(err)?;
        let mut s: Settings = b.build().map_err(err)?.try_deserialize().map_err(err)?;
        s.store.resolve("store")?;
        s.embedded.fsync.resolve("embedded.fsync")?;
        s.log.format.resolve("log.format")?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail =
            |key: &str, accepted: &str| Err(ConfigError(format!("{key}: must be {accepted}")));
        if self.request_head_timeout_secs == 0 {
            return fail("request_head_timeout_secs", "at least 1");
        }
        if self.request_body_timeout_secs == 0 {
            return fail("request_body_timeout_secs", "at least 1");
        }
        if self.topics.idle_release_secs == 0 {
            return fail("topics.idle_release_secs", "at least 1");
        }
        self.limits.validate()?;
        let st = &self.stream;
        if st.heartbeat_secs == 0 {
            return fail("stream.heartbeat_secs", "at least 1");
        }
        if st.stall_timeout_secs == 0 {
            return fail("stream.stall_timeout_secs", "at least 1");
        }
        if st.low_watermark_events >= st.high_watermark_events || st.high_watermark_events == 0 {
            return fail(
                "stream.low_watermark_events",
                "below stream.high_watermark_events (and the high one at least 1)",
            );
        }
        if st.low_watermark_bytes >= st.high_watermark_bytes {
            return fail(
                "stream.low_watermark_bytes",
                "below stream.high_watermark_bytes",
            );
        }
        if self.retention.max_events == 0 {
            return fail("retention.max_events", "at least 1");
        }
        if self.retention.max_bytes == 0 {
            return fail("retention.max_bytes", "at least 1");
        }
        if self.limits.max_event_bytes == 0 || self.limits.max_event_bytes > 64 << 20 {
            return fail("limits.max_event_bytes", "from 1 to 67108864");
        }
        if self.limits.max_batch_events == 0 {
            return fail("limits.max_batch_events", "at least 1");
        }
        if self.embedded.segment_bytes < 4096 || self.embedded.segment_bytes > (1 << 31) {
            return fail("embedded.segment_bytes", "from 4096 to 2147483648");
        }
        if self.embedded.fsync.get() == Fsync::Interval && self.embedded.fsync_interval_ms == 0 {
            return fail(
                "embedded.fsync_interval_ms",
                "at least 1 with fsync = \"interval\"",
            );
        }
        if self.topics.mailbox_capacity == 0 || self.topics.tail_events == 0 {
            return fail(
                "topics.mailbox_capacity and topics.tail_events",
                "at least 1",
            );
        }
        if self.store.get() == StoreKind::Redis {
            self.redis.validate()?;
        }
        if self.tls.cert_file.as_os_str().is_empty() != self.tls.key_file.as_os_str().is_empty() {
            return fail(
                "tls.cert_file and tls.key_file",
                "both set (TLS on) or both empty",
            );
        }
        if self.cors.allowed_origins.is_empty() {
            return fail("cors.allowed_origins", "a list of origins, or [\"*\"]");
        }
        self.auth.validate(self.listen)?;
        Ok(())
    }

    /// Settings of the Redis store.
    pub fn redis_config(&self) -> RedisConfig {
        RedisConfig {
            url: self.redis.url.clone(),
            sentinels: self.redis.sentinels.clone(),
            sentinel_master: self.redis.sentinel_master.clone(),
            master_password: self.redis.master_password.clone(),
            cluster_nodes: self.redis.cluster_nodes.clone(),
            wait_replicas: self.redis.wait_replicas,
            wait_timeout_ms: self.redis.wait_timeout_ms,
            pool_size: self.redis.pool_size,
            appends_in_flight: self.redis.appends_in_flight,
            timeout: Duration::from_millis(self.redis.timeout_ms),
            key_prefix: self.redis.key_prefix.clone(),
            follow_sweep: Duration::from_millis(self.redis.follow_sweep_ms),
            max_events: self.retention.max_events,
            max_bytes: self.retention.max_bytes,
            max_age_ms: (self.retention.max_age_secs > 0)
                .then(|| (self.retention.max_age_secs as i64).saturating_mul(1000)),
            dedup_window_ms: (self.limits.dedup_window_secs as i64).saturating_mul(1000),
        }
    }

    /// Settings of the embedded store.
    pub fn embedded_config(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            fsync: self.embedded.fsync.get(),
            fsync_interval: Duration::from_millis(self.embedded.fsync_interval_ms),
            segment_bytes: self.embedded.segment_bytes,
            max_open_files: self.embedded.max_open_files,
            idle_release: Duration::from_secs(self.topics.idle_release_secs),
            max_events: self.retention.max_events,
            max_bytes: self.retention.max_bytes,
            max_age_ms: (self.retention.max_age_secs > 0)
                .then(|| (self.retention.max_age_secs as i64).saturating_mul(1000)),
            dedup_window_ms: (self.limits.dedup_window_secs as i64).saturating_mul(1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn given_variables_stand_in_for_the_environment() {
        let s = Settings::load_with_env(
            &Overrides::default(),
            vars(&[
                ("SLUICE__RETENTION__MAX_EVENTS", "5"),
                (
                    "SLUICE__CORS__ALLOWED_ORIGINS",
                    "http://a.test,http://b.test",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.retention.max_events, 5);
        assert_eq!(s.cors.allowed_origins, ["http://a.test", "http://b.test"]);
        let e = Settings::load_with_env(
            &Overrides::default(),
            vars(&[("SLUICE__EMBEDDED__FSYNC", "sometimes")]),
        )
        .unwrap_err();
        assert!(e.0.contains("embedded.fsync"), "{e}");
    }

    #[test]
    fn the_follow_sweep_is_a_setting_of_at_least_one_ms() {
        let redis = |sweep: Option<&str>| {
            let mut v = vec![("SLUICE__STORE", "redis")];
            v.extend(sweep.map(|s| ("SLUICE__REDIS__FOLLOW_SWEEP_MS", s)));
            Settings::load_with_env(&Overrides::default(), vars(&v))
        };
        let default = redis(None).unwrap().redis_config();
        assert_eq!(default.follow_sweep, Duration::from_secs(1));
        let long = redis(Some("3600000")).unwrap().redis_config();
        assert_eq!(long.follow_sweep, Duration::from_secs(3600));
        let e = redis(Some("0")).unwrap_err();
        assert!(e.0.contains("redis.follow_sweep_ms"), "{e}");
    }
}
