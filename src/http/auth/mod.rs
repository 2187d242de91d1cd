//! Authorization by JWT (docs/API.md, "Authorization").
//!
//! - `token`: where a request's token comes from (header, cookie, query),
//!   and [`take_query_token`], which keeps a query token out of logs.
//! - `keys`: the configured keys and the verification of a token.
//! - `jwks`: a JWKS document and its bounded refreshes.
//! - `claims`: the `sluice` claim's rights and a verified token's
//!   [`Grant`].
//! - `policy`: the right each route needs; the only table of it.
//!
//! [`authorize`] is a middleware inside the CORS layer (so refusals carry
//! CORS headers): it runs before any handler reads a body or touches the
//! store, so nothing is stored on a refusal. A verified token's [`Grant`]
//! goes into the request's extensions for the handlers that need more than
//! the route's check: the topic list ([`may_read`]) and a stream's end
//! ([`expiry`]). A token is verified once per request (a stream: once,
//! when it opens), never per event.

mod claims;
// Not part of the API: the fuzz targets' and property tests' scenarios.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod jwks;
mod key;
mod keys;
mod policy;
mod token;

use std::{sync::Arc, time::Duration};

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web, HttpMessage, HttpRequest, ResponseError,
};
use sluice_actors::Expiry;

pub use claims::{Grant, Rights};
pub use token::{take_query_token, QUERY_PARAM};

use super::{error::ApiError, AppState};
use crate::config::AuthSettings;

/// The broker's authorization: off, or the keys that verify tokens.
#[derive(Clone)]
pub struct Auth {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    verifier: keys::Verifier,
    cookie_name: String,
    /// `auth.jwks_refresh_secs` (zero: no periodic refresh).
    jwks_refresh: Duration,
}

impl Auth {
    /// No authorization: every route is open.
    pub fn off() -> Auth {
        Auth { inner: None }
    }

    /// Authorization as configured: off without keys; else every key is
    /// loaded now (a JWKS URL fetched), and any that cannot be is an error.
    pub async fn from_settings(s: &AuthSettings) -> Result<Auth, String> {
        if !s.enabled() {
            return Ok(Auth::off());
        }
        let verifier = keys::Verifier::load(s).await?;
        Ok(Auth {
            inner: Some(Arc::new(Inner {
                verifier,
                cookie_name: s.cookie_name.clone(),
                jwks_refresh: Duration::from_secs(s.jwks_refresh_secs),
            })),
        })
    }

    /// Whether tokens are required.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the periodic JWKS refresh, if there is one to do (call it on
    /// the server's runtime).
    pub fn spawn_refresh(&self) {
        let Some(inner) = &self.inner else { return };
        if let (Some(jwks), false) = (inner.verifier.jwks(), inner.jwks_refresh.is_zero()) {
            actix_web::rt::spawn(jwks.refresh_every(inner.jwks_refresh));
        }
    }

    /// The grant of the token `req` presents, or the `401`.
    async fn authenticate(&self, req: &ServiceRequest) -> Result<Option<Grant>, ApiError> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let Some(token) = token::presented(req, &inner.cookie_name) else {
            return Err(ApiError::Unauthorized {
                detail: "this request needs a token: an Authorization: Bearer header, \
                         a cookie or an access_token query parameter",
                token_sent: false,
            });
        };
        inner
            .verifier
            .verify(&token)
            .await
            .map(Some)
            .map_err(|detail| ApiError::Unauthorized {
                detail,
                token_sent: true,
            })
    }
}

/// Middleware: refuses a request whose token does not allow its route
/// (`401`, `403`), before its handler runs; keeps the [`Grant`] of an
/// allowed one in its extensions.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let auth = match req.app_data::<web::Data<AppState>>() {
        Some(state) if state.auth.is_on() => state.auth.clone(),
        _ => return Ok(next.call(req).await?.map_into_boxed_body()),
    };
    let path = req.match_info().as_str().to_owned();
    let need = policy::need(req.method(), &path);
    if need == policy::Need::Open {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let refused = match auth.authenticate(&req).await {
        Err(e) => Some(e),
        Ok(grant) => {
            let grant = grant.expect("authorization is on");
            let unmet = need.unmet_by(&grant.rights).map(ApiError::Forbidden);
            req.extensions_mut().insert(grant);
            unmet
        }
    };
    match refused {
        Some(e) => Ok(req.into_response(e.error_response())),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

/// `Ok` when the request's token has `admin`, or authorization is off. The
/// route table already requires it of `/v1/connections` and
/// `DELETE /v1/topics/{topic}`; for a handler that must be sure whatever
/// the route.
pub fn require_admin(req: &HttpRequest) -> Result<(), ApiError> {
    match grant_of(req) {
        Ok(None) => Ok(()),
        Ok(Some(g)) if g.rights.admin => Ok(()),
        Ok(Some(_)) => Err(ApiError::Forbidden(
            "this operation needs a token with \"admin\": true".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Whether the request may read `topic`: always with authorization off.
pub fn may_read(req: &HttpRequest, topic: &str) -> bool {
    match grant_of(req) {
        Ok(None) => true,
        Ok(Some(g)) => g.rights.may_subscribe(topic),
        Err(_) => false,
    }
}

/// When the request's token expires, for a stream to end then; `None`
/// with authorization off.
pub fn expiry(req: &HttpRequest) -> Option<Expiry> {
    req.extensions().get::<Grant>().map(|g| g.expiry)
}

/// The request's grant: `None` with authorization off, `Err` (`401`) when
/// it is on and the request has none (a route the middleware let through
/// without a token: it should not ask).
fn grant_of(req: &HttpRequest) -> Result<Option<Grant>, ApiError> {
    if let Some(g) = req.extensions().get::<Grant>() {
        return Ok(Some(g.clone()));
    }
    let on = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.auth.is_on());
    if on {
        Err(ApiError::Unauthorized {
            detail: "this request needs a token",
            token_sent: false,
        })
    } else {
        Ok(None)
    }
}
