//! `ceiling`: the reference ceiling, the best the transport allows on the
//! machine. An in-memory SSE server on hyper (HTTP/1.1): per topic a
//! sequence counter and a `tokio::sync::broadcast` channel, no persistence,
//! no retention, nothing else. It speaks as much of Sluice's API as the
//! bench needs:
//!
//! - `POST /v1/topics/{t}/events`: one event (`201`, `{"topic","cursor","duplicate"}`),
//!   or an NDJSON batch when the content type is `application/x-ndjson`;
//! - `POST /v1/topics/{t}/batch`: an NDJSON batch (`200`, `{"topic","results"}`);
//! - `GET /v1/topics/{t}/events`: `text/event-stream`, `retry:` first, then
//!   `id:`/`data:` events with increasing ids, from the next publish on.
//!
//! Each publish is framed once and broadcast as one shared `Bytes` (a batch as
//! one); each stream writes whatever has queued up for it as one chunk. A
//! stream that falls behind by more than the channel's capacity (`Lagged`)
//! is ended: the bench sees that as missing events, which is honest.

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, body::Incoming, header, Method, Request, Response};
use serde::Deserialize;
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::{
    http::Error,
    server::{self, Body},
    target::sse_frame,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Broadcast messages (publish requests) buffered per topic; a
    /// subscriber further behind than this is ended. The same as Sluice's
    /// default in-memory tail (`topics.tail_events`); tokio allocates the
    /// whole ring when the topic is created.
    #[arg(long, default_value_t = 4096)]
    pub capacity: usize,
    /// The `retry:` (ms) that opens every stream.
    #[arg(long, default_value_t = 1000)]
    pub retry_ms: u64,
}

struct Topic {
    /// Last sequence handed out.
    seq: u64,
    tx: broadcast::Sender<Bytes>,
}

struct State {
    topics: Mutex<HashMap<String, Arc<Mutex<Topic>>>>,
    capacity: usize,
    retry: Bytes,
}

impl State {
    fn topic(&self, name: &str) -> Arc<Mutex<Topic>> {
        let mut topics = self.topics.lock().expect("not poisoned");
        if let Some(t) = topics.get(name) {
            return t.clone();
        }
        let t = Arc::new(Mutex::new(Topic {
            seq: 0,
            tx: broadcast::channel(self.capacity).0,
        }));
        topics.insert(name.to_owned(), t.clone());
        t
    }
}

pub async fn run(args: Args) -> Result<(), Error> {
    let state = Arc::new(State {
        topics: Mutex::default(),
        capacity: args.capacity.max(1),
        retry: Bytes::from(format!("retry: {}\n\n", args.retry_ms)),
    });
    server::serve("ceiling", &args.listen, state, handle).await
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let is_ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => server::respond(200, "application/json", r#"{"status":"ok"}"#),
        (Method::GET, p) if server::topic_of(p, "events").is_some() => {
            subscribe(&state, server::topic_of(p, "events").unwrap_or_default())
        }
        (Method::POST, p) => {
            let (topic, batch) = match (server::topic_of(p, "events"), server::topic_of(p, "batch"))
            {
                (Some(t), _) => (t.to_owned(), is_ndjson),
                (None, Some(t)) => (t.to_owned(), true),
                _ => return server::respond(404, "text/plain", "not found\n"),
            };
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return server::respond(400, "text/plain", "unreadable body\n"),
            };
            publish(&state, &topic, &body, batch)
        }
        _ => server::respond(404, "text/plain", "not found\n"),
    }
}

#[derive(Deserialize)]
struct Line {
    data: serde_json::Value,
}

fn publish(state: &State, topic: &str, body: &[u8], batch: bool) -> Response<Body> {
    let datas: Vec<String> = if batch {
        let mut out = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Line>(line) {
                Ok(Line {
                    data: serde_json::Value::String(s),
                }) => out.push(s),
                Ok(Line { data }) => out.push(data.to_string()),
                Err(e) => return server::respond(400, "text/plain", format!("bad line: {e}\n")),
            }
        }
        out
    } else {
        match std::str::from_utf8(body) {
            Ok(s) => vec![s.to_owned()],
            Err(_) => return server::respond(400, "text/plain", "not UTF-8\n"),
        }
    };
    let topic_state = state.topic(topic);
    let mut frames = BytesMut::new();
    let mut cursors = Vec::with_capacity(datas.len());
    {
        // Ids and channel order agree because both happen under the lock.
        let mut t = topic_state.lock().expect("not poisoned");
        for data in &datas {
            t.seq += 1;
            let cursor = format!("{:016x}", t.seq);
            frames.extend_from_slice(sse_frame(&cursor, data).as_bytes());
            cursors.push(cursor);
        }
        // No receiver is not an error: nobody is subscribed yet.
        let _ = t.tx.send(frames.freeze());
    }
    if batch {
        let results: Vec<_> = cursors
            .iter()
            .map(|c| serde_json::json!({"cursor": c, "duplicate": false}))
            .collect();
        server::respond(
            200,
            "application/json",
            serde_json::json!({"topic": topic, "results": results}).to_string(),
        )
    } else {
        let cursor = &cursors[0];
        let mut resp = server::respond(
            201,
            "application/json",
            format!(r#"{{"topic":"{topic}","cursor":"{cursor}","duplicate":false}}"#),
        );
        if let Ok(v) = header::HeaderValue::from_str(cursor) {
            resp.headers_mut().insert("event-cursor", v);
        }
        resp
    }
}

/// Largest chunk a stream writes at once.
const CHUNK: usize = 64 * 1024;

fn subscribe(state: &State, topic: &str) -> Response<Body> {
    // Subscribed before the head is sent: every later publish reaches it.
    let rx = state
        .topic(topic)
        .lock()
        .expect("not poisoned")
        .tx
        .subscribe();
    let first = Some(state.retry.clone());
    let body = stream::unfold((rx, first, false), |(mut rx, first, ended)| async move {
        if let Some(b) = first {
            return Some((Ok::<_, Infallible>(Frame::data(b)), (rx, None, false)));
        }
        if ended {
            return None;
        }
        // Ends on Lagged (too far behind) and Closed.
        let one = rx.recv().await.ok()?;
        let mut ended = false;
        let mut more: Option<BytesMut> = None;
        while more.as_ref().map_or(one.len(), |m| m.len()) < CHUNK {
            match rx.try_recv() {
                Ok(b) => more
                    .get_or_insert_with(|| BytesMut::from(&one[..]))
                    .extend_from_slice(&b),
                Err(TryRecvError::Empty) => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let chunk = more.map_or(one, BytesMut::freeze);
        Some((Ok(Frame::data(chunk)), (rx, None, ended)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(body).boxed())
        .expect("a valid response")
}
