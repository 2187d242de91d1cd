//! `metrics_listen`: `GET /metrics` alone on an address of its own, so the
//! metrics can stay on a private interface while `listen` is public (the
//! main listener then answers `/metrics` with `404`).

use std::{io, net::SocketAddr};

use actix_web::{dev::ServerHandle, middleware::from_fn, App, HttpServer};
use actix_web_lab::middleware::map_response;

use super::{error::ApiError, get_or_head, ops, problem};

/// Starts serving `/metrics` on `addr` (one worker: a scrape every few
/// seconds needs no more) and returns the handle that stops it.
pub fn start(addr: SocketAddr) -> io::Result<ServerHandle> {
    let server = HttpServer::new(|| {
        App::new()
            .wrap(map_response(problem::ensure_problem_json))
            // Same redaction as the main listener: a token sent here by
            // mistake stays out of logs too.
            .wrap(from_fn(super::auth::take_query_token))
            .route("/metrics", get_or_head().to(ops::metrics_text))
            .default_service(actix_web::web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NotFound(
                    "this address serves GET /metrics only".into(),
                ))
            }))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on metrics_listen {addr}: {e}"),
        )
    })?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(%addr, "serving /metrics on metrics_listen");
    Ok(handle)
}
