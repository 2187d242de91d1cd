//! The browser console (`GET /`, with `/console.js` and `/console.css`)
//! and the browser module (`GET /sluice.js`): plain files built into the
//! binary, served with their content type, an `ETag` and, for the page, a
//! Content-Security-Policy that lets it load and call only its own origin.
//!
//! The files need no token (`http::auth::policy`): the data they fetch is
//! authorized as every other request is.

use std::sync::OnceLock;

use actix_web::{
    http::header::{self, HeaderValue},
    HttpRequest, HttpResponse,
};

/// One file built into the binary.
pub struct Asset {
    /// The request path it answers.
    pub path: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(path: &'static str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            path,
            content_type,
            body,
            etag: OnceLock::new(),
        }
    }

    /// A strong validator from the content: it changes exactly when a new
    /// binary serves other bytes, so browsers revalidate and never keep a
    /// stale console after an upgrade.
    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            format!(
                "\"{:016x}\"",
                xxhash_rust::xxh3::xxh3_64(self.body.as_bytes())
            )
        })
    }
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file served, by path.
pub static ASSETS: [Asset; 4] = [
    Asset::new("/", "text/html; charset=utf-8", include_str!("index.html")),
    Asset::new("/console.js", JS, include_str!("console.js")),
    Asset::new(
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
    Asset::new("/sluice.js", JS, include_str!("sluice.js")),
];

/// The console page may run its own scripts and styles and call its own
/// origin, nothing else: no inline script, no framing, no form posts.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Whether an `If-None-Match` value names `etag` (RFC 9110 13.1.2: a weak
/// comparison, `*` matches any).
fn none_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Serves the asset at the request's path (`GET` and `HEAD`).
pub async fn serve(req: HttpRequest) -> HttpResponse {
    let asset = ASSETS
        .iter()
        .find(|a| a.path == req.path())
        .expect("only asset paths are routed here");
    let etag = asset.etag();
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| none_match(v, etag));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        // Revalidate every time: a 304 costs one round trip and the page
        // always matches the broker it talks to.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if asset.path == "/" {
        res.insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_CSP),
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    }
    if fresh {
        return res.finish();
    }
    res.content_type(asset.content_type).body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "\"abc\"";
        assert!(none_match("\"abc\"", tag));
        assert!(none_match("W/\"abc\"", tag));
        assert!(none_match("\"x\", \"abc\"", tag));
        assert!(none_match("*", tag));
        assert!(!none_match("\"abd\"", tag));
        assert!(!none_match("abc", tag));
    }

    #[test]
    fn every_asset_has_its_own_tag() {
        let mut tags: Vec<&str> = ASSETS.iter().map(Asset::etag).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
