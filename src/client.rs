//! A client of the `stance.v1` service, used by `stance score --remote` and `stance batch
//! --remote`: connects to one or several servers (each stream of a job opened on one of them
//! in turn), waits until they report SERVING, and scores articles over
//! `ScoreArticles` streams with a bounded number in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use std::net::SocketAddr;

use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::input::ArticleInput;
use crate::scores::ArticleScore;
use crate::wire::pb::stance_client::StanceClient;
use crate::wire::pb::{self, score_articles_response};
use crate::wire::{pem, SERVICE_NAME};

/// Why the client could not reach or use the server(s). Each message names the server and what
/// failed; a lower-level cause is the error's [`source`](std::error::Error::source): print the
/// whole chain (the CLI joins it with `: `).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no server address given; pass --remote HOST:PORT")]
    NoAddress,
    #[error("invalid server address {addr:?}; expected HOST:PORT")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{addr}: expected dns:///NAME:PORT")]
    DnsAddress { addr: String },
    #[error("{addr}: the port {port:?} is not a number")]
    DnsPort {
        addr: String,
        port: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("resolving dns:///{host}:{port}")]
    Resolve {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("dns:///{host}:{port}: the name has no addresses")]
    NoAddresses { host: String, port: u16 },
    #[error(transparent)]
    TlsFile(#[from] crate::wire::pem::PemFileError),
    #[error("setting up TLS for {addr} (--tls-ca, --tls-cert, --tls-key: PEM files)")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the API key must be printable ASCII without line breaks")]
    ApiKey(#[source] tonic::metadata::errors::InvalidMetadataValue),
    #[error("cannot connect to the stance server at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The health service answered with an error (its `status`, kept whole).
    #[error("{addr}: health check failed ({:?}): {}", status.code(), status.message())]
    Health { addr: String, status: Status },
    #[error("{addr}: no health answer within {timeout:?}")]
    HealthTimeout { addr: String, timeout: Duration },
    #[error("{addr}: the server did not become SERVING within {patience:?}")]
    NotServing { addr: String, patience: Duration },
    /// GetModelInfo answered with an error (its `status`, kept whole).
    #[error("{addr}: GetModelInfo failed ({:?}): {}", status.code(), status.message())]
    ModelInfo { addr: String, status: Status },
    /// Every server failed; each one's error, in the order given.
    #[error("no server could be reached: {}", .errors.iter().map(|e| chain(e)).collect::<Vec<_>>().join("; "))]
    NoServer { errors: Vec<ClientError> },
}

/// An error and its sources, joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// How one article of a remote job ended when it did not produce a score.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    /// The connection or stream failed (the server was not asked or did not answer): the
    /// article was not judged and may be retried; otherwise the server refused the article
    /// itself (bad input, too large, ...).
    pub transport: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.transport {
            write!(f, "{} ({:?}, connection)", self.message, self.code)
        } else {
            write!(f, "{}", self.message)
        }
    }
}

/// How to reach the servers: TLS and the API key.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `authorization: Bearer KEY` with every call.
    pub api_key: Option<String>,
    /// Use TLS (an `https://` address does too).
    pub tls: bool,
    /// Trust servers signed by this CA (PEM) instead of the Mozilla roots.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM), for servers that require them (mutual TLS).
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// The name to expect in the server's certificate, when it is not the address's host.
    pub tls_domain: Option<String>,
}

impl ClientOptions {
    fn uses_tls(&self) -> bool {
        self.tls || self.tls_ca.is_some() || self.tls_identity.is_some() || self.tls_domain.is_some()
    }

    fn tls_config(&self) -> Result<ClientTlsConfig, ClientError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.tls_ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(pem::read(ca, "CA")?)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.tls_identity {
            config = config.identity(Identity::from_pem(pem::read(cert, "certificate")?, pem::read(key, "key")?));
        }
        if let Some(domain) = &self.tls_domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }

    /// The `authorization` value, checked once.
    fn authorization(&self) -> Result<Option<AsciiMetadataValue>, ClientError> {
        self.api_key
            .as_deref()
            .map(|k| AsciiMetadataValue::try_from(format!("Bearer {k}")).map_err(ClientError::ApiKey))
            .transpose()
    }
}

