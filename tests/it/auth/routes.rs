//! Every route against every kind of token: none, one without the topic's
//! right, an expired one, a wrongly signed one, a malformed one, and the
//! right one; nothing is stored or created by a refusal.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{header::HeaderMap, Method};
use serde_json::Value;

use super::*;

on_both_stores! {
    #[tokio::test]
    every_route_needs_its_right_and_refusals_store_nothing,
    #[tokio::test]
    a_subscribe_pattern_reads_its_topics_and_no_other,
}

/// The routes that need a token.
#[derive(Clone, Copy, Debug)]
enum Route {
    Publish,
    Batch,
    Stream,
    History,
    Info,
    List,
    Connections,
    /// Being added by another change; the route table already asks `admin`.
    Delete,
}

const ROUTES: [Route; 8] = [
    Route::Publish,
    Route::Batch,
    Route::Stream,
    Route::History,
    Route::Info,
    Route::List,
    Route::Connections,
    Route::Delete,
];

/// What a call came to.
struct Answer {
    status: u16,
    headers: HeaderMap,
    json: Value,
    text: String,
}

impl Answer {
    fn resp(self) -> Resp {
        Resp {
            status: reqwest::StatusCode::from_u16(self.status).unwrap(),
            headers: self.headers,
            text: self.text,
            json: self.json,
        }
    }
}

/// Calls `route` on `topic` with `headers` (a stream that opens is closed
/// at once).
async fn call(api: &Api, route: Route, topic: &str, headers: &[(&str, &str)]) -> Answer {
    let (method, path, body) = match route {
        Route::Publish => (
            Method::POST,
            format!("/v1/topics/{topic}/events"),
            Some("p"),
        ),
        Route::Batch => (
            Method::POST,
            format!("/v1/topics/{topic}/batch"),
            Some("{\"data\":\"b1\"}\n{\"data\":\"b2\"}\n"),
        ),
        Route::Stream => {
            let s = api.sse(topic, "from=earliest", headers).await;
            return Answer {
                status: s.status.as_u16(),
                headers: s.headers.clone(),
                json: s.error_json.clone(),
                text: s.error_text.clone(),
            };
        }
        Route::History => (
            Method::GET,
            format!("/v1/topics/{topic}/events?from=earliest"),
            None,
        ),
        Route::Info => (Method::GET, format!("/v1/topics/{topic}"), None),
        Route::List => (Method::GET, "/v1/topics".to_owned(), None),
        Route::Connections => (Method::GET, "/v1/connections".to_owned(), None),
        Route::Delete => (Method::DELETE, format!("/v1/topics/{topic}"), None),
    };
    let r = api
        .request(method, &path, headers, body.map(|b| b.as_bytes().to_vec()))
        .await;
    Answer {
        status: r.status.as_u16(),
        headers: r.headers,
        json: r.json,
        text: r.text,
    }
}

