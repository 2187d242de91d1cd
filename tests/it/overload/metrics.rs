//! `/metrics` after a workload that moves every metric.

use std::time::Duration;

use tokio::time::Instant;

use super::publish_until_stored;
use crate::support::*;

on_both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    every_metric_is_exported_with_plausible_values,
    #[tokio::test]
    a_fresh_broker_exports_every_series_build_and_process_metrics,
    #[tokio::test]
    delivery_latency_counts_live_deliveries_only,
}

/// `sluice_delivery_latency_seconds` is the latency of live delivery: an
/// old event read by a subscriber starting from `earliest` moves nothing
/// (it would add its whole age), an event delivered live does.
async fn delivery_latency_counts_live_deliveries_only(store: Store) {
    bounded(60, async {
        let b = BrokerProcess::start(store, &[]).await;
        let t = "latency";
        b.publish_ok(t, "old").await;
        // Not a synchronisation: the event must be old when it is read.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut s = b.sse(t, "from=earliest", &[]).await;
        assert_eq!(&*s.expect_event(Duration::from_secs(10)).await.data, "old");
        let m = b.metrics().await;
        assert_eq!(
            m.value("sluice_delivery_latency_seconds_count"),
            0.0,
            "a catch-up is not live delivery"
        );
        b.publish_ok(t, "live").await;
        assert_eq!(&*s.expect_event(Duration::from_secs(10)).await.data, "live");
        let m = b.metrics().await;
        assert_eq!(
            m.value("sluice_delivery_latency_seconds_count"),
            1.0,
            "the live delivery counts"
        );
        assert!(m.value("sluice_delivery_latency_seconds_sum") < 1.0);
    })
    .await;
}

/// `rate()` and `absent()` alerts need every series before its first event:
/// a broker that has done nothing exports each known label value at 0.
async fn a_fresh_broker_exports_every_series_build_and_process_metrics(store: Store) {
    bounded(60, async {
        let b = BrokerProcess::start(store, &[]).await;
        let m = b.metrics().await;
        let series = [
            (
                "sluice_stream_disconnects_total",
                "reason",
                &[
                    "client_gone",
                    "stalled",
                    "shutdown",
                    "gap",
                    "store_error",
                    "auth_expired",
                ][..],
            ),
            (
                "sluice_resumes_total",
                "result",
                &["ok", "gap", "invalid"][..],
            ),
            (
                "sluice_publish_rejected_total",
                "reason",
                &["overloaded", "rate_limited", "stream_rate_limited"][..],
            ),
            (
                "sluice_streams",
                "state",
                &["HEALTHY", "UNRESPONSIVE", "STALLED"][..],
            ),
        ];
        for (name, label, values) in series {
            for v in values {
                let s = format!("{name}{{{label}=\"{v}\"}}");
                assert_eq!(m.get(&s), Some(0.0), "{s} at 0 on a fresh broker");
            }
        }
        // Every metric the README names (its alerting advice) exists.
        let readme = include_str!("../../../README.md");
        let mut named: Vec<&str> = readme
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| (w.starts_with("sluice_") && w.len() > 7) || w.starts_with("process_"))
            // The client crate's name (its examples), not a metric.
            .filter(|w| *w != "sluice_client")
            .collect();
        named.sort_unstable();
        named.dedup();
        assert!(named.len() >= 10, "the README names metrics: {named:?}");
        for name in named {
            assert!(
                m.0.contains(&format!("# TYPE {name} ")),
                "{name} is named in the README but not exported"
            );
        }
        // Build information and the process's own figures.
        let store_label = match store {
            Store::Embedded => "store=\"embedded\"",
            Store::Redis => "store=\"redis\"",
        };
        let info =
            m.0.lines()
                .find(|l| l.starts_with("sluice_build_info{"))
                .unwrap_or_else(|| panic!("sluice_build_info exported:\n{}", m.0));
        assert!(info.ends_with(" 1") && info.contains(store_label), "{info}");
        assert!(
            info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{info}"
        );
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(
                m.value(name) > 0.0 || name == "process_cpu_seconds_total",
                "{name}"
            );
            assert!(m.get(name).is_some(), "{name} exported");
        }
    })
    .await;
}

