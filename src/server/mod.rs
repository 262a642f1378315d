//! The gRPC service (`stance serve`): the `stance.v1.Stance` service, standard health checks,
//! server reflection and Prometheus metrics, over the one library pipeline.
//!
//! Modelled on text-embeddings-inference's router/queue/backend split:
//! - the handlers (this module, the "router") validate and [`Engine::prepare`] each article on
//!   tokio's blocking pool, push its encoder windows to the bounded [`queue::Queue`] and await a
//!   oneshot; a full queue answers RESOURCE_EXHAUSTED at once;
//! - compute threads ([`batcher`], plain `std::thread`s) gather windows of several requests
//!   into batches bounded by tokens and a short wait, run [`Engine::run_windows`] and
//!   answer each request;
//! - the handler then calls [`Engine::finish`] and answers the client.
//!
//! Shutdown (SIGTERM, SIGINT): health turns NOT_SERVING, new connections are refused, open
//! ScoreArticles streams stop reading new items (their answers end with UNAVAILABLE naming the
//! last item read), and what was read is finished. After `--shutdown-grace-s` whatever remains
//! is answered UNAVAILABLE and the server exits, so a client that holds a stream open or stops
//! reading cannot keep it alive.
//!
//! Deadlines (`grpc-timeout`) are honoured: a request past its deadline gets
//! DEADLINE_EXCEEDED, and the compute threads skip work nobody waits for any more (an article
//! larger than a batch is abandoned between pieces). One exception: a deadline that passes
//! while tonic is still receiving the request body is answered CANCELLED by tonic's own
//! timeout layer, before the handler exists.

pub mod auth;
pub mod batcher;
pub mod http;
pub mod metrics;
pub mod queue;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::ServingStatus;

use crate::input::{ArticleInput, Meta};
use crate::pipeline::Engine;
use crate::scores::ArticleScore;
use crate::wire::{pb, pem, FILE_DESCRIPTOR_SET, SERVICE_NAME};
use batcher::BatchConfig;
use queue::{Job, JobError, PushError, Queue};

/// Why [`serve`] could not start, or stopped with an error. Each message says what the server
/// was doing; the cause is the error's [`source`](std::error::Error::source): print the whole
/// chain (the CLI joins it with `: `).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("installing the {which} handler")]
    Signal {
        which: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {addr} (--addr; port 0 picks a free port)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the address the listener is bound to")]
    LocalAddr(#[source] std::io::Error),
    #[error("writing `listening on {addr}` to stdout")]
    Stdout {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the metrics recorder for {addr} (--metrics-addr)")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: metrics_exporter_prometheus::BuildError,
    },
    #[error("binding the metrics listener on {addr} (--metrics-addr)")]
    MetricsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("building the gRPC reflection service from the compiled-in descriptors")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error(transparent)]
    TlsFile(#[from] crate::wire::pem::PemFileError),
    #[error("setting up TLS (--tls-cert, --tls-key, --tls-client-ca: PEM files)")]
    TlsSetup(#[source] tonic::transport::Error),
    #[error("serving")]
    Serve(#[source] tonic::transport::Error),
    /// The `load` closure given to [`serve`] failed.
    #[error("loading the model")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("loading the model: the loading task panicked")]
    LoadPanicked(#[source] tokio::task::JoinError),
    #[error("loading the model: starting the compute threads")]
    ComputeThreads(#[source] std::io::Error),
}

/// Everything `stance serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Prometheus `/metrics` listener; off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    pub batch: BatchConfig,
    /// Articles waiting for a compute thread before new ones are refused.
    pub max_queue: usize,
    /// Tokens (all windows of the waiting articles) before new ones are refused.
    pub max_queue_tokens: usize,
    pub compute_threads: usize,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Articles of one ScoreArticles stream being scored at once; further requests of the
    /// stream wait (flow control) rather than fill the queue.
    pub max_stream_inflight: usize,
    /// How long a shutdown waits for the requests in flight before it cancels them.
    pub shutdown_grace: Duration,
    /// Required of every `stance.v1.Stance` call as `authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Serve TLS instead of plaintext.
    pub tls: Option<TlsFiles>,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Require client certificates signed by this CA (mutual TLS).
    pub client_ca: Option<std::path::PathBuf>,
}

impl TlsFiles {
    fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
        let identity =
            tonic::transport::Identity::from_pem(pem::read(&self.cert, "certificate")?, pem::read(&self.key, "key")?);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(pem::read(ca, "client CA")?));
        }
        Ok(config)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: None,
            batch: BatchConfig {
                max_batch_tokens: crate::batches::DEFAULT_MAX_BATCH_TOKENS,
                max_batch_wait: Duration::from_millis(5),
            },
            max_queue: 1024,
            // 4 Mi tokens (16 MiB of token ids) hold about 1,100 typical news articles (the five
            // Karabakh articles average 3,700 tokens); a bound in articles alone would let 1,024
            // worst-case articles of 2,048 windows each (about 1 GiB of ids) wait.
            max_queue_tokens: 4 << 20,
            compute_threads: 1,
            max_message_bytes: 16 << 20,
            max_stream_inflight: 64,
            shutdown_grace: Duration::from_secs(30),
            api_key: None,
            tls: None,
        }
    }
}

