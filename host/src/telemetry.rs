//! Logs and traces: where they go and in what form.
//!
//! Logs go to stderr (stdout carries the `listening on` lines scripts
//! read), as text for a person or as JSON lines for a log pipeline; colour
//! codes only when stderr is a terminal, since in a file or a collector
//! they are noise that breaks searches. Log events carry identifiers (a
//! route, a plugin, a decision id), never a body, a token or free text from
//! a request.
//!
//! Traces are off unless an OTLP endpoint is configured. They are exported
//! over OTLP/HTTP in protobuf, the transport every collector accepts
//! without gRPC. Trace export is independent of the log level: `RUST_LOG`
//! chooses what is logged, while every span of Consentry's own is traced,
//! so turning logs down does not cut traces apart.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The `service.name` of the spans, unless `OTEL_SERVICE_NAME` names another.
const SERVICE_NAME: &str = "consentry";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where spans are sent: an OTLP/HTTP traces URL, such as
    /// `http://127.0.0.1:4318/v1/traces`; none by default: no traces.
    #[serde(deserialize_with = "otlp_endpoint")]
    pub otlp_endpoint: Option<String>,
}

/// Reads an `http://` or `https://` URL with a host.
fn otlp_endpoint<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let uri: Result<axum::http::Uri, _> = text.parse();
    let scheme_ok = |uri: &axum::http::Uri| matches!(uri.scheme_str(), Some("http" | "https"));
    match uri {
        Ok(uri) if scheme_ok(&uri) && uri.host().is_some() => Ok(Some(text)),
        _ => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&text),
            &"an http:// or https:// URL, e.g. `http://127.0.0.1:4318/v1/traces`",
        )),
    }
}

/// Logs and traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its configuration.
    #[error("cannot export traces to `{endpoint}`: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// Something else installed a logger first.
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

/// The installed logs and traces; dropping it sends the spans still
/// queued, so a server that stops does not lose its last traces.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: traces still queued were not sent: {error}");
        }
    }
}

/// Installs the logger, and the trace exporter when `config` names an
/// endpoint, for the whole process.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let provider = config.otlp_endpoint.as_deref().map(tracer_provider).transpose()?;
    subscriber(config, provider.as_ref()).try_init().map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

/// The logger, and the trace layer when there is a `provider`.
///
/// Log lines take events only, never spans: a span the log layer wants is
/// made, and its fields formatted, on every request whether or not anyone
/// reads it, and that cost about a sixth of a decision's CPU. Spans are for
/// traces, so with traces off no layer wants them and `info_span!` costs a
/// cached callsite check. Without a provider there is no trace layer at
/// all, not an empty one: an absent `Option` layer counts as interested in
/// everything.
fn subscriber(
    config: &TelemetryConfig,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync> {
    let level = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter_fn(|metadata| metadata.is_event()).and(level));
    let logged = tracing_subscriber::registry().with(logs);
    match provider {
        Some(provider) => Box::new(
            logged.with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer(SERVICE_NAME))
                    .with_filter(Targets::new().with_target("consentry", Level::INFO)),
            ),
        ),
        None => Box::new(logged),
    }
}

/// The logger of the commands other than `serve`: text, no traces.
pub fn init_cli() {
    let _ = init(&TelemetryConfig::default());
}

/// A provider that batches spans and sends them to `endpoint`.
fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter { endpoint: endpoint.to_owned(), message: e.to_string() })?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU regression this pins: with traces off, the log layer took
    /// every request's spans and formatted their fields.
    #[test]
    fn spans_are_not_made_when_traces_are_off() {
        tracing::subscriber::with_default(subscriber(&TelemetryConfig::default(), None), || {
            let span = tracing::info_span!("request", http.route = "/v1/is_authorized");
            assert!(span.is_disabled());
        });
    }

    #[test]
    fn spans_are_made_for_the_trace_layer_when_traces_are_on() {
        let provider = SdkTracerProvider::builder().build();
        tracing::subscriber::with_default(subscriber(&TelemetryConfig::default(), Some(&provider)), || {
            let span = tracing::info_span!("request", http.route = "/v1/is_authorized");
            assert!(!span.is_disabled());
        });
    }
}
