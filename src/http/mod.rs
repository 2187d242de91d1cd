//! The HTTP API of API.md: routes, handlers, problem+json errors.
//!
//! - `publish`: single and batch publish.
//! - `ndjson`: the batch body, one event a line, parsed into events.
//! - `subscribe`: the SSE stream and the JSON history poll.
//! - `topics`: topic listing and information.
//! - `ops`: health, readiness, connections, metrics.
//! - `rate_limit`: per-client limits (governor).
//! - `error`: [`error::ApiError`], the problem+json responses.
//! - `validate`: names and header values.
//! - `problem`: the middleware that makes every error problem+json.
//! - [`auth`]: authorization by JWT, a middleware and the route table.
//! - [`metrics_listener`]: `/metrics` alone on `metrics_listen`.

pub mod auth;
pub mod error;
pub mod metrics_listener;
mod ndjson;
pub(crate) mod ops;
pub mod problem;
mod publish;
pub mod rate_limit;
mod subscribe;
mod topics;
pub mod validate;

use std::sync::Arc;

use actix_web::{guard, web, HttpRequest, HttpResponse};
use sluice_actors::{Broker, SessionConfig};

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
    /// Authorization (off without keys).
    pub auth: auth::Auth,
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// A resource whose other methods get a `405` naming the ones it has
/// (RFC 9110 asks for the `Allow` header on every `405`).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// `GET`, and `HEAD` with the same headers and no body (actix-http drops the
/// body of a `HEAD` answer), for the resources that answer at once; probes
/// and `curl -I` use `HEAD`. The event stream takes `GET` only: a `HEAD`
/// there would open a session for nothing.
pub(crate) fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Registers every route; used by `main` and by tests alike.
pub fn configure(cfg: &mut web::ServiceConfig) {
    const READ: &str = "GET, HEAD, OPTIONS";
    cfg.service(
        resource("/v1/topics/{topic}/events", "GET, POST, OPTIONS")
            .route(web::get().to(subscribe::events))
            .route(web::post().to(publish::publish)),
    )
    .service(
        resource("/v1/topics/{topic}/batch", "POST, OPTIONS")
            .route(web::post().to(publish::publish_batch)),
    )
    .service(resource("/v1/topics", READ).route(get_or_head().to(topics::list)))
    .service(resource("/v1/topics/{topic}", READ).route(get_or_head().to(topics::info)))
    .service(resource("/v1/connections", READ).route(get_or_head().to(ops::connections)))
    .service(resource("/healthz", READ).route(get_or_head().to(ops::healthz)))
    .service(resource("/metrics", READ).route(get_or_head().to(ops::metrics)))
    .service(resource("/readyz", READ).route(get_or_head().to(ops::readyz)))
    .default_service(web::to(not_found));
}
