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
    })
    .await;
}
