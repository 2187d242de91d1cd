//! The HTTP API of API.md: routes, handlers, problem+json errors.
//!
//! - `publish`: single and batch publish.
//! - `subscribe`: the SSE stream and the JSON history poll.
//! - `topics`: topic listing and information.
//! - `ops`: health, readiness, connections, metrics.
//! - `rate_limit`: per-client limits (governor).
//! - `error`: [`error::ApiError`], the problem+json responses.
//! - `validate`: names and header values.
//! - `problem`: the middleware that makes every error problem+json.

pub mod error;
mod ops;
pub mod problem;
mod publish;
pub mod rate_limit;
mod subscribe;
mod topics;
pub mod validate;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use sluice_actors::{broker::Broker, session::SessionConfig};

use crate::config::Settings;
use error::ApiError;

/// What every handler shares.
pub struct AppState {
    /// The actor system.
    pub broker: Broker,
    /// The loaded configuration.
    pub settings: Arc<Settings>,
    /// Session tunables derived from the configuration.
    pub session_cfg: SessionConfig,
    /// Per-client rate limits.
    pub limits: rate_limit::RateLimits,
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Registers every route; used by `main` and by tests alike.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/topics/{topic}/events")
            .route(web::get().to(subscribe::events))
            .route(web::post().to(publish::publish))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/topics/{topic}/batch")
            .route(web::post().to(publish::publish_batch))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/topics")
            .route(web::get().to(topics::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/topics/{topic}")
            .route(web::get().to(topics::info))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/connections")
            .route(web::get().to(ops::connections))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(ops::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(ops::metrics))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(ops::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}
