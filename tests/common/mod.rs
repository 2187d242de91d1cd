//! Shared helpers for the black-box integration tests: start the real `sluice`
//! binary on port 0 with its own data directory, talk HTTP to it, read its SSE
//! streams with a spec-following decoder, and poll conditions with a deadline.
//!
//! Both stores run the same suites: a test binary whose name starts with
//! `redis_` (e.g. `tests/redis_api.rs`, which includes `tests/api.rs`) starts
//! every broker on the Redis store, against one `redis-server` per test
//! process with a key prefix per data directory, so tests stay isolated and a
//! restart on the same directory finds its data again.
#![allow(dead_code)]

pub mod redis;

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue},
    Client, Method, StatusCode,
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    time::Instant,
};
use tokio_util::codec::Decoder as _;

pub use russe::Message;

/// Path of the server binary built by Cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// How long the broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a test body with a hard time limit.
pub async fn bounded<F: Future<Output = ()>>(secs: u64, fut: F) {
    if tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .is_err()
    {
        panic!("test did not finish within {secs} s");
    }
}

/// Polls `f` every 50 ms until it returns true; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` every 50 ms until it returns `Some`; panics after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh unique-looking topic name per call (tests share nothing anyway,
/// this just makes logs readable).
pub fn topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------

/// One running `sluice` process.
pub struct Broker {
    child: Child,
    /// OS process id.
    pub pid: u32,
    /// The port it bound (it is started with `--listen 127.0.0.1:0`).
    pub port: u16,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// HTTP client with a 15 s per-request timeout (not for streams).
    pub client: Client,
    exit: Option<ExitStatus>,
}

/// Whether this test binary runs its suite on the Redis store.
pub fn on_redis() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("redis_"))
        })
        .unwrap_or(false)
}

/// Skips an embedded-store-only test in the Redis run (returns true when
/// the caller should return).
pub fn embedded_only(what: &str) -> bool {
    if on_redis() {
        eprintln!("skipped on the Redis store: {what} is a property of the embedded log");
    }
    on_redis()
}

/// URL of this process's shared `redis-server`, started on first use.
static SHARED_REDIS: tokio::sync::OnceCell<redis::RedisServer> = tokio::sync::OnceCell::const_new();

async fn ensure_store() {
    if on_redis() {
        SHARED_REDIS.get_or_init(redis::RedisServer::start).await;
    }
}

