//! Operations endpoints: `/healthz`, `/readyz`, `/v1/connections`.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use sluice_actors::broker::{GetStreamHealth, ListSessions};

use super::{error::ApiError, AppState};

/// `?probe=stream`.
#[derive(Deserialize)]
pub struct HealthQuery {
    probe: Option<String>,
}

/// Liveness, optionally with stream health figures.
pub async fn healthz(
    state: web::Data<AppState>,
    q: Result<web::Query<HealthQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = q.map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
    match q.probe.as_deref() {
        None => Ok(HttpResponse::Ok().json(json!({"status": "ok"}))),
        Some("stream") => {
            let h = state.broker.addr().send(GetStreamHealth).await?;
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

/// Readiness: the store takes writes.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.broker.store().ready().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => actix_web::ResponseError::error_response(&ApiError::Unavailable(reason)),
    }
}

/// One row per open stream.
pub async fn connections(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stall_ms = state.session_cfg.stall_timeout.as_millis() as i64;
    let links = state.broker.addr().send(ListSessions).await?;
    let mut rows: Vec<_> = links
        .iter()
        .map(|l| {
            let age = l.age_ms();
            json!({
                "id": l.id,
                "topic": l.topic,
                "state": l.health(stall_ms).as_str(),
                "queued_events": l.outstanding_events(),
                "queued_bytes": l.outstanding_bytes(),
                "bytes_sent": l.bytes_sent.load(Ordering::Relaxed),
                "events_sent": l.events_sent.load(Ordering::Relaxed),
                "last_write_ms_ago": age - l.last_write_ms.load(Ordering::Relaxed),
                "connected_secs": age / 1000,
            })
        })
        .collect();
    rows.sort_by_key(|r| r["id"].as_u64());
    Ok(HttpResponse::Ok().json(json!({ "connections": rows })))
}

/// Prometheus text exposition of every `sluice_` metric.
pub async fn metrics() -> Result<HttpResponse, ApiError> {
    let families = sluice_actors::metrics::metrics().registry.gather();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .map_err(|e| ApiError::Unavailable(format!("metrics encoding failed: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
