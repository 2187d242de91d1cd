//! Optional OpenTelemetry trace export (cargo feature `otel`).
//!
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set, [`from_env`] builds a batching OTLP/HTTP (protobuf) span exporter
//! and a `tracing` layer that turns spans (the request spans of
//! `tracing-actix-web`, the `session` spans, ...) into OpenTelemetry spans.
//! Without either variable, or with `OTEL_SDK_DISABLED=true`, it returns no
//! layer and nothing is exported. The [`Otel`] handle must outlive the server:
//! [`Otel::shutdown`] (or dropping it) flushes the spans still buffered.
//!
//! Everything else follows the standard `OTEL_*` variables as the
//! `opentelemetry-otlp` and `opentelemetry_sdk` crates read them: headers,
//! timeout, sampler, batch sizes, resource attributes. `service.name` is
//! `sluice` unless `OTEL_SERVICE_NAME` (or `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.

use std::{env, fmt};

use opentelemetry::{trace::TracerProvider as _, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    resource::{
        EnvResourceDetector, ResourceDetector as _, SdkProvidedResourceDetector,
        TelemetryResourceDetector,
    },
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// The service name reported when the environment names none.
pub const DEFAULT_SERVICE_NAME: &str = "sluice";

/// The only OTLP protocol this build speaks.
const PROTOCOL: &str = "http/protobuf";

/// The `tracing` layer that records spans into OpenTelemetry.
pub type OtelLayer<S> = OpenTelemetryLayer<S, SdkTracer>;

/// Handle on the exporter: say what was set up, then shut it down at exit.
///
/// Dropping it shuts the exporter down too, so an early return from `main`
/// still flushes; [`Otel::shutdown`] makes the point explicit.
pub struct Otel {
    provider: Option<SdkTracerProvider>,
    status: Status,
}

enum Status {
    /// No endpoint configured, or `OTEL_SDK_DISABLED=true`.
    Off,
    Exporting {
        endpoint: String,
        service_name: String,
        /// An `OTEL_EXPORTER_OTLP_*PROTOCOL` value other than http/protobuf.
        ignored_protocol: Option<String>,
    },
    Failed(String),
}

/// Reads the `OTEL_*` environment and, if an OTLP endpoint is set, builds the
/// exporter and the layer to add to the subscriber.
///
/// Call it before the async runtime starts (the blocking HTTP client must not
/// be built inside one). Nothing is logged here, as the subscriber does not
/// exist yet: call [`Otel::log_status`] once it does.
pub fn from_env<S>() -> (Option<OtelLayer<S>>, Otel)
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let Some(endpoint) = traces_endpoint() else {
        return (
            None,
            Otel {
                provider: None,
                status: Status::Off,
            },
        );
    };
    let exporter = match SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            return (
                None,
                Otel {
                    provider: None,
                    status: Status::Failed(format!("cannot build the OTLP exporter: {e}")),
                },
            )
        }
    };
    let resource = resource();
    let service_name = resource
        .get(&opentelemetry::Key::new("service.name"))
        .map(|v| v.to_string())
        .unwrap_or_default();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("sluice"));
    (
        Some(layer),
        Otel {
            provider: Some(provider),
            status: Status::Exporting {
                endpoint,
                service_name,
                ignored_protocol: ignored_protocol(),
            },
        },
    )
}

impl Otel {
    /// Whether spans are being exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Logs (through `tracing`) what [`from_env`] set up, or why it could not.
    pub fn log_status(&self) {
        match &self.status {
            Status::Off => {}
            Status::Exporting {
                endpoint,
                service_name,
                ignored_protocol,
            } => {
                if let Some(p) = ignored_protocol {
                    tracing::warn!(
                        protocol = %p,
                        "OpenTelemetry: only {PROTOCOL} is supported, exporting with it"
                    );
                }
                tracing::info!(
                    %endpoint,
                    service.name = %service_name,
                    "OpenTelemetry: exporting traces over OTLP {PROTOCOL}"
                );
            }
            Status::Failed(reason) => {
                tracing::warn!("OpenTelemetry: not exporting traces: {reason}");
            }
        }
    }

    /// Flushes the spans still buffered and stops the exporter (waits at most
    /// about five seconds). Call it after the server has stopped.
    pub fn shutdown(mut self) {
        self.shutdown_provider();
    }

    fn shutdown_provider(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!("OpenTelemetry: shutting the exporter down: {e}");
            }
        }
    }
}

impl Drop for Otel {
    fn drop(&mut self) {
        self.shutdown_provider();
    }
}

impl fmt::Debug for Otel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otel")
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

/// The URL spans are posted to, as `opentelemetry-otlp` will resolve it, or
/// `None` when no endpoint is configured or the SDK is disabled.
fn traces_endpoint() -> Option<String> {
    if env_value("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(url) = env_value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(url);
    }
    env_value("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// The resource of every span: `service.version`, then the SDK's detectors
/// (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, SDK attributes), with
/// `service.name` falling back to [`DEFAULT_SERVICE_NAME`] instead of
/// `unknown_service:...`.
fn resource() -> Resource {
    let named_by_env = env_value("OTEL_SERVICE_NAME").is_some()
        || EnvResourceDetector::new()
            .detect()
            .get(&opentelemetry::Key::new("service.name"))
            .is_some();
    // The detectors come last so that OTEL_RESOURCE_ATTRIBUTES may override.
    let builder = Resource::builder_empty()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_detectors(&[
            Box::new(SdkProvidedResourceDetector),
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    if named_by_env {
        builder.build()
    } else {
        builder.with_service_name(DEFAULT_SERVICE_NAME).build()
    }
}

/// A configured OTLP protocol this build does not speak, if any.
fn ignored_protocol() -> Option<String> {
    env_value("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env_value("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .filter(|p| p != PROTOCOL)
}

/// A variable's value, `None` when unset or blank.
fn env_value(name: &str) -> Option<String> {
    env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}
