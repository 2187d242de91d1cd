//! The HTTP API of API.md: routes, handlers, problem+json errors.
//!
//! - `publish`: single and batch publish.
//! - `ndjson`: the batch body, one event a line, parsed into events.
//! - `subscribe`: the SSE stream; `history`: the JSON history poll,
//!   bounded in bytes and written as the client reads.
//! - `topics`: topic listing, information and deletion.
//! - `ops`: health, readiness, connections, metrics.
//! - `rate_limit`: per-client limits (governor).
//! - `gate`: open connections and free file descriptors, per connection;
//!   `stream_slots`: open streams; `topic_limits`: new topics.
//! - `error`: [`error::ApiError`], the problem+json responses.
//! - `validate`: names and header values.
//! - `problem`: the middleware that makes every error problem+json.
//! - `body`: request bodies (size limits, gzip); `strict`: one value per
//!   single-value header and query parameter, numbers in one spelling.
//! - `preflight`: CORS preflights answered with the route's own methods.
//! - `openapi`: `GET /openapi.json`; `malformed`: quiet logging of requests
//!   the HTTP layer refuses.
//! - [`auth`]: authorization by JWT, a middleware and the route table.
//! - [`metrics_listener`]: `/metrics` alone on `metrics_listen`.
//! - The browser console and module (`/`, `/sluice.js`) are
//!   [`crate::console`]'s files, registered here with the other routes.

pub mod auth;
mod batch_line;
mod body;
pub mod error;
// Not part of the API: the fuzz targets' and property tests' scenarios.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod history;
pub mod malformed;
pub mod metrics_listener;
mod ndjson;
mod openapi;
pub(crate) mod ops;
pub mod preflight;
pub mod problem;
mod publish;
pub mod rate_limit;
pub mod stream_slots;
pub mod strict;
mod subscribe;
pub mod topic_limits;
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
    /// Open streams, in all and per client.
    pub streams: std::sync::Arc<stream_slots::StreamSlots>,
    /// New topics, in all and per client.
    pub topics: topic_limits::TopicLimits,
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// One route: its path pattern (as actix-web writes it) and the methods it
/// takes, as its `Allow` header lists them.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Path pattern; `{name}` is one path segment.
    pub path: &'static str,
    /// Its methods, `OPTIONS` (CORS preflight) included, as in `Allow`.
    pub allow: &'static str,
}

/// Every route the server has. [`configure`] cannot register a resource
/// that is not here, nor with other methods (it panics at start); the CORS
/// preflight and the OpenAPI check (`tests/it/openapi.rs`) read it.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/v1/topics/{topic}/events",
        allow: "GET, POST, OPTIONS",
    },
    Route {
        path: "/v1/topics/{topic}/batch",
        allow: "POST, OPTIONS",
    },
    Route {
        path: "/v1/topics",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/v1/topics/{topic}",
        allow: "GET, HEAD, DELETE, OPTIONS",
    },
    Route {
        path: "/v1/connections",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/healthz",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/metrics",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/readyz",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/openapi.json",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/console.js",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/console.css",
        allow: "GET, HEAD, OPTIONS",
    },
    Route {
        path: "/sluice.js",
        allow: "GET, HEAD, OPTIONS",
    },
];

/// The route of [`ROUTES`] that `path` (a request's path) falls under.
pub fn route_of(path: &str) -> Option<&'static Route> {
    let matches = |pattern: &str| {
        let mut want = pattern.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    };
    ROUTES.iter().find(|r| matches(r.path))
}

/// The resource at `path`, whose other methods get a `405` naming the ones
/// it has (RFC 9110 asks for the `Allow` header on every `405`). Panics,
/// at start, unless [`ROUTES`] has the same path with the same methods.
fn resource(path: &'static str, allow: &'static str) -> actix_web::Resource {
    assert!(
        ROUTES.iter().any(|r| r.path == path && r.allow == allow),
        "http::ROUTES must list {path} with {allow}"
    );
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
    .service(
        resource("/v1/topics/{topic}", "GET, HEAD, DELETE, OPTIONS")
            .route(get_or_head().to(topics::info))
            .route(web::delete().to(topics::delete)),
    )
    .service(resource("/v1/connections", READ).route(get_or_head().to(ops::connections)))
    .service(resource("/healthz", READ).route(get_or_head().to(ops::healthz)))
    .service(resource("/metrics", READ).route(get_or_head().to(ops::metrics)))
    .service(resource("/readyz", READ).route(get_or_head().to(ops::readyz)))
    .service(resource("/openapi.json", READ).route(get_or_head().to(openapi::document)));
    for asset in &crate::console::ASSETS {
        cfg.service(resource(asset.path, READ).route(get_or_head().to(crate::console::serve)));
    }
    cfg.default_service(web::to(not_found));
}
