//! TLS (rustls): HTTP/2 over ALPN with HTTP/1.1 as fallback, and the
//! certificate reloaded without a restart.
//!
//! The certificate in force sits in an [`ArcSwap`] read by every handshake
//! ([`CertStore`], the server's `ResolvesServerCert`). A reload (on
//! `SIGHUP`, or when `tls.watch_secs` sees either file change) reads and
//! checks the new pair, then swaps it in: handshakes from then on present
//! it, while connections already open (SSE streams among them) keep the
//! session they have and are not touched. A pair that does not load (a
//! file missing or half-written, a key that does not match) is logged and
//! the certificate in force stays.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::ring,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// The certificate chain and key files, and the pair loaded from them.
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times and sizes when last read.
    seen: Mutex<Option<Stamp>>,
}

/// What says that a file changed: its modification time and size.
type Stamp = [(Option<SystemTime>, u64); 2];

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), and checks that the key is the certificate's.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no PEM certificate in it",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    let signer = ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    let pair = CertifiedKey::new(certs, signer);
    pair.keys_match().map_err(|e| {
        format!(
            "tls.key_file {} is not the key of tls.cert_file {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(pair)
}

fn stamp(files: [&Path; 2]) -> Stamp {
    files.map(|f| match std::fs::metadata(f) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

impl CertStore {
    /// Loads the pair; an error names the file at fault.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<CertStore, String> {
        let seen = stamp([cert_file, key_file]);
        let pair = load(cert_file, key_file)?;
        Ok(CertStore {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(pair),
            seen: Mutex::new(Some(seen)),
        })
    }

    /// Reads the files again and swaps the new pair in; on failure the pair
    /// in force stays and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(stamp([&self.cert_file, &self.key_file]));
        let pair = load(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// Whether either file changed since it was last read.
    fn changed(&self) -> bool {
        let now = stamp([&self.cert_file, &self.key_file]);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != Some(now)
    }

    /// Reloads and logs the outcome.
    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert_file = %self.cert_file.display(),
                why,
                "TLS certificate reloaded; new connections get it"
            ),
            Err(e) => tracing::error!(
                error = %e,
                why,
                "TLS certificate not reloaded; the one in force stays"
            ),
        }
    }

    /// Reloads on every `SIGHUP`, and every `watch` when a file changed;
    /// runs until the process ends.
    pub async fn watch(self: Arc<Self>, watch: Option<Duration>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: TLS reload by SIGHUP is off");
                None
            }
        };
        let mut every = watch.map(tokio::time::interval);
        if hup.is_none() && every.is_none() {
            return;
        }
        loop {
            tokio::select! {
                Some(()) = async { hup.as_mut()?.recv().await } => self.reload_logged("SIGHUP"),
                _ = async { every.as_mut()?.tick().await; Some(()) }, if every.is_some() => {
                    if self.changed() {
                        self.reload_logged("file changed");
                    }
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server's TLS settings: TLS 1.2 and 1.3 (rustls's safe defaults,
/// ring provider), no client certificates, the certificate from `store`.
/// actix-web adds the ALPN protocols (`h2`, then `http/1.1`).
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, String> {
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(config)
}
