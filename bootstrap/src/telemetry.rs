//! Logs and traces, set up once per binary: log records to stderr (text or JSON, level
//! from RUST_LOG), and, when an OTLP endpoint is set, every span also exported to an
//! OpenTelemetry collector over OTLP/gRPC. A caller's W3C `traceparent` continues its
//! trace through [`continue_trace`].

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::LogFormat;

/// The trace exporter, kept to flush what is left at exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Logs to stderr in `format`, and exports spans of `service` to `otlp_endpoint`
/// (`http://host:4317`) when set. Must run inside the Tokio runtime (the exporter's
/// gRPC client lives there). Errors name the setting.
pub fn init(
    format: LogFormat,
    service: &'static str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // alloy's HTTP transport opens a debug span carrying the whole RPC URL, and with
        // it a provider's API key: never enable it, whatever RUST_LOG says.
        .add_directive("alloy_transport_http=info".parse().expect("a valid directive"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let provider = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .build(),
            )
        }
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)).boxed());
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).init();
    Ok(Telemetry { provider })
}

/// [`init`] for a binary's `main`: on a bad endpoint, one line on stderr naming the
/// setting and the exit code 2, as for any bad setting.
#[allow(clippy::print_stderr)] // before logging exists
pub fn init_or_exit(
    format: LogFormat,
    service: &'static str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, std::process::ExitCode> {
    init(format, service, otlp_endpoint).map_err(|e| {
        eprintln!("{service}: error: {e}");
        std::process::ExitCode::from(2)
    })
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The SDK's shutdown blocks while it exports.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Makes `span` a child of the caller's trace, given the call's `traceparent` (and
/// `tracestate`) metadata; leaves it a root when there is none or it is malformed.
pub fn continue_trace(span: &tracing::Span, headers: &[(String, String)]) {
    if headers.is_empty() {
        return;
    }
    let carrier: HashMap<String, String> = headers.iter().cloned().collect();
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}
