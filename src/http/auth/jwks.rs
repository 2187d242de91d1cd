//! A JWKS document (RFC 7517) from a file or an http(s) URL: loaded at
//! start, loaded again when a token names a key it does not hold (at most
//! once per `jwks_refresh_min_secs`) and every `jwks_refresh_secs`.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::jwk::JwkSet;

use super::key::Key;

/// Longest JWKS document read.
const MAX_DOCUMENT: usize = 1 << 20;
/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the document is.
enum Source {
    File(std::path::PathBuf),
    Url {
        url: String,
        client: reqwest::Client,
    },
}

/// The keys of a JWKS document and how they are kept fresh.
pub(super) struct Jwks {
    source: Source,
    /// The current keys; swapped whole by a reload. A std lock: held only
    /// to clone or replace the `Arc`.
    keys: RwLock<Arc<[Key]>>,
    /// When the document was last loaded. Held across a reload, so
    /// requests that meet the same unknown key wait for one fetch instead
    /// of making their own.
    loaded: tokio::sync::Mutex<Instant>,
    /// Least time between two reloads caused by unknown keys.
    min_interval: Duration,
}

impl Jwks {
    /// Loads the document at `location` (a path, or an http(s) URL).
    pub async fn load(location: &str, min_interval: Duration) -> Result<Jwks, String> {
        let source = if location.starts_with("http://") || location.starts_with("https://") {
            let client = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                // Fetches are rare and may come from any worker thread's
                // runtime: a pooled connection would belong to another.
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| format!("auth.jwks: cannot build an HTTP client: {e}"))?;
            Source::Url {
                url: location.to_owned(),
                client,
            }
        } else {
            Source::File(location.into())
        };
        let keys = fetch(&source).await?;
        Ok(Jwks {
            source,
            keys: RwLock::new(keys),
            loaded: tokio::sync::Mutex::new(Instant::now()),
            min_interval,
        })
    }

    /// The current keys.
    pub fn keys(&self) -> Arc<[Key]> {
        self.keys.read().expect("jwks lock poisoned").clone()
    }

    /// Whether the current keys include one with this `kid`.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys().iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// A token names `kid`, which no key has: loads the document again,
    /// unless that was done less than the minimum interval ago. The keys
    /// after it, or `None` when nothing was loaded.
    pub async fn refresh_for(&self, kid: &str) -> Option<Arc<[Key]>> {
        let mut loaded = self.loaded.lock().await;
        // Another request may have loaded it while this one waited.
        if self.knows(kid) {
            return Some(self.keys());
        }
        if loaded.elapsed() < self.min_interval {
            return None;
        }
        *loaded = Instant::now();
        self.reload("a token names a key id the JWKS did not hold")
            .await
            .then(|| self.keys())
    }

    /// Loads the document again every `every`, so removed keys stop being
    /// accepted.
    pub async fn refresh_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let mut loaded = self.loaded.lock().await;
            *loaded = Instant::now();
            self.reload("periodic refresh").await;
        }
    }

    /// Fetches and swaps the keys; on failure keeps the current ones.
    async fn reload(&self, why: &str) -> bool {
        match fetch(&self.source).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), reason = why, "JWKS loaded");
                *self.keys.write().expect("jwks lock poisoned") = keys;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, reason = why, "JWKS not loaded; keeping the keys held");
                false
            }
        }
    }
}

/// Reads and parses the document.
async fn fetch(source: &Source) -> Result<Arc<[Key]>, String> {
    let (what, text) = match source {
        Source::File(path) => {
            let what = path.display().to_string();
            // A small local file read at start and at most once per
            // refresh interval: not worth a blocking-pool hop.
            let text =
                std::fs::read(path).map_err(|e| format!("auth.jwks: cannot read {what}: {e}"))?;
            (what, text)
        }
        Source::Url { url, client } => {
            let what = url.clone();
            let resp = client
                .get(url)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| format!("auth.jwks: cannot fetch {what}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("auth.jwks: {what} answered {}", resp.status()));
            }
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_DOCUMENT as u64)
            {
                return Err(format!(
                    "auth.jwks: {what} is larger than {MAX_DOCUMENT} bytes"
                ));
            }
            let mut resp = resp;
            let mut body = Vec::new();
            // Read piece by piece: a server that sends no length cannot
            // make the broker hold more than the bound.
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("auth.jwks: cannot read {what}: {e}"))?
            {
                if body.len() + chunk.len() > MAX_DOCUMENT {
                    return Err(format!(
                        "auth.jwks: {what} is larger than {MAX_DOCUMENT} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            (what, body)
        }
    };
    if text.len() > MAX_DOCUMENT {
        return Err(format!(
            "auth.jwks: {what} is larger than {MAX_DOCUMENT} bytes"
        ));
    }
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| format!("auth.jwks: {what} is not a JWKS document: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        match Key::from_jwk(jwk) {
            Ok(k) => keys.push(k),
            Err(why) => tracing::warn!(
                kid = jwk.common.key_id.as_deref().unwrap_or(""),
                "JWKS key skipped: {why}"
            ),
        }
    }
    if keys.is_empty() {
        return Err(format!("auth.jwks: {what} holds no usable signing key"));
    }
    Ok(keys.into())
}
