//! The files themselves: content types, validators, the page's policy,
//! public with auth on (the data they fetch is not), and the other
//! methods refused.

use reqwest::Method;

use super::*;
use crate::auth::HS256;

const FILES: [(&str, &str); 4] = [
    ("/", "text/html; charset=utf-8"),
    ("/console.js", "text/javascript; charset=utf-8"),
    ("/console.css", "text/css; charset=utf-8"),
    ("/sluice.js", "text/javascript; charset=utf-8"),
];

#[tokio::test]
async fn files_are_served_with_types_validators_and_policy() {
    bounded(60, async {
        // Auth on: the files need no token, the API still does.
        let b = Broker::start(Store::Embedded, &HS256).await;
        for (path, ctype) in FILES {
            let r = b.get(path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            assert_eq!(r.header("content-type").as_deref(), Some(ctype), "{path}");
            assert_eq!(
                r.header("x-content-type-options").as_deref(),
                Some("nosniff")
            );
            assert_eq!(
                r.header("cache-control").as_deref(),
                Some("no-cache"),
                "{path}"
            );
            let etag = r.header("etag").expect("ETag");
            // A current tag: 304, no body; a stale one: the file again.
            let r = b.get_with(path, &[("if-none-match", &etag)]).await;
            assert_eq!(r.status, 304, "{path}");
            assert!(r.text.is_empty());
            assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
            let r = b.get_with(path, &[("if-none-match", "\"stale\"")]).await;
            assert_eq!(r.status, 200, "{path}");
            let r = b.request(Method::HEAD, path, &[], None).await;
            assert_eq!(r.status, 200, "HEAD {path}");
            assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
            // Public for every method, like /healthz: the others are 405.
            let r = b
                .request(Method::POST, path, &[], Some(b"x".to_vec()))
                .await;
            r.assert_problem(405);
            assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, OPTIONS"));
        }
        let page = b.get("/").await;
        let csp = page
            .header("content-security-policy")
            .expect("a CSP on the page");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        // The page has no inline script, which the policy would block.
        assert!(!page.text.contains("<script>"), "{}", page.text);
        assert!(page.text.contains("src=\"/console.js\""));
        assert!(page.text.contains("href=\"/metrics\""));
        let js = b.get("/sluice.js").await;
        assert!(js.text.contains("export class Sluice"));
        assert_eq!(b.get("/v1/topics").await.status, 401);
        assert_eq!(
            b.get("/index.html").await.status,
            401,
            "no other file is public"
        );
    })
    .await;
}
