//! The client handle: configuration, and every request but the stream.

use std::{sync::Arc, time::Duration};

use reqwest::{header, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::{
    auth::{Auth, TokenProvider},
    backoff::{parse_retry_after, Backoff, ServerHints},
    error::{Error, Problem, Result},
    types::{BatchResult, Gap, HistoryPage, NewEvent, Published, Start, TopicInfo, TopicSummary},
};

/// A handle on one broker (or a load balancer in front of several).
/// Cheap to clone; clones share connections and the token.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    pub(crate) base: String,
    pub(crate) auth: Auth,
    pub(crate) backoff: Backoff,
    attempts: u32,
    request_timeout: Duration,
}

/// Builds a [`Client`]: `Client::builder(url)…build()`.
pub struct ClientBuilder {
    base: String,
    auth: Auth,
    backoff: Backoff,
    attempts: u32,
    connect_timeout: Duration,
    request_timeout: Duration,
    http: Option<reqwest::Client>,
    #[cfg(feature = "rustls")]
    roots: Vec<reqwest::Certificate>,
}

impl ClientBuilder {
    /// Also trusts the certificates of this PEM text (a private CA, or a
    /// broker's self-signed certificate) for `https://` URLs, besides the
    /// system's roots.
    #[cfg(feature = "rustls")]
    pub fn ca_certificate_pem(mut self, pem: &[u8]) -> Result<ClientBuilder> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Invalid(format!("CA certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Invalid(
                "CA certificates: no certificate in the PEM text".into(),
            ));
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// A bearer token sent with every request.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.auth = Auth::Fixed(token.into());
        self
    }

    /// Tokens from `provider`, asked again when the broker refuses one
    /// (`401`) or a stream's token expires (`event: auth-expired`).
    pub fn token_provider(mut self, provider: impl TokenProvider + 'static) -> ClientBuilder {
        self.auth = Auth::Provider {
            provider: Arc::new(provider),
            current: Default::default(),
        };
        self
    }

    /// The reconnect and retry schedule (default: base 1 s, cap 30 s,
    /// ±15 % jitter).
    pub fn backoff(mut self, backoff: Backoff) -> ClientBuilder {
        self.backoff = backoff;
        self
    }

    /// How many times a request is sent at most when the broker is
    /// unreachable or answers `429`/`503` (default 8: about a minute with
    /// the default backoff). Subscriptions retry without limit.
    pub fn max_attempts(mut self, attempts: u32) -> ClientBuilder {
        self.attempts = attempts.max(1);
        self
    }

    /// How long a connection may take to open (default 5 s).
    pub fn connect_timeout(mut self, t: Duration) -> ClientBuilder {
        self.connect_timeout = t;
        self
    }

    /// How long a request other than a stream may take (default 30 s).
    pub fn request_timeout(mut self, t: Duration) -> ClientBuilder {
        self.request_timeout = t;
        self
    }

    /// Uses this `reqwest` client (proxies, TLS roots, …) instead of one
    /// built here; [`connect_timeout`](ClientBuilder::connect_timeout) is
    /// then its own.
    pub fn http_client(mut self, http: reqwest::Client) -> ClientBuilder {
        self.http = Some(http);
        self
    }

    /// The client. Fails on a URL that is not `http://` or `https://`.
    pub fn build(self) -> Result<Client> {
        let base = self.base.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| Error::Invalid(format!("{base}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::Invalid(format!("{base}: not an http(s) URL")));
        }
        let http = match self.http {
            Some(h) => h,
            None => {
                let b = reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true);
                #[cfg(feature = "rustls")]
                let b = self
                    .roots
                    .into_iter()
                    .fold(b, |b, c| b.add_root_certificate(c));
                b.build()?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth: self.auth,
                backoff: self.backoff,
                attempts: self.attempts,
                request_timeout: self.request_timeout,
            }),
        })
    }
}

