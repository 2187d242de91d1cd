//! Process-wide Prometheus metrics (prefix `sluice_`). No per-topic or
//! per-connection labels: every label has a fixed, small set of values.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the broker exports.
#[allow(missing_docs)]
pub struct Metrics {
    pub registry: Registry,
    pub published: IntCounter,
    pub delivered: IntCounter,
    pub publish_seconds: Histogram,
    pub delivery_seconds: Histogram,
    pub active_streams: IntGauge,
    pub streams_by_state: IntGaugeVec,
    pub disconnects: IntCounterVec,
    pub resumes: IntCounterVec,
    pub cursor_parse_failures: IntCounter,
    pub subscriber_pauses: IntCounter,
    pub lagging_subscribers: IntGauge,
    pub evicted: IntCounter,
    pub dedup_hits: IntCounter,
    pub actor_restarts: IntCounter,
    pub store_errors: IntCounter,
    pub store_damage_bytes: IntCounter,
    pub store_recoveries: IntCounter,
    pub store_damage_events: IntCounter,
    pub publish_rejected: IntCounterVec,
    pub watched_topics: IntGauge,
    pub topics_deleted: IntCounter,
    pub active_topics: IntGauge,
    pub build_info: IntGaugeVec,
    pub store_up: IntGauge,
    pub redis_nodes: IntGaugeVec,
}

/// Every value of `sluice_stream_disconnects_total{reason}` (the names of
/// [`crate::EndReason`]).
pub const DISCONNECT_REASONS: [&str; 7] = [
    "client_gone",
    "stalled",
    "shutdown",
    "gap",
    "store_error",
    "deleted",
    "auth_expired",
];
/// Every value of `sluice_streams{state}` (the names of
/// [`crate::subscription::Health`]).
pub const STREAM_STATES: [&str; 3] = ["HEALTHY", "UNRESPONSIVE", "STALLED"];
/// Every value of `sluice_resumes_total{result}`.
pub const RESUME_RESULTS: [&str; 3] = ["ok", "gap", "invalid"];
/// Every value of `sluice_publish_rejected_total{reason}`.
pub const REJECT_REASONS: [&str; 3] = ["overloaded", "rate_limited", "stream_rate_limited"];

/// Latency buckets from 100 µs to 10 s. 0.8 is the live-delivery SLA (p99
/// at most 800 ms): with a bucket there, the alert reads the share of
/// deliveries over it exactly (deploy/prometheus/sluice-alerts.yml) instead
/// of interpolating between 0.5 and 1.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1.0,
    2.5, 5.0, 10.0,
];

