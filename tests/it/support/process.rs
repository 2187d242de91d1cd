//! The real `sluice` binary as a subprocess on port 0, for what only a
//! process shows: being killed or restarted, its log, its exit status, its
//! memory, its own environment and metrics registry.

use std::{
    ops::Deref,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

use super::{Api, Setup, Store};

/// Path of the server binary built by Cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// How long the broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One running `sluice` process.
pub struct BrokerProcess {
    api: Api,
    child: Child,
    /// OS process id.
    pub pid: u32,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Every line written to stdout.
    stdout: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
    _tmp: Option<tempfile::TempDir>,
}

impl Deref for BrokerProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The command line of a start: `--listen 127.0.0.1:0`, the data directory,
/// `--config` if any, and only the setup's `SLUICE*` variables.
async fn command(setup: &Setup, data_dir: &Path) -> Command {
    let mut cmd = match setup.open_files {
        Some(n) => {
            // prlimit sets the limit and execs the broker (same pid).
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let port = setup.listen.unwrap_or(0);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir);
    if let Some(file) = &setup.config {
        cmd.arg("--config").arg(file);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(setup.vars(data_dir).await)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

impl BrokerProcess {
    /// Starts a broker process on `store` with these variables and a
    /// temporary data directory.
    pub async fn start(store: Store, env: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::with(Setup::new(store).env(env)).await
    }

    /// Starts a broker process on an existing data directory (for
    /// restarts). The caller owns the directory.
    pub async fn start_in(store: Store, dir: &Path, env: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::with(Setup::new(store).dir(dir).env(env)).await
    }

    /// Starts `setup` again after this process was killed or stopped, on
    /// the same port when the setup names one: a port another process
    /// took in between is retried for up to 10 s.
    pub async fn restart(setup: &Setup) -> BrokerProcess {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let setup = setup.clone();
            match tokio::spawn(BrokerProcess::with(setup)).await {
                Ok(b) => return b,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("broker restart failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("broker did not restart within 10 s: {e}"),
            }
        }
    }

    /// Starts a broker process as `setup` says.
    pub async fn with(setup: Setup) -> BrokerProcess {
        let (data_dir, tmp) = setup.data_dir();
        let mut child = command(&setup, &data_dir)
            .await
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let pid = child.id().expect("child pid");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        let stderr_copied = tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            loop {
                match err_pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });

        let out_pipe = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let out_sink = stdout.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out_pipe).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                out_sink.lock().unwrap().push(line.clone());
                if line.starts_with("sluice listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });

        let line = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                // Its last lines: the copy ends when the process has exited.
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr_copied).await;
                panic!(
                    "sluice closed stdout without a listening line (exit: {status:?}); stderr:\n{}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
            Err(_) => panic!(
                "sluice printed no listening line within {START_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            ),
        };
        let addr = line.trim_start_matches("sluice listening on ").trim();
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse port from {line:?}"));
        assert!(
            addr.starts_with("127.0.0.1:"),
            "listening line should name the bound address, got {line:?}"
        );
        assert_ne!(port, 0, "listening line must carry the real port");

        BrokerProcess {
            api: Api::new(port, data_dir),
            child,
            pid,
            stderr,
            stdout,
            exit: None,
            _tmp: tmp,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Every line the process wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let st = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("killed child did not exit")
            .expect("wait");
        self.exit = Some(st);
    }

    /// SIGTERM (does not wait).
    pub fn terminate(&self) {
        let st = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {} failed", self.pid);
    }

    /// Waits for the process to exit; `None` on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exit {
            return Some(st);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(st)) => {
                self.exit = Some(st);
                Some(st)
            }
            _ => None,
        }
    }

    /// SIGTERM and wait (up to 20 s) for a clean exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.terminate();
        match self.wait_exit(Duration::from_secs(20)).await {
            Some(st) => st,
            None => panic!("broker did not exit within 20 s of SIGTERM"),
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let text = self.stderr_text();
            let tail: String = {
                let start = text.len().saturating_sub(12_000);
                let mut s = start;
                while !text.is_char_boundary(s) {
                    s += 1;
                }
                text[s..].to_string()
            };
            eprintln!(
                "---- sluice (pid {}, port {}) stderr tail ----\n{tail}\n---- end ----",
                self.pid, self.port
            );
        }
    }
}

/// Runs the binary expecting it to exit by itself (bad configuration);
/// returns its status and stderr. Panics if it is still running after 20 s.
pub async fn run_expecting_exit(store: Store, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let setup = Setup::new(store).env(env);
    let (data_dir, _tmp) = setup.data_dir();
    let child = command(&setup, &data_dir).await.spawn().expect("spawn");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("sluice with a bad configuration kept running for 20 s")
        .expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    vm_rss(&status).unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every 20 ms in a background task and keeps the
/// peak, so a test sees the high point of a run rather than its end.
pub struct RssSampler {
    peak: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::{AtomicU64, Ordering};
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = vm_rss(&s) {
                        p.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { peak, task }
    }

    /// Highest RSS (KiB) seen so far.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
