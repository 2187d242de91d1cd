//! The `[limits]` section: what one request, one client and the whole
//! broker may hold (docs/API.md, "Limits").

use serde::Deserialize;

use super::ConfigError;

/// Size, count and time limits; see `config/default.toml` for meanings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub dedup_window_secs: u64,
    pub max_connections: usize,
    pub reserve_open_files: usize,
    pub max_streams: usize,
    pub max_streams_per_client: usize,
    pub max_topics: usize,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_history_page_bytes: usize,
}

/// The HTTP/1 decoder's own ceilings (vendored actix-http, patch 0005).
const HEAD_BYTES_CEILING: usize = 131_072;
const HEADERS_CEILING: usize = 96;

impl Limits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, accepted: &str| {
            Err(ConfigError(format!("limits.{key}: must be {accepted}")))
        };
        if !(1024..=HEAD_BYTES_CEILING).contains(&self.max_head_bytes) {
            return fail("max_head_bytes", "from 1024 to 131072");
        }
        if !(8..=HEADERS_CEILING).contains(&self.max_headers) {
            return fail("max_headers", "from 8 to 96");
        }
        for (key, v) in [
            ("max_connections", self.max_connections),
            ("max_streams", self.max_streams),
            ("max_streams_per_client", self.max_streams_per_client),
            ("max_topics", self.max_topics),
            ("max_history_page_bytes", self.max_history_page_bytes),
        ] {
            if v == 0 {
                return fail(key, "at least 1");
            }
        }
        Ok(())
    }
}
