//! The `[auth]` section, and the rule that keeps a broker reachable from
//! other machines from serving everyone by accident.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// Shortest HS256 secret: RFC 7518 (3.2) asks for a key of at least the
/// hash's size, 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// Authorization by JWT; see `config/default.toml` for meanings. Off unless
/// a key source is configured ([`AuthSettings::enabled`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuthSettings {
    pub hs256_secrets: Vec<String>,
    pub public_key_files: Vec<PathBuf>,
    pub jwks: String,
    pub jwks_refresh_min_secs: u64,
    pub jwks_refresh_secs: u64,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
    pub cookie_name: String,
    pub allow_anonymous: bool,
}

impl AuthSettings {
    /// Whether tokens are required: some key is configured.
    pub fn enabled(&self) -> bool {
        !self.hs256_secrets.is_empty() || !self.public_key_files.is_empty() || !self.jwks.is_empty()
    }

    /// Whether `auth.jwks` names a URL (else a file).
    pub fn jwks_is_url(&self) -> bool {
        self.jwks.starts_with("http://") || self.jwks.starts_with("https://")
    }

    /// Checks the section, and refuses a broker that listens beyond
    /// loopback without authorization unless that was asked for.
    pub(super) fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        if let Some(short) = self
            .hs256_secrets
            .iter()
            .position(|s| s.len() < MIN_SECRET_BYTES)
        {
            return fail(format!(
                "auth.hs256_secrets: secret #{} is shorter than {MIN_SECRET_BYTES} bytes \
                 (HS256 needs at least 256 bits; e.g. `openssl rand -base64 48`)",
                short + 1
            ));
        }
        if self.jwks.contains("://") && !self.jwks_is_url() {
            return fail("auth.jwks: must be a file path or an http:// or https:// URL".into());
        }
        if self.jwks_refresh_min_secs == 0 {
            return fail("auth.jwks_refresh_min_secs: must be at least 1".into());
        }
        if self.leeway_secs > 300 {
            return fail("auth.leeway_secs: must be from 0 to 300".into());
        }
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(token_char) {
            return fail(
                "auth.cookie_name: must be a cookie name (letters, digits, -, _, .)".into(),
            );
        }
        if !listen.ip().is_loopback() && !self.enabled() && !self.allow_anonymous {
            return fail(format!(
                "listen = {listen} is reachable from other machines and no authorization is \
                 configured: anyone who reaches it could read and write every topic. Either \
                 configure [auth] keys (auth.hs256_secrets, auth.public_key_files or auth.jwks; \
                 see the README, \"Authorization\"), or set auth.allow_anonymous = true \
                 (SLUICE__AUTH__ALLOW_ANONYMOUS=true) to serve without authorization on \
                 purpose, or listen on a loopback address such as 127.0.0.1"
            ));
        }
        Ok(())
    }
}
