//! `GET /v1/topics/{topic}/events`: the SSE stream, or the JSON history poll
//! when the client does not ask for `text/event-stream`.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use sluice_actors::{
    cursor::Cursor,
    topic::{Start, SubscribeError},
    Expiry, StreamRequest,
};

use sluice_actors::metrics::metrics;

use futures_util::StreamExt;

use super::{
    auth, error::ApiError, history, rate_limit::Kind, stream_slots::Slot, strict, validate,
    AppState,
};

/// Query parameters of the events endpoint. Unknown ones are ignored (cache
/// busters and client-library extras are common on SSE URLs); a known one
/// given twice is a `400`.
pub(super) struct EventsQuery {
    stream: Option<String>,
    cursor: Option<String>,
    from: Option<String>,
    on_gap: Option<String>,
    pub(super) limit: Option<String>,
}

impl EventsQuery {
    pub(super) fn parse(query: &str) -> Result<Self, ApiError> {
        let q = strict::Query::parse(query, &["stream", "cursor", "from", "on_gap", "limit"])?;
        let get = |name| q.get(name).map(str::to_owned);
        Ok(EventsQuery {
            stream: get("stream"),
            cursor: get("cursor"),
            from: get("from"),
            on_gap: get("on_gap"),
            limit: get("limit"),
        })
    }
}

pub(super) fn wants_sse(req: &HttpRequest, q: &EventsQuery) -> Result<bool, ApiError> {
    match q.stream.as_deref() {
        Some("sse") => return Ok(true),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "stream must be \"sse\", not {other:?}"
            )))
        }
        None => {}
    }
    Ok(req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|m| m.trim().starts_with("text/event-stream"))
        }))
}

fn parse_cursor(s: &str, source: &str) -> Result<Cursor, ApiError> {
    Cursor::parse(s).map_err(|e| {
        let m = metrics();
        m.cursor_parse_failures.inc();
        m.resumes.with_label_values(&["invalid"]).inc();
        ApiError::bad(format!("{source}: {e}"))
    })
}

/// Counts a resume from a cursor by its result.
fn count_resume(start: &Start, gap: bool) {
    if matches!(start, Start::After(_)) {
        metrics()
            .resumes
            .with_label_values(&[if gap { "gap" } else { "ok" }])
            .inc();
    }
}

/// The start position, by API.md's precedence; without any, `default`.
/// Every position sent is read, not only the one that wins: a malformed
/// `X-Resume-Cursor`, `cursor` or `from` behind a valid `Last-Event-ID` is
/// a `400` too, as it is alone (a bad input is never silently ignored).
pub(super) fn start_position(
    req: &HttpRequest,
    q: &EventsQuery,
    default: Start,
) -> Result<Start, ApiError> {
    let mut first = None;
    for name in ["Last-Event-ID", "X-Resume-Cursor"] {
        if let Some(v) = validate::header(req, name)? {
            // EventSource never sends an empty Last-Event-ID; treat one as absent.
            if !v.is_empty() {
                let c = parse_cursor(v, name)?;
                first.get_or_insert(Start::After(c));
            }
        }
    }
    if let Some(c) = &q.cursor {
        let c = parse_cursor(c, "cursor")?;
        first.get_or_insert(Start::After(c));
    }
    let from = match q.from.as_deref() {
        None => None,
        Some("latest") => Some(Start::Latest),
        Some("earliest") => Some(Start::Earliest),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "from must be \"earliest\" or \"latest\", not {other:?}"
            )))
        }
    };
    Ok(first.or(from).unwrap_or(default))
}

pub(super) fn resume_on_gap(q: &EventsQuery) -> Result<bool, ApiError> {
    match q.on_gap.as_deref() {
        None | Some("error") => Ok(false),
        Some("resume") => Ok(true),
        Some(other) => Err(ApiError::bad(format!(
            "on_gap must be \"resume\" or \"error\", not {other:?}"
        ))),
    }
}

/// Serves the events endpoint.
#[tracing::instrument(skip_all, fields(topic = %path))]
pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let topic = path.into_inner();
    validate::topic(&topic)?;
    let q = EventsQuery::parse(req.query_string())?;
    let sse = wants_sse(&req, &q)?;
    // A stream without a position starts live; a poll without one pages
    // from the oldest retained event, which is what paging clients expect.
    let default = if sse { Start::Latest } else { Start::Earliest };
    let start = start_position(&req, &q, default)?;
    let on_gap = resume_on_gap(&q)?;
    if sse {
        state.limits.check(Kind::Stream, &req)?;
        let slot = state.streams.take(&req)?;
        state.topics.admit(&state.broker, &req, &topic).await?;
        // A stream opened with a token ends when the token does.
        stream(state, topic, start, on_gap, auth::expiry(&req), slot).await
    } else {
        if matches!(start, Start::After(_)) {
            // A poll from a cursor opens (creates) the topic.
            state.topics.admit(&state.broker, &req, &topic).await?;
        }
        history::page(state, topic, start, q.limit.as_deref(), count_resume).await
    }
}

async fn stream(
    state: web::Data<AppState>,
    topic: String,
    start: Start,
    on_gap: bool,
    expiry: Option<Expiry>,
    slot: Slot,
) -> Result<HttpResponse, ApiError> {
    let req = StreamRequest {
        start: start.clone(),
        resume_on_gap: on_gap,
        retry: state.settings.stream.retry(),
        expiry,
    };
    let stream = state.broker.open_stream(&topic, req).await.map_err(|e| {
        if matches!(e, SubscribeError::Gap(_)) {
            count_resume(&start, true);
        }
        ApiError::from(e)
    })?;
    count_resume(&start, stream.subscribed.gap.is_some());
    tracing::info!(
        conn = stream.id,
        after = stream.subscribed.after_seq,
        "stream opened"
    );

    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((header::CONTENT_ENCODING, "identity"))
        // The slot is the body's: free once the body is dropped.
        .streaming(stream.body.map(move |chunk| {
            let _held = &slot;
            chunk
        })))
}