/// The loaded engine and its compute threads.
struct Core {
    engine: Arc<Engine>,
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Core {
    fn start(engine: Engine, config: &ServerConfig) -> std::io::Result<Self> {
        // One token budget from the flag to the encoder call.
        let engine = Arc::new(engine.with_max_batch_tokens(config.batch.max_batch_tokens));
        let queue = Arc::new(Queue::new(config.max_queue, config.max_queue_tokens, config.compute_threads));
        let threads = (0..config.compute_threads.max(1))
            .map(|i| batcher::spawn(i, engine.clone(), queue.clone(), config.batch))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { engine, queue, threads: Mutex::new(threads) })
    }

    /// Stops the compute threads once the queue is drained, or at once (answering what is left
    /// UNAVAILABLE) with `cancel`.
    fn stop(&self, cancel: bool) {
        if cancel {
            self.queue.cancel();
        } else {
            self.queue.close();
        }
        for t in self.threads.lock().expect("threads lock").drain(..) {
            let _ = t.join();
        }
    }
}

/// The `stance.v1.Stance` service.
#[derive(Clone)]
pub struct StanceService {
    core: Arc<OnceLock<Core>>,
    config: Arc<ServerConfig>,
    /// Turns true when shutdown begins: streams stop reading new items.
    draining: watch::Receiver<bool>,
}

/// The service answers DEADLINE_EXCEEDED a little before the client's deadline (a twentieth of
/// the timeout, 3 to 50 ms), so that the answer wins the race with tonic's own `grpc-timeout`
/// layers (which would answer CANCELLED, on the server and in tonic clients).
fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 20).clamp(Duration::from_millis(3), Duration::from_millis(50))
}

/// The request's deadline from its `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
pub fn deadline_of(metadata: &MetadataMap, now: Instant) -> Option<Instant> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    now.checked_add(timeout.saturating_sub(deadline_margin(timeout)))
}

/// When a request reached the server, stamped by an interceptor layer. Server layers are called
/// by tonic's server-side `grpc-timeout` layer before it starts its timer, so a deadline
/// counted from here always falls before tonic's own (see [`deadline_margin`]); and as tonic
/// polls the handler before its timer, the handler's DEADLINE_EXCEEDED wins.
#[derive(Debug, Clone, Copy)]
struct Arrival(Instant);

fn stamp_arrival(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.extensions_mut().insert(Arrival(Instant::now()));
    Ok(req)
}

fn arrival<T>(req: &Request<T>) -> Instant {
    req.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0)
}

