//! What the binary itself does with its configuration: `--config`, the
//! environment over the file, and a bad value stopping the start. The
//! real binary, as a subprocess: these are properties of its command line
//! and exit status.

use std::time::Duration;

use crate::support::*;

on_both_stores! {
    #[tokio::test]
    retry_ms_from_config_file,
    #[tokio::test]
    bad_config_value_exits_nonzero_naming_the_key,
}

/// With `--log-format json` every line the process writes, on stdout and
/// on stderr, is a JSON object (one stream in journald or `docker logs`).
#[tokio::test]
async fn json_log_format_writes_only_json_lines() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next_line().await.unwrap().expect("a line on stdout");
        let v: serde_json::Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {first}"));
        let addr = v["addr"].as_str().expect("addr").to_owned();
        // A request, so that the broker logs more, then a clean stop.
        let r = http_client()
            .post(format!("http://{addr}/v1/topics/json/events"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let pid = child.id().unwrap().to_string();
        let st = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(child.wait().await.unwrap().success());
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut n = 0;
        while let Some(line) = err.next_line().await.unwrap() {
            serde_json::from_str::<serde_json::Value>(&line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
            n += 1;
        }
        if let Some(line) = out.next_line().await.unwrap() {
            panic!("more on stdout: {line}");
        }
        assert!(n >= 2, "start and stop are logged ({n} lines)");
    })
    .await;
}

async fn retry_ms_from_config_file(store: Store) {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("sluice.toml");
        std::fs::write(&cfg, "[stream]\nretry_ms = 2500\n").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let b = BrokerProcess::with(Setup::new(store).dir(&data).config(&cfg)).await;
        let mut s = b.sse("cfg", "", &[]).await;
        s.assert_ok();
        match s.next_item(Duration::from_secs(5)).await {
            Some(SseItem::Retry(r)) => assert_eq!(r, Duration::from_millis(2500)),
            other => panic!("expected retry: 2500 from --config, got {other:?}"),
        }
        // Environment overrides the file.
        drop(s);
        drop(b);
        let b = BrokerProcess::with(
            Setup::new(store)
                .dir(&data)
                .config(&cfg)
                .env(&[("SLUICE__STREAM__RETRY_MS", "700")]),
        )
        .await;
        let mut s = b.sse("cfg", "", &[]).await;
        match s.next_item(Duration::from_secs(5)).await {
            Some(SseItem::Retry(r)) => assert_eq!(r, Duration::from_millis(700)),
            other => panic!("expected retry: 700 from the environment, got {other:?}"),
        }
    })
    .await;
}

async fn bad_config_value_exits_nonzero_naming_the_key(store: Store) {
    bounded(60, async {
        let (st, err) =
            run_expecting_exit(store, &[("SLUICE__EMBEDDED__FSYNC", "sometimes")]).await;
        assert!(!st.success(), "bad fsync value must fail the start: {st:?}");
        assert!(err.contains("fsync"), "stderr should name the key: {err}");
        let (st, err) =
            run_expecting_exit(store, &[("SLUICE__RETENTION__MAX_EVENTS", "lots")]).await;
        assert!(!st.success(), "bad max_events must fail the start: {st:?}");
        assert!(
            err.contains("max_events"),
            "stderr should name the key: {err}"
        );
        if store != Store::Redis {
            // The embedded store reads no Redis setting.
            return;
        }
        // A list's wrong entry is named by its place, never by its text
        // (a URL may hold a password); an empty one is a stray comma.
        let (st, err) = run_expecting_exit(
            store,
            &[(
                "SLUICE__REDIS__CLUSTER_NODES",
                "redis://127.0.0.1:7000,redis://127.0.0.1:7001,",
            )],
        )
        .await;
        assert!(!st.success(), "an empty node entry must fail the start");
        assert!(
            err.contains("redis.cluster_nodes") && err.contains("entry 3 is empty"),
            "stderr should name the empty entry: {err}"
        );
        let (st, err) = run_expecting_exit(
            store,
            &[(
                "SLUICE__REDIS__CLUSTER_NODES",
                "redis://127.0.0.1:7000,http://user:hunter2@127.0.0.1:7001",
            )],
        )
        .await;
        assert!(
            !st.success(),
            "a node that is no Redis URL must fail the start"
        );
        assert!(
            err.contains("entry 2 is not such a URL") && !err.contains("hunter2"),
            "stderr should name the entry, not its text: {err}"
        );
    })
    .await;
}
