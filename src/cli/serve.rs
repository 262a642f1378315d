//! `stance serve`: the gRPC service (see `stance::server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use stance::pipeline::Engine;
use stance::server::batcher::BatchConfig;
use stance::server::{serve, ServerConfig, TlsFiles};

// The defaults are those of `ServerConfig::default()`, written there once.
#[derive(Args, Debug, Clone)]
pub struct ServeOpts {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout
    /// as `listening on ADDR`.
    #[arg(long, env = "STANCE_ADDR", default_value_t = ServerConfig::default().addr)]
    pub addr: SocketAddr,
    /// Serve Prometheus metrics on this address (`GET /metrics`); off when not given.
    #[arg(long, env = "STANCE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Tokens per encoder batch (all windows; the encoder packs them without padding).
    #[arg(long, env = "STANCE_MAX_BATCH_TOKENS", default_value_t = ServerConfig::default().batch.max_batch_tokens)]
    pub max_batch_tokens: usize,
    /// How long a batch waits for more requests once it has one, in milliseconds.
    #[arg(long, env = "STANCE_MAX_BATCH_WAIT_MS", default_value_t = ServerConfig::default().batch.max_batch_wait.as_millis() as u64)]
    pub max_batch_wait_ms: u64,
    /// Articles waiting for the encoder before new requests get RESOURCE_EXHAUSTED.
    #[arg(long, env = "STANCE_MAX_QUEUE", default_value_t = ServerConfig::default().max_queue)]
    pub max_queue: usize,
    /// Tokens (all encoder windows) of the waiting articles before new requests get
    /// RESOURCE_EXHAUSTED: bounds the queue's memory whatever the articles' sizes.
    #[arg(long, env = "STANCE_MAX_QUEUE_TOKENS", default_value_t = ServerConfig::default().max_queue_tokens)]
    pub max_queue_tokens: usize,
    /// Dedicated compute threads running the encoder.
    #[arg(long, env = "STANCE_COMPUTE_THREADS", default_value_t = ServerConfig::default().compute_threads)]
    pub compute_threads: usize,
    /// Largest gRPC message received or sent, in bytes.
    #[arg(long, env = "STANCE_MAX_MESSAGE_BYTES", default_value_t = ServerConfig::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Articles of one ScoreArticles stream scored at once (the rest wait in the stream).
    #[arg(long, env = "STANCE_MAX_STREAM_INFLIGHT", default_value_t = ServerConfig::default().max_stream_inflight)]
    pub max_stream_inflight: usize,
    /// On SIGTERM or SIGINT, seconds to finish the requests in flight (open streams stop
    /// reading new items at once); then the rest is answered UNAVAILABLE and the server exits.
    #[arg(long, env = "STANCE_SHUTDOWN_GRACE_S", default_value_t = ServerConfig::default().shutdown_grace.as_secs_f64())]
    pub shutdown_grace_s: f64,
    /// Require this key of every stance.v1 call (`authorization: Bearer KEY`; health and
    /// reflection stay open). Prefer the environment variable: arguments are visible to `ps`.
    #[arg(long, env = "STANCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serve TLS with this certificate chain (PEM); with --tls-key.
    #[arg(long, env = "STANCE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "STANCE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "STANCE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

pub fn run<F>(o: ServeOpts, load: F) -> Result<()>
where
    F: FnOnce() -> Result<Engine> + Send + 'static,
{
    let config = ServerConfig {
        addr: o.addr,
        metrics_addr: o.metrics_addr,
        batch: BatchConfig {
            max_batch_tokens: o.max_batch_tokens,
            max_batch_wait: Duration::from_millis(o.max_batch_wait_ms),
        },
        max_queue: o.max_queue,
        max_queue_tokens: o.max_queue_tokens,
        compute_threads: o.compute_threads,
        max_message_bytes: o.max_message_bytes,
        max_stream_inflight: o.max_stream_inflight,
        shutdown_grace: Duration::try_from_secs_f64(o.shutdown_grace_s)
            .map_err(|e| anyhow::anyhow!("--shutdown-grace-s {}: {e}; give seconds, e.g. 30", o.shutdown_grace_s))?,
        api_key: o.api_key.filter(|k| !k.is_empty()),
        tls: o.tls_cert.zip(o.tls_key).map(|(cert, key)| TlsFiles { cert, key, client_ca: o.tls_client_ca }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    Ok(rt.block_on(serve(config, load))?)
}
