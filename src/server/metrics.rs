//! Prometheus metrics of the service, served on `--metrics-addr` (off when not given). Without
//! an installed exporter every call here is a no-op.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::ServeError;

/// Starts the recorder and its HTTP listener on `addr`: `GET /metrics` answers the Prometheus
/// text, any other path 404 and any other method 405 (the exporter's own listener answered
/// every request with the metrics). Call inside the runtime.
pub async fn install(addr: SocketAddr) -> Result<(), ServeError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::MetricsBind { addr, source })?;
    let handle = recorder().map_err(|source| ServeError::Metrics { addr, source })?;
    describe();
    // Histograms drain their buckets on upkeep; without the exporter's listener nobody else
    // runs it.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }
            }),
        )
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found: metrics are at GET /metrics\n") });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

fn recorder() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    let tokens = [128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &latency)?
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full("stance_batch_articles".into()), &counts)?
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full("stance_batch_windows".into()), &counts)?
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full("stance_batch_tokens".into()), &tokens)?
        .install_recorder()
}

fn describe() {
    metrics::describe_counter!(
        "stance_requests_total",
        "Requests (stream items and NDJSON lines count one each) by RPC (http:* for the HTTP API) and gRPC status code"
    );
    metrics::describe_histogram!("stance_request_duration_seconds", "Request latency by RPC");
    metrics::describe_gauge!("stance_queue_depth", "Articles waiting for a compute thread");
    metrics::describe_histogram!("stance_batch_articles", "Articles per encoder batch");
    metrics::describe_histogram!("stance_batch_windows", "Encoder windows per batch");
    metrics::describe_histogram!("stance_batch_tokens", "Tokens per batch (the encoder packs windows without padding)");
    metrics::describe_histogram!("stance_batch_duration_seconds", "Encoder time per batch");
    metrics::describe_histogram!("stance_queue_wait_seconds", "Time from enqueue to the start of the article's batch");
    metrics::describe_counter!("stance_sentences_scored_total", "Sentences scored");
    metrics::describe_counter!("stance_articles_scored_total", "Articles scored");
    metrics::describe_counter!("stance_jobs_skipped_total", "Queued articles skipped before computing, by reason");
}

pub fn request(rpc: &'static str, code: tonic::Code, elapsed: Duration) {
    counter!("stance_requests_total", "rpc" => rpc, "code" => format!("{code:?}")).increment(1);
    histogram!("stance_request_duration_seconds", "rpc" => rpc).record(elapsed.as_secs_f64());
}

pub fn queue_depth(depth: usize) {
    gauge!("stance_queue_depth").set(depth as f64);
}

pub fn queue_wait(wait: Duration) {
    histogram!("stance_queue_wait_seconds").record(wait.as_secs_f64());
}

pub fn batch(articles: usize, windows: usize, tokens: usize, elapsed: Duration) {
    histogram!("stance_batch_articles").record(articles as f64);
    histogram!("stance_batch_windows").record(windows as f64);
    histogram!("stance_batch_tokens").record(tokens as f64);
    histogram!("stance_batch_duration_seconds").record(elapsed.as_secs_f64());
}

pub fn scored(sentences: usize) {
    counter!("stance_articles_scored_total").increment(1);
    counter!("stance_sentences_scored_total").increment(sentences as u64);
}

pub fn skipped(reason: &'static str) {
    counter!("stance_jobs_skipped_total", "reason" => reason).increment(1);
}