/// After a short workload that moves every metric, `/metrics` names each
/// one of DESIGN.md with plausible values.
async fn every_metric_is_exported_with_plausible_values(store: Store) {
    bounded(120, async {
        let b = BrokerProcess::start(
            store,
            &[
                (
                    "SLUICE_TEST_FAULTS",
                    "append_fail_every=5,append_delay_ms=20",
                ),
                ("SLUICE__TOPICS__MAILBOX_CAPACITY", "2"),
                ("SLUICE__STREAM__STALL_TIMEOUT_SECS", "2"),
                // Small watermarks, so the stuck reader below is paused (and the
                // pause counter moves) before it is evicted.
                ("SLUICE__STREAM__HIGH_WATERMARK_EVENTS", "16"),
                ("SLUICE__STREAM__LOW_WATERMARK_EVENTS", "4"),
                ("SLUICE__RATE_LIMIT__STREAMS_PER_SEC", "1"),
                ("SLUICE__RATE_LIMIT__STREAMS_BURST", "8"),
                ("SLUICE__RATE_LIMIT__PUBLISH_PER_SEC", "1"),
                ("SLUICE__RATE_LIMIT__PUBLISH_BURST", "400"),
                ("SLUICE__RATE_LIMIT__EXEMPT_LOOPBACK", "false"),
                ("SLUICE__EMBEDDED__FSYNC", "never"),
                ("SLUICE__LOG__LEVEL", "warn"),
            ],
        )
        .await;
        let t = topic("metrics");
        let started = Instant::now();
        // Streams: one reader, one that goes away, one that never reads.
        let mut reader = b.sse(&t, "from=earliest", &[]).await;
        reader.assert_ok();
        let gone = b.sse(&t, "", &[]).await;
        gone.assert_ok();
        let stuck = SseStream::raw(
            b.port,
            &format!("/v1/topics/{t}/events?from=latest"),
            &[],
            Some(4096),
        )
        .await
        .unwrap();
        assert_eq!(stuck.status, 200);

        // Publishes, retried on 503 (faults), one repeated (dedup hit).
        let mut cursors = Vec::new();
        for s in 0..20 {
            cursors.push(publish_until_stored(&b, &t, 0, s).await.0);
        }
        // The same key again: a replay (a 503 from a fault is retried).
        let (again, _) = publish_until_stored(&b, &t, 0, 0).await;
        assert_eq!(again, cursors[0], "a replay answers the original cursor");
        reader.expect_events(20, Duration::from_secs(20)).await;
        drop(gone);

        // Resumes: ok, gap (another epoch), invalid (unparseable).
        b.sse(&t, "", &[("last-event-id", &cursors[3])])
            .await
            .assert_ok();
        b.sse(&t, "", &[("last-event-id", &with_other_epoch(&cursors[3]))])
            .await
            .assert_problem(416);
        b.sse(&t, "", &[("last-event-id", "nonsense")])
            .await
            .assert_problem(400);
        // Stream opens past the limit.
        let mut refused_open = false;
        for _ in 0..10 {
            let s = b.sse(&t, "", &[]).await;
            if s.status == 429 {
                refused_open = true;
                break;
            }
        }
        assert!(refused_open, "stream opens past the burst must be refused");
        // A full queue: concurrent publishes into a queue of 2.
        let rs = futures_util::future::join_all((0..30).map(|i| {
            let (b, t) = (&b, &t);
            async move { b.publish(t, &format!("x{i}"), &[]).await }
        }))
        .await;
        assert!(
            rs.iter().any(|r| r.status == 503),
            "a queue of 2 must overflow"
        );
        // Publishes past the rate limit.
        let mut limited = false;
        for i in 0..500 {
            let r = b.batch(&t, &format!("{{\"data\":\"b{i}\"}}\n")).await;
            if r.status == 429 {
                limited = true;
                break;
            }
        }
        assert!(limited, "publishes past the burst must be refused");

        // The never-reading stream: fill its socket so it stalls, then is evicted.
        let pad = "x".repeat(1000);
        let big: String = (0..1000)
            .map(|i| format!("{{\"data\":\"{i} {pad}\"}}\n"))
            .collect();
        // Rate limited now; the limit refills at 1/s. Wait for the eviction
        // driven by what was already queued, or publish when allowed.
        wait_until(
            Duration::from_secs(60),
            "the stuck stream to be evicted",
            || {
                let (b, big, t) = (&b, &big, &t);
                async move {
                    if b.metrics().await.value("sluice_subscribers_evicted_total") >= 1.0 {
                        return true;
                    }
                    let _ = b.batch(t, big).await;
                    false
                }
            },
        )
        .await;
        // Let the 5 s health snapshot run at least once.
        wait_until(
            Duration::from_secs(15),
            "the health snapshot gauges",
            || async {
                b.metrics()
                    .await
                    .get("sluice_streams{state=\"HEALTHY\"}")
                    .is_some()
            },
        )
        .await;

        let m = b.metrics().await;
        eprintln!(
            "metrics after {:.1} s of workload:\n{}",
            started.elapsed().as_secs_f64(),
            m.0.lines()
                .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let counters_moved = [
            "sluice_events_published_total",
            "sluice_events_delivered_total",
            "sluice_subscribers_evicted_total",
            "sluice_dedup_hits_total",
            "sluice_actor_restarts_total",
            "sluice_store_errors_total",
            "sluice_cursor_parse_failures_total",
            "sluice_subscriber_pauses_total",
        ];
        for name in counters_moved {
            assert!(
                m.has_type(name, "counter"),
                "{name} missing or not a counter"
            );
            assert!(
                m.value(name) >= 1.0,
                "{name} = {} after a workload that moves it",
                m.value(name)
            );
        }
        assert!(m.value("sluice_events_published_total") >= 20.0);
        assert!(m.value("sluice_events_delivered_total") >= 20.0);
        for name in [
            "sluice_publish_duration_seconds",
            "sluice_delivery_latency_seconds",
        ] {
            assert!(
                m.has_type(name, "histogram"),
                "{name} missing or not a histogram"
            );
            assert!(m.value(&format!("{name}_count")) >= 20.0, "{name}_count");
            assert!(
                m.value(&format!("{name}_bucket{{le=\"+Inf\"}}")) >= 20.0,
                "{name} +Inf bucket"
            );
            assert!(m.value(&format!("{name}_sum")) > 0.0, "{name}_sum");
        }
        for name in ["sluice_active_streams", "sluice_subscribers_lagging"] {
            assert!(m.has_type(name, "gauge"), "{name} missing or not a gauge");
        }
        assert!(
            m.value("sluice_active_streams") >= 1.0,
            "the reader is still open"
        );
        assert!(m.has_type("sluice_streams", "gauge"));
        for state in ["HEALTHY", "UNRESPONSIVE", "STALLED"] {
            assert!(
                m.get(&format!("sluice_streams{{state=\"{state}\"}}"))
                    .is_some(),
                "sluice_streams{{state={state}}}"
            );
        }
        assert!(m.has_type("sluice_stream_disconnects_total", "counter"));
        for reason in ["client_gone", "stalled"] {
            assert!(
                m.value(&format!(
                    "sluice_stream_disconnects_total{{reason=\"{reason}\"}}"
                )) >= 1.0,
                "disconnects reason={reason}"
            );
        }
        assert!(m.has_type("sluice_resumes_total", "counter"));
        for result in ["ok", "gap", "invalid"] {
            assert!(
                m.value(&format!("sluice_resumes_total{{result=\"{result}\"}}")) >= 1.0,
                "resumes result={result}"
            );
        }
        assert!(m.has_type("sluice_publish_rejected_total", "counter"));
        for reason in ["overloaded", "rate_limited", "stream_rate_limited"] {
            assert!(
                m.value(&format!(
                    "sluice_publish_rejected_total{{reason=\"{reason}\"}}"
                )) >= 1.0,
                "rejected reason={reason}"
            );
        }
        // No unbounded label: no topic or connection id anywhere.
        assert!(!m.0.contains(&t), "a metric carries the topic name");
    })
    .await;
}