/// Checks a topic name as the broker does, so that it is safe in a path.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    let ok = !topic.is_empty()
        && topic.len() <= 128
        && topic.as_bytes()[0].is_ascii_alphanumeric()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "topic {topic:?}: 1 to 128 of [A-Za-z0-9._-], starting with a letter or digit"
        )))
    }
}

/// Whether a failure will not pass by retrying soon: the connection
/// opened but its TLS handshake failed (an untrusted or mismatched
/// certificate, or TLS spoken to a plain HTTP port), which surfaces as an
/// I/O error of kind `InvalidData`.
fn refused_for_good(e: &reqwest::Error) -> bool {
    // An I/O error's `source` skips the error it wraps, so wrapped I/O
    // errors (hyper's `Other` around rustls' `InvalidData`) are opened here.
    fn invalid_data(io: &std::io::Error) -> bool {
        io.kind() == std::io::ErrorKind::InvalidData
            || io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>())
                .is_some_and(invalid_data)
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(invalid_data)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads a refusal into a [`Problem`].
pub(crate) async fn problem(resp: Response) -> Box<Problem> {
    let status = resp.status().as_u16();
    let retry_after = retry_after(&resp);
    let text = resp.text().await.unwrap_or_default();
    Box::new(Problem::new(status, retry_after, &text))
}

/// The `Retry-After` of an answer.
pub(crate) fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// The gap a `416` names: resume after its `next_cursor`.
pub(crate) fn gap_of(p: &Problem) -> Option<Gap> {
    let s = |k: &str| p.body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    Some(Gap {
        requested: s("requested"),
        resumed_after: s("next_cursor")?,
        lost: p.body.get("lost").and_then(|v| v.as_u64()),
        detail: p.detail.clone(),
    })
}

impl Client {
    /// A client of the broker at `url` (e.g. `http://127.0.0.1:8080`) with
    /// the defaults.
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// Starts configuring a client of the broker at `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: url.into(),
            auth: Auth::None,
            backoff: Backoff::default(),
            attempts: 8,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            http: None,
            #[cfg(feature = "rustls")]
            roots: Vec::new(),
        }
    }

    /// The broker's base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    pub(crate) fn topic_url(&self, topic: &str, rest: &str) -> Result<String> {
        check_topic(topic)?;
        Ok(format!("{}/v1/topics/{topic}{rest}", self.inner.base))
    }

    /// Sends the request `make` builds until it succeeds (`2xx`), at most
    /// `attempts` times, retrying
    /// what is safe to retry: a connection that never opened, `429` and
    /// `503` (the broker stored nothing), and, when `replay_safe`, any
    /// transport failure (the request names an idempotency key or a
    /// producer sequence, or only reads). A `401` renews a provider's
    /// token once.
    pub(crate) async fn call_n(
        &self,
        make: &(dyn Fn() -> RequestBuilder + Send + Sync),
        replay_safe: bool,
        attempts: u32,
    ) -> Result<Response> {
        let inner = &self.inner;
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            let token = inner.auth.token().await?;
            let mut req = make().timeout(inner.request_timeout);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let (err, wait) = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && inner.auth.renewable() && !renewed {
                        inner.auth.renew(token.as_deref()).await;
                        renewed = true;
                        continue;
                    }
                    let p = problem(resp).await;
                    let retry = match status.as_u16() {
                        429 | 503 => true,
                        // From a proxy: the broker may have acted.
                        502 | 504 => replay_safe,
                        _ => false,
                    };
                    if !retry {
                        return Err(Error::Api(p));
                    }
                    let wait = p.retry_after;
                    (Error::Api(p), wait)
                }
                Err(e) if refused_for_good(&e) => return Err(Error::Transport(e)),
                Err(e) if e.is_connect() || replay_safe => (Error::Transport(e), None),
                Err(e) => return Err(Error::Transport(e)),
            };
            attempt += 1;
            if attempt >= attempts {
                return Err(err);
            }
            let hints = ServerHints {
                retry: None,
                retry_after: wait,
            };
            tokio::time::sleep(inner.backoff.delay(attempt, hints)).await;
        }
    }

    /// [`call_n`](Client::call_n) with the client's attempts, then the
    /// answer's JSON body.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        make: &(dyn Fn() -> RequestBuilder + Send + Sync),
        replay_safe: bool,
    ) -> Result<T> {
        self.call_json_n(make, replay_safe, self.inner.attempts)
            .await
    }

    /// [`call_json`](Client::call_json) with at most `attempts` sends.
    pub(crate) async fn call_json_n<T: DeserializeOwned>(
        &self,
        make: &(dyn Fn() -> RequestBuilder + Send + Sync),
        replay_safe: bool,
        attempts: u32,
    ) -> Result<T> {
        let resp = self.call_n(make, replay_safe, attempts).await?;
        let text = resp.text().await?;
        serde_json::from_str(&text).map_err(|e| Error::Protocol(format!("{e}: {text}")))
    }

    /// Publishes one event. Retried while the broker is unreachable or
    /// overloaded; a transport failure after the request was sent is
    /// retried only when the event has an idempotency key (otherwise the
    /// error is returned: the event may or may not be stored).
    ///
    /// ```no_run
    /// # async fn f() -> sluice_client::Result<()> {
    /// use sluice_client::{Client, NewEvent};
    /// let client = Client::new("http://127.0.0.1:8080")?;
    /// let a = client.publish("orders", r#"{"id": 42}"#).await?;
    /// let b = client
    ///     .publish("orders", NewEvent::new("{}").with_type("order.created").with_key("order-43"))
    ///     .await?;
    /// println!("{:?} {:?}", a.cursor, b.cursor);
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, topic: &str, event: impl Into<NewEvent>) -> Result<Published> {
        self.publish_event(topic, &event.into(), None).await
    }

    /// Publishes with producer headers when `producer` is given.
    pub(crate) async fn publish_event(
        &self,
        topic: &str,
        ev: &NewEvent,
        producer: Option<(&str, u64)>,
    ) -> Result<Published> {
        let url = self.topic_url(topic, "/events")?;
        let http = &self.inner.http;
        let make = || {
            let mut r = http.post(&url).body(ev.data.clone());
            if let Some(t) = &ev.event_type {
                r = r.header("Event-Type", t);
            }
            if let Some(k) = &ev.idempotency_key {
                r = r.header("Idempotency-Key", k);
            }
            if let Some((id, seq)) = producer {
                r = r.header("Producer-Id", id).header("Producer-Seq", seq);
            }
            r
        };
        let safe = ev.idempotency_key.is_some() || producer.is_some();
        self.call_json(&make, safe).await
    }

    /// Publishes events in one request (NDJSON), stored in order with
    /// consecutive positions; one result per event, in order. At most the
    /// broker's `limits.max_batch_events` (1000) events. Retried like
    /// [`publish`](Client::publish); a transport failure after sending is
    /// retried when every event has an idempotency key.
    pub async fn publish_batch(
        &self,
        topic: &str,
        events: &[NewEvent],
    ) -> Result<Vec<BatchResult>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            results: Vec<BatchResult>,
        }
        let url = self.topic_url(topic, "/batch")?;
        let mut body = String::new();
        for ev in events {
            body.push_str(&serde_json::to_string(ev).expect("events serialize"));
            body.push('\n');
        }
        let http = &self.inner.http;
        let make = || {
            http.post(&url)
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone())
        };
        let safe = events.iter().all(|e| e.idempotency_key.is_some());
        let a: Answer = self.call_json(&make, safe).await?;
        if a.results.len() != events.len() {
            return Err(Error::Protocol(format!(
                "{} results for {} events",
                a.results.len(),
                events.len()
            )));
        }
        Ok(a.results)
    }

    /// Every topic the broker knows, by name.
    pub async fn topics(&self) -> Result<Vec<TopicSummary>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            topics: Vec<TopicSummary>,
        }
        let url = format!("{}/v1/topics", self.inner.base);
        let make = || self.inner.http.get(&url);
        Ok(self.call_json::<Answer>(&make, true).await?.topics)
    }

    /// One topic's information; `None` when the broker does not know it.
    pub async fn topic(&self, topic: &str) -> Result<Option<TopicInfo>> {
        let url = self.topic_url(topic, "")?;
        let make = || self.inner.http.get(&url);
        match self.call_json(&make, true).await {
            Err(Error::Api(p)) if p.status == 404 => Ok(None),
            r => r.map(Some),
        }
    }

    /// One page of history: at most `limit` (1 to 1000) events from
    /// `start`. A cursor that cannot be resumed is [`Error::Gap`]; a topic
    /// the broker does not know gives an empty page (unless read from a
    /// cursor, which is a resume and creates it).
    pub async fn history(&self, topic: &str, start: &Start, limit: u32) -> Result<HistoryPage> {
        self.history_n(topic, start, limit, self.inner.attempts)
            .await
    }

    /// [`history`](Client::history) with at most `attempts` sends.
    pub(crate) async fn history_n(
        &self,
        topic: &str,
        start: &Start,
        limit: u32,
        attempts: u32,
    ) -> Result<HistoryPage> {
        let url = self.topic_url(topic, "/events")?;
        let limit = limit.to_string();
        let make = || {
            let mut q: Vec<(&str, &str)> = vec![("limit", &limit)];
            match start {
                Start::Earliest => q.push(("from", "earliest")),
                Start::Latest => q.push(("from", "latest")),
                Start::After(c) => q.push(("cursor", c)),
            }
            self.inner
                .http
                .get(&url)
                .header(header::ACCEPT, "application/json")
                .query(&q)
        };
        match self.call_json_n(&make, true, attempts).await {
            Err(Error::Api(p)) if p.status == 404 => Ok(HistoryPage {
                events: Vec::new(),
                next_cursor: None,
            }),
            Err(Error::Api(p)) if p.status == 416 => match gap_of(&p) {
                Some(gap) => Err(Error::Gap(Box::new(gap))),
                None => Err(Error::Api(p)),
            },
            r => r,
        }
    }

    /// Reads history page by page from `start`; see [`HistoryPages`].
    pub fn history_pages(&self, topic: &str, start: Start, limit: u32) -> HistoryPages {
        HistoryPages {
            client: self.clone(),
            topic: topic.to_owned(),
            at: start,
            limit,
        }
    }
}

