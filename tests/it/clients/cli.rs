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
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = lines.clone();
        let stdout = tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().unwrap().push(line);
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
        );
        let mut log = Vec::new();

        for (step, at) in [(1, 2_000), (2, 4_500), (3, 7_000)] {
            wait_lines(&lines, at, &format!("{at} events printed")).await;
            let printed = lines.lock().unwrap().len();
            let published = publisher.published();
            assert!(
                published < N,
                "step {step} came after the last publish: pace too fast"
            );
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
