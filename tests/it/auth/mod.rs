//! Authorization (issue 14): every route refuses a request without the
//! right token (`401`/`403`, nothing stored) and serves one with it; keys
//! from secrets, PEM files and a JWKS rotated without a restart; streams
//! that end when their token does; a real browser; tokens kept out of the
//! logs; a broker on a public address refusing to start without auth.
//!
//! Tokens are minted here with the `jsonwebtoken` crate, signed with the
//! test keys in `keys/` (see its README) or the shared [`SECRET`].

use std::{path::PathBuf, time::Duration};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

mod browser;
mod expiry;
mod logs;
mod rotation;
mod routes;
mod startup;
mod tokens;

/// The HS256 secret the brokers of these tests share with them.
pub const SECRET: &str = "sluice-test-secret-0123456789abcdefghij";

/// Settings of a broker that takes HS256 tokens signed with [`SECRET`],
/// with no clock leeway (expiries are exact).
pub const HS256: [(&str, &str); 2] = [
    ("SLUICE__AUTH__HS256_SECRETS", SECRET),
    ("SLUICE__AUTH__LEEWAY_SECS", "0"),
];

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `sluice` claim.
pub fn rights(publish: &[&str], subscribe: &[&str], admin: bool) -> Value {
    json!({"publish": publish, "subscribe": subscribe, "admin": admin})
}

/// Claims with `sluice` = `rights`, expiring in ten minutes.
pub fn claims(rights: Value) -> Value {
    json!({"sub": "test", "exp": now_secs() + 600, "sluice": rights})
}

/// An HS256 token over `claims`, signed with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    sign(
        Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
}

/// A token over `claims` with `header`, signed with `key`.
pub fn sign(header: Header, claims: &Value, key: &EncodingKey) -> String {
    encode(&header, claims, key).expect("sign a test token")
}

/// A test key file (`keys/NAME`).
pub fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/auth/keys")
        .join(name)
}

/// The private key `NAME.key` for `alg` (RS256: rsa1/rsa2, ES256: ec,
/// EdDSA: ed).
pub fn private_key(name: &str, alg: Algorithm) -> EncodingKey {
    let pem = std::fs::read(key_file(&format!("{name}.key"))).unwrap();
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("no test key for {other:?}"),
    }
    .unwrap()
}

/// A token that may do everything, for setting up and checking.
pub fn root_token() -> String {
    hs256(&claims(rights(&["*"], &["*"], true)))
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Requests made with a token.
pub struct As<'a> {
    pub api: &'a Api,
    pub token: String,
}

impl As<'_> {
    pub async fn request(&self, method: Method, path: &str, body: Option<&str>) -> Resp {
        let auth = bearer(&self.token);
        self.api
            .request(
                method,
                path,
                &[("authorization", &auth)],
                body.map(|b| b.as_bytes().to_vec()),
            )
            .await
    }

    pub async fn publish(&self, topic: &str, body: &str) -> Resp {
        self.request(
            Method::POST,
            &format!("/v1/topics/{topic}/events"),
            Some(body),
        )
        .await
    }

    /// Every retained event of `topic` (a `404`-free history: a topic never
    /// used has none).
    pub async fn events(&self, topic: &str) -> Vec<Value> {
        let r = self
            .request(
                Method::GET,
                &format!("/v1/topics/{topic}/events?from=earliest&limit=1000"),
                None,
            )
            .await;
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "history of {topic}: {}", r.text);
        r.json["events"].as_array().unwrap().clone()
    }

    /// The names `GET /v1/topics` lists.
    pub async fn topics(&self) -> Vec<String> {
        let r = self.request(Method::GET, "/v1/topics", None).await;
        assert_eq!(r.status, 200, "/v1/topics: {}", r.text);
        r.json["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Opens a stream with the token in the `Authorization` header.
    pub async fn sse(&self, topic: &str, query: &str, headers: &[(&str, &str)]) -> SseStream {
        let auth = bearer(&self.token);
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.api.sse(topic, query, &all).await
    }
}

/// Asserts a `401` problem with the RFC 6750 challenge: `error="invalid_token"`
/// when a token was sent, no `error` when none was.
pub fn assert_401(r: &Resp, token_sent: bool, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text);
    r.assert_problem(401);
    let want = if token_sent {
        r#"Bearer realm="sluice", error="invalid_token""#
    } else {
        r#"Bearer realm="sluice""#
    };
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(want),
        "{what}: WWW-Authenticate"
    );
}

/// Asserts a `403` problem.
pub fn assert_403(r: &Resp, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text);
    r.assert_problem(403);
}

/// How long a test waits for a stream's frames.
pub const T: Duration = Duration::from_secs(10);