/// Adds the API key, if any, to a request.
fn authorize<T>(mut req: tonic::Request<T>, auth: &Option<AsciiMetadataValue>) -> tonic::Request<T> {
    if let Some(v) = auth {
        req.metadata_mut().insert("authorization", v.clone());
    }
    req
}

fn endpoint(addr: &str, connect_timeout: Duration, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if options.uses_tls() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut ep = Endpoint::from_shared(uri.clone())
        .map_err(|source| ClientError::Address { addr: addr.to_string(), source })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if uri.starts_with("https://") {
        ep = ep
            .tls_config(options.tls_config()?)
            .map_err(|source| ClientError::Tls { addr: addr.to_string(), source })?;
    }
    Ok(ep)
}

/// Waits until the server at `channel` reports SERVING for `stance.v1.Stance` (it answers
/// NOT_SERVING while its model loads).
async fn wait_serving(addr: &str, channel: Channel, patience: Duration) -> Result<(), ClientError> {
    let mut health = HealthClient::new(channel);
    let until = tokio::time::Instant::now() + patience;
    loop {
        let status = health.check(HealthCheckRequest { service: SERVICE_NAME.into() }).await;
        match status {
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
            Ok(_) => {}
            Err(s) if s.code() == Code::Unavailable => {}
            Err(status) => return Err(ClientError::Health { addr: addr.to_string(), status }),
        }
        if tokio::time::Instant::now() >= until {
            return Err(ClientError::NotServing { addr: addr.to_string(), patience });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `grpc.health.v1` says of `stance.v1.Stance` at `addr`, asked once: connecting and the
/// answer together take at most `timeout`.
pub async fn health(addr: &str, timeout: Duration, options: &ClientOptions) -> Result<ServingStatus, ClientError> {
    let ask = async {
        let channel = endpoint(addr, timeout, options)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest { service: SERVICE_NAME.into() })
            .await
            .map_err(|status| ClientError::Health { addr: addr.to_string(), status })?;
        Ok(ServingStatus::try_from(answer.get_ref().status).unwrap_or(ServingStatus::Unknown))
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ClientError::HealthTimeout { addr: addr.to_string(), timeout })?
}

/// A connection to one or several servers.
#[derive(Clone)]
pub struct Remote {
    /// The servers (a `dns:///` name's addresses change as it is resolved again). Each stream
    /// of a job is opened on one of them in turn, so that a job's few long-lived streams are
    /// spread evenly, which a per-call balancer does not do for streams opened at once.
    replicas: Arc<std::sync::Mutex<Vec<Replica>>>,
    max_message_bytes: usize,
    /// The largest request any of the servers accepts (their `--max-message-bytes`, from
    /// GetModelInfo), capped by ours: a larger article is refused here, as its own error,
    /// instead of breaking the stream it would travel on.
    max_request_bytes: usize,
    auth: Option<AsciiMetadataValue>,
}

/// One server of a job, by its balancer key (its address, or the DNS name and address).
#[derive(Clone)]
struct Replica {
    key: String,
    channel: Channel,
}

impl Remote {
    /// Connects to every address and waits for each to be SERVING; with several addresses
    /// requests are spread across them. A server that cannot be reached is left out with a
    /// warning when another one can (a job goes on with the servers that are up); none
    /// reachable is an error naming each.
    pub async fn connect(
        addrs: &[String],
        max_message_bytes: usize,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::NoAddress);
        }
        let auth = options.authorization()?;
        let mut targets = Vec::new();
        for addr in addrs {
            targets.push(Target::parse(addr)?);
        }
        // Every server to try now: the fixed addresses, and every address of each DNS name.
        let mut replicas: Vec<(String, String, ClientOptions)> = Vec::new();
        for t in &targets {
            match t {
                Target::Fixed(addr) => replicas.push((addr.clone(), addr.clone(), options.clone())),
                Target::Dns { host, port } => {
                    let found = resolve(host, *port).await?;
                    if found.is_empty() {
                        return Err(ClientError::NoAddresses { host: host.clone(), port: *port });
                    }
                    for a in found {
                        replicas.push((t.key(a), a.to_string(), t.options(options)));
                    }
                }
            }
        }
        let mut endpoints = Vec::new();
        let mut max_request_bytes = max_message_bytes;
        let mut unreachable = Vec::new();
        let several = replicas.len() > 1;
        for (key, addr, opts) in &replicas {
            match connect_one(addr, opts, &auth).await {
                Ok((channel, limit)) => {
                    if let Some(limit) = limit {
                        max_request_bytes = max_request_bytes.min(limit);
                    }
                    endpoints.push(Replica { key: key.clone(), channel });
                }
                Err(e) if several => {
                    tracing::warn!("{}; going on without it", chain(&e));
                    unreachable.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        if endpoints.is_empty() {
            return Err(ClientError::NoServer { errors: unreachable });
        }
        let replicas = Arc::new(std::sync::Mutex::new(endpoints));
        for t in targets.into_iter().filter(|t| matches!(t, Target::Dns { .. })) {
            let mine = replicas
                .lock()
                .expect("replicas lock")
                .iter()
                .filter(|r| t.owns(&r.key))
                .map(|r| r.key.clone())
                .collect();
            tokio::spawn(refresh(t, mine, options.clone(), Arc::downgrade(&replicas)));
        }
        Ok(Self { replicas, max_message_bytes, max_request_bytes, auth })
    }

    /// How many servers the job can use now.
    fn servers(&self) -> usize {
        self.replicas.lock().expect("replicas lock").len()
    }

    /// A client of the `turn`-th server (round robin over the current ones; `None` when none
    /// is left), for unary calls.
    pub fn client(&self, turn: usize) -> Option<StanceClient<Channel>> {
        let replicas = self.replicas.lock().expect("replicas lock");
        let r = replicas.get(turn % replicas.len().max(1))?;
        Some(
            StanceClient::new(r.channel.clone())
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes),
        )
    }

    /// Scores `items` (a caller's sequence number and the article) over `ScoreArticles`
    /// streams (two per server, each opened on the servers in turn), with at most `inflight`
    /// articles outstanding. `on_result` is called exactly once per item as results arrive, in
    /// any order. Articles the server refuses with RESOURCE_EXHAUSTED (its queue is full) are
    /// sent again after a short pause. A stream that ends or fails with articles outstanding
    /// (a server killed, or shutting down) is reopened, on whichever server is up, and its
    /// articles sent again; after [`STREAM_RESTARTS`] reopenings of one stream its articles go
    /// to the others, and with no stream left they are reported as transport failures.
    ///
    /// An error from `on_result` ends the job and is returned as it is; nothing else fails the
    /// job (each article's own failure goes to `on_result`).
    pub async fn score_all<F, E>(
        &self,
        items: Vec<(u64, ArticleInput)>,
        inflight: usize,
        mut on_result: F,
    ) -> Result<(), E>
    where
        F: FnMut(u64, String, Result<ArticleScore, Failure>) -> Result<(), E>,
    {
        let total = items.len();
        if total == 0 {
            return Ok(());
        }
        let inflight = inflight.max(1);
        let n_streams = (2 * self.servers()).min(total).max(1);
        let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
        let mut streams: Vec<Slot> =
            (0..n_streams).map(|k| Slot::open(self, k, 0, Duration::ZERO, inflight, events_tx.clone())).collect();

        // The feeder: items in order, at most `inflight` outstanding; refused here when larger
        // than the servers accept.
        let permits = Arc::new(Semaphore::new(inflight));
        let (todo_tx, mut todo) = mpsc::channel::<(u64, ArticleInput)>(1);
        {
            let permits = permits.clone();
            tokio::spawn(async move {
                for item in items {
                    permits.acquire().await.expect("never closed").forget();
                    if todo_tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
        }

        // Everything below runs on this task: no locks. seq → (stream, article), outstanding.
        let mut pending: HashMap<u64, (usize, ArticleInput)> = HashMap::new();
        let mut next = 0usize;
        let mut done = 0usize;
        let mut fed = 0usize;
        // Servers a `dns:///` name gains during the job get streams of their own.
        let mut grow = tokio::time::interval(Duration::from_secs(2));
        while done < total {
            let mut finished: Vec<(u64, String, Result<ArticleScore, Failure>)> = Vec::new();
            tokio::select! {
                _ = grow.tick() => {
                    while streams.len() < (2 * self.servers()).min(total) {
                        let k = streams.len();
                        streams.push(Slot::open(self, k, 0, Duration::ZERO, inflight, events_tx.clone()));
                    }
                }
                item = todo.recv(), if fed < total => {
                    let Some((seq, article)) = item else { continue };
                    fed += 1;
                    let size = prost::Message::encoded_len(&request(seq, &article));
                    if size > self.max_request_bytes {
                        let message = format!(
                            "the article is {size} bytes as a request, more than the server accepts ({} bytes, its --max-message-bytes); split it or raise the limit",
                            self.max_request_bytes
                        );
                        let failure = Failure { code: Code::ResourceExhausted, message, transport: false };
                        finished.push((seq, article.id, Err(failure)));
                    } else if let Err((id, f)) = dispatch(&mut streams, &mut next, &mut pending, seq, article) {
                        finished.push((seq, id, Err(f)));
                    }
                }
                event = events.recv() => match event.expect("this task holds a sender") {
                    Event::Resend(seq) => {
                        if let Some((_, article)) = pending.remove(&seq) {
                            if let Err((id, f)) = dispatch(&mut streams, &mut next, &mut pending, seq, article) {
                                finished.push((seq, id, Err(f)));
                            }
                        }
                    }
                    Event::Answer(item) => {
                        let item = *item;
                        let refused = matches!(&item.result, Some(score_articles_response::Result::Error(e)) if e.code == Code::ResourceExhausted as i32);
                        if refused && pending.contains_key(&item.seq) {
                            let (seq, events_tx) = (item.seq, events_tx.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let _ = events_tx.send(Event::Resend(seq));
                            });
                        } else if pending.remove(&item.seq).is_some() {
                            finished.push((item.seq, item.id, answer(item.result)));
                        }
                        // else: not ours, or answered already (sent twice after a reopening).
                    }
                    Event::Ended { stream: k, generation, status } => {
                        if streams[k].generation != generation {
                            continue; // an earlier stream of this slot, already replaced
                        }
                        streams[k].tx = None;
                        let mut lost: Vec<(u64, ArticleInput)> = Vec::new();
                        pending.retain(|&seq, (s, a)| {
                            let mine = *s == k;
                            if mine {
                                lost.push((seq, a.clone()));
                            }
                            !mine
                        });
                        lost.sort_by_key(|(seq, _)| *seq);
                        let work_left = !lost.is_empty() || fed < total;
                        if work_left && streams[k].restarts < STREAM_RESTARTS {
                            let restarts = streams[k].restarts + 1;
                            tracing::warn!(stream = k, restarts, "stream ended ({}): reopening it", status.message());
                            let backoff = Duration::from_millis(200 * u64::from(restarts));
                            streams[k] = Slot::open(self, k, generation + 1, backoff, inflight, events_tx.clone());
                            streams[k].restarts = restarts;
                        }
                        for (seq, article) in lost {
                            if let Err((id, mut f)) = dispatch(&mut streams, &mut next, &mut pending, seq, article) {
                                // No stream left: the stream's own error says best what happened.
                                f.code = status.code();
                                f.message = format!("{} (after {STREAM_RESTARTS} reopenings of its stream)", status.message());
                                finished.push((seq, id, Err(f)));
                            }
                        }
                    }
                },
            }
            for (seq, id, result) in finished {
                done += 1;
                permits.add_permits(1);
                on_result(seq, id, result)?;
            }
        }
        Ok(())
    }
}

/// How often a `dns:///` name is resolved again, to follow replicas that come and go.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// A server address as given: fixed (`HOST:PORT`, `http(s)://HOST:PORT`), or `dns:///NAME:PORT`,
/// a name whose every address is a replica (a Kubernetes headless Service), resolved again
/// every [`DNS_REFRESH`].
enum Target {
    Fixed(String),
    Dns { host: String, port: u16 },
}

impl Target {
    fn parse(addr: &str) -> Result<Self, ClientError> {
        let Some(rest) = addr.strip_prefix("dns:///").or_else(|| addr.strip_prefix("dns:")) else {
            return Ok(Target::Fixed(addr.to_string()));
        };
        let (host, port) = rest
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| ClientError::DnsAddress { addr: addr.to_string() })?;
        let port = port.parse().map_err(|source| ClientError::DnsPort {
            addr: addr.to_string(),
            port: port.to_string(),
            source,
        })?;
        Ok(Target::Dns { host: host.trim_matches(['[', ']']).to_string(), port })
    }

    /// The balancer's key for one resolved address of this name.
    fn key(&self, addr: SocketAddr) -> String {
        match self {
            Target::Fixed(a) => a.clone(),
            Target::Dns { host, port } => format!("dns:///{host}:{port}@{addr}"),
        }
    }

    fn owns(&self, key: &str) -> bool {
        matches!(self, Target::Dns { host, port } if key.starts_with(&format!("dns:///{host}:{port}@")))
    }

    /// Connection options for its addresses: with TLS, the certificate must name the DNS name
    /// (not the address), unless --tls-domain says otherwise.
    fn options(&self, options: &ClientOptions) -> ClientOptions {
        let mut o = options.clone();
        if let Target::Dns { host, .. } = self {
            if o.uses_tls() && o.tls_domain.is_none() {
                o.tls_domain = Some(host.clone());
            }
        }
        o
    }
}

async fn resolve(host: &str, port: u16) -> Result<std::collections::BTreeSet<SocketAddr>, ClientError> {
    Ok(tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ClientError::Resolve { host: host.to_string(), port, source })?
        .collect())
}

/// Follows a DNS name's addresses: adds each new one to the job's servers once it is SERVING,
/// and removes those that left. Ends when the job's connection is gone.
async fn refresh(
    target: Target,
    mut live: std::collections::BTreeSet<String>,
    options: ClientOptions,
    replicas: std::sync::Weak<std::sync::Mutex<Vec<Replica>>>,
) {
    let Target::Dns { host, port } = &target else { return };
    let opts = target.options(&options);
    loop {
        tokio::time::sleep(DNS_REFRESH).await;
        if replicas.strong_count() == 0 {
            return;
        }
        let found = match resolve(host, *port).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("{}; keeping the servers known so far", chain(&e));
                continue;
            }
        };
        let now: std::collections::BTreeMap<String, SocketAddr> =
            found.into_iter().map(|a| (target.key(a), a)).collect();
        let gone: Vec<String> = live.iter().filter(|k| !now.contains_key(*k)).cloned().collect();
        if !gone.is_empty() {
            let Some(list) = replicas.upgrade() else { return };
            for key in &gone {
                tracing::info!("{key}: no longer in DNS; dropping it");
                live.remove(key);
            }
            list.lock().expect("replicas lock").retain(|r| !gone.contains(&r.key));
        }
        for (key, addr) in now {
            if live.contains(&key) {
                continue;
            }
            let Ok(ep) = endpoint(&addr.to_string(), Duration::from_secs(10), &opts) else { continue };
            let Ok(channel) = ep.connect().await else { continue };
            if wait_serving(&key, channel.clone(), Duration::from_secs(120)).await.is_ok() {
                let Some(list) = replicas.upgrade() else { return };
                tracing::info!("{key}: new in DNS and SERVING; adding it");
                live.insert(key.clone());
                list.lock().expect("replicas lock").push(Replica { key, channel });
            }
        }
    }
}

