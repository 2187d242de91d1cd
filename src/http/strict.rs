//! Strict reading of what a request says: single-value headers that appear
//! once, numbers in one spelling only, query parameters given once.
//!
//! A lenient reader picks one of two `Idempotency-Key`s, or reads `+5` and
//! `0005` as 5; a proxy or cache in front of the broker may pick the other
//! one, or read the number differently, and the two then disagree on what
//! was sent. Refusing the ambiguous request (`400`) is the only reading
//! every party shares. Every refusal says what is wrong in Sluice's words.

use std::collections::HashMap;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    ResponseError,
};

use super::error::ApiError;

/// Headers that carry one value: sent twice (as two fields, HTTP/1.1 or
/// HTTP/2 alike), the request is `400`. List-valued headers (`Accept`,
/// `Content-Encoding`, `Cache-Control`, ...) are not here: RFC 9110 lets
/// those be split over several fields.
pub const SINGLE_VALUE_HEADERS: [&str; 12] = [
    "content-type",
    "content-length",
    "idempotency-key",
    "event-type",
    "producer-id",
    "producer-seq",
    "last-event-id",
    "x-resume-cursor",
    "authorization",
    "origin",
    "host",
    "access-control-request-method",
];

/// The first single-value header the request has more than once.
pub fn repeated_header(headers: &actix_web::http::header::HeaderMap) -> Option<&'static str> {
    SINGLE_VALUE_HEADERS
        .into_iter()
        .find(|name| headers.get_all(*name).nth(1).is_some())
}

/// Middleware: a request with a repeated single-value header is refused
/// before any route or extractor reads one of the values.
pub async fn refuse_repeated_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Some(name) = repeated_header(req.headers()) {
        let e = ApiError::bad(format!(
            "the {} header is sent more than once; send it once",
            display_name(name)
        ));
        return Ok(req.into_response(e.error_response()));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// A header's name as API.md writes it (`Idempotency-Key`), for messages.
fn display_name(lower: &str) -> String {
    match lower {
        "last-event-id" => "Last-Event-ID".to_owned(),
        _ => lower
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// An unsigned decimal integer in its one canonical spelling: ASCII digits
/// only, no sign, no blanks, no leading zero (but `0` itself), at most
/// `u64::MAX`. `None` for anything else (`+5`, `0005`, ` 5`, `5 `, `5.0`).
pub fn parse_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let canonical =
        !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1);
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// The known parameters of a query string, each given at most once.
///
/// Unknown parameters are ignored (cache busters are common on SSE URLs);
/// a known one given twice is a `400`, whatever the two values.
#[derive(Debug, Default)]
pub struct Query {
    values: HashMap<&'static str, String>,
}

impl Query {
    /// Parses `query` (`application/x-www-form-urlencoded`, as browsers
    /// send it), keeping the parameters named in `known`.
    pub fn parse(query: &str, known: &[&'static str]) -> Result<Query, ApiError> {
        let mut values = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let Some(&name) = known.iter().find(|k| **k == name) else {
                continue;
            };
            if values.insert(name, value.into_owned()).is_some() {
                return Err(ApiError::bad(format!(
                    "query parameter {name} is given more than once; give it once"
                )));
            }
        }
        Ok(Query { values })
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_one_spelling() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("5"), Some(5));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+5",
            "-5",
            "0005",
            "00",
            " 5",
            "5 ",
            "5.0",
            "1e3",
            "0x5",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repeated_known_parameters_are_refused() {
        let q = Query::parse("from=earliest&x=1&x=2&limit=5", &["from", "limit"]).unwrap();
        assert_eq!(q.get("from"), Some("earliest"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(q.get("x"), None);
        let e = Query::parse("cursor=a&cursor=a", &["cursor"]).unwrap_err();
        assert!(
            e.to_string().contains("cursor is given more than once"),
            "{e}"
        );
        // `+` is a blank in a query: `limit=+5` is " 5", which no number parses.
        let q = Query::parse("limit=+5", &["limit"]).unwrap();
        assert_eq!(q.get("limit").and_then(parse_u64), None);
    }

    #[test]
    fn header_names_read_as_documented() {
        assert_eq!(display_name("idempotency-key"), "Idempotency-Key");
        assert_eq!(display_name("last-event-id"), "Last-Event-ID");
        assert_eq!(display_name("content-type"), "Content-Type");
    }
}
