//! API errors as RFC 9457 `application/problem+json` responses.

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};
use serde_json::{json, Map, Value};
use sluice_actors::{
    store::{Gap, GapReason, StoreError},
    topic::{PublishError, SubscribeError},
};

/// Where the `type` URIs of Sluice's problems start (RFC 9457).
pub const PROBLEM_TYPE_BASE: &str = "https://sluice.dev/problems/";

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECS: u64 = 1;

/// Every error the HTTP API answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed request: bad topic, header, cursor, query or body.
    #[error("{detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
        /// Extra problem fields (e.g. `line`).
        extra: Map<String, Value>,
    },
    /// No such route or topic.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not; the methods it has, for `Allow`.
    #[error("method not allowed; this resource takes {0}")]
    MethodNotAllowed(&'static str),
    /// `Producer-Seq` skips ahead.
    #[error("producer sequence skips ahead: expected {expected}")]
    SequenceGap {
        /// Sequence the producer should send next.
        expected: u64,
    },
    /// Body larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A `Content-Encoding` Sluice does not decode (anything but gzip).
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// The cursor cannot be resumed.
    #[error("{detail}")]
    RangeNotSatisfiable {
        /// Why.
        detail: String,
        /// Where the client can resume instead.
        gap: Box<Gap>,
    },
    /// The same `Idempotency-Key` was used with a different body.
    #[error("Idempotency-Key already used with a different body")]
    KeyConflict,
    /// The client is over its rate limit; nothing was done.
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after_secs: u64,
    },
    /// A limit per client (open streams, topics created): `429` with
    /// `Retry-After`; nothing was done.
    #[error("{detail}")]
    ClientLimit {
        /// Which limit, in Sluice's words.
        detail: String,
        /// Seconds to wait before a retry.
        retry_after_secs: u64,
    },
    /// Full mailbox or store unavailable; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    /// A limit of the broker as a whole (connections, streams, topics):
    /// `503` with `Retry-After` of the given seconds; nothing was done.
    #[error("{detail}")]
    AtCapacity {
        /// Which limit, in Sluice's words.
        detail: String,
        /// Seconds to wait before a retry.
        retry_after_secs: u64,
        /// Close the connection after the answer (a connection refused as
        /// a whole).
        close: bool,
    },
    /// The request body did not arrive in time; the connection closes.
    #[error("{0}")]
    RequestTimeout(String),
    /// No token, or one that is malformed, expired or wrongly signed: `401`
    /// with `WWW-Authenticate` (RFC 6750). The detail never quotes the token.
    #[error("{detail}")]
    Unauthorized {
        /// What is wrong, in Sluice's words.
        detail: &'static str,
        /// A token was sent (`error="invalid_token"`); without one the
        /// challenge names no error (RFC 6750, 3.1).
        token_sent: bool,
    },
    /// A valid token without the right the request needs: `403`.
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    /// A 400 with just a detail.
    pub fn bad(detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// The 404 of a topic the store does not hold (never used, or deleted).
    pub fn unknown_topic(name: &str) -> Self {
        ApiError::NotFound(format!(
            "topic {name:?} does not exist (a topic exists from its first publish or subscribe)"
        ))
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "Bad Request",
            ApiError::NotFound(_) => "Not Found",
            ApiError::MethodNotAllowed(_) => "Method Not Allowed",
            ApiError::SequenceGap { .. } => "Producer sequence gap",
            ApiError::PayloadTooLarge(_) => "Payload Too Large",
            ApiError::UnsupportedEncoding(_) => "Unsupported Content-Encoding",
            ApiError::RangeNotSatisfiable { .. } => "Cursor cannot be resumed",
            ApiError::KeyConflict => "Idempotency key conflict",
            ApiError::RateLimited { .. } | ApiError::ClientLimit { .. } => "Too Many Requests",
            ApiError::Unavailable(_) | ApiError::AtCapacity { .. } => "Service Unavailable",
            ApiError::RequestTimeout(_) => "Request Timeout",
            ApiError::Unauthorized { .. } => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad-request",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::SequenceGap { .. } => "producer-sequence-gap",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedEncoding(_) => "unsupported-content-encoding",
            ApiError::RangeNotSatisfiable { .. } => "cursor-not-resumable",
            ApiError::KeyConflict => "idempotency-key-conflict",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::ClientLimit { .. } => "client-limit",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::AtCapacity { .. } => "at-capacity",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        // Each says which queue was full or what failed: a 503 the operator
        // can act on (mailbox_capacity, max_pending_events, the store).
        ApiError::Unavailable(e.to_string())
    }
}