/// How many times one stream of a job is reopened after it ended with articles outstanding.
pub const STREAM_RESTARTS: u32 = 5;

/// What the stream tasks tell the job.
enum Event {
    /// Boxed: an answer is far larger than the other events.
    Answer(Box<pb::ScoreArticlesResponse>),
    /// The stream ended (the server closed it, or it failed); `generation` tells a reopened
    /// slot's streams apart.
    Ended { stream: usize, generation: u64, status: Status },
    /// Send this article again (the server's queue was full).
    Resend(u64),
}

/// One of a job's streams: where to send its articles (`None` once it ended).
struct Slot {
    tx: Option<mpsc::Sender<pb::ScoreArticleRequest>>,
    generation: u64,
    restarts: u32,
}

impl Slot {
    /// Opens a ScoreArticles stream (after `delay`) and forwards what comes back as events.
    fn open(
        remote: &Remote,
        stream: usize,
        generation: u64,
        delay: Duration,
        capacity: usize,
        events: mpsc::UnboundedSender<Event>,
    ) -> Slot {
        // Capacity: at most `inflight` articles are outstanding, so sends never wait.
        let (tx, rx) = mpsc::channel::<pb::ScoreArticleRequest>(capacity);
        // Stream k's g-th opening goes to server k + g: a reopened stream moves to the next one.
        let client = remote.client(stream + generation as usize);
        let call = authorize(tonic::Request::new(ReceiverStream::new(rx)), &remote.auth);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(mut client) = client else {
                let status = Status::unavailable("no server is left to send to");
                let _ = events.send(Event::Ended { stream, generation, status });
                return;
            };
            let status = match client.score_articles(call).await {
                Ok(resp) => {
                    let mut answers = resp.into_inner();
                    loop {
                        match answers.message().await {
                            Ok(Some(item)) => {
                                if events.send(Event::Answer(Box::new(item))).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break Status::unavailable("the server ended the stream"),
                            Err(s) => break s,
                        }
                    }
                }
                Err(s) => s,
            };
            let _ = events.send(Event::Ended { stream, generation, status });
        });
        Slot { tx: Some(tx), generation, restarts: 0 }
    }
}

