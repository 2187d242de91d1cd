//! `GET /v1/topics`, `GET /v1/topics/{topic}` and
//! `DELETE /v1/topics/{topic}`.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sluice_actors::{store::StoreError, topic::DeleteError};

use super::{auth, error::ApiError, validate, AppState};

async fn subscriber_counts(state: &AppState) -> Result<HashMap<String, usize>, ApiError> {
    let sessions = state.broker.sessions().await?;
    let mut counts = HashMap::new();
    for s in sessions {
        *counts.entry(s.topic.to_string()).or_default() += 1;
    }
    Ok(counts)
}

/// Lists every topic the request may read (with authorization on, those
/// its token's `subscribe` patterns match), with its retained events and
/// open streams.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let store = state.broker.store();
    let counts = subscriber_counts(&state).await?;
    let mut rows = Vec::new();
    for name in store.topics().await? {
        if !auth::may_read(&req, &name) {
            continue;
        }
        let retained = match store.bounds(&name).await {
            Ok(b) => b.retained(),
            Err(StoreError::UnknownTopic) => continue,
            Err(e) => return Err(e.into()),
        };
        rows.push(json!({
            "topic": name,
            "retained": retained,
            "subscribers": counts.get(&name).copied().unwrap_or(0),
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "topics": rows })))
}

/// One topic's bounds and open streams.
pub async fn info(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    validate::topic(&name)?;
    let b = match state.broker.store().bounds(&name).await {
        Ok(b) => b,
        Err(StoreError::UnknownTopic) => return Err(ApiError::unknown_topic(&name)),
        Err(e) => return Err(e.into()),
    };
    let subscribers = subscriber_counts(&state)
        .await?
        .get(&name)
        .copied()
        .unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({
        "topic": name,
        "oldest_cursor": (b.retained() > 0).then(|| b.boundary_cursor().to_string()).and(
            // The oldest retained event's own cursor.
            (b.retained() > 0).then(|| sluice_actors::cursor::Cursor::new(b.first_time_ms, b.first_seq, b.epoch.clone()).to_string())
        ),
        "latest_cursor": (b.latest_seq > 0).then(|| b.latest_cursor().to_string()),
        "retained": b.retained(),
        "subscribers": subscribers,
    })))
}

/// Deletes a topic: its events, its dedup state, its open streams (on
/// every instance sharing the store). `204`, or `404` for a topic the store
/// does not hold.
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // The route table requires `admin` already; checked here too, so the
    // handler is safe whatever the route.
    auth::require_admin(&req)?;
    let name = path.into_inner();
    validate::topic(&name)?;
    match state.broker.delete_topic(&name).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(DeleteError::Unknown) => Err(ApiError::unknown_topic(&name)),
        Err(DeleteError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}