impl From<Box<Gap>> for ApiError {
    /// A cursor that cannot be resumed: `416`, its detail saying why.
    fn from(gap: Box<Gap>) -> Self {
        let detail = match (gap.reason, gap.lost) {
            (GapReason::OtherLog, _) => {
                "cursor belongs to another log epoch (the topic was recreated)".to_owned()
            }
            (GapReason::Recovered, _) => {
                "cursor names an event that recovery removed from the log \
                 (damage or a crash cut it); resume after next_cursor, the last event kept"
                    .to_owned()
            }
            (GapReason::Damaged, lost) => format!(
                "the {} event(s) after this cursor were lost to damage in the stored log; \
                 resume after next_cursor to read on",
                lost.unwrap_or(1)
            ),
            (GapReason::Ahead, _) | (GapReason::Trimmed, None) => {
                "cursor is ahead of the latest event".to_owned()
            }
            (GapReason::Trimmed, Some(n)) => {
                format!("cursor is older than retention: {n} events were removed")
            }
        };
        ApiError::RangeNotSatisfiable { detail, gap }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Gap(gap) => gap.into(),
            SubscribeError::Store(e) => e.into(),
            SubscribeError::Restarting => {
                ApiError::Unavailable("topic is restarting; retry".into())
            }
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::Unavailable("broker is shutting down; retry".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::SequenceGap { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::KeyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::ClientLimit { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) | ApiError::AtCapacity { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut body = json!({
            "type": format!("{PROBLEM_TYPE_BASE}{}", self.slug()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let obj = body.as_object_mut().expect("object");
        let mut resp = HttpResponse::build(status);
        match self {
            ApiError::BadRequest { extra, .. } => obj.extend(extra.clone()),
            ApiError::SequenceGap { expected } => {
                obj.insert("expected_seq".into(), json!(expected));
            }
            ApiError::RangeNotSatisfiable { gap, .. } => {
                let next = gap.next_cursor.to_string();
                let latest = gap.latest_cursor.to_string();
                obj.insert("requested".into(), json!(gap.requested.to_string()));
                obj.insert("next_cursor".into(), json!(next));
                obj.insert("latest_cursor".into(), json!(latest));
                obj.insert("lost".into(), json!(gap.lost));
                resp.insert_header(("X-Next-Cursor", next));
                resp.insert_header(("X-Latest-Cursor", latest));
            }
            ApiError::Unavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            ApiError::AtCapacity {
                retry_after_secs,
                close,
                ..
            } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
                obj.insert("retry_after".into(), json!(retry_after_secs.max(&1)));
                if *close {
                    resp.force_close();
                }
            }
            ApiError::RequestTimeout(_) => {
                // The rest of the body may still come: nothing after it on
                // this connection could be told from it.
                resp.force_close();
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::ClientLimit {
                retry_after_secs, ..
            } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
                obj.insert("retry_after".into(), json!(retry_after_secs.max(&1)));
            }
            ApiError::MethodNotAllowed(allow) => {
                resp.insert_header((header::ALLOW, *allow));
            }
            ApiError::UnsupportedEncoding(_) => {
                // The codings that are accepted (RFC 9110, section 15.5.16).
                resp.insert_header((header::ACCEPT_ENCODING, "gzip, identity"));
            }
            ApiError::Unauthorized { token_sent, .. } => {
                let challenge = if *token_sent {
                    r#"Bearer realm="sluice", error="invalid_token""#
                } else {
                    r#"Bearer realm="sluice""#
                };
                resp.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            ApiError::Forbidden(_) => {
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    r#"Bearer realm="sluice", error="insufficient_scope""#,
                ));
            }
            _ => {}
        }
        resp.content_type("application/problem+json").json(body)
    }
}
