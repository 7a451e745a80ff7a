//! `coordinator serve --otlp-endpoint URL`: the coordinator's per-round spans
//! (`fedsilo_coordinator::service::spans`) exported over OTLP/gRPC to an OpenTelemetry
//! collector. Only those spans go out (a per-layer filter on their target); the log output
//! keeps its own filter.
//!
//! The OTLP exporter speaks gRPC through tonic, which needs a tokio reactor wherever an
//! export runs. The SDK's default batch processor exports from a plain thread (no reactor:
//! the export would fail), so the spans are batched by the SDK's tokio-runtime processor on a
//! one-thread runtime of their own, kept by [`Otlp`] and shut down (after the last batch is
//! flushed) when it is dropped, after the coordinator has stopped.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The exporter's provider and runtime; flushes and stops both when dropped.
pub struct Otlp {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(10)) {
            eprintln!("OpenTelemetry: the last spans may not have been exported: {e}");
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The tracing layer that exports round spans to `endpoint` (e.g. `http://collector:4317`),
/// and the guard that keeps its exporter running.
pub fn layer<S>(endpoint: &str) -> Result<(impl Layer<S>, Otlp)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fedsilo-otlp")
        .enable_all()
        .build()
        .context("starting the OpenTelemetry exporter's runtime")?;
    let provider = {
        let _inside = runtime.enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .with_context(|| format!("the OTLP exporter for {endpoint}"))?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("fedsilo-coordinator")
                    .build(),
            )
            .build()
    };
    let tracer = provider.tracer("fedsilo");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target(
            fedsilo_coordinator::service::spans::TARGET,
            tracing::Level::INFO,
        ));
    Ok((
        layer,
        Otlp {
            provider,
            runtime: Some(runtime),
        },
    ))
}
