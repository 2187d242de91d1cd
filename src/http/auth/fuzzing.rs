//! Tokens as a client may send them: well-formed or not, signed with the
//! broker's HS256 secret, another secret, another algorithm or not at all,
//! with claims of any shape, then perhaps altered; and query strings that
//! carry them.
//!
//! Oracles: a token the verifier accepts is signed with the configured
//! secret (checked here with HMAC-SHA256 directly, not through the JWT
//! library), names HS256, has not expired and is not early, and grants
//! exactly what its `sluice` claim says; a token built right is accepted;
//! taking a query token out of a URI leaves every other parameter, in
//! order, and no `access_token`.

use std::{cell::RefCell, path::PathBuf};

use actix_web::http::Uri;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice_actors::cursor::now_ms;

use super::{claims::Rights, keys::Verifier, token::strip_token};
use crate::{config::AuthSettings, fuzzing::Choices};

/// The broker's secret in these scenarios.
pub const SECRET: &str = "the-fuzzing-secret-of-at-least-32-bytes";
const LEEWAY_SECS: u64 = 5;

thread_local! {
    static VERIFIER: RefCell<Option<(tokio::runtime::Runtime, Verifier)>> = const { RefCell::new(None) };
}

/// Verifies `token` with a verifier that holds [`SECRET`] (made once per
/// thread), as the `authorize` middleware does; also what
/// `benches/token_verify.rs` times.
pub fn verify(token: &str) -> Result<super::Grant, &'static str> {
    VERIFIER.with(|v| {
        let mut v = v.borrow_mut();
        let (rt, verifier) = v.get_or_insert_with(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            let settings = AuthSettings {
                hs256_secrets: vec![SECRET.into()],
                public_key_files: Vec::<PathBuf>::new(),
                jwks: String::new(),
                jwks_refresh_min_secs: 60,
                jwks_refresh_secs: 0,
                issuer: String::new(),
                audience: String::new(),
                leeway_secs: LEEWAY_SECS,
                cookie_name: "sluice_token".into(),
                allow_anonymous: false,
            };
            let verifier = rt.block_on(Verifier::load(&settings)).expect("verifier");
            (rt, verifier)
        });
        rt.block_on(verifier.verify(token))
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(key: &[u8], input: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// An HS256 token over `claims`, signed with [`SECRET`].
pub fn signed(claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(&hs256(SECRET.as_bytes(), &input)))
}

/// Reads `data` as a fuzz input: raw token text, a built token, or a
/// query string.
pub fn run(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 4 == 0 => accepted_only_if_signed(&String::from_utf8_lossy(rest)),
        Some((k, rest)) if k % 4 == 1 => query(&String::from_utf8_lossy(rest)),
        Some((_, rest)) => built(&mut Choices::new(rest)),
        None => accepted_only_if_signed(""),
    }
}

/// Any text as a token: accepted only when signed with [`SECRET`] by
/// HS256, in force, and then granting what its claim says.
pub fn accepted_only_if_signed(token: &str) {
    let Ok(grant) = verify(token) else { return };
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token that is not three parts");
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    let sig = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
    .decode(parts[2])
    .expect("an accepted signature is base64url");
    assert_eq!(
        sig,
        hs256(SECRET.as_bytes(), &signing_input),
        "accepted a token not signed with the secret"
    );
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header b64"))
            .expect("header JSON");
    assert_eq!(
        header["alg"], "HS256",
        "accepted a token of another algorithm"
    );
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("claims b64"))
            .expect("claims JSON");
    let now_s = now_ms() as f64 / 1000.0;
    let exp = claims["exp"]
        .as_f64()
        .expect("an accepted token has a numeric exp");
    assert!(
        exp + LEEWAY_SECS as f64 > now_s - 1.0,
        "accepted an expired token"
    );
    assert_eq!(
        grant.expiry.ends_at_ms,
        ((exp * 1000.0) as i64).saturating_add(LEEWAY_SECS as i64 * 1000)
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().expect("an accepted nbf is numeric");
        assert!(
            nbf <= now_s + LEEWAY_SECS as f64 + 1.0,
            "accepted a token before its nbf"
        );
    }
    assert_eq!(
        grant.rights,
        rights_of(&claims["sluice"]),
        "rights differ from the claim"
    );
    for topic in ["orders", "orders.eu", "billing", "o", "a"] {
        assert_eq!(
            grant.rights.may_publish(topic),
            allows(&grant.rights.publish, topic)
        );
        assert_eq!(
            grant.rights.may_subscribe(topic),
            allows(&grant.rights.subscribe, topic)
        );
    }
}

