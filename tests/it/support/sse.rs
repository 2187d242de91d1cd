//! The one SSE reader of the suites: the project's spec-following parser
//! (`sluice_client::sse::Decoder`, the one the client crate, the CLI and
//! the benchmarks use) over the body of a stream, which arrives either
//! through reqwest or on a raw socket the test controls.

use std::{pin::Pin, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue},
    Client, StatusCode,
};
use serde_json::Value;
use sluice_client::sse::{Decoder, Frame};
use tokio::{io::AsyncReadExt, time::Instant};

use super::{assert_problem, header_map, header_str, Message};

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

/// Where the body bytes come from.
enum Body {
    /// Not a stream (a refusal), or ended.
    None,
    Http(ByteStream),
    Raw(RawBody),
}

/// An SSE subscription.
pub struct SseStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The response head as text (streams opened with [`SseStream::raw`]).
    pub head: String,
    /// Body of a non-200 answer (streams opened with [`SseStream::connect`]).
    pub error_text: String,
    pub error_json: Value,
    body: Body,
    decoder: Decoder,
    end: Option<SseItem>,
    /// Every comment seen so far (in order).
    pub comments: Vec<String>,
    /// Every retry value seen so far (stand-alone or on a message).
    pub retries: Vec<Duration>,
}

impl SseStream {
    fn new(status: StatusCode, headers: HeaderMap, body: Body) -> SseStream {
        SseStream {
            status,
            headers,
            head: String::new(),
            error_text: String::new(),
            error_json: Value::Null,
            body,
            decoder: Decoder::new(),
            end: None,
            comments: Vec::new(),
            retries: Vec::new(),
        }
    }

    /// Connects with reqwest, with `Accept: text/event-stream` unless
    /// `headers` sets an `accept` header itself. Waits at most 10 s for the
    /// response head.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut map = header_map(headers);
        if !map.contains_key("accept") {
            map.insert("accept", HeaderValue::from_static("text/event-stream"));
        }
        let client = Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        let fut = client.get(url).headers(map).send();
        let r = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("no response head within 10 s for {url}"))
            .unwrap_or_else(|e| panic!("SSE connect to {url} failed: {e}"));
        let status = r.status();
        let headers = r.headers().clone();
        if status == StatusCode::OK {
            return SseStream::new(status, headers, Body::Http(Box::pin(r.bytes_stream())));
        }
        let mut s = SseStream::new(status, headers, Body::None);
        let text = tokio::time::timeout(Duration::from_secs(10), r.text())
            .await
            .expect("error body within 10 s")
            .unwrap_or_default();
        s.error_json = serde_json::from_str(&text).unwrap_or(Value::Null);
        s.error_text = text;
        s
    }

    /// A `200` stream from a response the caller's own client got (a TLS
    /// client, say).
    pub fn from_response(r: reqwest::Response) -> SseStream {
        assert_eq!(r.status(), StatusCode::OK, "expected a 200 stream");
        let headers = r.headers().clone();
        SseStream::new(
            StatusCode::OK,
            headers,
            Body::Http(Box::pin(r.bytes_stream())),
        )
    }

    /// Connects to 127.0.0.1:`port` on a plain TCP socket (with `SO_RCVBUF`
    /// = `rcvbuf` when given, set before connecting so the kernel does not
    /// grow it), sends `GET path` with `Accept: text/event-stream` and the
    /// extra headers, and reads the response head. The test controls the
    /// socket (buffer size, when it reads, [`SseStream::reset`]), which
    /// reqwest does not allow; the chunked body is decoded by hand.
    pub async fn raw(
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
        rcvbuf: Option<u32>,
    ) -> std::io::Result<SseStream> {
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
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or_else(|| panic!("no status code in the response head {head:?}"));
        let mut headers = HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.trim().as_bytes()),
                    HeaderValue::from_str(v.trim()),
                ) {
                    headers.append(k, v);
                }
            }
        }
        assert!(
            status != StatusCode::OK
                || header_str(&headers, "transfer-encoding").as_deref() == Some("chunked"),
            "expected a chunked SSE response: {head}"
        );
        let body = if status == StatusCode::OK {
            Body::Raw(RawBody {
                sock,
                raw,
                body: BytesMut::new(),
                chunk_left: None,
                ended: false,
            })
        } else {
            Body::None
        };
        let mut s = SseStream::new(status, headers, body);
        s.head = head;
        Ok(s)
    }

    /// Drops a raw connection with an RST (`SO_LINGER` 0) instead of a FIN.
    pub fn reset(self) {
        match self.body {
            Body::Raw(r) => {
                r.sock.set_zero_linger().expect("SO_LINGER 0");
                drop(r.sock);
            }
            _ => panic!("reset() needs an open stream made with SseStream::raw"),
        }
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
            if let Some(frame) = self.decoder.next_frame() {
                return Some(self.record(frame));
            }
            if let Some(end) = &self.end {
                return Some(end.clone());
            }
            let next = match &mut self.body {
                Body::None => {
                    self.end = Some(SseItem::Error(format!("not a stream: {}", self.status)));
                    continue;
                }
                Body::Http(body) => {
                    let next = async {
                        let chunk = body.next().await?;
                        Some(chunk.map_err(|e| format!("{e} ({e:?})")))
                    };
                    tokio::time::timeout_at(deadline, next).await
                }
                Body::Raw(body) => tokio::time::timeout_at(deadline, body.next_chunk()).await,
            };
            match next {
                Err(_) => return None,
                Ok(None) => {
                    self.end = Some(SseItem::Eof);
                    self.body = Body::None;
                }
                Ok(Some(Err(e))) => {
                    self.end = Some(SseItem::Error(e));
                    self.body = Body::None;
                }
                Ok(Some(Ok(chunk))) => self.decoder.feed(&chunk),
            }
        }
    }

    fn record(&mut self, frame: Frame) -> SseItem {
        match frame {
            Frame::Message(m) => {
                if let Some(r) = m.retry {
                    self.retries.push(r);
                }
                SseItem::Message(m)
            }
            Frame::Comment(c) => {
                self.comments.push(c.clone());
                SseItem::Comment(c)
            }
            Frame::Retry(r) => {
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

/// A chunked HTTP/1.1 body read from a socket, de-chunked by hand.
struct RawBody {
    sock: tokio::net::TcpStream,
    /// Received bytes not yet de-chunked.
    raw: BytesMut,
    /// De-chunked bytes not yet handed out.
    body: BytesMut,
    /// Bytes left in the current chunk (`None`: a size line is due).
    chunk_left: Option<usize>,
    ended: bool,
}

impl RawBody {
    /// The next body bytes; `None` at the last chunk or when the connection
    /// closes. Cancel-safe: nothing read is lost if the future is dropped.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            self.dechunk();
            if !self.body.is_empty() {
                return Some(Ok(self.body.split().freeze()));
            }
            if self.ended {
                return None;
            }
            match self.sock.read_buf(&mut self.raw).await {
                Ok(0) => self.ended = true,
                Ok(_) => {}
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e.to_string()));
                }
            }
        }
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
}
