//! Safe by default: a broker on an address other than loopback refuses to
//! start without authorization, saying how to fix it, and starts with
//! `auth.allow_anonymous = true` or with keys; a JWKS that cannot be
//! loaded stops the start; `metrics_listen` keeps `/metrics` apart.

use std::{process::Stdio, time::Duration};

use sluice::config::{Overrides, Settings};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::*;

on_embedded_store! {
    #[tokio::test]
    a_public_address_needs_auth_or_allow_anonymous,
    #[tokio::test]
    a_jwks_that_cannot_be_loaded_stops_the_start,
    #[tokio::test]
    metrics_listen_serves_metrics_alone,
}

/// `sluice --listen 0.0.0.0:0` with only `env` for settings.
fn on_all_interfaces(env: &[(&str, &str)], data: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

async fn a_public_address_needs_auth_or_allow_anonymous(_store: Store) {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        // Refused, with a message that says what to do.
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            on_all_interfaces(&[], dir.path()).output(),
        )
        .await
        .expect("a refused start exits at once")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for hint in [
            "0.0.0.0:0",
            "auth.hs256_secrets",
            "auth.jwks",
            "auth.allow_anonymous = true",
            "SLUICE__AUTH__ALLOW_ANONYMOUS=true",
            "127.0.0.1",
        ] {
            assert!(
                stderr.contains(hint),
                "the refusal should mention {hint}: {stderr}"
            );
        }
        assert!(String::from_utf8_lossy(&out.stdout).is_empty());

        // On purpose: it starts (and is stopped at once).
        let mut child = on_all_interfaces(&[("SLUICE__AUTH__ALLOW_ANONYMOUS", "true")], dir.path())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a listening line")
            .unwrap()
            .unwrap_or_default();
        let _ = child.start_kill();
        let _ = child.wait().await;
        assert!(line.starts_with("sluice listening on 0.0.0.0:"), "{line}");

        // With keys, or on loopback, nothing to allow.
        let load = |listen: &str, env: &[(&str, &str)]| {
            Settings::load_with_env(
                &Overrides {
                    listen: Some(listen.into()),
                    ..Overrides::default()
                },
                Some(
                    env.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            )
        };
        assert!(load("0.0.0.0:8080", &HS256).is_ok());
        assert!(load("[::]:8080", &[]).is_err());
        assert!(load("127.0.0.2:8080", &[]).is_ok());
        assert!(load("[::1]:8080", &[]).is_ok());
        let e = load("0.0.0.0:8080", &[("SLUICE__AUTH__HS256_SECRETS", "short")]).unwrap_err();
        assert!(e.0.contains("32 bytes"), "{e}");
    })
    .await;
}

async fn a_jwks_that_cannot_be_loaded_stops_the_start(store: Store) {
    bounded(60, async {
        let url = format!("http://127.0.0.1:{}/jwks.json", free_port());
        let (status, stderr) = run_expecting_exit(store, &[("SLUICE__AUTH__JWKS", &url)]).await;
        assert!(!status.success());
        assert!(
            stderr.contains("auth.jwks") && stderr.contains(&url),
            "{stderr}"
        );
        let (status, stderr) =
            run_expecting_exit(store, &[("SLUICE__AUTH__JWKS", "/nonexistent/jwks.json")]).await;
        assert!(!status.success());
        assert!(stderr.contains("/nonexistent/jwks.json"), "{stderr}");
        let (status, stderr) = run_expecting_exit(
            store,
            &[("SLUICE__AUTH__PUBLIC_KEY_FILES", "/nonexistent/key.pem")],
        )
        .await;
        assert!(!status.success());
        assert!(stderr.contains("auth.public_key_files"), "{stderr}");
    })
    .await;
}

async fn metrics_listen_serves_metrics_alone(store: Store) {
    bounded(60, async {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let b = Broker::start(
            store,
            &[HS256[0], HS256[1], ("SLUICE__METRICS_LISTEN", &addr)],
        )
        .await;
        // Not on the main address any more.
        b.get("/metrics").await.assert_problem(404);
        // Alone on its own, with no token.
        let client = http_client();
        let r = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("sluice_active_streams"));
        for path in ["/healthz", "/v1/topics", "/v1/topics/a/events"] {
            let r = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{path} on metrics_listen");
        }
        // The rest stays where it was.
        assert_eq!(b.get("/healthz").await.status, 200);
    })
    .await;
}
