//! A throw-away `redis-server`: its own loopback port and directory, AOF on
//! with `appendfsync always`, SIGKILL and restart on the same port and
//! directory (so the AOF comes back). The cluster tests start their own;
//! brokers on `Store::Redis` share one ([`shared`]).
//!
//! A server may require a password and speak TLS only ([`Access`]); the
//! helpers here (`PING`, `redis-cli`, URLs) then do the same.
//!
//! The server runs under `sh -c '... & echo $!; read _; kill -9 $!'` with a
//! piped stdin: whenever the test process goes away (panic, abort, SIGKILL)
//! the pipe closes and the shell kills the server, so none outlives a run.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use super::free_port;

/// How long a start (or an AOF reload) may take before `PING` answers.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One running (or killed, restartable) `redis-server`.
pub struct RedisServer {
    /// Its loopback port (kept across restarts).
    pub port: u16,
    dir: tempfile::TempDir,
    /// The `sh` wrapper and the pipe that keeps the server alive.
    proc: Option<(Child, ChildStdin)>,
    /// The server's own pid.
    pub pid: Option<u32>,
    /// What to run: a server with these extra arguments, or a sentinel.
    kind: Kind,
    /// How clients get in.
    access: Access,
}

/// How clients reach a server: with a password, over TLS. The default is
/// neither (plain TCP, no password).
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `requirepass`, and `masterauth` so that its replicas get in too.
    pub password: Option<String>,
    /// TLS only (the plain port off; replication over TLS too) with the
    /// certificates [`super::certs::make_certs`] made in this directory.
    pub tls: Option<PathBuf>,
}

impl Access {
    /// `redis-server` arguments: the port (TLS or plain), the password.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args = Vec::new();
        match &self.tls {
            Some(dir) => {
                let file = |f: &str| dir.join(f).to_str().expect("utf-8 path").to_owned();
                args.extend([
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                ]);
                args.extend(["--tls-cert-file".into(), file("srv.crt")]);
                args.extend(["--tls-key-file".into(), file("srv.key")]);
                args.extend(["--tls-ca-cert-file".into(), file("ca.crt")]);
                args.extend(
                    ["--tls-auth-clients", "no", "--tls-replication", "yes"].map(String::from),
                );
            }
            None => args.extend(["--port".into(), port.to_string()]),
        }
        if let Some(p) = &self.password {
            args.extend([
                "--requirepass".into(),
                p.clone(),
                "--masterauth".into(),
                p.clone(),
            ]);
        }
        args
    }

    /// `redis-cli` arguments that get in.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(p) = &self.password {
            args.extend(["-a".into(), p.clone(), "--no-auth-warning".into()]);
        }
        if let Some(dir) = &self.tls {
            let ca = dir.join("ca.crt").to_str().expect("utf-8 path").to_owned();
            args.extend(["--tls".into(), "--cacert".into(), ca]);
        }
        args
    }

    /// `redis[s]://[:password@]127.0.0.1:PORT`
    pub fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{port}")
    }

    fn is_plain(&self) -> bool {
        self.password.is_none() && self.tls.is_none()
    }
}

#[derive(Clone)]
enum Kind {
    Server(Vec<String>),
    /// A Sentinel watching the master on this port as service `mymaster`.
    Sentinel {
        master_port: u16,
    },
}

/// A free loopback port below 55536 whose port + 10000 is free as well.
fn free_bus_port() -> u16 {
    use std::net::TcpListener;
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let p = l.local_addr().expect("local addr").port();
        // Ports under 20000 are rarely handed out by the kernel; map the
        // free port into 20000..45000 and check both there.
        let p = 20000 + p % 25000;
        drop(l);
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            return p;
        }
    }
}

/// The test process's shared server, for brokers on [`super::Store::Redis`]
/// (each with its own key prefix); started on first use, killed when the
/// test process ends (see the module documentation).
pub async fn shared() -> &'static RedisServer {
    static SHARED: tokio::sync::OnceCell<RedisServer> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_init(RedisServer::start).await
}

impl RedisServer {
    /// Starts a server on a free port with a fresh temporary directory.
    pub async fn start() -> RedisServer {
        Self::start_kind(Kind::Server(Vec::new())).await
    }

    /// Starts a server with extra `redis-server` arguments (e.g. TLS ports).
    pub async fn start_with(args: &[&str]) -> RedisServer {
        Self::start_kind(Kind::Server(args.iter().map(|a| a.to_string()).collect())).await
    }

    /// Starts a Redis Sentinel monitoring the master on `master_port` as
    /// service `mymaster` (quorum 1, quick failure detection).
    pub async fn start_sentinel(master_port: u16) -> RedisServer {
        Self::start_kind(Kind::Sentinel { master_port }).await
    }

    /// Starts a server on a free port whose port + 10000 (a cluster node's
    /// bus) is free too, with extra arguments, reached by `access`.
    pub async fn start_cluster_node(args: &[&str], access: &Access) -> RedisServer {
        Self::start_kind_on(
            Kind::Server(args.iter().map(|a| a.to_string()).collect()),
            free_bus_port,
            access,
        )
        .await
    }

