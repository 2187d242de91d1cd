//! The right each route needs: the one table of it. A route that is not
//! named here needs `admin`, so a route added without a line here is
//! closed, not open.

use actix_web::http::Method;

use super::claims::Rights;

/// What a request needs from its token.
#[derive(Debug, PartialEq, Eq)]
pub enum Need<'a> {
    /// Nothing: no token is looked at.
    Open,
    /// A valid token, whatever it allows (`GET /v1/topics`, which lists
    /// only the topics it may read).
    Token,
    /// `publish` on this topic.
    Publish(&'a str),
    /// `subscribe` on this topic.
    Subscribe(&'a str),
    /// `admin`.
    Admin,
}

impl Need<'_> {
    /// What `rights` lack for this need, for a 403's detail; `None` when
    /// they suffice.
    pub fn unmet_by(&self, rights: &Rights) -> Option<String> {
        match *self {
            Need::Open | Need::Token => None,
            Need::Publish(t) if !rights.may_publish(t) => Some(format!(
                "the token does not allow publishing to topic {t:?}"
            )),
            Need::Subscribe(t) if !rights.may_subscribe(t) => {
                Some(format!("the token does not allow reading topic {t:?}"))
            }
            Need::Admin if !rights.admin => {
                Some("this operation needs a token with \"admin\": true".into())
            }
            _ => None,
        }
    }
}

/// The need of `method` on `path` (the decoded path the router matches).
pub fn need<'a>(method: &Method, path: &'a str) -> Need<'a> {
    // Preflights are answered by the CORS layer before this runs; a plain
    // OPTIONS is a 405 that does nothing.
    if method == Method::OPTIONS {
        return Need::Open;
    }
    let read = method == Method::GET || method == Method::HEAD;
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments[..] {
        ["healthz"] | ["readyz"] | ["metrics"] | ["openapi.json"] => Need::Open,
        // The console's and the module's files: public, like any page's
        // scripts; what they fetch is authorized request by request.
        [""] | ["console.js"] | ["console.css"] | ["sluice.js"] => Need::Open,
        ["v1", "topics"] if read => Need::Token,
        ["v1", "topics", t] if read => Need::Subscribe(t),
        ["v1", "topics", t, "events"] if read => Need::Subscribe(t),
        ["v1", "topics", t, "events" | "batch"] if method == Method::POST => Need::Publish(t),
        // `/v1/connections`, `DELETE /v1/topics/{t}`, and anything else.
        _ => Need::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_need() {
        let cases = [
            (Method::GET, "/healthz", Need::Open),
            (Method::HEAD, "/readyz", Need::Open),
            (Method::GET, "/metrics", Need::Open),
            (Method::GET, "/openapi.json", Need::Open),
            (Method::OPTIONS, "/v1/topics/a/events", Need::Open),
            (Method::GET, "/v1/topics", Need::Token),
            (Method::HEAD, "/v1/topics", Need::Token),
            (Method::GET, "/v1/topics/a", Need::Subscribe("a")),
            (Method::DELETE, "/v1/topics/a", Need::Admin),
            (Method::GET, "/v1/topics/a/events", Need::Subscribe("a")),
            (Method::POST, "/v1/topics/a/events", Need::Publish("a")),
            (Method::POST, "/v1/topics/a/batch", Need::Publish("a")),
            (Method::PUT, "/v1/topics/a/events", Need::Admin),
            (Method::GET, "/v1/connections", Need::Admin),
            (Method::GET, "/v1/events", Need::Admin),
            (Method::GET, "/v1/topics/a/events/x", Need::Admin),
            (Method::GET, "/", Need::Open),
            (Method::HEAD, "/sluice.js", Need::Open),
            (Method::GET, "/console.js", Need::Open),
            (Method::GET, "/console.css", Need::Open),
            (Method::GET, "/console", Need::Admin),
            (Method::GET, "/index.html", Need::Admin),
        ];
        for (method, path, want) in cases {
            assert_eq!(need(&method, path), want, "{method} {path}");
        }
    }
}