/// The claim's rights read plainly; a claim that is not of the shape
/// API.md gives was refused before this is asked.
fn rights_of(claim: &Value) -> Rights {
    let list = |name: &str| -> Vec<String> {
        claim
            .get(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| p.as_str().expect("pattern is a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    Rights {
        publish: list("publish"),
        subscribe: list("subscribe"),
        admin: claim.get("admin").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// API.md's pattern rule: a topic name, or a prefix ending in `*`.
fn allows(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| {
        let b = p.as_bytes();
        match b.last() {
            Some(b'*') => {
                topic.len() + 1 >= b.len() && topic.as_bytes()[..b.len() - 1] == b[..b.len() - 1]
            }
            _ => p == topic,
        }
    })
}

const PATTERNS: &[&str] = &[
    "orders.*",
    "orders",
    "*",
    "",
    "or*ers",
    "billing",
    "**",
    "o*",
    "orders.eu*",
];

/// A token built from choices; those that make it invalid are known, so
/// a valid one must be accepted.
fn built(c: &mut Choices) {
    let now = now_ms() / 1000;
    let mut valid = true;
    let algs = [
        "HS256", "HS384", "HS512", "none", "RS256", "ES256", "EdDSA", "hs256", "",
    ];
    let alg = *c.pick(&algs);
    valid &= alg == "HS256";
    let mut header = json!({ "alg": alg });
    if c.flag() {
        header["typ"] = json!(*c.pick(&["JWT", "at+jwt", "x"]));
    }
    if c.flag() {
        header["kid"] = json!(c.word(b"abc1", 8));
    }
    let mut claims = json!({});
    match c.below(9) {
        0 => valid = false,
        1 => {
            claims["exp"] = json!(now - 3600);
            valid = false;
        }
        2 => {
            claims["exp"] = json!("soon");
            valid = false;
        }
        // Past what the JWT library takes as a NumericDate (u64 seconds).
        3 => {
            claims["exp"] = json!(1e300);
            valid = false;
        }
        7 => claims["exp"] = json!(1e18),
        4 => claims["exp"] = json!(now as f64 + 3600.75),
        _ => claims["exp"] = json!(now + 60 + c.below(100_000) as i64),
    }
    match c.below(5) {
        0 => {
            claims["nbf"] = json!(now + 3600);
            valid = false;
        }
        1 => {
            claims["nbf"] = json!("x");
            valid = false;
        }
        2 => claims["nbf"] = json!(now - 10),
        _ => {}
    }
    match c.below(6) {
        0 => {}
        1 => {
            claims["sluice"] = json!({"publish": "orders"});
            valid = false;
        }
        2 => {
            claims["sluice"] = json!({"admin": "yes"});
            valid = false;
        }
        3 => {
            claims["sluice"] = json!(5);
            valid = false;
        }
        _ => {
            let mut list = || -> Vec<&str> { (0..c.below(3)).map(|_| *c.pick(PATTERNS)).collect() };
            claims["sluice"] = json!({"publish": list(), "subscribe": list(), "admin": c.flag()});
        }
    }
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match c.below(6) {
        0 => {
            valid = false;
            hs256(b"another-secret-of-at-least-32-bytes-long", &signing_input)
        }
        1 => {
            valid = false;
            Vec::new()
        }
        2 => {
            valid = false;
            c.bytes(40)
        }
        _ => hs256(SECRET.as_bytes(), &signing_input),
    };
    let mut token = format!("{signing_input}.{}", b64(&sig)).into_bytes();
    if c.flag() {
        let at = c.below(token.len());
        let b = c.byte();
        if token[at] != b {
            token[at] = b;
            valid = false;
        }
    }
    let token = String::from_utf8_lossy(&token).into_owned();
    accepted_only_if_signed(&token);
    if valid {
        let r = verify(&token);
        assert!(r.is_ok(), "a valid token refused: {r:?} {header} {claims}");
    }
}

/// A query string with tokens: every `access_token` leaves the URI, the
/// first one's value is kept, every other parameter stays in order.
pub fn query(q: &str) {
    let Ok(uri) = format!("/v1/topics/t/events?{q}").parse::<Uri>() else {
        return;
    };
    let Some(query) = uri.query() else { return };
    let pairs: Vec<&str> = query.split('&').collect();
    let is_token = |p: &str| {
        form_urlencoded::parse(p.as_bytes())
            .next()
            .is_some_and(|(n, _)| n == super::QUERY_PARAM)
    };
    let first_token = pairs.iter().find(|p| is_token(p)).map(|p| {
        form_urlencoded::parse(p.as_bytes())
            .next()
            .expect("a pair")
            .1
            .into_owned()
    });
    let Some((stripped, token)) = strip_token(&uri) else {
        assert!(first_token.is_none(), "{q:?}: a token left in the URI");
        return;
    };
    assert!(first_token.is_some(), "{q:?}: stripped without a token");
    assert_eq!(token, first_token);
    assert_eq!(stripped.path(), uri.path());
    let kept: Vec<&str> = pairs.iter().filter(|p| !is_token(p)).copied().collect();
    let left: Vec<&str> = stripped
        .query()
        .map_or(Vec::new(), |s| s.split('&').collect());
    assert_eq!(left, kept, "{q:?}: other parameters changed");
}
