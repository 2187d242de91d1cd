//! Where a request's token comes from, and keeping it out of logs.
//!
//! A token in the query (`?access_token=`, for a browser `EventSource`,
//! which cannot set headers) would be in every line and span that names
//! the request's target. [`take_query_token`] runs before anything else
//! sees the request: it moves the token into the request's extensions and
//! takes it out of the URI, so request spans, the OpenTelemetry export and
//! the handlers never see it, whether authorization is on or off.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{header, uri::PathAndQuery, Uri},
    middleware::Next,
    HttpMessage,
};

/// The query parameter a token may come in.
pub const QUERY_PARAM: &str = "access_token";

/// A token taken from the query by [`take_query_token`].
#[derive(Clone)]
struct QueryToken(String);

/// Middleware, outermost: removes every `access_token` query parameter
/// from the request's URI, keeping the first one's value for
/// authorization.
pub async fn take_query_token(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some((uri, token)) = strip_token(req.uri()) {
        req.head_mut().uri = uri.clone();
        // The router matches on its own copy of the URI.
        req.match_info_mut().get_mut().update(&uri);
        if let Some(t) = token {
            req.extensions_mut().insert(QueryToken(t));
        }
    }
    next.call(req).await
}

/// The URI without its `access_token` parameters and the first one's
/// value; `None` when it has none.
pub(super) fn strip_token(uri: &Uri) -> Option<(Uri, Option<String>)> {
    let query = uri.query()?;
    // Names may be percent-encoded (`access%5Ftoken`): a cheap test first,
    // then every pair decoded.
    if !query.contains("access") && !query.contains('%') {
        return None;
    }
    let mut token = None;
    let mut found = false;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let decoded = form_urlencoded::parse(pair.as_bytes()).next();
        match decoded {
            Some((name, value)) if name == QUERY_PARAM => {
                found = true;
                if token.is_none() {
                    token = Some(value.into_owned());
                }
            }
            _ => kept.push(pair),
        }
    }
    if !found {
        return None;
    }
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Some((Uri::from_parts(parts).ok()?, token))
}

/// The token a request presents, by precedence: the `Authorization: Bearer`
/// header, then the cookie `cookie_name`, then the query. `Some("")` for
/// a source that is present but empty (a malformed token, not none).
pub fn presented(req: &ServiceRequest, cookie_name: &str) -> Option<String> {
    bearer(req)
        .or_else(|| cookie(req, cookie_name))
        .or_else(|| req.extensions().get::<QueryToken>().map(|t| t.0.clone()))
}

/// `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC
/// 9110 11.1). Another scheme is no bearer token.
fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The value of cookie `name`, from any `Cookie` header (RFC 6265 5.4;
/// a quoted value is unquoted).
fn cookie(req: &ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(uri: &str) -> Option<(String, Option<String>)> {
        strip_token(&uri.parse().unwrap()).map(|(u, t)| (u.to_string(), t))
    }

    #[test]
    fn takes_every_access_token_out_of_the_query() {
        assert_eq!(strip("/v1/topics/a/events?from=earliest"), None);
        assert_eq!(strip("/v1/topics/a/events"), None);
        assert_eq!(
            strip("/v1/topics/a/events?access_token=abc.def.ghi&from=earliest"),
            Some((
                "/v1/topics/a/events?from=earliest".into(),
                Some("abc.def.ghi".into())
            ))
        );
        assert_eq!(
            strip("/x?a=1&access%5Ftoken=t1&b=2&access_token=t2"),
            Some(("/x?a=1&b=2".into(), Some("t1".into())))
        );
        assert_eq!(
            strip("/x?access_token="),
            Some(("/x".into(), Some("".into())))
        );
        // Another parameter that merely contains the name stays.
        assert_eq!(strip("/x?my_access_token=1"), None);
    }
}