/// Builds the command line shared by every start.
fn command(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE") {
            cmd.env_remove(k);
        }
    }
    if let Some(r) = SHARED_REDIS.get() {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data_dir.hash(&mut h);
        cmd.env("SLUICE__STORE", "redis")
            .env("SLUICE__REDIS__URL", r.url())
            .env("SLUICE__REDIS__KEY_PREFIX", format!("t{:016x}", h.finish()));
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn http_client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

fn stream_client() -> Client {
    Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

impl Broker {
    /// Starts a broker with its own temporary data directory.
    pub async fn start(env: &[(&str, &str)]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut b = Broker::start_args(tmp.path(), &[], env).await;
        b.tmp = Some(tmp);
        b
    }

    /// Starts a broker on an existing data directory (for restarts). The caller
    /// owns the directory.
    pub async fn start_in(dir: &Path, env: &[(&str, &str)]) -> Broker {
        Broker::start_args(dir, &[], env).await
    }

    /// Starts a broker with extra command-line arguments (e.g. `--config f`).
    pub async fn start_args(dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Broker {
        ensure_store().await;
        let mut child = command(dir, extra_args, env)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let pid = child.id().expect("child pid");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        tokio::spawn(async move {
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
        tokio::spawn(async move {
            let mut lines = BufReader::new(out_pipe).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
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
                tokio::time::sleep(Duration::from_millis(100)).await;
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

        Broker {
            child,
            pid,
            port,
            data_dir: dir.to_path_buf(),
            tmp: None,
            stderr,
            client: http_client(),
            exit: None,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
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

    // ---- HTTP -------------------------------------------------------------

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        req = req.headers(header_map(headers));
        if let Some(body) = body {
            req = req.body(body);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {path} failed: {e}"));
        Resp::read(r).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], None).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, path, headers, None).await
    }

    /// `POST /v1/topics/{topic}/events`.
    pub async fn publish(&self, topic: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
        self.publish_bytes(topic, body.as_bytes().to_vec(), headers)
            .await
    }

    pub async fn publish_bytes(
        &self,
        topic: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.request(
            Method::POST,
            &format!("/v1/topics/{topic}/events"),
            headers,
            Some(body),
        )
        .await
    }

    /// Publishes and asserts `201`; returns the cursor.
    pub async fn publish_ok(&self, topic: &str, body: &str) -> String {
        let r = self.publish(topic, body, &[]).await;
        assert_eq!(r.status, 201, "publish {body:?}: {}", r.text);
        r.json["cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no cursor in {}", r.text))
            .to_string()
    }

    /// Publishes `{"seq":i}` for each i; returns the cursors.
    pub async fn publish_numbered(&self, topic: &str, range: std::ops::Range<u64>) -> Vec<String> {
        let mut out = Vec::new();
        for i in range {
            out.push(self.publish_ok(topic, &format!("{{\"seq\":{i}}}")).await);
        }
        out
    }

    /// `POST /v1/topics/{topic}/batch` with an NDJSON body.
    pub async fn batch(&self, topic: &str, ndjson: &str) -> Resp {
        self.request(
            Method::POST,
            &format!("/v1/topics/{topic}/batch"),
            &[("content-type", "application/x-ndjson")],
            Some(ndjson.as_bytes().to_vec()),
        )
        .await
    }

    /// History poll: `GET /v1/topics/{topic}/events?{query}` with JSON Accept.
    pub async fn history(&self, topic: &str, query: &str) -> Resp {
        let path = if query.is_empty() {
            format!("/v1/topics/{topic}/events")
        } else {
            format!("/v1/topics/{topic}/events?{query}")
        };
        self.get_with(&path, &[("accept", "application/json")])
            .await
    }

    /// Every retained event of a topic, following `next_cursor` from the
    /// earliest. Panics on a non-200.
    pub async fn all_events(&self, topic: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut query = "from=earliest&limit=1000".to_string();
        for _ in 0..10_000 {
            let r = self.history(topic, &query).await;
            assert_eq!(r.status, 200, "history {topic}?{query}: {}", r.text);
            let evs = r.json["events"]
                .as_array()
                .unwrap_or_else(|| panic!("no events array: {}", r.text))
                .clone();
            if evs.is_empty() {
                return out;
            }
            let next = r.json["next_cursor"]
                .as_str()
                .unwrap_or_else(|| panic!("no next_cursor: {}", r.text))
                .to_string();
            out.extend(evs);
            query = format!("cursor={next}&limit=1000");
        }
        panic!("history of {topic} never ended");
    }

    /// Number of retained events (through history, so it works before the
    /// topic exists: a topic with no event has an empty history).
    pub async fn count(&self, topic: &str) -> usize {
        let r = self.history(topic, "from=earliest&limit=1000").await;
        match r.status.as_u16() {
            200 => self.all_events(topic).await.len(),
            404 => 0,
            s => panic!("history of {topic}: unexpected {s}: {}", r.text),
        }
    }

    /// Opens an SSE stream on `GET /v1/topics/{topic}/events?{query}`.
    pub async fn sse(&self, topic: &str, query: &str, headers: &[(&str, &str)]) -> SseStream {
        let url = if query.is_empty() {
            self.url(&format!("/v1/topics/{topic}/events"))
        } else {
            self.url(&format!("/v1/topics/{topic}/events?{query}"))
        };
        SseStream::connect(&url, headers).await
    }
}

impl Drop for Broker {
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
pub async fn run_expecting_exit(extra_args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let child = command(tmp.path(), extra_args, env).spawn().expect("spawn");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("sluice with a bad configuration kept running for 20 s")
        .expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(v.as_bytes()).expect("header value"),
        );
    }
    map
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// A fully read HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body parsed as JSON, `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Resp {
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("read body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header_str(&self.headers, name)
    }

    /// The `cursor` field of a publish answer.
    pub fn cursor(&self) -> String {
        self.json["cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no cursor in {} {}", self.status, self.text))
            .to_string()
    }

    /// Asserts an RFC 9457 problem with the given status; returns the body.
    pub fn assert_problem(&self, status: u16) -> &Value {
        assert_problem(status, self.status, &self.headers, &self.json, &self.text);
        &self.json
    }
}

pub fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

pub fn assert_problem(
    want: u16,
    status: StatusCode,
    headers: &HeaderMap,
    json: &Value,
    text: &str,
) {
    assert_eq!(
        status.as_u16(),
        want,
        "expected {want}, got {status}: {text}"
    );
    let ct = header_str(headers, "content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "a {want} must be application/problem+json, got content-type {ct:?}: {text}"
    );
    for field in ["type", "title", "detail"] {
        assert!(
            json[field].is_string(),
            "problem body lacks string field {field:?}: {text}"
        );
    }
    assert_eq!(
        json["status"].as_u64(),
        Some(want as u64),
        "problem body status field: {text}"
    );
}

// ---------------------------------------------------------------------------
// Cursors
// ---------------------------------------------------------------------------

/// `YYYYMMDDTHHMMSS.mmmZ-<16 lowercase hex>-<[a-z0-9]{1,16}>`
pub fn is_cursor(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 + 1 + 16 + 2 || b.len() > 64 {
        return false;
    }
    let time_ok = b[..20].iter().enumerate().all(|(i, &c)| match i {
        8 => c == b'T',
        15 => c == b'.',
        19 => c == b'Z',
        _ => c.is_ascii_digit(),
    });
    let seq_ok = b[21..37]
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let epoch = &b[38..];
    time_ok
        && b[20] == b'-'
        && seq_ok
        && b[37] == b'-'
        && !epoch.is_empty()
        && epoch.len() <= 16
        && epoch
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

pub fn assert_cursor(s: &str) {
    assert!(is_cursor(s), "not a cursor of the documented form: {s:?}");
}

pub fn cursor_seq(c: &str) -> u64 {
    assert_cursor(c);
    u64::from_str_radix(&c[21..37], 16).unwrap()
}

pub fn cursor_epoch(c: &str) -> &str {
    assert_cursor(c);
    &c[38..]
}

/// The same cursor with another sequence number.
pub fn with_seq(c: &str, seq: u64) -> String {
    assert_cursor(c);
    format!("{}-{seq:016x}-{}", &c[..20], &c[38..])
}

/// The same cursor with a different (valid) epoch token.
pub fn with_other_epoch(c: &str) -> String {
    let epoch = cursor_epoch(c);
    let other = if epoch == "zzzzzzzz" {
        "yyyyyyyy"
    } else {
        "zzzzzzzz"
    };
    format!("{}-{other}", &c[..37])
}

// ---------------------------------------------------------------------------
// SSE client
// ---------------------------------------------------------------------------

/// One decoded item of an SSE stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    Message(Message),
    Comment(String),
    Retry(Duration),
    /// The body ended cleanly (complete chunked encoding / connection close
    /// at a message boundary).
    Eof,
    /// The body ended with a transport error (reset, truncated chunking).
    Error(String),
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An SSE subscription read with `russe::Decoder`.
pub struct SseStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Body of a non-200 answer.
    pub error_text: String,
    pub error_json: Value,
    body: Option<ByteStream>,
    buf: BytesMut,
    decoder: russe::Decoder,
    end: Option<SseItem>,
    /// Every comment seen so far (in order).
    pub comments: Vec<String>,
    /// Every retry value seen so far (stand-alone or on a message).
    pub retries: Vec<Duration>,
}

impl SseStream {
    /// Connects with `Accept: text/event-stream` unless `headers` sets an
    /// `accept` header itself. Waits at most 10 s for the response head.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut map = header_map(headers);
        if !map.contains_key("accept") {
            map.insert("accept", HeaderValue::from_static("text/event-stream"));
        }
        let fut = stream_client().get(url).headers(map).send();
        let r = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("no response head within 10 s for {url}"))
            .unwrap_or_else(|e| panic!("SSE connect to {url} failed: {e}"));
        let status = r.status();
        let headers = r.headers().clone();
        let mut s = SseStream {
            status,
            headers,
            error_text: String::new(),
            error_json: Value::Null,
            body: None,
            buf: BytesMut::new(),
            decoder: russe::Decoder::default(),
            end: None,
            comments: Vec::new(),
            retries: Vec::new(),
        };
        if status == StatusCode::OK {
            s.body = Some(Box::pin(r.bytes_stream()));
        } else {
            let text = tokio::time::timeout(Duration::from_secs(10), r.text())
                .await
                .expect("error body within 10 s")
                .unwrap_or_default();
            s.error_json = serde_json::from_str(&text).unwrap_or(Value::Null);
            s.error_text = text;
        }
        s
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header_str(&self.headers, name)
    }

    /// Asserts the stream was refused with an RFC 9457 problem of `status`.
    pub fn assert_problem(&self, status: u16) -> &Value {
        assert_problem(
            status,
            self.status,
            &self.headers,
            &self.error_json,
            &self.error_text,
        );
        &self.error_json
    }

    /// Asserts a 200 SSE stream.
    pub fn assert_ok(&self) {
        assert_eq!(
            self.status, 200,
            "expected a 200 stream, got {}: {}",
            self.status, self.error_text
        );
    }

    /// The next item, or `None` if nothing arrives within `timeout`. After
    /// the end of the body it keeps answering `Eof`/`Error`.
    pub async fn next_item(&mut self, timeout: Duration) -> Option<SseItem> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(ev)) => return Some(self.record(ev)),
                Ok(None) => {}
                Err(e) => {
                    let item = SseItem::Error(format!("decode error: {e}"));
                    self.end = Some(item.clone());
                    return Some(item);
                }
            }
            if let Some(end) = &self.end {
                return Some(end.clone());
            }
            let Some(body) = self.body.as_mut() else {
                self.end = Some(SseItem::Error(format!("not a stream: {}", self.status)));
                continue;
            };
            match tokio::time::timeout_at(deadline, body.next()).await {
                Err(_) => return None,
                Ok(None) => {
                    self.end = Some(SseItem::Eof);
                    self.body = None;
                }
                Ok(Some(Err(e))) => {
                    self.end = Some(SseItem::Error(format!("{e} ({e:?})")));
                    self.body = None;
                }
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
            }
        }
    }

    fn record(&mut self, ev: russe::Event) -> SseItem {
        match ev {
            russe::Event::Message(m) => {
                if let Some(r) = m.retry {
                    self.retries.push(r);
                }
                SseItem::Message(m)
            }
            russe::Event::Comment(c) => {
                self.comments.push(c.to_string());
                SseItem::Comment(c.to_string())
            }
            russe::Event::Retry(r) => {
                self.retries.push(r);
                SseItem::Retry(r)
            }
        }
    }

    /// The next message (comments and retries are recorded and skipped);
    /// `None` on timeout or end of stream.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await? {
                SseItem::Message(m) => return Some(m),
                SseItem::Comment(_) | SseItem::Retry(_) => {}
                SseItem::Eof | SseItem::Error(_) => return None,
            }
        }
    }

    /// Like `next_event` but panics on timeout or end of stream.
    pub async fn expect_event(&mut self, timeout: Duration) -> Message {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await {
                None => panic!("no SSE event within {timeout:?}"),
                Some(SseItem::Message(m)) => return m,
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(end) => panic!("SSE stream ended while waiting for an event: {end:?}"),
            }
        }
    }

    /// Reads exactly `n` messages within `timeout` (panics otherwise).
    pub async fn expect_events(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await {
                None => panic!(
                    "got {} of {n} SSE events within {timeout:?}: {:?}",
                    out.len(),
                    out.iter()
                        .map(|m: &Message| m.data.to_string())
                        .collect::<Vec<_>>()
                ),
                Some(SseItem::Message(m)) => out.push(m),
                Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => {}
                Some(end) => panic!(
                    "SSE stream ended after {} of {n} events: {end:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// Asserts that no message arrives within `quiet` (comments allowed).
    pub async fn expect_no_event(&mut self, quiet: Duration) {
        if let Some(m) = self.next_event(quiet).await {
            panic!("unexpected SSE event: {m:?}");
        }
    }
}

/// `id` of a message (panics when it has none).
pub fn msg_id(m: &Message) -> String {
    m.id.as_deref()
        .unwrap_or_else(|| panic!("SSE message without id: {m:?}"))
        .to_string()
}

/// Parses a `{"seq":i}` payload.
pub fn seq_of(data: &str) -> u64 {
    let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {data:?}"))
}

// ---------------------------------------------------------------------------
// Process memory and metrics
// ---------------------------------------------------------------------------

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
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
                    if let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
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

/// A Prometheus text exposition, parsed just enough for tests.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample named exactly `series` (name plus label set
    /// as the server prints it, e.g. `sluice_resumes_total{result="ok"}`).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// Like `get`, 0 when the series is absent.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// Whether a `# TYPE name kind` line is present.
    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.0.lines().any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

impl Broker {
    /// `GET /metrics`, asserting a 200 in Prometheus text format.
    pub async fn metrics(&self) -> Metrics {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("text/plain"), "/metrics content-type {ct:?}");
        Metrics(r.text)
    }

    /// `active_connections` of `/healthz?probe=stream`.
    pub async fn active_connections(&self) -> u64 {
        let r = self.get("/healthz?probe=stream").await;
        assert_eq!(r.status, 200, "/healthz?probe=stream: {}", r.text);
        r.json["active_connections"]
            .as_u64()
            .unwrap_or_else(|| panic!("no active_connections in {}", r.text))
    }

    /// The rows of `/v1/connections`.
    pub async fn connections(&self) -> Vec<Value> {
        let r = self.get("/v1/connections").await;
        assert_eq!(r.status, 200, "/v1/connections: {}", r.text);
        r.json["connections"]
            .as_array()
            .unwrap_or_else(|| panic!("no connections array: {}", r.text))
            .clone()
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 SSE client (own socket options, chunked decoding by hand)
// ---------------------------------------------------------------------------

/// An SSE stream on a plain TCP socket: the test controls the socket (receive
/// buffer size, linger, when it reads), which reqwest does not allow.
pub struct RawSse {
    pub sock: tokio::net::TcpStream,
    /// Response status code.
    pub status: u16,
    /// Response head, as text.
    pub head: String,
    /// Received bytes not yet de-chunked.
    raw: BytesMut,
    /// De-chunked body bytes not yet decoded.
    body: BytesMut,
    decoder: russe::Decoder,
    /// Bytes left in the current chunk (`None`: a size line is due).
    chunk_left: Option<usize>,
    ended: bool,
}

impl RawSse {
    /// Connects to 127.0.0.1:`port` (with `SO_RCVBUF` = `rcvbuf` when given,
    /// set before connecting so the kernel does not grow it), sends
    /// `GET path` with `Accept: text/event-stream` and the extra headers,
    /// and reads the response head.
    pub async fn connect(
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
        rcvbuf: Option<u32>,
    ) -> std::io::Result<RawSse> {
        use tokio::io::AsyncWriteExt;
        let s = tokio::net::TcpSocket::new_v4()?;
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n)?;
        }
        let mut sock = s.connect(([127, 0, 0, 1], port).into()).await?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).await?;
        let mut raw = BytesMut::with_capacity(8192);
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if sock.read_buf(&mut raw).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before the response head",
                ));
            }
        };
        let head = String::from_utf8_lossy(&raw.split_to(head_end)).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(
            status != 200
                || head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
            "expected a chunked SSE response: {head}"
        );
        Ok(RawSse {
            sock,
            status,
            head,
            raw,
            body: BytesMut::new(),
            decoder: russe::Decoder::default(),
            chunk_left: None,
            ended: false,
        })
    }

    /// Moves complete chunk data from `raw` to `body`.
    fn dechunk(&mut self) {
        while !self.ended {
            match self.chunk_left {
                None => {
                    let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                        return;
                    };
                    let line = self.raw.split_to(i + 2);
                    let size = std::str::from_utf8(&line[..i])
                        .ok()
                        .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                        .unwrap_or_else(|| {
                            panic!(
                                "bad chunk size line {line:?}; next {:?}",
                                &self.raw[..self.raw.len().min(80)]
                            )
                        });
                    if size == 0 {
                        self.ended = true;
                        return;
                    }
                    self.chunk_left = Some(size);
                }
                Some(0) => {
                    if self.raw.len() < 2 {
                        return;
                    }
                    let _ = self.raw.split_to(2);
                    self.chunk_left = None;
                }
                Some(n) => {
                    if self.raw.is_empty() {
                        return;
                    }
                    let take = n.min(self.raw.len());
                    self.body.extend_from_slice(&self.raw.split_to(take));
                    self.chunk_left = Some(n - take);
                }
            }
        }
    }

    /// The next SSE item; `Eof` at the end of the body or connection, `Error`
    /// on a reset; `None` when nothing arrives within `timeout`.
    pub async fn next_item(&mut self, timeout: Duration) -> Option<SseItem> {
        let deadline = Instant::now() + timeout;
        loop {
            self.dechunk();
            match self.decoder.decode(&mut self.body) {
                Ok(Some(russe::Event::Message(m))) => return Some(SseItem::Message(m)),
                Ok(Some(russe::Event::Comment(c))) => return Some(SseItem::Comment(c.to_string())),
                Ok(Some(russe::Event::Retry(r))) => return Some(SseItem::Retry(r)),
                Ok(None) => {}
                Err(e) => return Some(SseItem::Error(format!("decode error: {e}"))),
            }
            if self.ended {
                return Some(SseItem::Eof);
            }
            match tokio::time::timeout_at(deadline, self.sock.read_buf(&mut self.raw)).await {
                Err(_) => return None,
                Ok(Ok(0)) => {
                    self.ended = true;
                    return Some(SseItem::Eof);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.ended = true;
                    return Some(SseItem::Error(e.to_string()));
                }
            }
        }
    }

    /// Drops the connection with an RST (`SO_LINGER` 0) instead of a FIN.
    pub fn reset(self) {
        self.sock.set_zero_linger().expect("SO_LINGER 0");
        drop(self.sock);
    }
}
