//! Bearer tokens: a fixed one, or a provider asked again whenever the
//! broker says the token is no longer good (`401`, or a stream's
//! `event: auth-expired`).

use std::{future::Future, sync::Arc};

use tokio::sync::Mutex;

use crate::error::{BoxError, Error, Result};

/// Supplies bearer tokens. Called for the first request, then again
/// whenever the broker refuses the token it gave (`401`) or a stream ends
/// with `event: auth-expired`; what it returns is kept until then.
///
/// Any `Fn() -> impl Future<Output = Result<String, BoxError>>` is a
/// provider:
///
/// ```
/// # fn fetch_token() -> String { String::new() }
/// let client = sluice_client::Client::builder("http://127.0.0.1:8080")
///     .token_provider(|| async { Ok(fetch_token()) })
///     .build()
///     .unwrap();
/// ```
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// A token valid now (a new one when called again).
    async fn token(&self) -> Result<String, BoxError>;
}

#[async_trait::async_trait]
impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<String, BoxError>> + Send,
{
    async fn token(&self) -> Result<String, BoxError> {
        self().await
    }
}

/// How a client authenticates.
#[derive(Clone, Default)]
pub(crate) enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// Always this token.
    Fixed(String),
    /// Tokens from a provider; the one in use is cached.
    Provider {
        provider: Arc<dyn TokenProvider>,
        current: Arc<Mutex<Option<String>>>,
    },
}

impl Auth {
    /// Whether tokens come from a provider (so a refusal can be cured).
    pub(crate) fn renewable(&self) -> bool {
        matches!(self, Auth::Provider { .. })
    }

    /// Whether requests carry a token at all.
    pub(crate) fn enabled(&self) -> bool {
        !matches!(self, Auth::None)
    }

    /// The token to send, asking the provider when none is cached.
    pub(crate) async fn token(&self) -> Result<Option<String>> {
        match self {
            Auth::None => Ok(None),
            Auth::Fixed(t) => Ok(Some(t.clone())),
            Auth::Provider { provider, current } => {
                let mut cur = current.lock().await;
                if cur.is_none() {
                    *cur = Some(provider.token().await.map_err(Error::Token)?);
                }
                Ok(cur.clone())
            }
        }
    }

    /// Drops `stale` (the token just refused), so that the next
    /// [`token`](Auth::token) asks the provider again. A token another
    /// task renewed meanwhile is kept.
    pub(crate) async fn renew(&self, stale: Option<&str>) {
        if let Auth::Provider { current, .. } = self {
            let mut cur = current.lock().await;
            if cur.as_deref() == stale {
                *cur = None;
            }
        }
    }
}