/// Why an article was not scored: one verdict for every face (gRPC statuses, HTTP/JSON
/// errors), each message saying what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ScoreError {
    #[error("the model is still loading; retry shortly (health: NOT_SERVING)")]
    Loading,
    /// Bad input: the library's message, saying what and where.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the scoring queue is full ({capacity} articles waiting); retry later, send fewer at once or raise --max-queue"
    )]
    QueueFull { capacity: usize },
    #[error(
        "the scoring queue is full ({queued} tokens waiting, --max-queue-tokens {max}); retry later, send smaller articles or fewer at once, or raise --max-queue-tokens"
    )]
    QueueTokensFull { queued: usize, max: usize },
    #[error("the queue ahead holds about {:.1} s of work and the deadline leaves {:.1} s; retry later or allow more time", .wait.as_secs_f64(), .left.as_secs_f64())]
    TooLittleTime { wait: Duration, left: Duration },
    #[error("the request's deadline passed before it was scored")]
    DeadlineExceeded,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server shut down before this article was scored (its shutdown grace period ran out); send it again")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
}

impl ScoreError {
    pub(crate) fn code(&self) -> Code {
        match self {
            ScoreError::Loading | ScoreError::ShuttingDown | ScoreError::Cancelled => Code::Unavailable,
            ScoreError::Invalid(_) => Code::InvalidArgument,
            ScoreError::QueueFull { .. } | ScoreError::QueueTokensFull { .. } | ScoreError::TooLittleTime { .. } => {
                Code::ResourceExhausted
            }
            ScoreError::DeadlineExceeded => Code::DeadlineExceeded,
            ScoreError::Internal(_) => Code::Internal,
        }
    }
}

impl From<PushError> for ScoreError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Full { capacity } => ScoreError::QueueFull { capacity },
            PushError::TokensFull { queued, max } => ScoreError::QueueTokensFull { queued, max },
            PushError::Closed => ScoreError::ShuttingDown,
        }
    }
}

