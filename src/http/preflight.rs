//! CORS preflights that name the route's own methods.
//!
//! actix-cors answers every preflight with one list of methods for the
//! whole server (with `allow_any_method`, every method there is, `TRACE` and
//! `CONNECT` included). This middleware, wrapped around it, puts the
//! route's own `Allow` list ([`super::ROUTES`]) in
//! `Access-Control-Allow-Methods`, and turns a preflight for a method the
//! route does not take into the `405` the request itself would get (and
//! one for a path with no route into a `404`), keeping the CORS headers
//! actix-cors set. Everything else (origins, credentials, requested
//! headers) stays actix-cors's.

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderValue},
        Method,
    },
    middleware::Next,
    ResponseError,
};

use super::{error::ApiError, route_of};

/// Whether the request is a CORS preflight (Fetch standard: `OPTIONS` with
/// `Origin` and `Access-Control-Request-Method`).
fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Middleware; see the module documentation.
pub async fn route_methods(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !is_preflight(&req) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let route = route_of(req.path());
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = req.path().to_owned();
    let res = next.call(req).await?;
    if !res.status().is_success() {
        // Refused by actix-cors (an origin not allowed): its answer stands.
        return Ok(res.map_into_boxed_body());
    }
    let refusal = match route {
        None => Some(ApiError::NotFound(format!("no route for {path}"))),
        // Methods are case-sensitive (RFC 9110, section 9.1).
        Some(r) if !r.allow.split(", ").any(|m| m == requested) => {
            Some(ApiError::MethodNotAllowed(r.allow))
        }
        Some(_) => None,
    };
    let (req, mut res) = res.into_parts();
    if let Some(e) = refusal {
        let mut answer = e.error_response();
        for (name, value) in res.headers() {
            if name == header::ACCESS_CONTROL_ALLOW_ORIGIN
                || name == header::ACCESS_CONTROL_ALLOW_CREDENTIALS
                || name == header::VARY
            {
                answer.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return Ok(ServiceResponse::new(req, answer));
    }
    let route = route.expect("a route when nothing was refused");
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(route.allow),
    );
    Ok(ServiceResponse::new(req, res.map_into_boxed_body()))
}
