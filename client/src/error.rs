//! What can go wrong, and the broker's problem answers (RFC 9457).

use std::time::Duration;

use serde_json::Value;

/// A boxed error from user code (a token provider, a cursor store).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of a client call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be sent or its answer not read (connection
    /// refused or reset, timeout), after the retries the call allows.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The broker refused the request; its problem answer.
    #[error("{0}")]
    Api(Box<Problem>),
    /// A history read from a cursor that cannot be resumed (`416`).
    #[error("cursor cannot be resumed: {0}")]
    Gap(Box<crate::Gap>),
    /// The token provider failed.
    #[error("token provider: {0}")]
    Token(BoxError),
    /// The cursor store failed to load or save.
    #[error("cursor store: {0}")]
    CursorStore(#[source] std::io::Error),
    /// An argument the broker would refuse anyway (bad URL, bad topic).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// An answer that does not follow the API (not JSON, missing fields).
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl Error {
    /// This error and its causes, `: `-separated (a transport error's own
    /// text is often only "error sending request").
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            let text = c.to_string();
            if !s.contains(&text) {
                s.push_str(": ");
                s.push_str(&text);
            }
            cur = c.source();
        }
        s
    }

    /// The HTTP status of a refusal, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(p) => Some(p.status),
            Error::Gap(_) => Some(416),
            _ => None,
        }
    }
}

/// A refusal: the status and its `application/problem+json` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// The problem `type` URI (e.g. `https://sluice.dev/problems/rate-limited`).
    pub kind: Option<String>,
    /// The problem `title`.
    pub title: Option<String>,
    /// The problem `detail`.
    pub detail: Option<String>,
    /// The `Retry-After` of the answer, when it had one.
    pub retry_after: Option<Duration>,
    /// The whole body (extra fields such as `expected_seq`, `line`), or
    /// `Null` when it was not JSON.
    pub body: Value,
}

impl Problem {
    /// Reads a problem from an answer's status, `Retry-After` and body.
    pub(crate) fn new(status: u16, retry_after: Option<Duration>, text: &str) -> Problem {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        Problem {
            status,
            kind: field("type"),
            title: field("title"),
            detail: field("detail").or_else(|| {
                // Not problem+json (a proxy's page): its first line says most.
                let t = text.lines().next().unwrap_or("").trim();
                (!t.is_empty() && body.is_null()).then(|| t.chars().take(200).collect())
            }),
            retry_after,
            body,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(t) = &self.title {
            write!(f, " {t}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}
