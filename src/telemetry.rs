//! Logs and traces. With the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are exported over OTLP/HTTP through
//! `tracing-opentelemetry`, and the per-event and per-instance spans are enabled; otherwise
//! plain logs go to stderr. `RUST_LOG` filters the logs (default `info`); the exported spans
//! are `info` everywhere plus the runtime's `debug` spans (`event`, `instance`), whatever
//! `RUST_LOG` says, so traces are complete when an endpoint is configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flushes spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

pub fn init() -> Telemetry {
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    if !otlp_configured() {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Telemetry { provider: None };
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            let _ = tracing_subscriber::registry().with(fmt).try_init();
            tracing::warn!("OTLP export disabled: {e}");
            return Telemetry { provider: None };
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("vigil")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("vigil");
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("info,vigil_actors=debug"));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    Telemetry {
        provider: Some(provider),
    }
}
