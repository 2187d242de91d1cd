//! Operations endpoints: `/healthz`, `/readyz`, `/v1/connections`, `/metrics`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{error::ApiError, strict, AppState};

/// Liveness, optionally (`?probe=stream`) with stream health figures.
pub async fn healthz(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = strict::Query::parse(req.query_string(), &["probe"])?;
    match q.get("probe") {
        None => Ok(HttpResponse::Ok().json(json!({"status": "ok"}))),
        Some("stream") => {
            let h = state.broker.stream_health().await?;
            let total = h.active_connections + h.disconnects_1m;
            let rate = if total == 0 {
                0.0
            } else {
                h.disconnects_1m as f64 / total as f64
            };
            Ok(HttpResponse::Ok().json(json!({
                "status": "ok",
                "active_connections": h.active_connections,
                "disconnects_1m": h.disconnects_1m,
                "disconnect_rate_1m": rate,
            })))
        }
        Some(other) => Err(ApiError::bad(format!(
            "probe must be \"stream\", not {other:?}"
        ))),
    }
}

/// Readiness: the store takes writes. A store that does, but works less
/// well than it should, is ready and says what is wrong.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.broker.store();
    let ready = store.ready().await;
    sluice_actors::metrics::metrics()
        .store_up
        .set(i64::from(ready.is_ok()));
    match ready {
        Ok(()) => HttpResponse::Ok().json(match store.degraded() {
            Some(why) => json!({"status": "ready", "degraded": why}),
            None => json!({"status": "ready"}),
        }),
        Err(reason) => actix_web::ResponseError::error_response(&ApiError::Unavailable(reason)),
    }
}

/// One row per open stream.
pub async fn connections(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let sessions = state.broker.sessions().await?;
    let mut rows: Vec<_> = sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "topic": &*s.topic,
                "state": s.health.as_str(),
                "queued_events": s.queued_events,
                "queued_bytes": s.queued_bytes,
                "bytes_sent": s.bytes_sent,
                "events_sent": s.events_sent,
                "last_write_ms_ago": s.last_write_ms_ago,
                "connected_secs": s.connected_secs,
            })
        })
        .collect();
    rows.sort_by_key(|r| r["id"].as_u64());
    Ok(HttpResponse::Ok().json(json!({ "connections": rows })))
}

/// `/metrics` on `listen`: the metrics, unless `metrics_listen` moved them
/// to an address of their own (kept private there).
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.settings.metrics_listen.is_some() {
        return Err(ApiError::NotFound(
            "metrics are served on an address of their own (metrics_listen)".into(),
        ));
    }
    metrics_text().await
}

/// Prometheus text exposition of every `sluice_` metric.
pub async fn metrics_text() -> Result<HttpResponse, ApiError> {
    let families = sluice_actors::metrics::metrics().registry.gather();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .map_err(|e| ApiError::Unavailable(format!("metrics encoding failed: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
