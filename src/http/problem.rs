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
use std::sync::RwLock;

use super::{error::PROBLEM_TYPE_BASE, malformed};

/// Longest original error text read (to recognise it; it is never sent).
const MAX_DETAIL: usize = 512;

/// What the framework's own error texts mean, in Sluice's words: a
/// `detail` never repeats a library's wording (`Query deserialize error`,
/// `payload reached EOF`), which says nothing useful to a client and
/// changes with every upgrade. The texts are actix-cors's (preflights).
const FRAMEWORK_TEXTS: [(&str, &str); 7] = [
    (
        "Request header `Origin` is required",
        "a CORS preflight needs an Origin header",
    ),
    (
        "`Access-Control-Request-Method` is required",
        "a CORS preflight needs an Access-Control-Request-Method header",
    ),
    (
        "`Access-Control-Request-Method` has an invalid value",
        "Access-Control-Request-Method is not a method",
    ),
    (
        "`Access-Control-Request-Headers` has an invalid value",
        "Access-Control-Request-Headers is not a list of header names",
    ),
    (
        "Origin is not allowed",
        "this origin is not allowed to call the API from a browser (cors.allowed_origins)",
    ),
    (
        "Requested method is not allowed",
        "the requested method is not allowed here",
    ),
    (
        "request headers are not allowed",
        "a requested header is not allowed",
    ),
];

/// The `detail` of an error answered outside Sluice's handlers.
fn own_words(status: StatusCode, text: &str) -> String {
    if let Some((_, words)) = FRAMEWORK_TEXTS.iter().find(|(t, _)| text.contains(t)) {
        return (*words).to_owned();
    }
    // Anything else (a server error, a text not recognised): the status's
    // own phrase, never the text.
    status.canonical_reason().unwrap_or("error").to_owned()
}

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
    let detail = own_words(status, &text);
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
///
/// Such an answer carries `Access-Control-Allow-Origin` as set by
/// [`set_protocol_error_origins`] (the request's own `Origin` could not be
/// read), and is logged quietly ([`malformed`]).
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
    malformed::note(status.as_u16(), slug);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    let origin = PROTOCOL_ERROR_ORIGIN
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(origin) = origin {
        res.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    let problem = plain_problem(status, format!("{PROBLEM_TYPE_BASE}{slug}"), detail);
    BoxBody::new(problem.to_string())
}

/// `Access-Control-Allow-Origin` of the answers the HTTP layer makes itself.
static PROTOCOL_ERROR_ORIGIN: RwLock<Option<HeaderValue>> = RwLock::new(None);

/// Sets the `Access-Control-Allow-Origin` of the HTTP layer's own answers
/// from `cors.allowed_origins`. Those answers are made before the request
/// head is read, so they cannot echo its `Origin`: with `["*"]` they carry
/// `*`, with a single origin that origin, and with several none (a browser
/// then reports a network error instead of the status). They carry no
/// credentials header and no data, so `*` exposes nothing. One setting per
/// process (the hook is), the last broker started wins.
pub fn set_protocol_error_origins(origins: &[String]) {
    let value = match origins {
        _ if origins.iter().any(|o| o == "*") => Some(HeaderValue::from_static("*")),
        [one] => HeaderValue::from_str(one).ok(),
        _ => None,
    };
    *PROTOCOL_ERROR_ORIGIN
        .write()
        .unwrap_or_else(|p| p.into_inner()) = value;
}
