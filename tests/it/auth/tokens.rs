//! Where a token may come from and which wins; the kinds of keys (HS256
//! secrets, RS256/ES256/EdDSA public keys from PEM files); the `iss`,
//! `aud` and `nbf` checks.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;

use super::*;

on_embedded_store! {
    #[tokio::test]
    header_beats_cookie_beats_query,
    #[tokio::test]
    pem_public_keys_verify_rs256_es256_and_eddsa,
    #[tokio::test]
    issuer_audience_and_not_before_are_checked,
}

async fn header_beats_cookie_beats_query(store: Store) {
    bounded(60, async {
        let b = Broker::start(
            store,
            &[HS256[0], HS256[1], ("SLUICE__AUTH__COOKIE_NAME", "my_jwt")],
        )
        .await;
        let t = "prec";
        let good = hs256(&claims(rights(&[], &[t], false)));
        let bad = "not-a.jwt";
        // The topic exists (a history poll of a topic never used is 404).
        let writer = bearer(&hs256(&claims(rights(&[t], &[], false))));
        let r = b
            .publish(t, "x", &[("authorization", writer.as_str())])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let poll = |query: Option<&str>, header: Option<&str>, cookie: Option<&str>| {
            let path = match query {
                Some(q) => format!("/v1/topics/{t}/events?from=earliest&access_token={q}"),
                None => format!("/v1/topics/{t}/events?from=earliest"),
            };
            let auth = header.map(bearer);
            let cookie = cookie.map(|c| format!("other=1; my_jwt={c}; last=2"));
            let b = &b;
            async move {
                let mut h = Vec::new();
                if let Some(a) = &auth {
                    h.push(("authorization", a.as_str()));
                }
                if let Some(c) = &cookie {
                    h.push(("cookie", c.as_str()));
                }
                b.get_with(&path, &h).await
            }
        };
        // Each source alone.
        assert_eq!(poll(Some(&good), None, None).await.status, 200);
        assert_eq!(poll(None, Some(&good), None).await.status, 200);
        assert_eq!(poll(None, None, Some(&good)).await.status, 200);
        // The header wins over the cookie, whichever is the good one.
        assert_eq!(poll(None, Some(&good), Some(bad)).await.status, 200);
        assert_401(
            &poll(None, Some(bad), Some(&good)).await,
            true,
            "bad header",
        );
        // The cookie wins over the query.
        assert_eq!(poll(Some(bad), None, Some(&good)).await.status, 200);
        assert_401(
            &poll(Some(&good), None, Some(bad)).await,
            true,
            "bad cookie",
        );
        // The header wins over the query.
        assert_401(
            &poll(Some(&good), Some(bad), None).await,
            true,
            "bad header",
        );
        // Another cookie name is no token; another scheme is no bearer token.
        let r = b
            .get_with(
                &format!("/v1/topics/{t}/events"),
                &[("cookie", &format!("sluice-token={good}"))],
            )
            .await;
        assert_401(&r, false, "default cookie name");
        let r = b
            .get_with(
                &format!("/v1/topics/{t}/events?access_token={good}"),
                &[("authorization", "Basic dXNlcjpwYXNz")],
            )
            .await;
        assert_eq!(
            r.status, 200,
            "a Basic header does not hide the query token"
        );
        // The query token is not a parameter the route sees (an unknown
        // one would be ignored anyway; a second one is not a second token).
        let r = b
            .get_with(
                &format!("/v1/topics/{t}/events?access_token={good}&access_token={bad}"),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    })
    .await;
}

async fn pem_public_keys_verify_rs256_es256_and_eddsa(store: Store) {
    bounded(60, async {
        let files = ["rsa1.pub", "ec.pub", "ed.pub"]
            .map(|f| key_file(f).display().to_string())
            .join(",");
        let b = Broker::start(store, &[("SLUICE__AUTH__PUBLIC_KEY_FILES", &files)]).await;
        let c = claims(rights(&["k"], &["k"], false));
        for (name, alg) in [
            ("rsa1", Algorithm::RS256),
            ("ec", Algorithm::ES256),
            ("ed", Algorithm::EdDSA),
        ] {
            let token = sign(Header::new(alg), &c, &private_key(name, alg));
            let r = As { api: &b, token }.publish("k", name).await;
            assert_eq!(r.status, 201, "{alg:?}: {}", r.text);
        }
        // A key the broker does not hold; a secret it does not hold.
        let wrong = sign(
            Header::new(Algorithm::RS256),
            &c,
            &private_key("rsa2", Algorithm::RS256),
        );
        assert_401(
            &As {
                api: &b,
                token: wrong,
            }
            .publish("k", "x")
            .await,
            true,
            "rsa2",
        );
        assert_401(
            &As {
                api: &b,
                token: hs256(&c),
            }
            .publish("k", "x")
            .await,
            true,
            "HS256",
        );
        // The old confusion: HS256 "signed" with the public key's bytes.
        let public = std::fs::read(key_file("rsa1.pub")).unwrap();
        let confused = sign(
            Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(&public).unwrap(),
        );
        let r = As {
            api: &b,
            token: confused,
        }
        .publish("k", "x")
        .await;
        assert_401(&r, true, "HS256 with the RSA public key as secret");
        let root_like = As {
            api: &b,
            token: sign(
                Header::new(Algorithm::EdDSA),
                &c,
                &private_key("ed", Algorithm::EdDSA),
            ),
        };
        let data: Vec<String> = root_like
            .events("k")
            .await
            .iter()
            .map(|e| data_of(e).to_owned())
            .collect();
        assert_eq!(data, ["rsa1", "ec", "ed"]);
    })
    .await;
}

async fn issuer_audience_and_not_before_are_checked(store: Store) {
    bounded(60, async {
        let b = Broker::start(
            store,
            &[
                HS256[0],
                HS256[1],
                ("SLUICE__AUTH__ISSUER", "https://issuer.test"),
                ("SLUICE__AUTH__AUDIENCE", "sluice"),
            ],
        )
        .await;
        let base = claims(rights(&["a"], &["a"], false));
        let with = |iss: Option<&str>, aud: Option<&str>, nbf: Option<i64>| {
            let mut c = base.clone();
            if let Some(i) = iss {
                c["iss"] = i.into();
            }
            if let Some(a) = aud {
                c["aud"] = a.into();
            }
            if let Some(n) = nbf {
                c["nbf"] = n.into();
            }
            hs256(&c)
        };
        let publish = |token: String| {
            let b = &b;
            async move {
                As { api: b, token }
                    .request(Method::POST, "/v1/topics/a/events", Some("x"))
                    .await
            }
        };
        let ok = publish(with(Some("https://issuer.test"), Some("sluice"), None)).await;
        assert_eq!(ok.status, 201, "{}", ok.text);
        for (what, token) in [
            ("no iss", with(None, Some("sluice"), None)),
            (
                "another iss",
                with(Some("https://evil.test"), Some("sluice"), None),
            ),
            ("no aud", with(Some("https://issuer.test"), None, None)),
            (
                "another aud",
                with(Some("https://issuer.test"), Some("other"), None),
            ),
            (
                "nbf in the future",
                with(
                    Some("https://issuer.test"),
                    Some("sluice"),
                    Some(now_secs() + 120),
                ),
            ),
        ] {
            assert_401(&publish(token).await, true, what);
        }
    })
    .await;
}