async fn every_route_needs_its_right_and_refusals_store_nothing(store: Store) {
    bounded(120, async {
        let b = Broker::start(store, &HS256).await;
        let root = As {
            api: &b,
            token: root_token(),
        };
        let t = "orders.eu";
        // The topic exists (for the routes that read it), with one event.
        assert_eq!(root.publish(t, "seed").await.status, 201);
        let fresh = "untouched";

        let other_secret =
            EncodingKey::from_secret(b"another-secret-0123456789abcdefghijkl").unwrap();
        let full = claims(rights(&["*"], &["*"], true));
        let mut expired = full.clone();
        expired["exp"] = (now_secs() - 30).into();
        // What each token is, and what it must get.
        #[derive(Clone, Copy, PartialEq)]
        enum Expect {
            NoToken,
            Forbidden,
            Invalid,
        }
        let refusals: Vec<(&str, Option<String>, Expect)> = vec![
            ("no token", None, Expect::NoToken),
            (
                "a token for another topic, not admin",
                Some(hs256(&claims(rights(&["billing"], &["billing"], false)))),
                Expect::Forbidden,
            ),
            ("an expired token", Some(hs256(&expired)), Expect::Invalid),
            (
                "a wrongly signed token",
                Some(super::sign(
                    Header::new(Algorithm::HS256),
                    &full,
                    &other_secret,
                )),
                Expect::Invalid,
            ),
            (
                "a malformed token",
                Some("not-a.jwt".to_owned()),
                Expect::Invalid,
            ),
            (
                "an empty bearer token",
                Some(String::new()),
                Expect::Invalid,
            ),
        ];
        for route in ROUTES {
            for topic in [t, fresh] {
                for (what, token, expect) in &refusals {
                    let auth = token.as_deref().map(bearer);
                    let headers: Vec<(&str, &str)> =
                        auth.iter().map(|a| ("authorization", a.as_str())).collect();
                    let a = call(&b, route, topic, &headers).await;
                    let what = format!("{route:?} on {topic} with {what}");
                    match (expect, route) {
                        (Expect::NoToken, _) => assert_401(&a.resp(), false, &what),
                        (Expect::Invalid, _) => assert_401(&a.resp(), true, &what),
                        // The list answers, without the topics the token
                        // may not read.
                        (Expect::Forbidden, Route::List) => {
                            assert_eq!(a.status, 200, "{what}: {}", a.text);
                            assert_eq!(a.json["topics"], serde_json::json!([]), "{what}");
                        }
                        (Expect::Forbidden, _) => assert_403(&a.resp(), &what),
                    }
                }
            }
        }

        // The right token for each route: the topic's own right, or admin.
        let topic_only = hs256(&claims(rights(&[t], &[t], false)));
        let admin_only = hs256(&claims(rights(&[], &[], true)));
        for route in ROUTES {
            // Last, once what it would delete has been checked.
            if let Route::Delete = route {
                continue;
            }
            let token = match route {
                Route::Connections => &admin_only,
                _ => &topic_only,
            };
            let auth = bearer(token);
            let a = call(&b, route, t, &[("authorization", &auth)]).await;
            let want = match route {
                Route::Publish => 201,
                _ => 200,
            };
            assert_eq!(a.status, want, "{route:?} with the right token: {}", a.text);
            if let Route::List = route {
                assert_eq!(a.json["topics"][0]["topic"], t);
            }
        }

        // Nothing stored by any refusal: the seed, the publish and the two
        // lines of the batch. The other topic was never even created.
        let data: Vec<String> = root
            .events(t)
            .await
            .iter()
            .map(|e| data_of(e).to_owned())
            .collect();
        assert_eq!(data, ["seed", "p", "b1", "b2"]);
        assert_eq!(root.topics().await, [t]);
        let r = root
            .request(Method::GET, &format!("/v1/topics/{fresh}"), None)
            .await;
        assert_eq!(r.status, 404, "{}", r.text);
        // The delete with the admin right.
        let admin = bearer(&admin_only);
        let a = call(&b, Route::Delete, t, &[("authorization", &admin)]).await;
        assert_eq!(a.status, 204, "Delete with the admin right: {}", a.text);

        // The operations routes stay open, a bad token notwithstanding.
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(b.get(path).await.status, 200, "{path}");
            let r = b
                .get_with(path, &[("authorization", "Bearer not-a.jwt")])
                .await;
            assert_eq!(r.status, 200, "{path} with a bad token");
        }
    })
    .await;
}

async fn a_subscribe_pattern_reads_its_topics_and_no_other(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &HS256).await;
        let root = As {
            api: &b,
            token: root_token(),
        };
        for t in ["orders.eu", "orders.us", "billing"] {
            assert_eq!(root.publish(t, &format!("to {t}")).await.status, 201);
        }
        let reader = As {
            api: &b,
            token: hs256(&claims(rights(&[], &["orders.*"], false))),
        };
        // The stream and the history of a matching topic.
        let mut s = reader.sse("orders.eu", "from=earliest", &[]).await;
        s.assert_ok();
        assert_eq!(s.expect_event(T).await.data.to_string(), "to orders.eu");
        drop(s);
        let data: Vec<String> = reader
            .events("orders.us")
            .await
            .iter()
            .map(|e| data_of(e).to_owned())
            .collect();
        assert_eq!(data, ["to orders.us"]);
        let r = reader
            .request(Method::GET, "/v1/topics/orders.eu", None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        // Not billing, by any route.
        reader
            .sse("billing", "from=earliest", &[])
            .await
            .assert_problem(403);
        for path in [
            "/v1/topics/billing/events?from=earliest",
            "/v1/topics/billing",
        ] {
            let r = reader.request(Method::GET, path, None).await;
            assert_403(&r, path);
        }
        // Reading is not publishing.
        assert_403(&reader.publish("orders.eu", "x").await, "publish");
        // The list names only what it may read.
        assert_eq!(reader.topics().await, ["orders.eu", "orders.us"]);
        assert_eq!(root.topics().await, ["billing", "orders.eu", "orders.us"]);
    })
    .await;
}
