//! `GET /v1/topics/{topic}/events`: the SSE stream, or the JSON history poll
//! when the client does not ask for `text/event-stream`.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde_json::json;
use sluice_actors::{
    cursor::{rfc3339_millis, Cursor},
    cursor_check,
    store::StoreError,
    topic::{Start, SubscribeError},
    Expiry, StreamRequest,
};

use sluice_actors::metrics::metrics;

use super::{auth, error::ApiError, rate_limit::Kind, strict, validate, AppState};

/// Default and largest `limit` of the history poll.
const HISTORY_DEFAULT: usize = 100;
const HISTORY_MAX: usize = 1000;

/// Query parameters of the events endpoint. Unknown ones are ignored (cache
/// busters and client-library extras are common on SSE URLs); a known one
/// given twice is a `400`.
pub(super) struct EventsQuery {
    stream: Option<String>,
    cursor: Option<String>,
    from: Option<String>,
    on_gap: Option<String>,
    limit: Option<String>,
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
        // A stream opened with a token ends when the token does.
        stream(state, topic, start, on_gap, auth::expiry(&req)).await
    } else {
        history(state, topic, start, &q).await
    }
}

async fn stream(
    state: web::Data<AppState>,
    topic: String,
    start: Start,
    on_gap: bool,
    expiry: Option<Expiry>,
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
        .streaming(stream.body))
}

/// The `limit` of a history poll.
pub(super) fn history_limit(q: &EventsQuery) -> Result<usize, ApiError> {
    match &q.limit {
        None => Ok(HISTORY_DEFAULT),
        Some(l) => match strict::parse_u64(l) {
            Some(n) if (1..=HISTORY_MAX as u64).contains(&n) => Ok(n as usize),
            _ => Err(ApiError::bad(format!(
                "limit must be an integer from 1 to {HISTORY_MAX} in decimal digits, \
                 without sign, blanks or leading zeros"
            ))),
        },
    }
}

async fn history(
    state: web::Data<AppState>,
    topic: String,
    start: Start,
    q: &EventsQuery,
) -> Result<HttpResponse, ApiError> {
    let limit = history_limit(q)?;
    let store = state.broker.store();
    let bounds = match &start {
        // A poll from a cursor is a resume: like a stream's, it opens the
        // topic (creating it if needed), so a cursor of a deleted or wiped
        // log gets the same 416 as on the stream, not a 404.
        Start::After(_) => store.open_topic(&topic).await?,
        // Without one there is nothing to resume: a topic that does not
        // exist (never used, or deleted) has no history, and a read does
        // not create it.
        Start::Earliest | Start::Latest => match store.bounds(&topic).await {
            Err(StoreError::UnknownTopic) => return Err(ApiError::unknown_topic(&topic)),
            b => b?,
        },
    };
    let (after, after_cursor) = match start {
        Start::Earliest => (bounds.first_seq - 1, bounds.boundary_cursor()),
        Start::Latest => (bounds.latest_seq, bounds.latest_cursor()),
        Start::After(c) => {
            // A position that holds another event now (or that the log went
            // back past) says more than the bounds alone.
            let resumed = match cursor_check::mismatch(&**store, &topic, &c).await {
                Some(gap) => Err(gap),
                None => bounds.resume_point(&c),
            };
            count_resume(&Start::After(c.clone()), resumed.is_err());
            (resumed.map_err(ApiError::from)?, c)
        }
    };
    let mut events = store.read(&topic, after, limit).await?;
    // A page ends before positions lost to damage: polling on from its
    // next_cursor gets the 416 that names the loss, never a silent skip.
    let run = 1 + events
        .windows(2)
        .take_while(|w| w[1].seq == w[0].seq + 1)
        .count();
    events.truncate(run);
    let next_cursor = events
        .last()
        .map_or(after_cursor, |e| e.cursor(&bounds.epoch));
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            json!({
                "cursor": e.cursor(&bounds.epoch).to_string(),
                "type": e.event_type,
                "data": e.data_str(),
                "time": rfc3339_millis(e.time_ms),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"events": rows, "next_cursor": next_cursor.to_string()})))
}