    async fn start_kind(kind: Kind) -> RedisServer {
        Self::start_kind_on(kind, free_port, &Access::default()).await
    }

    async fn start_kind_on(kind: Kind, port: fn() -> u16, access: &Access) -> RedisServer {
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut s = RedisServer {
                port: port(),
                dir: tempfile::tempdir().expect("tempdir"),
                proc: None,
                pid: None,
                kind: kind.clone(),
                access: access.clone(),
            };
            match s.spawn_and_wait().await {
                Ok(()) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    /// `redis://127.0.0.1:PORT` (`rediss://`, with the password, as its
    /// [`Access`] needs).
    pub fn url(&self) -> String {
        self.access.url(self.port)
    }

    /// Its working directory (AOF files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.proc.is_none(), "redis-server is already running");
        let dir = self.dir.path().to_str().expect("utf-8 temp dir").to_owned();
        let port = self.port.to_string();
        let log = self.log_path().to_str().expect("utf-8 path").to_owned();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"redis-server "$@" & p=$!; echo "$p"; read _; kill -9 "$p" 2>/dev/null; wait"#)
            .arg("sh");
        match &self.kind {
            Kind::Server(extra) => {
                cmd.args(["--save", ""])
                    .args(["--appendonly", "yes"])
                    .args(["--appendfsync", "always"])
                    .args(extra);
            }
            Kind::Sentinel { master_port } => {
                // Sentinel rewrites its config file: it must be its own.
                let conf = self.dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                         sentinel down-after-milliseconds mymaster 1000\n\
                         sentinel failover-timeout mymaster 5000\n"
                    ),
                )
                .map_err(|e| format!("write sentinel.conf: {e}"))?;
                cmd.arg(conf.to_str().expect("utf-8 path"))
                    .arg("--sentinel");
            }
        }
        let port_args = match self.kind {
            Kind::Server(_) => self.access.server_args(self.port),
            Kind::Sentinel { .. } => vec!["--port".to_owned(), port],
        };
        let mut child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(port_args)
            .args(["--dir", &dir])
            .args(["--logfile", &log])
            .args(["--daemonize", "no"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot spawn sh/redis-server: {e}"))?;
        let stdin = child.stdin.take().expect("stdin pipe");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout pipe"))
            .read_line(&mut line)
            .map_err(|e| format!("reading redis-server pid: {e}"))?;
        self.pid = line.trim().parse().ok();
        self.proc = Some((child, stdin));
        Ok(())
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.ping() {
                return Ok(());
            }
            let exited = self
                .proc
                .as_mut()
                .and_then(|(c, _)| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() >= deadline {
                let log = self.log_text();
                self.kill_now();
                return Err(format!(
                    "no PONG on port {} (exited: {exited}); log:\n{log}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True when the server answers `PING` with `+PONG` (not `-LOADING`).
    pub fn ping(&self) -> bool {
        if !self.access.is_plain() {
            return self.try_cli(&["PING"]).is_ok_and(|r| r == "PONG");
        }
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got.starts_with(b"+PONG")
    }

    fn kill_now(&mut self) {
        let pid = self.pid.take();
        if let Some((mut child, stdin)) = self.proc.take() {
            // Closing the pipe makes the wrapper SIGKILL the server and reap it.
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        // The wrapper is stuck: the server is still its
                        // (unreaped) child, so its pid cannot be reused yet.
                        if let Some(pid) = pid {
                            let _ = Command::new("kill")
                                .args(["-9", &pid.to_string()])
                                .stderr(Stdio::null())
                                .status();
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }

    /// SIGKILL the server and wait until it is gone (port closed).
    pub async fn kill9(&mut self) {
        self.kill_now();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(100),
        )
        .is_ok()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} still accepts connections after SIGKILL",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the server again on the same port and directory (the AOF is
    /// reloaded) and waits until it answers `PING`.
    pub async fn restart(&mut self) {
        if self.proc.is_some() {
            self.kill9().await;
        }
        if let Err(e) = self.spawn_and_wait().await {
            panic!("redis-server did not restart: {e}");
        }
    }

    /// Runs `redis-cli -p PORT args...`; returns its stdout (panics on failure).
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    /// Like [`Self::cli`]; the error is redis-cli's stderr.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        cli_as(&self.access, self.port, args)
    }

    /// `FLUSHALL` (synchronous).
    pub fn flushall(&self) {
        let r = self.cli(&["FLUSHALL", "SYNC"]);
        assert_eq!(r, "OK", "FLUSHALL answered {r:?}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let start = log.len().saturating_sub(4000);
            let tail = log.get(start..).unwrap_or(&log);
            eprintln!(
                "---- redis-server (port {}) log tail ----\n{tail}\n---- end ----",
                self.port
            );
        }
        self.kill_now();
    }
}

/// `redis-cli -p PORT args...` getting in by `access`: its stdout.
pub fn cli_as(access: &Access, port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(access.cli_args())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("run redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
