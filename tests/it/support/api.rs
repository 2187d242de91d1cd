//! The HTTP side of a running broker, whichever way it runs: its address,
//! a client, and one helper per request the tests make.

use std::{path::PathBuf, time::Duration};

use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue},
    Client, Method, StatusCode,
};
use serde_json::Value;

use super::SseStream;

/// HTTP client with a 15 s per-request timeout (not for streams).
pub fn http_client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// A running broker's address and request helpers; [`super::Broker`] and
/// [`super::BrokerProcess`] dereference to it.
pub struct Api {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// See [`http_client`].
    pub client: Client,
}

impl Api {
    pub(super) fn new(port: u16, data_dir: PathBuf) -> Api {
        Api {
            port,
            data_dir,
            client: http_client(),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

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

    /// `GET /readyz`, which must answer `200`: its `degraded`, if any.
    pub async fn degraded(&self) -> Option<String> {
        let r = self.get("/readyz").await;
        assert_eq!(r.status, 200, "ready: {}", r.text);
        r.json.get("degraded").map(|d| {
            d.as_str()
                .unwrap_or_else(|| panic!("degraded is a string: {}", r.text))
                .to_owned()
        })
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

    /// Opens an SSE stream on a socket of the test's own (see
    /// [`SseStream::raw`]).
    pub async fn raw_sse(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        rcvbuf: Option<u32>,
    ) -> std::io::Result<SseStream> {
        SseStream::raw(self.port, path, headers, rcvbuf).await
    }

    /// `GET /metrics`, asserting a 200 in Prometheus text format. The
    /// registry is process-wide: only a [`super::BrokerProcess`]'s is its own.
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

pub fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

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
        Resp::try_read(r).await.expect("read body")
    }

    /// Like [`Resp::read`], returning a failure to read the body.
    pub async fn try_read(r: reqwest::Response) -> reqwest::Result<Resp> {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            text,
            json,
        })
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

/// `POST {base}/v1/topics/{topic}/events` with `client`; transport
/// errors are returned, for tests that expect them.
pub async fn try_publish(
    client: &Client,
    base: &str,
    topic: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Result<Resp> {
    let r = client
        .post(format!("{base}/v1/topics/{topic}/events"))
        .headers(header_map(headers))
        .body(body.to_owned())
        .send()
        .await?;
    Resp::try_read(r).await
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
