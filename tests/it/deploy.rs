//! The container files cannot drift from the broker: Docker does not run
//! here, so the Dockerfile, its config file and the compose file are read
//! and checked against the configuration the broker loads; and `sluice
//! health`, the image's HEALTHCHECK, is run against a real broker.
//! [`monitoring`] does the same for the Grafana dashboard and the
//! Prometheus rules.

use std::path::Path;

use sluice::config::{Overrides, Settings};

use crate::support::*;

mod monitoring;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Dockerfile's instructions of the final stage, with continuation
/// lines joined.
fn runtime_stage(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let stage = joined.rsplit("\nFROM ").next().unwrap();
    stage
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_image_is_configured_by_its_file_and_checks_its_health() {
    let df = read("Dockerfile");
    let stage = runtime_stage(&df);
    let find =
        |prefix: &str| -> Vec<&String> { stage.iter().filter(|l| l.starts_with(prefix)).collect() };
    // The config file the image copies exists and is the one CMD names.
    let copy = find("COPY config/")
        .into_iter()
        .next()
        .expect("the image copies a config file");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    let (src, dest) = (parts[1], parts[2]);
    let cmd = find("CMD ").pop().expect("CMD");
    assert!(cmd.contains(&format!("\"--config\", \"{dest}\"")), "{cmd}");
    // No baked-in SLUICE__ variable: it would silently beat a mounted
    // config file or another --config.
    assert!(
        !df.lines()
            .any(|l| l.trim_start().starts_with("ENV") && l.contains("SLUICE__")),
        "no ENV SLUICE__… in the Dockerfile"
    );
    // What the broker makes of that file: its volume, its port.
    let settings = Settings::load(&Overrides {
        file: Some(Path::new(ROOT).join(src)),
        listen: None,
        data_dir: None,
        log_format: None,
    })
    .expect("the image's config file loads");
    let volume = find("VOLUME ").pop().expect("VOLUME");
    assert_eq!(
        volume.trim_start_matches("VOLUME ").trim(),
        settings.data_dir.to_str().unwrap(),
        "the embedded store lives on the volume"
    );
    let port = settings.listen.port();
    assert!(
        settings.listen.ip().is_unspecified(),
        "listens on all interfaces"
    );
    assert_eq!(find("EXPOSE ").pop().unwrap(), &format!("EXPOSE {port}"));
    let hc = find("HEALTHCHECK ").pop().expect("a HEALTHCHECK");
    assert!(
        hc.contains("\"health\"") && hc.contains(&format!("127.0.0.1:{port}")),
        "{hc}"
    );
    // rediss:// needs the system's CA certificates.
    assert!(
        stage.iter().any(|l| l.contains("ca-certificates")),
        "the runtime image installs ca-certificates"
    );
    // The build offers the otel feature.
    assert!(df.contains("ARG FEATURES") && df.contains("--features $FEATURES"));
}

#[test]
fn the_compose_files_set_real_keys_and_bound_redis() {
    // One Redis, and the Redis Cluster variant.
    for file in [
        "deploy/docker-compose.yml",
        "deploy/docker-compose.cluster.yml",
    ] {
        check_compose_file(file);
    }
}

fn check_compose_file(file: &str) {
    let compose = read(file);
    let defaults = read("config/default.toml");
    // Every SLUICE__ variable names a key of the configuration, the
    // commented examples' too.
    for line in compose.lines().map(str::trim) {
        let line = line.trim_start_matches('#').trim_start();
        let Some(var) = line.split(':').next().filter(|v| v.starts_with("SLUICE__")) else {
            continue;
        };
        let path: Vec<String> = var["SLUICE__".len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        let known = match &path[..] {
            [key] => defaults.lines().any(|l| l.starts_with(&format!("{key} ="))),
            [section, key] => {
                let body = defaults
                    .split(&format!("[{section}]\n"))
                    .nth(1)
                    .unwrap_or_else(|| panic!("{var}: no [{section}] in config/default.toml"));
                let body = body.split("\n[").next().unwrap();
                body.lines().any(|l| l.starts_with(&format!("{key} =")))
            }
            _ => false,
        };
        assert!(known, "{var} is not a configuration key");
    }
    // The image's file with the compose file's variables is a broker that
    // starts (on all interfaces, which needs auth.allow_anonymous or keys),
    // and so is it with the commented authorization example put in.
    let vars = |with_examples: bool| -> Vec<(String, String)> {
        compose
            .lines()
            .map(str::trim)
            .filter_map(|l| match l.strip_prefix('#') {
                Some(example) if with_examples => Some(example.trim()),
                Some(_) => None,
                None => Some(l),
            })
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.starts_with("SLUICE__"))
            .map(|(k, v)| {
                let v = v.trim_matches('"').replace(
                    "${SLUICE_JWT_SECRET}",
                    "a-secret-of-at-least-32-bytes-for-tests",
                );
                (k.to_owned(), v)
            })
            .collect()
    };
    let image_file = Overrides {
        file: Some(Path::new(ROOT).join("config/docker.toml")),
        listen: None,
        data_dir: None,
        log_format: None,
    };
    let plain = Settings::load_with_env(&image_file, Some(vars(false))).unwrap_or_else(|e| {
        panic!("{file}: the compose services start with the image's file: {e}")
    });
    assert!(plain.listen.ip().is_unspecified() && !plain.auth.enabled());
    let with_auth = Settings::load_with_env(&image_file, Some(vars(true)))
        .expect("the compose file's authorization example starts");
    assert!(with_auth.auth.enabled() && with_auth.metrics_listen.is_some());
    // noeviction without a memory bound means no bound at all.
    let redis = compose
        .lines()
        .find(|l| l.contains("redis-server"))
        .expect("a redis-server command");
    if redis.contains("noeviction") {
        assert!(
            redis.contains("--maxmemory\"") || redis.contains("--maxmemory "),
            "{file}: {redis}"
        );
    }
}

on_embedded_store! {
    #[tokio::test]
    sluice_health_exits_zero_only_for_a_ready_broker,
}

async fn sluice_health_exits_zero_only_for_a_ready_broker(store: Store) {
    bounded(60, async {
        let b = BrokerProcess::start(store, &[]).await;
        let health = |url: String| async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["health", "--url", &url, "--timeout-secs", "5"])
                .output()
                .await
                .unwrap()
        };
        let ok = health(b.base_url()).await;
        assert!(ok.status.success(), "{ok:?}");
        let closed = health(format!("http://127.0.0.1:{}", free_port())).await;
        assert_eq!(closed.status.code(), Some(1), "{closed:?}");
        assert!(String::from_utf8_lossy(&closed.stderr).contains("not ready"));
    })
    .await;
}
