//! `POST /v1/topics/{topic}/events` and `POST /v1/topics/{topic}/batch`.

use actix_web::{
    http::{
        header::{HeaderName, HeaderValue},
        StatusCode,
    },
    mime, web, HttpRequest, HttpResponse,
};
use std::time::Duration;

use bytes::Bytes;
use sluice_actors::{
    cursor::{write_cursor, Epoch},
    event::{AppendOutcome, NewEvent},
    topic::PublishReply,
};

use sluice_actors::metrics::metrics;

use super::{body, error::ApiError, ndjson, rate_limit::Kind, strict, validate, AppState};

/// The validated topic name and a body of at most `limit` bytes.
async fn topic_and_body(
    state: &AppState,
    path: web::Path<String>,
    payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<(String, Bytes), ApiError> {
    let topic = path.into_inner();
    validate::topic(&topic)?;
    state.limits.check(Kind::Publish, req)?;
    let deadline = Duration::from_secs(state.settings.request_body_timeout_secs);
    let body = body::read(payload, req, limit, deadline).await?;
    // After the body: a body the HTTP layer finds malformed is answered
    // as such, and reading starts at once (no wait before it).
    state.topics.admit(&state.broker, req, &topic).await?;
    Ok((topic, body))
}

/// Hands events to the topic actor and waits until they are durable.
async fn store(
    state: &AppState,
    topic: &str,
    events: Vec<NewEvent>,
) -> Result<PublishReply, ApiError> {
    let started = std::time::Instant::now();
    let reply = state.broker.publish(topic, events).await?;
    metrics()
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(reply)
}

/// The error an outcome stands for, if it is not a success.
fn outcome_error(outcome: &AppendOutcome) -> Option<ApiError> {
    match outcome {
        AppendOutcome::Stored(_) | AppendOutcome::Duplicate(_) => None,
        AppendOutcome::KeyConflict => Some(ApiError::KeyConflict),
        AppendOutcome::SequenceGap { expected } => Some(ApiError::SequenceGap {
            expected: *expected,
        }),
    }
}

/// Appends `{"cursor":...,"duplicate":...}` for one outcome to `out`, with
/// `error` and `status` for an event the store refused. Written directly:
/// a batch answer has one per event.
fn write_result(out: &mut Vec<u8>, outcome: &AppendOutcome, epoch: &Epoch) {
    match outcome {
        AppendOutcome::Stored(ev) => {
            out.extend_from_slice(b"{\"cursor\":\"");
            write_cursor(out, ev.time_ms, ev.seq, epoch);
            out.extend_from_slice(b"\",\"duplicate\":false}");
        }
        AppendOutcome::Duplicate(Some(c)) => {
            out.extend_from_slice(b"{\"cursor\":\"");
            c.write_to(out);
            out.extend_from_slice(b"\",\"duplicate\":true}");
        }
        AppendOutcome::Duplicate(None) => {
            out.extend_from_slice(b"{\"cursor\":null,\"duplicate\":true}");
        }
        AppendOutcome::KeyConflict | AppendOutcome::SequenceGap { .. } => {
            let e = outcome_error(outcome).expect("an error outcome");
            out.extend_from_slice(b"{\"cursor\":null,\"duplicate\":false,\"error\":");
            serde_json::to_writer(&mut *out, &e.to_string()).expect("writing to a Vec");
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(
                actix_web::ResponseError::status_code(&e)
                    .as_u16()
                    .to_string()
                    .as_bytes(),
            );
            out.push(b'}');
        }
    }
}

pub(super) fn event_from_headers(req: &HttpRequest, data: Bytes) -> Result<NewEvent, ApiError> {
    let event_type = validate::header(req, "Event-Type")?
        .map(|t| validate::event_type("Event-Type", t).map(|()| t.to_owned()))
        .transpose()?;
    let idempotency_key = validate::header(req, "Idempotency-Key")?
        .map(|k| validate::idempotency_key(k).map(|()| k.to_owned()))
        .transpose()?;
    let producer = match (
        validate::header(req, "Producer-Id")?,
        validate::header(req, "Producer-Seq")?,
    ) {
        (None, None) => None,
        (Some(id), Some(seq)) => {
            validate::token("Producer-Id", id, 64)?;
            let seq = strict::parse_u64(seq).ok_or_else(|| {
                ApiError::bad(
                    "Producer-Seq must be an unsigned 64-bit integer in decimal digits, \
                     without sign, blanks or leading zeros",
                )
            })?;
            Some((id.to_owned(), seq))
        }
        _ => {
            return Err(ApiError::bad(
                "Producer-Id and Producer-Seq go together: send both or neither",
            ))
        }
    };
    Ok(NewEvent {
        data,
        event_type,
        idempotency_key,
        producer,
    })
}

/// Publishes one event.
pub async fn publish(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, body) = topic_and_body(
        &state,
        path,
        payload,
        &req,
        state.settings.limits.max_event_bytes,
    )
    .await?;
    std::str::from_utf8(&body).map_err(|_| ApiError::bad("body is not valid UTF-8"))?;
    let event = event_from_headers(&req, body)?;
    let reply = store(&state, &topic, vec![event]).await?;
    let outcome = &reply.outcomes[0];
    if let Some(e) = outcome_error(outcome) {
        return Err(e);
    }
    let duplicate = matches!(outcome, AppendOutcome::Duplicate(_));
    let mut json = Vec::with_capacity(96 + topic.len());
    json.extend_from_slice(b"{\"topic\":\"");
    // Validated topic names need no escaping.
    json.extend_from_slice(topic.as_bytes());
    json.extend_from_slice(b"\",");
    let result_at = json.len();
    write_result(&mut json, outcome, &reply.epoch);
    // The result object's fields continue the outer object.
    json.remove(result_at);
    let mut resp = HttpResponse::build(if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    });
    let cursor = match outcome {
        AppendOutcome::Stored(ev) => Some(ev.cursor(&reply.epoch)),
        AppendOutcome::Duplicate(c) => c.clone(),
        _ => None,
    };
    if let Some(c) = cursor {
        let mut text = Vec::with_capacity(64);
        c.write_to(&mut text);
        resp.insert_header((
            HeaderName::from_static("event-cursor"),
            HeaderValue::from_bytes(&text).expect("cursors are visible ASCII"),
        ));
    }
    if duplicate {
        resp.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(resp.content_type(mime::APPLICATION_JSON).body(json))
}

/// Publishes an NDJSON batch, all lines validated before any is stored.
pub async fn publish_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, body) = topic_and_body(
        &state,
        path,
        payload,
        &req,
        state.settings.limits.max_batch_bytes,
    )
    .await?;
    let events = ndjson::parse_batch(&body, &state.settings.limits)?;
    let reply = store(&state, &topic, events).await?;
    // A conflict inside a batch fails just that line: the others are stored
    // (the store checks every event on its own), so report per line.
    let mut json = Vec::with_capacity(32 + topic.len() + reply.outcomes.len() * 72);
    json.extend_from_slice(b"{\"topic\":\"");
    json.extend_from_slice(topic.as_bytes());
    json.extend_from_slice(b"\",\"results\":[");
    for (i, o) in reply.outcomes.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        write_result(&mut json, o, &reply.epoch);
    }
    json.extend_from_slice(b"]}");
    Ok(HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(json))
}