fn build() -> Metrics {
    let registry = Registry::new();
    macro_rules! reg {
        ($m:expr) => {{
            let m = $m.expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
            m
        }};
    }
    let counter = |name: &str, help: &str| IntCounter::new(format!("sluice_{name}"), help);
    let hist = |name: &str, help: &str| {
        Histogram::with_opts(
            HistogramOpts::new(format!("sluice_{name}"), help).buckets(LATENCY_BUCKETS.to_vec()),
        )
    };
    let m = Metrics {
        published: reg!(counter(
            "events_published_total",
            "Events stored by publishes."
        )),
        delivered: reg!(counter(
            "events_delivered_total",
            "Events written to SSE streams."
        )),
        publish_seconds: reg!(hist(
            "publish_duration_seconds",
            "Publish request time, from the request to the durable acknowledgement."
        )),
        delivery_seconds: reg!(hist(
            "delivery_latency_seconds",
            "Time from an event's storage to its write on a stream that was up to date when it was stored (catch-ups after a pause or on a resume are not counted)."
        )),
        active_streams: reg!(IntGauge::new("sluice_active_streams", "Open SSE streams.")),
        streams_by_state: reg!(IntGaugeVec::new(
            Opts::new(
                "sluice_streams",
                "Open SSE streams by health state (5 s snapshot)."
            ),
            &["state"]
        )),
        disconnects: reg!(IntCounterVec::new(
            Opts::new(
                "sluice_stream_disconnects_total",
                "Closed SSE streams by reason."
            ),
            &["reason"]
        )),
        resumes: reg!(IntCounterVec::new(
            Opts::new(
                "sluice_resumes_total",
                "Requests that resumed from a cursor, by result."
            ),
            &["result"]
        )),
        cursor_parse_failures: reg!(counter(
            "cursor_parse_failures_total",
            "Cursors that could not be parsed."
        )),
        subscriber_pauses: reg!(counter(
            "subscriber_pauses_total",
            "Times a subscriber lagged past its high watermark and was paused."
        )),
        lagging_subscribers: reg!(IntGauge::new(
            "sluice_subscribers_lagging",
            "Subscribers paused or catching up from the store (5 s snapshot)."
        )),
        evicted: reg!(counter(
            "subscribers_evicted_total",
            "Subscribers disconnected for making no write progress."
        )),
        dedup_hits: reg!(counter(
            "dedup_hits_total",
            "Publishes answered as duplicates (Idempotency-Key or Producer-Seq)."
        )),
        actor_restarts: reg!(counter("actor_restarts_total", "Topic actor restarts.")),
        store_errors: reg!(counter("store_errors_total", "Failed store operations.")),
        store_damage_bytes: reg!(counter(
            "store_damage_bytes_total",
            "Bytes of torn or damaged log data that recovery removed."
        )),
        store_recoveries: reg!(counter(
            "store_recoveries_total",
            "Topic logs that recovery cut and moved to a new epoch (their positions after the cut lost)."
        )),
        store_damage_events: reg!(counter(
            "store_damage_events_total",
            "Events found lost to damage in a stored log (their positions stay taken and readers are told)."
        )),
        publish_rejected: reg!(IntCounterVec::new(
            Opts::new(
                "sluice_publish_rejected_total",
                "Publishes refused before storing, by reason."
            ),
            &["reason"]
        )),
        watched_topics: reg!(IntGauge::new(
            "sluice_store_watched_topics",
            "Topics whose appends by other instances this instance follows (shared store only)."
        )),
        topics_deleted: reg!(counter(
            "topics_deleted_total",
            "Topics deleted through this instance (DELETE /v1/topics/{topic})."
        )),
        active_topics: reg!(IntGauge::new(
            "sluice_topics_active",
            "Topics with an actor on this instance (an idle topic releases its own)."
        )),
        store_up: reg!(IntGauge::new(
            "sluice_store_up",
            "1 while the store takes writes, else 0 (checked every 5 s and on each /readyz)."
        )),
        redis_nodes: reg!(IntGaugeVec::new(
            Opts::new(
                "sluice_redis_nodes",
                "Redis Cluster nodes by role (master, replica) and state (up, down), as of the latest readiness check (cluster mode only)."
            ),
            &["role", "state"]
        )),
        build_info: reg!(IntGaugeVec::new(
            Opts::new(
                "sluice_build_info",
                "Always 1: the running build's version, git revision and store."
            ),
            &["version", "revision", "store"]
        )),
        registry,
    };
    // process_resident_memory_bytes, process_open_fds, process_max_fds,
    // process_cpu_seconds_total, process_start_time_seconds, ... (Linux).
    #[cfg(target_os = "linux")]
    m.registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique process metrics");
    // Every labelled series exists from the start, at zero: `rate()` and
    // `absent()` alerts need a series before its first event.
    for (vec, values) in [
        (&m.disconnects, &DISCONNECT_REASONS[..]),
        (&m.resumes, &RESUME_RESULTS[..]),
        (&m.publish_rejected, &REJECT_REASONS[..]),
    ] {
        for v in values {
            vec.with_label_values(&[v]);
        }
    }
    for role in ["master", "replica"] {
        for state in ["up", "down"] {
            m.redis_nodes.with_label_values(&[role, state]);
        }
    }
    for v in STREAM_STATES {
        m.streams_by_state.with_label_values(&[v]);
    }
    m
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(build)
}