impl From<ScoreError> for Status {
    fn from(e: ScoreError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Counts one request in `stance_requests_total` when it ends, however it ends: a handler
/// dropped before answering (the client cancelled, or tonic's own deadline fired) counts as
/// CANCELLED.
struct RequestMetric {
    rpc: &'static str,
    started: Instant,
    code: Option<Code>,
}

impl RequestMetric {
    fn start(rpc: &'static str, started: Instant) -> Self {
        Self { rpc, started, code: None }
    }

    fn done<T>(mut self, result: &Result<T, Status>) {
        self.code = Some(code_of(result));
    }

    fn done_with(mut self, code: Code) {
        self.code = Some(code);
    }
}

impl Drop for RequestMetric {
    fn drop(&mut self) {
        metrics::request(self.rpc, self.code.unwrap_or(Code::Cancelled), self.started.elapsed());
    }
}

impl StanceService {
    fn core(&self) -> Result<&Core, ScoreError> {
        self.core.get().ok_or(ScoreError::Loading)
    }

    /// Whether the model is loaded and shutdown has not begun (health SERVING).
    pub(crate) fn serving(&self) -> bool {
        self.core.get().is_some() && !*self.draining.borrow()
    }

    /// Scores one gRPC article (see [`StanceService::score_input`]).
    async fn score(&self, article: Option<pb::Article>, deadline: Option<Instant>) -> Result<ArticleScore, Status> {
        self.core()?;
        let mut article = article.ok_or_else(|| Status::invalid_argument("the request has no article"))?;
        let meta: Meta = std::mem::take(&mut article.meta).into_iter().collect();
        let input = ArticleInput::try_from(article).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(self.score_input(input, meta, deadline).await?)
    }

    /// Scores one article through prepare → queue → compute thread → finish: the one way every
    /// face of the server scores. `meta` is checked first and echoed in the result.
    pub(crate) async fn score_input(
        &self,
        input: ArticleInput,
        meta: Meta,
        deadline: Option<Instant>,
    ) -> Result<ArticleScore, ScoreError> {
        let core = self.core()?;
        crate::input::validate_meta(&meta).map_err(|e| ScoreError::Invalid(e.to_string()))?;
        // A full queue refuses before preparing, so that a refusal costs next to nothing (the
        // push below checks again: others may fill it meanwhile).
        if let Some(e) = core.queue.refusal() {
            return Err(e.into());
        }
        // Nor is a request taken whose deadline comes before the queue ahead of it is done:
        // it would only expire there, after costing its preparation.
        if let (Some(d), Some(wait)) = (deadline, core.queue.estimated_wait()) {
            let left = d.saturating_duration_since(Instant::now());
            if left < wait {
                return Err(ScoreError::TooLittleTime { wait, left });
            }
        }
        let work = async {
            let engine = core.engine.clone();
            let mut prepared = tokio::task::spawn_blocking(move || engine.prepare(input))
                .await
                .map_err(|e| ScoreError::Internal(format!("prepare panicked: {e}")))?
                .map_err(|e| ScoreError::Invalid(e.to_string()))?;
            let (reply, rx) = oneshot::channel();
            let job = Job { windows: std::mem::take(&mut prepared.windows), reply, deadline, enqueued: Instant::now() };
            core.queue.push(job).map_err(|(e, _)| ScoreError::from(e))?;
            let scores = rx
                .await
                .map_err(|_| ScoreError::Internal("the compute thread dropped the request".into()))?
                .map_err(|e| match e {
                JobError::Expired => ScoreError::DeadlineExceeded,
                JobError::Compute(m) => ScoreError::Internal(format!("model computation failed: {m}")),
                JobError::Cancelled => ScoreError::Cancelled,
            })?;
            let engine = core.engine.clone();
            let mut score = tokio::task::spawn_blocking(move || engine.finish(prepared, scores))
                .await
                .map_err(|e| ScoreError::Internal(format!("finish panicked: {e}")))?;
            score.meta = meta;
            metrics::scored(score.sentences.len());
            Ok(score)
        };
        match deadline {
            None => work.await,
            Some(d) if d <= Instant::now() => Err(ScoreError::DeadlineExceeded),
            Some(d) => tokio::time::timeout_at(d.into(), work).await.unwrap_or(Err(ScoreError::DeadlineExceeded)),
        }
    }

    /// The server's default lexicon.
    pub(crate) fn actors(&self) -> Result<Vec<crate::mentions::lexicon::ActorDef>, ScoreError> {
        Ok(self.core()?.engine.lexicon().actors.clone())
    }

    /// What GetModelInfo and `GET /v1/info` answer.
    pub(crate) fn info(&self) -> Result<ServerInfo, ScoreError> {
        let core = self.core()?;
        let model = core.engine.model();
        let m = &model.manifest;
        let limits = core.engine.limits();
        let c = &self.config;
        Ok(ServerInfo {
            name: m.name.clone(),
            version: m.version.clone(),
            origin: model.files.public_origin.clone(),
            max_tokens: m.max_tokens,
            labels: m.labels.clone(),
            precision: model.backend.precision().to_string(),
            manifest: m.clone(),
            limits: ServerLimits {
                max_article_bytes: limits.max_article_bytes,
                max_sentences: limits.max_sentences,
                max_mentions: limits.max_mentions,
                max_windows: limits.max_windows,
                max_message_bytes: c.max_message_bytes,
                max_batch_tokens: c.batch.max_batch_tokens,
                max_batch_wait_ms: c.batch.max_batch_wait.as_millis() as u64,
                max_queue: c.max_queue,
                max_queue_tokens: c.max_queue_tokens,
            },
        })
    }
}

/// The model a server runs and the limits it holds requests to.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ServerInfo {
    pub name: String,
    pub version: String,
    pub origin: String,
    pub max_tokens: usize,
    pub labels: Vec<String>,
    pub precision: String,
    /// The model folder's manifest.json (training record, scores, calibration).
    pub manifest: crate::model::manifest::Manifest,
    pub limits: ServerLimits,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ServerLimits {
    pub max_article_bytes: usize,
    pub max_sentences: usize,
    pub max_mentions: usize,
    pub max_windows: usize,
    pub max_message_bytes: usize,
    pub max_batch_tokens: usize,
    pub max_batch_wait_ms: u64,
    pub max_queue: usize,
    pub max_queue_tokens: usize,
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<pb::ScoreArticlesResponse, Status>> + Send>>;

fn item(id: String, seq: u64, result: Result<ArticleScore, Status>) -> pb::ScoreArticlesResponse {
    let result = match result {
        Ok(s) => pb::score_articles_response::Result::Score(s.into()),
        Err(st) => pb::score_articles_response::Result::Error(pb::ItemError {
            code: st.code() as i32,
            message: st.message().to_string(),
        }),
    };
    pb::ScoreArticlesResponse { id, seq, result: Some(result) }
}

/// gRPC's code for a message over the size limit is RESOURCE_EXHAUSTED; tonic answers an
/// oversized unary request OUT_OF_RANGE in the response headers. This rewrites that one case
/// (streams map it themselves: [`unreadable_item`]).
fn oversized_is_resource_exhausted<B>(mut res: tonic::codegen::http::Response<B>) -> tonic::codegen::http::Response<B> {
    if res.headers().get("grpc-status").is_none_or(|c| c != "11") {
        return res;
    }
    let Some(status) = Status::from_header_map(res.headers()) else { return res };
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        let exhausted = Status::resource_exhausted(format!(
            "the request is larger than the server accepts, --max-message-bytes ({})",
            status.message()
        ));
        let _ = exhausted.add_header(res.headers_mut());
    }
    res
}

/// The stream's final status when an item could not be read. tonic's decoder stops at the
/// first message it cannot decode (text that is not UTF-8, a message over the size limit), so
/// nothing after it can be read; the items before it are still answered. Any other error means
/// the client's side broke (a reset), and is passed on as it is.
fn unreadable_item(status: Status, last_read: Option<u64>) -> Status {
    let which = match last_read {
        Some(seq) => format!("the item after seq {seq}"),
        None => "the stream's first item".into(),
    };
    let rest = "the items before it were answered, none after it was read; fix it and send it and the rest again";
    match status.code() {
        // From the codec (src/wire/codec.rs).
        Code::InvalidArgument => {
            Status::invalid_argument(format!("{which} is not a valid request ({}); {rest}", status.message()))
        }
        Code::OutOfRange => Status::resource_exhausted(format!(
            "{which} is larger than the server's message limit, --max-message-bytes ({}); {rest}",
            status.message()
        )),
        _ => status,
    }
}

fn code_of<T>(r: &Result<T, Status>) -> Code {
    r.as_ref().err().map_or(Code::Ok, |s| s.code())
}

#[tonic::async_trait]
impl pb::stance_server::Stance for StanceService {
    async fn score_article(
        &self,
        request: Request<pb::ScoreArticleRequest>,
    ) -> Result<Response<pb::ScoreArticleResponse>, Status> {
        let started = arrival(&request);
        let metric = RequestMetric::start("ScoreArticle", started);
        let deadline = deadline_of(request.metadata(), started);
        let result = self.score(request.into_inner().article, deadline).await;
        metric.done(&result);
        if let Err(s) = &result {
            tracing::debug!(code = ?s.code(), message = s.message(), "ScoreArticle failed");
        }
        result.map(|s| Response::new(pb::ScoreArticleResponse { score: Some(s.into()) }))
    }

    type ScoreArticlesStream = ItemStream;

    async fn score_articles(
        &self,
        request: Request<Streaming<pb::ScoreArticleRequest>>,
    ) -> Result<Response<Self::ScoreArticlesStream>, Status> {
        self.core()?;
        let deadline = deadline_of(request.metadata(), arrival(&request));
        let mut inbound = request.into_inner();
        let inflight = self.config.max_stream_inflight.max(1);
        let (out, rx) = mpsc::channel::<Result<pb::ScoreArticlesResponse, Status>>(inflight);
        let svc = self.clone();
        let mut draining = self.draining.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(inflight));
            let mut tasks = tokio::task::JoinSet::new();
            // The seq of the last item read; reported when shutdown stops the reading.
            let mut last_read: Option<u64> = None;
            let mut drained = false;
            // Why reading stopped early, sent once the items read are answered.
            let mut broken: Option<Status> = None;
            loop {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                    _ = out.closed() => { tasks.abort_all(); return; }
                    _ = draining.wait_for(|d| *d) => { drained = true; break; }
                };
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = out.closed() => { tasks.abort_all(); return; }
                    _ = draining.wait_for(|d| *d) => { drained = true; break; }
                };
                match msg {
                    Ok(Some(req)) => {
                        last_read = Some(req.seq);
                        let (svc, out) = (svc.clone(), out.clone());
                        tasks.spawn(async move {
                            let _permit = permit;
                            let metric = RequestMetric::start("ScoreArticles", Instant::now());
                            let id = req.article.as_ref().map(|a| a.id.clone()).unwrap_or_default();
                            let result = svc.score(req.article, deadline).await;
                            metric.done(&result);
                            let _ = out.send(Ok(item(id, req.seq, result))).await;
                        });
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "ScoreArticles: inbound stream failed");
                        broken = Some(unreadable_item(status, last_read));
                        break;
                    }
                }
                while tasks.try_join_next().is_some() {}
            }
            tokio::select! {
                _ = async { while tasks.join_next().await.is_some() {} } => {}
                _ = out.closed() => { tasks.abort_all(); return; }
            }
            if let Some(status) = broken {
                let _ = out.send(Err(status)).await;
            } else if drained {
                let read = match last_read {
                    Some(seq) => format!("items after seq {seq} were not read"),
                    None => "no item of this stream was read".into(),
                };
                let _ = out
                    .send(Err(Status::unavailable(format!(
                        "the server is shutting down: {read}; the items read were answered; send the rest again"
                    ))))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_actors(
        &self,
        _request: Request<pb::ListActorsRequest>,
    ) -> Result<Response<pb::ListActorsResponse>, Status> {
        let started = Instant::now();
        let result = self
            .actors()
            .map(|actors| pb::ListActorsResponse { actors: actors.into_iter().map(Into::into).collect() })
            .map_err(Status::from);
        metrics::request("ListActors", code_of(&result), started.elapsed());
        result.map(Response::new)
    }

    async fn get_model_info(
        &self,
        _request: Request<pb::GetModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let started = Instant::now();
        let result = self.info().map_err(Status::from).map(|i| pb::ModelInfo {
            name: i.name,
            version: i.version,
            origin: i.origin,
            max_tokens: i.max_tokens as u64,
            labels: i.labels,
            manifest_json: serde_json::to_string(&i.manifest).unwrap_or_default(),
            precision: i.precision,
            limits: Some(pb::Limits {
                max_article_bytes: i.limits.max_article_bytes as u64,
                max_sentences: i.limits.max_sentences as u64,
                max_mentions: i.limits.max_mentions as u64,
                max_windows: i.limits.max_windows as u64,
                max_message_bytes: i.limits.max_message_bytes as u64,
                max_batch_tokens: i.limits.max_batch_tokens as u64,
                max_batch_wait_ms: i.limits.max_batch_wait_ms,
                max_queue: i.limits.max_queue as u64,
                max_queue_tokens: i.limits.max_queue_tokens as u64,
            }),
        });
        metrics::request("GetModelInfo", code_of(&result), started.elapsed());
        result.map(Response::new)
    }
}

