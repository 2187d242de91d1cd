//! The README's client examples, run as they are written there: the
//! `sh test` block with the `sluice` binary on `PATH` and `SLUICE_URL` set,
//! and the Rust block, which must be `client/examples/readme.rs` as it is
//! (compiled here through `include!`).

use std::time::Duration;

use crate::support::*;

#[allow(dead_code, clippy::all)]
mod example {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/client/examples/readme.rs"
    ));

    pub(super) async fn run_it(url: &str, cursor: &str) -> sluice_client::Result<Vec<String>> {
        run(url, cursor).await
    }
}

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// The fenced blocks whose info string is exactly `info`.
fn blocks(info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in README.lines() {
        match &mut cur {
            None if line.trim_start() == format!("```{info}") => cur = Some(String::new()),
            Some(b) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[tokio::test]
async fn readme_cli_example_runs_against_a_broker() {
    bounded(60, async {
        let b = Broker::start(Store::Embedded, &[]).await;
        let script = blocks("sh test");
        assert_eq!(script.len(), 1, "one `sh test` block in README.md");
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_sluice"))
            .parent()
            .unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let run = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script[0]])
            .current_dir(dir.path())
            .env("PATH", path)
            .env("SLUICE_URL", b.base_url())
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_TOKEN_COMMAND")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(40), run)
            .await
            .expect("the README's commands finish")
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        let lines: Vec<&str> = stdout.lines().collect();
        // The first `sub` prints the four events, the second only "four".
        let first = lines
            .iter()
            .position(|l| *l == r#"{"id": 42}"#)
            .expect(&stdout);
        assert_eq!(
            lines[first + 1..first + 4],
            ["one", "two", "three"],
            "{stdout}"
        );
        let four: serde_json::Value = serde_json::from_str(lines[first + 5]).expect(&stdout);
        assert_eq!(four["data"], "four", "{stdout}");
        assert!(
            lines.iter().any(|l| l.starts_with("orders ")),
            "topics: {stdout}"
        );
        assert!(lines.contains(&"retained: 5"), "info: {stdout}");
        assert!(stderr.contains("next cursor: "), "history: {stderr}");
        let saved = std::fs::read_to_string(dir.path().join("orders.cursor")).unwrap();
        assert_eq!(four["cursor"], saved.trim());
    })
    .await;
}

#[tokio::test]
async fn readme_rust_example_is_the_example_file_and_runs() {
    bounded(60, async {
        let file = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/client/examples/readme.rs"
        ));
        // Without its opening comment (which says why it exists).
        let body: Vec<&str> = file.lines().skip_while(|l| l.starts_with("//")).collect();
        let shown = blocks("rust file=client/examples/readme.rs");
        assert_eq!(shown.len(), 1, "one Rust example block in README.md");
        assert_eq!(
            shown[0].trim(),
            body.join("\n").trim(),
            "README shows client/examples/readme.rs"
        );

        let b = Broker::start(Store::Embedded, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let cursor = dir.path().join("orders.cursor");
        let seen = example::run_it(&b.base_url(), cursor.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(seen, [r#"{"id": 42}"#, r#"{"id": 43}"#, r#"{"id": 44}"#]);
        let events = b.all_events("orders").await;
        assert_eq!(events.len(), 3);
        let saved = std::fs::read_to_string(&cursor).unwrap();
        assert_eq!(
            events[2]["cursor"],
            saved.trim(),
            "the last event's cursor is saved"
        );
    })
    .await;
}