fn request(seq: u64, article: &ArticleInput) -> pb::ScoreArticleRequest {
    pb::ScoreArticleRequest { article: Some(article.clone().into()), seq }
}

/// Sends an article on the next open stream (round robin), recording it as outstanding there;
/// with no stream open, gives back its id and failure.
fn dispatch(
    streams: &mut [Slot],
    next: &mut usize,
    pending: &mut HashMap<u64, (usize, ArticleInput)>,
    seq: u64,
    article: ArticleInput,
) -> Result<(), (String, Failure)> {
    for _ in 0..streams.len() {
        let k = *next % streams.len();
        *next = next.wrapping_add(1);
        let Some(tx) = &streams[k].tx else { continue };
        if tx.try_send(request(seq, &article)).is_ok() {
            pending.insert(seq, (k, article));
            return Ok(());
        }
        streams[k].tx = None;
    }
    let failure =
        Failure { code: Code::Unavailable, message: "every stream to the server(s) has ended".into(), transport: true };
    Err((article.id, failure))
}

/// A server's answer to one article.
fn answer(result: Option<score_articles_response::Result>) -> Result<ArticleScore, Failure> {
    match result {
        Some(score_articles_response::Result::Score(s)) => ArticleScore::try_from(s).map_err(|e| Failure {
            code: Code::Internal,
            message: format!("the server sent a malformed result: {e}"),
            transport: false,
        }),
        Some(score_articles_response::Result::Error(e)) => {
            Err(Failure { code: Code::from_i32(e.code), message: e.message, transport: false })
        }
        None => {
            Err(Failure { code: Code::Internal, message: "the server sent an empty result".into(), transport: false })
        }
    }
}

