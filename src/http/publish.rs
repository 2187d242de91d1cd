//! `POST /v1/topics/{topic}/events` and `POST /v1/topics/{topic}/batch`.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_actors::{
    event::{AppendOutcome, NewEvent},
    topic::{Publish, PublishReply},
};
use tokio::sync::oneshot;

use sluice_actors::metrics::metrics;

use super::{error::ApiError, rate_limit::Kind, validate, AppState};

/// Reads a request body, refusing it past `limit` bytes without buffering more.
async fn read_body(
    mut payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The validated topic name and a body of at most `limit` bytes of UTF-8.
async fn topic_and_text(
    state: &AppState,
    path: web::Path<String>,
    payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<(String, Bytes), ApiError> {
    let topic = path.into_inner();
    validate::topic(&topic)?;
    state.limits.check(Kind::Publish, req)?;
    let body = read_body(payload, req, limit).await?;
    std::str::from_utf8(&body).map_err(|_| ApiError::bad("body is not valid UTF-8"))?;
    Ok((topic, body))
}

/// Hands events to the topic actor and waits until they are durable.
async fn store(
    state: &AppState,
    topic: &str,
    events: Vec<NewEvent>,
) -> Result<PublishReply, ApiError> {
    let started = std::time::Instant::now();
    let addr = state.broker.topic(topic).await?;
    let (tx, rx) = oneshot::channel();
    addr.try_send(Publish { events, reply: tx })
        .map_err(|e| match e {
            actix::prelude::SendError::Full(_) => {
                metrics()
                    .publish_rejected
                    .with_label_values(&["overloaded"])
                    .inc();
                ApiError::Unavailable("topic is overloaded; retry".into())
            }
            actix::prelude::SendError::Closed(_) => {
                ApiError::Unavailable("topic is restarting; retry".into())
            }
        })?;
    let reply = rx
        .await
        .map_err(|_| ApiError::Unavailable("topic restarted before storing; retry".into()))??;
    metrics()
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(reply)
}

/// One event's outcome as a JSON result, or the error it maps to.
fn result_json(outcome: &AppendOutcome, reply: &PublishReply) -> Result<(Value, bool), ApiError> {
    match outcome {
        AppendOutcome::Stored(ev) => Ok((
            json!({"cursor": ev.cursor(&reply.epoch).to_string(), "duplicate": false}),
            false,
        )),
        AppendOutcome::Duplicate(c) => Ok((
            json!({"cursor": c.as_ref().map(|c| c.to_string()), "duplicate": true}),
            true,
        )),
        AppendOutcome::KeyConflict => Err(ApiError::KeyConflict),
        AppendOutcome::SequenceGap { expected } => Err(ApiError::SequenceGap {
            expected: *expected,
        }),
    }
}

fn event_from_headers(req: &HttpRequest, data: Bytes) -> Result<NewEvent, ApiError> {
    let event_type = validate::header(req, "Event-Type")?
        .map(|t| validate::token("Event-Type", t, 64).map(|()| t.to_owned()))
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
            let seq = seq
                .parse::<u64>()
                .map_err(|_| ApiError::bad("Producer-Seq must be an unsigned 64-bit integer"))?;
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
#[tracing::instrument(skip_all, fields(topic = %path))]
pub async fn publish(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, body) = topic_and_text(
        &state,
        path,
        payload,
        &req,
        state.settings.limits.max_event_bytes,
    )
    .await?;
    let event = event_from_headers(&req, body)?;
    let reply = store(&state, &topic, vec![event]).await?;
    let (result, duplicate) = result_json(&reply.outcomes[0], &reply)?;
    let cursor = result["cursor"].as_str().map(str::to_owned);
    let mut resp = HttpResponse::build(if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    });
    if let Some(c) = &cursor {
        resp.insert_header(("Event-Cursor", c.as_str()));
    }
    if duplicate {
        resp.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(resp.json(json!({"topic": topic, "cursor": cursor, "duplicate": duplicate})))
}

/// One NDJSON line of a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    data: Value,
    #[serde(rename = "type")]
    event_type: Option<String>,
    idempotency_key: Option<String>,
}

fn bad_line(line: usize, detail: impl std::fmt::Display) -> ApiError {
    let mut extra = Map::new();
    extra.insert("line".into(), json!(line));
    ApiError::BadRequest {
        detail: format!("line {line}: {detail}"),
        extra,
    }
}

fn parse_batch(body: &str, state: &AppState) -> Result<Vec<NewEvent>, ApiError> {
    let limits = &state.settings.limits;
    let mut events = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if events.len() == limits.max_batch_events {
            return Err(bad_line(
                n,
                format!("a batch holds at most {} events", limits.max_batch_events),
            ));
        }
        let parsed: BatchLine = serde_json::from_str(line).map_err(|e| bad_line(n, e))?;
        let data = match parsed.data {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if data.len() > limits.max_event_bytes {
            return Err(bad_line(
                n,
                format!("data exceeds {} bytes", limits.max_event_bytes),
            ));
        }
        if let Some(t) = &parsed.event_type {
            validate::token("type", t, 64).map_err(|e| bad_line(n, e))?;
        }
        if let Some(k) = &parsed.idempotency_key {
            validate::idempotency_key(k).map_err(|e| bad_line(n, e))?;
        }
        events.push(NewEvent {
            data: Bytes::from(data),
            event_type: parsed.event_type,
            idempotency_key: parsed.idempotency_key,
            producer: None,
        });
    }
    if events.is_empty() {
        return Err(ApiError::bad("batch has no events"));
    }
    Ok(events)
}

/// Publishes an NDJSON batch, all lines validated before any is stored.
#[tracing::instrument(skip_all, fields(topic = %path))]
pub async fn publish_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, body) = topic_and_text(
        &state,
        path,
        payload,
        &req,
        state.settings.limits.max_batch_bytes,
    )
    .await?;
    let text = std::str::from_utf8(&body).expect("checked UTF-8");
    let events = parse_batch(text, &state)?;
    let reply = store(&state, &topic, events).await?;
    // A conflict inside a batch fails just that line: the others are stored
    // (the store checks every event on its own), so report per line.
    let mut results = Vec::with_capacity(reply.outcomes.len());
    for o in &reply.outcomes {
        results.push(match result_json(o, &reply) {
            Ok((v, _)) => v,
            Err(e) => json!({"cursor": null, "duplicate": false, "error": e.to_string(), "status": actix_web::ResponseError::status_code(&e).as_u16()}),
        });
    }
    Ok(HttpResponse::Ok().json(json!({"topic": topic, "results": results})))
}