/// Resolves on SIGTERM or SIGINT. Handlers are installed when this is called, not when polled.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, ServeError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind, which| signal(kind).map_err(|source| ServeError::Signal { which, source });
        let mut term = install(SignalKind::terminate(), "SIGTERM")?;
        let mut int = install(SignalKind::interrupt(), "SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests, then exiting"),
                _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests, then exiting"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Runs the service until SIGTERM/SIGINT. Binds first (printing `listening on ADDR` as the
/// first line on stdout), serves health NOT_SERVING while `load` builds the engine, then
/// SERVING. On a signal it stops accepting, finishes in-flight requests and returns.
///
/// A failed `load` stops the server with [`ServeError::Load`], its error as the source.
pub async fn serve<F, E>(config: ServerConfig, load: F) -> Result<(), ServeError>
where
    F: FnOnce() -> Result<Engine, E> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    let signal = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let local = listener.local_addr().map_err(ServeError::LocalAddr)?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")
            .and_then(|()| out.flush())
            .map_err(|source| ServeError::Stdout { addr: local, source })?;
    }
    if let Some(m) = config.metrics_addr {
        metrics::install(m).await?;
        tracing::info!("metrics on http://{m}/metrics");
    }

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;

    let config = Arc::new(config);
    let core: Arc<OnceLock<Core>> = Arc::new(OnceLock::new());
    let (draining_tx, draining) = watch::channel(false);
    let service = StanceService { core: core.clone(), config: config.clone(), draining: draining.clone() };
    let stance = pb::stance_server::StanceServer::new(service.clone())
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    // Load the model while health answers NOT_SERVING; a failed load stops the server.
    let (failed_tx, failed_rx) = oneshot::channel::<ServeError>();
    {
        let (core, config, reporter) = (core.clone(), config.clone(), reporter.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let loaded = match tokio::task::spawn_blocking(move || load().map_err(Into::into)).await {
                Ok(Ok(engine)) => Ok(engine),
                Ok(Err(e)) => Err(ServeError::Load(e)),
                Err(panicked) => Err(ServeError::LoadPanicked(panicked)),
            };
            match loaded.and_then(|engine| Core::start(engine, &config).map_err(ServeError::ComputeThreads)) {
                Ok(c) => {
                    let _ = core.set(c);
                    reporter.set_service_status("", ServingStatus::Serving).await;
                    reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
                    tracing::info!(load_seconds = started.elapsed().as_secs_f32(), "serving on {local}");
                }
                Err(e) => {
                    let _ = failed_tx.send(e);
                }
            }
        });
    }
    let (load_error_tx, mut load_error_rx) = oneshot::channel::<ServeError>();
    let shutdown = async move {
        tokio::select! {
            _ = signal => {}
            Ok(e) = failed_rx => { let _ = load_error_tx.send(e); }
        }
        reporter.set_service_status("", ServingStatus::NotServing).await;
        reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
        let _ = draining_tx.send(true);
    };
    // Starts counting when shutdown begins; what is still running when it ends is cancelled.
    let grace = {
        let (mut draining, grace) = (draining.clone(), config.shutdown_grace);
        async move {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(grace).await;
        }
    };

    let incoming = TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server_config()?).map_err(ServeError::TlsSetup)?;
    }
    let key = auth::ApiKey::new(config.api_key.as_deref());
    let http = http::router(service.clone(), key.clone());
    let stance = tonic::service::interceptor::InterceptedService::new(stance, key);
    // One listener for both faces: gRPC's services are routes beside the HTTP/JSON ones.
    let routes = tonic::service::Routes::from(http)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(stance);
    let server = builder
        .accept_http1(true)
        .layer(tonic::service::InterceptorLayer::new(stamp_arrival as fn(Request<()>) -> Result<Request<()>, Status>))
        .layer(tower::util::MapResponseLayer::new(oversized_is_resource_exhausted::<tonic::body::Body> as fn(_) -> _))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let cancelled = tokio::select! {
        served = server => { served.map_err(ServeError::Serve)?; false }
        _ = grace => {
            tracing::warn!(
                grace_s = config.shutdown_grace.as_secs_f32(),
                "shutdown grace period over: cancelling the requests still running"
            );
            true
        }
    };

    if let Some(c) = core.get() {
        c.stop(cancelled);
    }
    if let Ok(e) = load_error_rx.try_recv() {
        return Err(e);
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        let now = Instant::now();
        let mut md = MetadataMap::new();
        assert_eq!(deadline_of(&md, now), None);
        md.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(deadline_of(&md, now), Some(now + Duration::from_millis(1950)));
        md.insert("grpc-timeout", "1m".parse().unwrap());
        assert_eq!(deadline_of(&md, now), Some(now));
        md.insert("grpc-timeout", "xS".parse().unwrap());
        assert_eq!(deadline_of(&md, now), None);
    }
}
