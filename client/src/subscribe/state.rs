//! The subscription's connection loop: open a stream from the position,
//! read frames, and on any failure wait as the backoff says and open again
//! from the last event yielded.

use std::{pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use reqwest::{header, StatusCode};

use crate::{
    backoff::ServerHints,
    client::{check_topic, gap_of, problem, retry_after, Client},
    cursor::CursorStore,
    error::{Error, Result},
    sse::{Decoder, Frame, Message, MEDIA_TYPE},
    types::{Event, Gap, Start},
};

use super::{Item, SubscribeOptions};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open stream.
struct Conn {
    body: Body,
    decoder: Decoder,
    /// The token it was opened with (to renew exactly that one).
    token: Option<String>,
}

/// What an attempt to open a stream came to.
enum Opened {
    Stream(Conn),
    Gap(Gap),
    /// Try again now (a renewed token).
    Again,
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Fatal(Error),
}

pub(super) struct State {
    client: Client,
    topic: String,
    start: Start,
    /// Resume after this (the last event or gap yielded, or the start).
    cursor: Option<String>,
    store: Option<Arc<dyn CursorStore>>,
    loaded: bool,
    on_gap_resume: bool,
    idle: Duration,
    conn: Option<Conn>,
    /// Failed attempts in a row.
    attempt: u32,
    /// The last `retry:` the broker sent.
    server_retry: Option<Duration>,
    /// Wait before the next attempt.
    wait: Option<Duration>,
    /// The token was renewed since the last stream opened.
    renewed: bool,
    done: bool,
}

impl State {
    pub(super) fn new(client: Client, topic: &str, o: SubscribeOptions) -> State {
        State {
            client,
            topic: topic.to_owned(),
            start: o.start,
            cursor: None,
            store: o.store,
            loaded: false,
            on_gap_resume: o.on_gap_resume,
            idle: o.idle_timeout,
            conn: None,
            attempt: 0,
            server_retry: None,
            wait: None,
            renewed: false,
            done: false,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.done
    }

    fn fail(&mut self, e: Error) -> Option<Result<Item>> {
        self.done = true;
        self.conn = None;
        Some(Err(e))
    }

    /// The next item; `None` once ended.
    pub(super) async fn next(&mut self) -> Option<Result<Item>> {
        if self.done {
            return None;
        }
        if !self.loaded {
            self.loaded = true;
            if let Err(e) = check_topic(&self.topic) {
                return self.fail(e);
            }
            if let Some(store) = &self.store {
                match store.load().await {
                    Ok(c) => self.cursor = c,
                    Err(e) => return self.fail(Error::CursorStore(e)),
                }
            }
            if let (None, Start::After(c)) = (&self.cursor, &self.start) {
                self.cursor = Some(c.clone());
            }
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                if let Some(d) = self.wait.take() {
                    tokio::time::sleep(d).await;
                }
                match self.open().await {
                    Opened::Stream(conn) => {
                        self.conn = Some(conn);
                        self.attempt = 0;
                        self.renewed = false;
                        let after = self.cursor.clone();
                        return Some(Ok(Item::Connected { after }));
                    }
                    Opened::Gap(gap) => {
                        self.cursor = Some(gap.resumed_after.clone());
                        return Some(Ok(Item::Gap(gap)));
                    }
                    Opened::Again => continue,
                    Opened::Retry {
                        reason,
                        retry_after,
                    } => return Some(Ok(self.schedule(reason, retry_after))),
                    Opened::Fatal(e) => return self.fail(e),
                }
            };
            if let Some(frame) = conn.decoder.next_frame() {
                match frame {
                    Frame::Retry(d) => self.server_retry = Some(d),
                    Frame::Comment(_) => {}
                    Frame::Message(m) => {
                        if let Some(d) = m.retry {
                            self.server_retry = Some(d);
                        }
                        if let Some(item) = self.message(m).await {
                            return Some(Ok(item));
                        }
                    }
                }
                continue;
            }
            let reason = match tokio::time::timeout(self.idle, conn.body.next()).await {
                Ok(Some(Ok(bytes))) => {
                    conn.decoder.feed(&bytes);
                    continue;
                }
                Ok(Some(Err(e))) => format!("stream broke: {}", error_chain(&e)),
                Ok(None) => "stream ended by the broker".to_owned(),
                Err(_) => format!("nothing received for {:?}", self.idle),
            };
            self.conn = None;
            return Some(Ok(self.schedule(reason, None)));
        }
    }

    /// Counts a failed attempt and sets the wait before the next.
    fn schedule(&mut self, reason: String, retry_after: Option<Duration>) -> Item {
        self.attempt = self.attempt.saturating_add(1);
        let hints = ServerHints {
            retry: self.server_retry,
            retry_after,
        };
        let delay = self.client.inner.backoff.delay(self.attempt, hints);
        self.wait = Some(delay);
        Item::Disconnected {
            reason,
            attempt: self.attempt,
            delay,
        }
    }

    /// What a dispatched message is to the caller, if anything.
    async fn message(&mut self, m: Message) -> Option<Item> {
        let auth = &self.client.inner.auth;
        match m.event.as_deref() {
            // The broker's notice that the token expired; the stream ends
            // after it. Only a stream opened with a token gets one.
            Some("auth-expired") if auth.enabled() => {
                if let Some(id) = m.id {
                    self.cursor = Some(id);
                }
                let conn = self.conn.take();
                auth.renew(conn.as_ref().and_then(|c| c.token.as_deref()))
                    .await;
                self.wait = None;
                return Some(Item::Disconnected {
                    reason: "token expired (event: auth-expired); renewing it".into(),
                    attempt: 0,
                    delay: Duration::ZERO,
                });
            }
            Some("gap") if self.on_gap_resume => {
                let mut gap: Gap = match serde_json::from_str(&m.data) {
                    Ok(g) => g,
                    Err(_) => Gap {
                        requested: self.cursor.clone(),
                        resumed_after: m.id.clone()?,
                        lost: None,
                        detail: Some(format!("unreadable gap notice: {}", m.data)),
                    },
                };
                if let Some(id) = m.id {
                    gap.resumed_after = id;
                }
                self.cursor = Some(gap.resumed_after.clone());
                return Some(Item::Gap(gap));
            }
            _ => {}
        }
        let cursor = m.id.unwrap_or_default();
        if !cursor.is_empty() {
            self.cursor = Some(cursor.clone());
        }
        Some(Item::Event(Event {
            cursor,
            event_type: m.event,
            data: m.data,
            time: None,
        }))
    }

    /// One attempt to open the stream from the position.
    async fn open(&mut self) -> Opened {
        let client = self.client.clone();
        if self.cursor.is_none() && self.start == Start::Latest {
            // Pin "latest" to a cursor first: a reconnect before the first
            // event must not skip what was published meanwhile.
            match client.history_n(&self.topic, &Start::Latest, 1, 1).await {
                Ok(page) => match page.next_cursor {
                    Some(c) => self.cursor = Some(c),
                    // No such topic yet: everything it will get is new.
                    None => self.start = Start::Earliest,
                },
                Err(e) => return self.refused_or_retry(e),
            }
        }
        let inner = &client.inner;
        let token = match inner.auth.token().await {
            Ok(t) => t,
            Err(e) => {
                return Opened::Retry {
                    reason: e.chain(),
                    retry_after: None,
                }
            }
        };
        let url = format!("{}/v1/topics/{}/events", inner.base, self.topic);
        let mut req = inner.http.get(url).header(header::ACCEPT, MEDIA_TYPE);
        let mut query = Vec::new();
        match (&self.cursor, &self.start) {
            (Some(c), _) => req = req.header("Last-Event-ID", c),
            (None, Start::Latest) => query.push(("from", "latest")),
            (None, _) => query.push(("from", "earliest")),
        }
        if self.on_gap_resume {
            query.push(("on_gap", "resume"));
        }
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let resp = match req.query(&query).send().await {
            Ok(r) => r,
            Err(e) => {
                return Opened::Retry {
                    reason: format!("cannot connect: {}", error_chain(&e)),
                    retry_after: None,
                }
            }
        };
        let status = resp.status();
        if status == StatusCode::OK {
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with(MEDIA_TYPE) {
                return Opened::Retry {
                    reason: format!("answer is {ct:?}, not an event stream"),
                    retry_after: None,
                };
            }
            return Opened::Stream(Conn {
                body: Box::pin(resp.bytes_stream()),
                decoder: Decoder::new(),
                token,
            });
        }
        if status == StatusCode::UNAUTHORIZED && inner.auth.renewable() {
            inner.auth.renew(token.as_deref()).await;
            if !std::mem::replace(&mut self.renewed, true) {
                return Opened::Again;
            }
        }
        let ra = retry_after(&resp);
        let p = problem(resp).await;
        if p.status == 416 {
            return match gap_of(&p) {
                Some(gap) => Opened::Gap(gap),
                None => Opened::Fatal(Error::Api(p)),
            };
        }
        self.refused_or_retry(Error::Api(p)).with_retry_after(ra)
    }

    /// A failure: retried unless it is a refusal retrying cannot cure.
    fn refused_or_retry(&self, e: Error) -> Opened {
        match &e {
            Error::Api(p) if !retryable(p.status, self.client.inner.auth.renewable()) => {
                Opened::Fatal(e)
            }
            _ => Opened::Retry {
                reason: e.chain(),
                retry_after: None,
            },
        }
    }
}

impl Opened {
    fn with_retry_after(self, ra: Option<Duration>) -> Opened {
        match self {
            Opened::Retry { reason, .. } => Opened::Retry {
                reason,
                retry_after: ra,
            },
            o => o,
        }
    }
}

/// Whether a refusal with this status may pass by itself: the broker is
/// busy or restarting (`408`, `429`, `5xx`), or a renewed token may cure
/// it (`401` with a token provider).
fn retryable(status: u16, renewable: bool) -> bool {
    matches!(status, 408 | 429) || status >= 500 || (status == 401 && renewable)
}

/// An error with its causes (reqwest's own message is often just
/// "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
