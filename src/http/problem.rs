//! Makes every error response problem+json, including the ones produced
//! outside our handlers (actix-web's own extractor and payload errors, CORS
//! rejections, a caught panic's empty 500) and the ones the HTTP/1 layer
//! answers before any route runs ([`protocol_error_body`]).

use actix_web::{
    body::{self, BoxBody, MessageBody},
    dev::{Response, ServiceResponse},
    http::{
        header::{self, HeaderValue},
        StatusCode,
    },
    HttpResponse,
};
use serde_json::{json, Value};

use super::error::PROBLEM_TYPE_BASE;

/// Longest original error text carried over as `detail`.
const MAX_DETAIL: usize = 512;

/// Rewrites a non-problem error response into problem+json; passes every
/// other response through untouched (streams included).
pub async fn ensure_problem_json(
    res: ServiceResponse<impl MessageBody + 'static>,
) -> actix_web::Result<ServiceResponse<BoxBody>> {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return Ok(res.map_into_boxed_body());
    }
    let (req, res) = res.into_parts();
    let headers = res.headers().clone();
    let text = body::to_bytes_limited(res.into_body(), MAX_DETAIL * 4)
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    // Server errors keep their internals to themselves.
    let detail = if status.is_server_error() || text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.chars().take(MAX_DETAIL).collect()
    };
    let mut out = HttpResponse::build(status);
    for (name, value) in headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.append_header((name.clone(), value.clone()));
        }
    }
    let problem = out
        .content_type("application/problem+json")
        .json(plain_problem(status, "about:blank".into(), &detail));
    Ok(ServiceResponse::new(req, problem))
}

/// A problem whose title is the status's own reason phrase.
fn plain_problem(status: StatusCode, kind: String, detail: &str) -> Value {
    json!({
        "type": kind,
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    })
}

/// The body of an error the HTTP/1 layer answers itself, before any route
/// runs: `400` for a request that is not valid HTTP/1.1, `431` for a head
/// over its limits, `408` for a head that did not arrive in time. Installed
/// with `actix_http::h1::set_error_body` (a hook of the vendored actix-http,
/// `vendor/actix-http/SLUICE-PATCH.md`).
pub fn protocol_error_body(res: &mut Response<()>) -> BoxBody {
    let status = res.status();
    let (slug, detail) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "request-header-fields-too-large",
            "the request head is larger than this server accepts",
        ),
        StatusCode::REQUEST_TIMEOUT => {
            ("request-timeout", "the request head did not arrive in time")
        }
        _ => ("bad-request", "the request is not valid HTTP/1.1"),
    };
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    let problem = plain_problem(status, format!("{PROBLEM_TYPE_BASE}{slug}"), detail);
    BoxBody::new(problem.to_string())
}
