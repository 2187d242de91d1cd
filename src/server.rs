//! Builds the broker and the HTTP server and runs them until shutdown.

use std::{future::Future, io, net::TcpListener, sync::Arc, time::Duration};

use actix_cors::Cors;
use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::{from_fn, Condition},
    web, App, HttpServer,
};
use actix_web_lab::middleware::{map_response, CatchPanic};
use sluice_actors::{
    fault_store::{Faults, FaultyStore},
    store::SharedStore,
    subscription::Watermarks,
    topic::TopicConfig,
    Broker, BrokerConfig, SessionConfig,
};
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder, TracingLogger};

use crate::{
    config::{Settings, StoreKind},
    http::{
        self,
        gate::Gate,
        rate_limit::{RateLimits, FORGET_IDLE_EVERY},
        stream_slots::StreamSlots,
        topic_limits::{TopicLimits, RECOUNT_EVERY},
        AppState,
    },
    store::{embedded::EmbeddedStore, redis::RedisStore},
    tls::CertStore,
};

/// Headers a browser page may read from responses (lowercase, as
/// `HeaderName::from_static` requires).
const EXPOSED_HEADERS: [&str; 6] = [
    "event-cursor",
    "idempotent-replayed",
    "x-next-cursor",
    "x-latest-cursor",
    "retry-after",
    "www-authenticate",
];

fn cors(origins: &[String]) -> Cors {
    let mut c = Cors::default()
        .allow_any_method()
        .allow_any_header()
        .expose_headers(EXPOSED_HEADERS.map(header::HeaderName::from_static))
        .max_age(86_400);
    if origins.iter().any(|o| o == "*") {
        c = c.allow_any_origin();
    } else {
        for o in origins {
            c = c.allowed_origin(o);
        }
        // Cookies (a token for EventSource's withCredentials) only from
        // origins named one by one: never from any origin.
        c = c.supports_credentials();
    }
    c
}

/// Request spans, except for SSE streams: a stream's span would live as
/// long as the stream (memory for every idle stream) and be entered on every
/// write; a stream's own log lines name its connection and topic. Only
/// installed when something exports spans (see [`run`]).
struct RootSpans;