/// Connects to one server, waits until it is SERVING, and asks its message limit.
async fn connect_one(
    addr: &str,
    options: &ClientOptions,
    auth: &Option<AsciiMetadataValue>,
) -> Result<(Channel, Option<usize>), ClientError> {
    let ep = endpoint(addr, Duration::from_secs(10), options)?;
    let channel = ep.connect().await.map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
    wait_serving(addr, channel.clone(), Duration::from_secs(120)).await?;
    let info = StanceClient::new(channel.clone())
        .get_model_info(authorize(tonic::Request::new(pb::GetModelInfoRequest {}), auth))
        .await
        .map_err(|status| ClientError::ModelInfo { addr: addr.to_string(), status })?;
    let limit = info.get_ref().limits.as_ref().map(|l| l.max_message_bytes as usize).filter(|&l| l > 0);
    Ok((channel, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert!(matches!(Target::parse("127.0.0.1:50051").unwrap(), Target::Fixed(a) if a == "127.0.0.1:50051"));
        for a in ["dns:///stance-grpc.ns.svc:50051", "dns:stance-grpc.ns.svc:50051"] {
            let t = Target::parse(a).unwrap();
            assert!(matches!(&t, Target::Dns { host, port: 50051 } if host == "stance-grpc.ns.svc"), "{a}");
            let key = t.key("10.0.0.7:50051".parse().unwrap());
            assert!(t.owns(&key) && !t.owns("dns:///other:50051@10.0.0.7:50051"), "{key}");
        }
        assert!(matches!(Target::parse("dns:///[::1]:7").unwrap(), Target::Dns { host, port: 7 } if host == "::1"));
        for bad in ["dns:///name", "dns:///:80", "dns:///name:http"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        // With TLS, a DNS name's replicas are checked against the name.
        let tls = ClientOptions { tls: true, ..Default::default() };
        let t = Target::parse("dns:///stance.example:443").unwrap();
        assert_eq!(t.options(&tls).tls_domain.as_deref(), Some("stance.example"));
        assert_eq!(t.options(&ClientOptions::default()).tls_domain, None);
    }
}
