//! `sluice sub --cursor-file` against a broker that is SIGKILLed and
//! restarted on its port twice while `sluice sub` itself is stopped and
//! started again once: every event printed exactly once, in order.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

use super::{assert_exactly_once_in_order, Numbered, N};
use crate::support::*;

/// A running `sluice sub`, its stdout lines appended to a shared list.
struct Sub {
    child: Child,
    stdout: JoinHandle<()>,
    stderr: Arc<Mutex<String>>,
}

impl Sub {
    fn start(url: &str, topic: &str, cursor_file: &Path, lines: &Arc<Mutex<Vec<String>>>) -> Sub {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["sub", topic, "--from", "earliest", "--url", url])
            .arg("--cursor-file")
            .arg(cursor_file)
            .env_remove("SLUICE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sluice sub");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let sink = lines.clone();
        let stdout = tokio::spawn(async move {
            let mut line = Vec::new();
            // Whole lines only: a process killed in the middle of a write
            // leaves a piece of a line, which is no event printed.
            while let Ok(1..) = out.read_until(b'\n', &mut line).await {
                if line.pop() == Some(b'\n') {
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&line).into_owned());
                }
                line.clear();
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf).await {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Sub {
            child,
            stdout,
            stderr,
        }
    }

    /// SIGKILL, then waits for its exit and for the last line it printed.
    async fn kill9(mut self) -> String {
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("sluice sub exits on SIGKILL");
        self.stdout.await.unwrap();
        let text = self.stderr.lock().unwrap().clone();
        text
    }

    /// SIGTERM, then waits for its exit and for the last line it printed.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let st = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(st.success());
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("sluice sub exits within 10 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "sluice sub exit status on SIGTERM: {exit}");
        self.stdout.await.unwrap();
        let text = self.stderr.lock().unwrap().clone();
        text
    }
}

async fn wait_lines(lines: &Arc<Mutex<Vec<String>>>, at_least: usize, what: &str) {
    wait_until(Duration::from_secs(40), what, || {
        let n = lines.lock().unwrap().len();
        async move { n >= at_least }
    })
    .await;
}

/// What must be shown (issue 15): 10,000 numbered events, the broker
/// SIGKILLed and restarted on the same port twice and `sluice sub` stopped
/// (SIGTERM) and started again once with the same `--cursor-file`, all
/// while events flow: its output is exactly the 10,000 events, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_with_cursor_file_prints_every_event_once_across_broker_kills_and_its_own_restart() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cursor = dir.path().join("orders.cursor");
        let setup = Setup::new(Store::Embedded).dir(&data).listen(free_port());
        let mut broker = BrokerProcess::with(setup.clone()).await;
        let url = broker.base_url();
        let topic = "cli-numbered";
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let started = Instant::now();

        let mut sub = Sub::start(&url, topic, &cursor, &lines);
        let publisher = Numbered::start(
            std::slice::from_ref(&url),
            topic,
            N,
            50,
            Duration::from_millis(10),
            3_000,
        );
        let mut log = Vec::new();

        // Each step while events flow: it comes once that many are printed,
        // before the publisher may go on (past the step's gate).
        for (step, at, gate) in [(1, 2_000, 5_500), (2, 4_500, 8_000), (3, 7_000, N)] {
            wait_lines(&lines, at, &format!("{at} events printed")).await;
            let printed = lines.lock().unwrap().len();
            let published = publisher.published();
            if step == 2 {
                // The subscriber itself: stopped, then started again on
                // its cursor file while events are still being published.
                log.push(sub.stop().await);
                sub = Sub::start(&url, topic, &cursor, &lines);
            } else {
                broker.kill9().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                broker = BrokerProcess::restart(&setup).await;
                assert_eq!(broker.base_url(), url, "restarted on the same port");
            }
            publisher.allow(gate);
            eprintln!(
                "step {step}: {printed} printed, {published} published, at {:?}",
                started.elapsed()
            );
        }
        publisher.finish().await;
        wait_lines(&lines, N as usize, "all events printed").await;
        // Anything repeated would arrive right behind the last event.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        log.push(sub.stop().await);
        let got = lines.lock().unwrap().clone();
        eprintln!(
            "{} events through 2 broker kills and 1 subscriber restart in {:?}",
            got.len(),
            started.elapsed()
        );
        if got.len() != N as usize {
            eprintln!("sluice sub stderr:\n{}", log.join("\n---\n"));
        }
        assert_exactly_once_in_order(&got, N, "sluice sub output");
        // It really went through reconnects (it told so on stderr) and the
        // restarted one resumed from the file.
        let all = log.join("\n");
        assert!(all.matches("disconnected (").count() >= 2, "{all}");
        assert!(
            log[1].contains(", after "),
            "the restart resumes from the file: {}",
            log[1]
        );
        let saved = std::fs::read_to_string(&cursor).unwrap();
        assert_eq!(
            broker.history(topic, "from=latest").await.json["next_cursor"],
            saved.trim()
        );
    })
    .await;
}

/// The bound for a SIGKILL (which no program can act on): `sluice sub`
/// killed while events stream in, and started again on its cursor file,
/// loses nothing; it may print again what it printed since its last save,
/// at most one round (the events it had at hand, at most 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_killed_with_sigkill_loses_nothing_and_repeats_at_most_its_last_round() {
    bounded(60, async {
        let b = BrokerProcess::start(Store::Embedded, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let cursor = dir.path().join("c");
        let (url, topic, n) = (b.base_url(), "cli-sigkill", 3_000u64);
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sub = Sub::start(&url, topic, &cursor, &lines);
        let publisher = Numbered::start(
            std::slice::from_ref(&url),
            topic,
            n,
            20,
            Duration::from_millis(5),
            1_500,
        );
        wait_lines(&lines, 1_000, "1,000 events printed").await;
        sub.kill9().await;
        publisher.allow(n);
        let killed_at = lines.lock().unwrap().len();
        let sub = Sub::start(&url, topic, &cursor, &lines);
        publisher.finish().await;
        wait_until(Duration::from_secs(30), "every event printed", || {
            let l = lines.lock().unwrap().last().cloned();
            async move { l.as_deref() == Some("2999") }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        sub.stop().await;
        let got = lines.lock().unwrap().clone();
        // 0..k from the first process, then j..n from the second: j <= k
        // (nothing lost), k - j at most one round.
        let k = killed_at as u64;
        assert!(got[..killed_at]
            .iter()
            .enumerate()
            .all(|(i, l)| *l == i.to_string()));
        let j: u64 = got[killed_at].parse().unwrap();
        assert!(j <= k, "events {k}..{j} were lost across the SIGKILL");
        assert!(
            k - j <= 1000,
            "{} events printed twice: more than one round",
            k - j
        );
        let rest: Vec<String> = (j..n).map(|i| i.to_string()).collect();
        assert_eq!(
            got[killed_at..],
            rest[..],
            "after the restart: every event from {j} once, in order"
        );
        eprintln!(
            "SIGKILL after {k} printed: the restart printed again from {j} ({} repeated)",
            k - j
        );
    })
    .await;
}