impl RootSpanBuilder for RootSpans {
    fn on_request_start(req: &ServiceRequest) -> tracing::Span {
        if is_event_stream(req) {
            tracing::Span::none()
        } else {
            DefaultRootSpanBuilder::on_request_start(req)
        }
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// A subscribe that asks for a stream (see `http::subscribe`).
fn is_event_stream(req: &ServiceRequest) -> bool {
    req.path().ends_with("/events")
        && (req.query_string().contains("stream=sse")
            || req
                .headers()
                .get_all(header::ACCEPT)
                .any(|v| v.as_bytes().windows(17).any(|w| w == b"text/event-stream")))
}

/// Environment variable that wraps the store in a fault injector, for
/// recovery tests only (see `sluice_actors::fault_store`).
const FAULTS_ENV: &str = "SLUICE_TEST_FAULTS";

/// Files a store may still open (see `http::gate`).
type Headroom = Box<dyn Fn() -> usize + Send + Sync>;

fn open_store(settings: &Settings) -> io::Result<(SharedStore, Headroom)> {
    let (store, headroom): (SharedStore, Headroom) = match settings.store.get() {
        StoreKind::Embedded => {
            let s = EmbeddedStore::open(&settings.data_dir, settings.embedded_config())?;
            let headroom = Box::new(s.file_headroom());
            (Arc::new(s), headroom)
        }
        StoreKind::Redis => (
            Arc::new(
                RedisStore::open(settings.redis_config())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
            Box::new(|| 0),
        ),
    };
    match std::env::var(FAULTS_ENV) {
        Ok(spec) if !spec.is_empty() => {
            let faults = Faults::parse(&spec).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{FAULTS_ENV}: {e}"))
            })?;
            tracing::warn!(?faults, "store fault injection enabled: for tests only");
            Ok((Arc::new(FaultyStore::new(store, faults)), headroom))
        }
        _ => Ok((store, headroom)),
    }
}

/// Runs the broker on `listener` until `shutdown` resolves, then ends every
/// stream, lets in-flight requests finish within `shutdown_grace_secs`,
/// flushes the store and returns.
///
/// `request_spans`: give every request but a stream a span, for an exporter
/// (OpenTelemetry) to send. Without one, leave it off: no log line is
/// written inside a request span (handlers log nothing, the actors log on
/// their own tasks), and creating, entering and closing one costs about
/// 6-13 % of a single-event publish's CPU (BENCHMARKS.md, S6).
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    request_spans: bool,
) -> io::Result<()> {
    actix_http::h1::set_error_body(http::problem::protocol_error_body);
    actix_http::h1::set_head_limits(settings.limits.max_head_bytes, settings.limits.max_headers);
    http::problem::set_protocol_error_origins(&settings.cors.allowed_origins);
    let tls = match settings.tls.enabled() {
        true => Some(Arc::new(
            CertStore::open(&settings.tls.cert_file, &settings.tls.key_file)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        )),
        false => None,
    };
    let settings = Arc::new(settings);
    let (store, store_headroom) = open_store(&settings)?;
    let st = &settings.stream;
    let topic_cfg = TopicConfig {
        tail_events: settings.topics.tail_events,
        tail_bytes: settings.topics.tail_bytes,
        watermarks: Watermarks {
            high_events: st.high_watermark_events,
            high_bytes: st.high_watermark_bytes,
            low_events: st.low_watermark_events,
            low_bytes: st.low_watermark_bytes,
        },
        max_coalesce_events: 10_000,
        mailbox_capacity: settings.topics.mailbox_capacity,
        max_pending_events: settings.topics.max_pending_events,
        idle_release: Some(Duration::from_secs(settings.topics.idle_release_secs)),
    };
    let session_cfg = SessionConfig {
        heartbeat: Duration::from_secs(st.heartbeat_secs),
        liveness_probe: (st.liveness_probe_secs > 0)
            .then(|| Duration::from_secs(st.liveness_probe_secs)),
        stall_timeout: Duration::from_secs(st.stall_timeout_secs),
        // Live events bypass the session's mailbox (they go to its subscription);
        // only catch-up requests and termination come this way.
        mailbox_capacity: 16,
    };
    let broker = Broker::start(
        store.clone(),
        BrokerConfig {
            topic: topic_cfg,
            session: session_cfg.clone(),
            arbiters: settings.topic_arbiters,
        },
    );
    let share_workers = settings.topic_arbiters == 0;
    let auth = http::auth::Auth::from_settings(&settings.auth)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    auth.spawn_refresh();
    let state = web::Data::new(AppState {
        broker: broker.clone(),
        settings: settings.clone(),
        session_cfg,
        limits: RateLimits::new(&settings.rate_limit),
        auth,
        streams: StreamSlots::new(
            settings.limits.max_streams,
            settings.limits.max_streams_per_client,
            settings.rate_limit.exempt_loopback,
        ),
        topics: TopicLimits::new(
            settings.limits.max_topics,
            settings.rate_limit.topics_per_minute,
            settings.rate_limit.exempt_loopback,
        ),
    });
    let gate = Gate::new(
        settings.limits.max_connections,
        settings.limits.reserve_open_files,
        settings.rate_limit.exempt_loopback,
        store_headroom,
    );
    let counting = gate.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(http::gate::SAMPLE_EVERY);
        loop {
            every.tick().await;
            counting.count_fds();
        }
    });
    // Counted before the first request, then every minute. A store that
    // does not answer yet does not stop the start (see `watch_store`).
    match store.topics().await {
        Ok(t) => state.topics.set_count(t.len()),
        Err(e) => tracing::warn!(error = %e, "cannot count the topics yet"),
    }
    let recount = state.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(RECOUNT_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            match recount.broker.store().topics().await {
                Ok(t) => recount.topics.set_count(t.len()),
                Err(e) => tracing::debug!(error = %e, "cannot count the topics"),
            }
        }
    });
    let auth_on = state.auth.is_on();
    let forget = state.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(FORGET_IDLE_EVERY);
        loop {
            every.tick().await;
            forget.limits.forget_idle();
            forget.topics.forget_idle();
        }
    });
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let origins = settings.cors.allowed_origins.clone();
    let addr = listener.local_addr()?;
    let mut server = HttpServer::new(move || {
        // Runs once on each worker thread as it starts.
        if share_workers {
            state.broker.host_topics_here();
        }
        // The last `wrap` is the outermost. A panic's 500 and a repeated
        // header's 400 are made inside CORS, so they carry its headers too.
        App::new()
            .app_data(state.clone())
            // Inside CORS, so refusals carry its headers, and inside the
            // panic catcher; not there at all without keys.
            .wrap(Condition::new(auth_on, from_fn(http::auth::authorize)))
            .wrap(CatchPanic::default())
            .wrap(from_fn(http::strict::refuse_repeated_headers))
            // Before anything else inside CORS: a refused connection costs
            // as little as can be, and its 503 carries the CORS headers.
            .wrap(from_fn(http::gate::refuse_when_full))
            .wrap(cors(&origins))
            .wrap(from_fn(http::preflight::route_methods))
            .wrap(map_response(http::problem::ensure_problem_json))
            .wrap(Condition::new(
                request_spans,
                TracingLogger::<RootSpans>::new(),
            ))
            // Outermost: a token in the query is gone before any span or
            // log line can name the request's target.
            .wrap(from_fn(http::auth::take_query_token))
            .configure(http::configure)
    })
    .on_connect(move |io, data| gate.on_connect(io, data))
    .disable_signals()
    // Long keep-alive: publishers reuse connections, and a short idle
    // timeout racing a client's next request shows up as resets under load.
    .keep_alive(Duration::from_secs(75))
    // An event is written the moment it exists: with Nagle's algorithm a
    // small write waits for the ACK of the previous one, which a client
    // may hold back for its delayed-ACK timer (40 ms on Linux).
    .tcp_nodelay(true)
    .client_request_timeout(Duration::from_secs(settings.request_head_timeout_secs))
    .shutdown_timeout(grace.as_secs());
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    let server = match &tls {
        Some(certs) => {
            let config = crate::tls::server_config(certs.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let watch =
                (settings.tls.watch_secs > 0).then(|| Duration::from_secs(settings.tls.watch_secs));
            actix_web::rt::spawn(certs.clone().watch(watch));
            server.listen_rustls_0_23(listener, config)?
        }
        None => server.listen_auto_h2c(listener)?,
    }
    .run();
    let handle = server.handle();
    let metrics_handle = match settings.metrics_listen {
        Some(addr) => Some(http::metrics_listener::start(addr)?),
        None => None,
    };
    // Tests and scripts read this line to learn the port. With JSON logs,
    // a JSON line too: stdout and stderr often end up in one stream
    // (journald, `docker logs`), and every line there must parse.
    match settings.log.format.get() {
        crate::config::LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "level": "INFO",
                "message": format!("sluice listening on {addr}"),
                "addr": addr.to_string(),
            })
        ),
        crate::config::LogFormat::Text => println!("sluice listening on {addr}"),
    }
    let store_name = match settings.store.get() {
        StoreKind::Embedded => {
            tracing::info!(%addr, tls = tls.is_some(), store = "embedded", data_dir = %settings.data_dir.display(), "sluice started");
            "embedded"
        }
        StoreKind::Redis => {
            let r = settings.redis_config();
            let target = if !r.cluster_nodes.is_empty() {
                format!("cluster via {} seed nodes", r.cluster_nodes.len())
            } else if r.sentinels.is_empty() {
                redact_url(&r.url)
            } else {
                format!(
                    "sentinel master {:?} via {}",
                    r.sentinel_master,
                    r.sentinels.len()
                )
            };
            tracing::info!(%addr, tls = tls.is_some(), store = "redis", redis = %target, key_prefix = %r.key_prefix, "sluice started");
            "redis"
        }
    };
    sluice_actors::metrics::metrics()
        .build_info
        .with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            env!("SLUICE_REVISION"),
            store_name,
        ])
        .set(1);
    // An unreachable store does not stop the broker (it answers 503 and
    // /readyz says why until the store is back), but it must be said, and
    // `sluice_store_up` must follow it; checked beside the server, which
    // must not wait for a store timeout.
    actix_web::rt::spawn(watch_store(store.clone()));

    let serving = actix_web::rt::spawn(server);
    shutdown.await;
    tracing::info!("shutting down: closing streams");
    handle.pause().await;
    match broker.close_all().await {
        Ok(n) => tracing::info!(streams = n, "streams told to close"),
        Err(e) => tracing::warn!(error = %e, "could not reach the broker to close streams"),
    }
    let stopped = tokio::time::timeout(grace + Duration::from_secs(1), async {
        handle.stop(true).await;
        let _ = serving.await;
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("grace period over; exiting with requests in flight");
    }
    if let Some(h) = metrics_handle {
        h.stop(false).await;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often the store's readiness is checked for `sluice_store_up`.
const STORE_CHECK: Duration = Duration::from_secs(5);

/// Keeps `sluice_store_up` current and logs each change: a store not ready
/// (at start too) at WARN with the reason, its return at INFO.
async fn watch_store(store: SharedStore) {
    let mut was_up = None;
    let mut every = tokio::time::interval(STORE_CHECK);
    loop {
        every.tick().await;
        let ready = store.ready().await;
        let up = ready.is_ok();
        sluice_actors::metrics::metrics()
            .store_up
            .set(i64::from(up));
        match (was_up, ready) {
            (Some(true) | None, Err(why)) => {
                tracing::warn!(reason = %why, "store not ready; publishes get 503 until it is")
            }
            (Some(false), Ok(())) => tracing::info!("store ready again"),
            _ => {}
        }
        was_up = Some(up);
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `url` without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_logged_without_their_password() {
        assert_eq!(
            super::redact_url("rediss://app:s3cret@redis.example:6380/0"),
            "rediss://app:***@redis.example:6380/0"
        );
        assert_eq!(super::redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(super::redact_url("redis://h:6379"), "redis://h:6379");
    }
}
