//! `GET /openapi.json` (`docs/openapi.json`) against the routes the server
//! has: every operation it documents is served (no `404`/`405`), every
//! route of `sluice::http::ROUTES` (which `configure` cannot register
//! without) is documented with exactly its methods, a method it does not
//! document is the documented `405` with `Allow`, an unknown path the
//! documented `404`, and every schema reference resolves.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::support::{bounded, Broker, Store};

/// Every HTTP method an OpenAPI path item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(path, METHOD)` of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_ascii_uppercase()));
            }
        }
    }
    out
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_the_server_has() {
    bounded(90, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        // Served without a token, as kept in the repository.
        let r = b.get("/openapi.json").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let doc = r.json.clone();
        let kept: Value =
            serde_json::from_str(&std::fs::read_to_string("docs/openapi.json").unwrap()).unwrap();
        assert_eq!(doc, kept, "the served document is docs/openapi.json");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));

        // The document's operations are exactly the routes' methods
        // (OPTIONS, the CORS preflight of every route, is not an operation).
        let mut routes = BTreeSet::new();
        for route in sluice::http::ROUTES {
            for m in route.allow.split(", ").filter(|m| *m != "OPTIONS") {
                routes.insert((route.path.to_owned(), m.to_owned()));
            }
        }
        assert_eq!(
            documented(&doc),
            routes,
            "docs/openapi.json against http::ROUTES"
        );

        // Every operation is served (the topic published again before
        // each, since one operation deletes it)...
        for (path, method) in documented(&doc) {
            b.publish_ok("doc", "x").await;
            let url = path.replace("{topic}", "doc");
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = b
                .request(m, &url, &[("accept", "application/json")], None)
                .await;
            assert!(
                ![404, 405].contains(&r.status.as_u16()),
                "{method} {path}: {} {}",
                r.status,
                r.text
            );
            let op = &doc["paths"][&path][method.to_ascii_lowercase()];
            assert!(
                op["responses"].get(r.status.as_u16().to_string()).is_some(),
                "{method} {path} answered {}, which the document does not list",
                r.status
            );
        }
        // ...and every other method is the documented 405 with Allow.
        for route in sluice::http::ROUTES {
            let url = route.path.replace("{topic}", "doc");
            for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
                if route.allow.split(", ").any(|a| a == m) {
                    continue;
                }
                let r = b
                    .request(Method::from_bytes(m.as_bytes()).unwrap(), &url, &[], None)
                    .await;
                if m == "HEAD" {
                    // No body to a HEAD.
                    assert_eq!(r.status, 405, "{m} {url}");
                } else {
                    r.assert_problem(405);
                }
                assert_eq!(r.header("allow").as_deref(), Some(route.allow), "{m} {url}");
            }
        }
        let r = b.get("/v1/nothing/here").await;
        r.assert_problem(404);

        // Every reference resolves; the problem+json schema is there.
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        for schema in [
            "Problem",
            "PublishAnswer",
            "BatchAnswer",
            "HistoryPage",
            "TopicInfo",
            "TopicList",
            "Connections",
        ] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
    })
    .await;
}