/// What [`HistoryPages::next_page`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// Events, oldest first (fewer than the limit: the end, for now).
    Events(Vec<crate::Event>),
    /// The position could not be resumed; reading goes on after the gap.
    Gap(Gap),
}

/// History read page by page, each from where the last one ended.
pub struct HistoryPages {
    client: Client,
    topic: String,
    at: Start,
    limit: u32,
}

impl HistoryPages {
    /// The next page; `None` when no event follows (yet: calling again
    /// later reads what was published since). A cursor that cannot be
    /// resumed gives a [`Page::Gap`], and the next call reads on after it.
    pub async fn next_page(&mut self) -> Result<Option<Page>> {
        let page = match self.client.history(&self.topic, &self.at, self.limit).await {
            Ok(p) => p,
            Err(Error::Gap(gap)) => {
                self.at = Start::After(gap.resumed_after.clone());
                return Ok(Some(Page::Gap(*gap)));
            }
            Err(e) => return Err(e),
        };
        if let Some(c) = page.next_cursor {
            self.at = Start::After(c);
        }
        Ok((!page.events.is_empty()).then_some(Page::Events(page.events)))
    }

    /// Where the next page starts.
    pub fn position(&self) -> &Start {
        &self.at
    }

    /// Changes how many events the next pages hold at most (1 to 1000).
    pub fn set_page_size(&mut self, limit: u32) {
        self.limit = limit;
    }
}
