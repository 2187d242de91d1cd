//! The client subcommands one by one, and gaps as both clients show them
//! against a real broker (retention trimmed what a cursor names).

use std::{process::Stdio, time::Duration};

use futures_util::StreamExt as _;
use sluice_client::{Client, Item, Start, SubscribeOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::*;

const T: Duration = Duration::from_secs(15);

/// Runs `sluice ARGS` with `stdin` against `url`: (success, stdout, stderr).
async fn sluice(url: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_URL", url)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_TOKEN_COMMAND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("sluice {args:?} did not finish"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice serve` is the broker, with the top-level flags.
#[tokio::test]
async fn serve_subcommand_runs_the_broker() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = out.next_line().await.unwrap().expect("a listening line");
        let addr = line
            .strip_prefix("sluice listening on ")
            .expect(&line)
            .to_owned();
        let (ok, stdout, _) = sluice(&format!("http://{addr}"), &["pub", "s", "x"], "").await;
        assert!(ok && stdout.trim().len() > 20, "{stdout}");
        assert!(
            dir.path().join("topics").exists(),
            "the broker uses --data-dir"
        );
        child.start_kill().unwrap();
        let _ = child.wait().await;
    })
    .await;
}

/// `--producer` numbers the lines; sending the same input again with the
/// same sequences stores nothing twice, and says so.
#[tokio::test]
async fn pub_with_producer_numbers_lines_and_a_rerun_stores_nothing_twice() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        let url = b.base_url();
        let args = ["pub", "prod", "--producer", "importer", "--seq", "1"];
        let (ok, first, err) = sluice(&url, &args, "a\nb\r\nc\n").await;
        assert!(ok, "{err}");
        assert_eq!(first.lines().count(), 3, "{first}");
        assert!(err.contains("next --seq 4"), "{err}");
        let (ok, again, err) = sluice(&url, &args, "a\nb\nc\n").await;
        assert!(ok, "{err}");
        assert_eq!(again, first, "a rerun answers the original cursors");
        assert_eq!(err.matches("duplicate").count(), 3, "{err}");
        let data: Vec<_> = b
            .all_events("prod")
            .await
            .iter()
            .map(|e| e["data"].clone())
            .collect();
        assert_eq!(data, ["a", "b", "c"]);
        // A line refused on its own (a key reused with other data) fails
        // the command, and the others are stored.
        let (ok, _, _) = sluice(&url, &["pub", "keyed", "--key", "k"], "x\ny\n").await;
        assert!(ok);
        let (ok, out, err) = sluice(&url, &["pub", "keyed", "--key", "k"], "x\nz\nw\n").await;
        assert!(!ok, "{out}{err}");
        assert!(err.contains("line 2: not stored"), "{err}");
        assert_eq!(b.count("keyed").await, 3, "x once, y, and w");
    })
    .await;
}

/// A cursor older than retention: `sluice sub --json` writes the gap in
/// place (and on stderr), then the retained events; the crate's stream
/// yields an `Item::Gap` first, from a `416` or, with `on_gap_resume`, from
/// the broker's `event: gap`.
#[tokio::test]
async fn a_cursor_older_than_retention_is_a_gap_in_both_clients() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[("SLUICE__RETENTION__MAX_EVENTS", "5")]).await;
        let cs = b.publish_numbered("trim", 1..21).await;
        let bb = &b;
        wait_until(
            T,
            "5 retained",
            || async move { bb.count("trim").await == 5 },
        )
        .await;

        let args = ["sub", "trim", "--cursor", &cs[2], "--json", "--count", "5"];
        let (ok, out, err) = sluice(&b.base_url(), &args, "").await;
        assert!(ok, "{err}");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["gap"]["lost"], 12, "{out}");
        assert_eq!(lines[0]["gap"]["requested"], cs[2].as_str());
        let got: Vec<_> = lines[1..]
            .iter()
            .map(|l| l["cursor"].as_str().unwrap())
            .collect();
        assert_eq!(got, cs[15..].iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains("gap: 12 event(s) lost"), "{err}");

        let client = Client::new(&b.base_url()).unwrap();
        for on_gap_resume in [false, true] {
            let options = SubscribeOptions::new()
                .start(Start::After(cs[2].clone()))
                .on_gap_resume(on_gap_resume);
            let mut sub = client.subscribe("trim", options);
            let mut items = Vec::new();
            while items.iter().filter(|i| matches!(i, Item::Event(_))).count() < 5 {
                let item = tokio::time::timeout(T, sub.next()).await.unwrap().unwrap();
                items.push(item.unwrap());
            }
            let gap = items.iter().find_map(|i| match i {
                Item::Gap(g) => Some(g.clone()),
                _ => None,
            });
            let gap = gap.unwrap_or_else(|| panic!("no gap item: {items:?}"));
            assert_eq!(
                (gap.lost, gap.requested.as_deref()),
                (Some(12), Some(cs[2].as_str()))
            );
            assert_eq!(cursor_seq(&gap.resumed_after), 15, "{gap:?}");
            let first_event = items
                .iter()
                .position(|i| matches!(i, Item::Event(_)))
                .unwrap();
            let gap_at = items
                .iter()
                .position(|i| matches!(i, Item::Gap(_)))
                .unwrap();
            assert!(
                gap_at < first_event,
                "the gap comes before the events: {items:?}"
            );
            assert_eq!(sub.cursor(), Some(cs[19].as_str()));
        }
    })
    .await;
}

/// Over TLS: `--cacert` trusts a broker's self-signed certificate, and
/// `sluice pub` and `sluice sub` work on its `https://` URL.
#[tokio::test]
async fn pub_and_sub_over_tls_with_a_cacert() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
        let b = BrokerProcess::with(Setup::new(Store::Embedded).env(&[
            ("SLUICE__TLS__CERT_FILE", cert.to_str().unwrap()),
            ("SLUICE__TLS__KEY_FILE", key.to_str().unwrap()),
        ]))
        .await;
        let url = format!("https://127.0.0.1:{}", b.port);
        let ca = cert.to_str().unwrap();
        let (ok, out, err) = sluice(&url, &["pub", "tls", "over tls", "--cacert", ca], "").await;
        assert!(ok, "{err}");
        let args = [
            "sub", "tls", "--from", "earliest", "--count", "1", "--json", "--cacert", ca,
        ];
        let (ok, sub, err) = sluice(&url, &args, "").await;
        assert!(ok, "{err}");
        let e: serde_json::Value = serde_json::from_str(sub.trim()).unwrap();
        assert_eq!(
            (e["data"].as_str(), e["cursor"].as_str()),
            (Some("over tls"), Some(out.trim()))
        );
        // Without it the certificate is not trusted, and the command says so.
        let (ok, _, err) = sluice(&url, &["pub", "tls", "x"], "").await;
        assert!(!ok && err.contains("certificate"), "{err}");
    })
    .await;
}
