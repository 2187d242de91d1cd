//! Tokens never reach the broker's output, at any log level: the real
//! binary runs at `RUST_LOG=trace` with request spans on (as with an
//! OpenTelemetry exporter; they carry each request's target) while tokens
//! go in the header, the query and a cookie, to requests that succeed and
//! requests that fail, over HTTP/1.1 and (with curl) HTTP/2.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

on_embedded_store! {
    #[tokio::test]
    no_token_reaches_the_log_at_trace_level,
}

async fn no_token_reaches_the_log_at_trace_level(store: Store) {
    bounded(120, async {
        let mut b = BrokerProcess::start(
            store,
            &[
                HS256[0],
                HS256[1],
                ("RUST_LOG", "trace"),
                ("SLUICE_TEST_REQUEST_SPANS", "1"),
            ],
        )
        .await;
        let t = "secret-topic";
        let good = hs256(&claims(rights(&[t], &[t], false)));
        let wrong_topic = hs256(&claims(rights(&["other"], &["other"], false)));
        let mut expired_claims = claims(rights(&[t], &[t], false));
        expired_claims["exp"] = (now_secs() - 60).into();
        let expired = hs256(&expired_claims);
        let forged = sign(
            Header::new(Algorithm::HS256),
            &claims(rights(&["*"], &["*"], true)),
            &EncodingKey::from_secret(b"forged-secret-0123456789abcdefghijklmn").unwrap(),
        );
        let tokens = [&good, &wrong_topic, &expired, &forged];

        for token in tokens {
            let auth = bearer(token);
            let cookie = format!("sluice-token={token}");
            // Header, cookie, query; a publish, a poll, a stream, a list.
            let _ = b.publish(t, "x", &[("authorization", &auth)]).await;
            let _ = b
                .get_with(
                    &format!("/v1/topics/{t}/events?from=earliest"),
                    &[("cookie", &cookie)],
                )
                .await;
            let _ = b
                .get(&format!(
                    "/v1/topics/{t}/events?from=earliest&access_token={token}"
                ))
                .await;
            let _ = b.get(&format!("/v1/topics?access_token={token}")).await;
            // A handler's own error, which the request span reports with
            // the request's target.
            let _ = b
                .get(&format!(
                    "/v1/topics/{t}/events?from=sometime&access_token={token}"
                ))
                .await;
            let _ = b.get(&format!("/no/such/route?access_token={token}")).await;
            let mut s = b
                .sse(t, &format!("from=earliest&access_token={token}"), &[])
                .await;
            let _ = s.next_event(Duration::from_millis(200)).await;
        }
        // The same over HTTP/2 (h2c), whose frames are traced too, when
        // curl is there to speak it.
        if std::path::Path::new("/usr/bin/curl").exists() {
            for token in tokens {
                let base = b.base_url();
                for args in [
                    vec![
                        "-H".to_owned(),
                        format!("authorization: Bearer {token}"),
                        format!("{base}/v1/topics/{t}/events?from=earliest"),
                    ],
                    vec![
                        "-H".to_owned(),
                        format!("cookie: sluice-token={token}"),
                        format!("{base}/v1/topics/{t}"),
                    ],
                    vec![format!("{base}/v1/topics?from=x&access_token={token}")],
                ] {
                    let out = tokio::process::Command::new("/usr/bin/curl")
                        .args(["-s", "-o", "/dev/null", "--http2-prior-knowledge"])
                        .args(&args)
                        .output()
                        .await
                        .unwrap();
                    assert!(out.status.success(), "curl {args:?}: {out:?}");
                }
            }
        }
        let status = b.stop().await;
        assert!(status.success(), "{status:?}");

        let out = format!("{}\n{}", b.stdout_text(), b.stderr_text());
        // The spans were there to leak: the request targets are logged.
        assert!(
            out.contains("http.target=/v1/topics/secret-topic/events?from=sometime"),
            "request spans with their targets in the log: {}",
            &out[..out.len().min(4000)]
        );
        for token in tokens {
            // Not whole, and none of its parts (header, claims, signature).
            for part in std::iter::once(token.as_str()).chain(token.split('.')) {
                if let Some(at) = out.find(part) {
                    let from = at.saturating_sub(200);
                    panic!(
                        "a token part is in the broker's output: ...{}...",
                        &out[from..(at + part.len() + 50).min(out.len())]
                    );
                }
            }
        }
    })
    .await;
}
