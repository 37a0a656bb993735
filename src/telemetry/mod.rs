//! Logs and traces.
//!
//! Logs go to standard error: JSON lines when it is not a terminal, readable text when it
//! is; `RUST_LOG`-style filtering (default `info`).
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, the spans of ingest, claim and attempt are exported over OTLP (HTTP, protobuf) to
//! that collector, the standard `OTEL_*` variables applying (`OTEL_SERVICE_NAME`, default
//! `hookrelay`; `OTEL_EXPORTER_OTLP_HEADERS`; `OTEL_BSP_SCHEDULE_DELAY`, …). An attempt span
//! is a child of the producer's span named by the event's `traceparent`, and the delivery
//! carries the attempt span as its `traceparent`, so the receiver's spans join the same
//! trace. Without the variable nothing is exported and deliveries carry the producer's
//! `traceparent` unchanged.

pub mod trace;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Keeps the trace exporter; [`Telemetry::shutdown`] flushes what is buffered.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: flushing traces failed: {e}");
            }
        }
    }
}

/// Whether the standard OTLP endpoint variables ask for trace export.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// The OTLP trace pipeline, when configured.
fn otlp_provider() -> Option<SdkTracerProvider> {
    if !otlp_configured() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OTLP trace export disabled: {e}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("hookrelay");
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// Installs the global subscriber (and the OTLP exporter when configured). Safe to call
/// more than once: later calls install nothing and export nothing.
pub fn init() -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let logs = if std::io::stderr().is_terminal() {
        fmt::layer().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = otlp_provider();
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("hookrelay")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if !installed {
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return Telemetry::default();
    }
    Telemetry { provider }
}
