//! A client of the `stance.v1` service, used by `stance score --remote` and `stance batch
//! --remote`: connects to one or several servers (load spread with tonic's
//! `Channel::balance_list`), waits until they report SERVING, and scores articles over
//! `ScoreArticles` streams with a bounded number in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::input::ArticleInput;
use crate::scores::ArticleScore;
use crate::wire::pb::stance_client::StanceClient;
use crate::wire::pb::{self, score_articles_response};
use crate::wire::SERVICE_NAME;

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

fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid server address {addr:?}; expected HOST:PORT"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true))
}

/// Waits until the server at `channel` reports SERVING for `stance.v1.Stance` (it answers
/// NOT_SERVING while its model loads).
async fn wait_serving(addr: &str, channel: Channel, patience: Duration) -> Result<()> {
    let mut health = HealthClient::new(channel);
    let until = tokio::time::Instant::now() + patience;
    loop {
        let status = health.check(HealthCheckRequest { service: SERVICE_NAME.into() }).await;
        match status {
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
            Ok(_) => {}
            Err(s) if s.code() == Code::Unavailable => {}
            Err(s) => bail!("{addr}: health check failed: {s}"),
        }
        if tokio::time::Instant::now() >= until {
            bail!("{addr}: the server did not become SERVING within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `grpc.health.v1` says of `stance.v1.Stance` at `addr`, asked once: connecting and the
/// answer together take at most `timeout`.
pub async fn health(addr: &str, timeout: Duration) -> Result<ServingStatus> {
    let ask = async {
        let channel = endpoint(addr, timeout)?
            .connect()
            .await
            .with_context(|| format!("cannot connect to the stance server at {addr}"))?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest { service: SERVICE_NAME.into() })
            .await
            .map_err(|s| anyhow::anyhow!("{addr}: health check failed: {}", s.message()))?;
        Ok(ServingStatus::try_from(answer.get_ref().status).unwrap_or(ServingStatus::Unknown))
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no health answer within {timeout:?}"))?
}

/// A connection to one or several servers.
#[derive(Clone)]
pub struct Remote {
    client: StanceClient<Channel>,
    servers: usize,
    /// The largest request any of the servers accepts (their `--max-message-bytes`, from
    /// GetModelInfo), capped by ours: a larger article is refused here, as its own error,
    /// instead of breaking the stream it would travel on.
    max_request_bytes: usize,
}

impl Remote {
    /// Connects to every address (failing with a clear message when one cannot be reached) and
    /// waits for each to be SERVING; with several addresses requests are spread across them.
    pub async fn connect(addrs: &[String], max_message_bytes: usize) -> Result<Self> {
        if addrs.is_empty() {
            bail!("no server address given");
        }
        let mut endpoints = Vec::new();
        let mut max_request_bytes = max_message_bytes;
        for addr in addrs {
            let ep = endpoint(addr, Duration::from_secs(10))?;
            let channel =
                ep.connect().await.with_context(|| format!("cannot connect to the stance server at {addr}"))?;
            wait_serving(addr, channel.clone(), Duration::from_secs(120)).await?;
            let info = StanceClient::new(channel.clone())
                .get_model_info(pb::GetModelInfoRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{addr}: GetModelInfo failed: {}", s.message()))?;
            if let Some(limit) = info.get_ref().limits.as_ref().map(|l| l.max_message_bytes as usize) {
                if limit > 0 {
                    max_request_bytes = max_request_bytes.min(limit);
                }
            }
            endpoints.push((ep, channel));
        }
        let channel = if endpoints.len() == 1 {
            endpoints.pop().expect("one").1
        } else {
            Channel::balance_list(endpoints.into_iter().map(|(ep, _)| ep))
        };
        let client = StanceClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { client, servers: addrs.len(), max_request_bytes })
    }

    pub fn client(&self) -> StanceClient<Channel> {
        self.client.clone()
    }

    /// Scores `items` (a caller's sequence number and the article) over `ScoreArticles`
    /// streams (two per server, so a balanced channel spreads them), with at most `inflight`
    /// articles outstanding. `on_result` is called once per item as results arrive, in any
    /// order. Articles the server refuses with RESOURCE_EXHAUSTED (its queue is full) are sent
    /// again after a short pause.
    pub async fn score_all<F>(&self, items: Vec<(u64, ArticleInput)>, inflight: usize, mut on_result: F) -> Result<()>
    where
        F: FnMut(u64, String, Result<ArticleScore, Failure>) -> Result<()>,
    {
        let total = items.len();
        if total == 0 {
            return Ok(());
        }
        let inflight = inflight.max(1);
        let n_streams = (2 * self.servers).min(total).max(1);
        let (res_tx, mut res_rx) =
            mpsc::channel::<(usize, Result<pb::ScoreArticlesResponse, Status>)>(inflight + n_streams);
        let mut senders = Vec::with_capacity(n_streams);
        for k in 0..n_streams {
            let (tx, rx) = mpsc::channel::<pb::ScoreArticleRequest>(inflight);
            let mut client = self.client.clone();
            let res_tx = res_tx.clone();
            tokio::spawn(async move {
                match client.score_articles(ReceiverStream::new(rx)).await {
                    Ok(resp) => {
                        let mut stream = resp.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(item)) => {
                                    if res_tx.send((k, Ok(item))).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => return,
                                Err(s) => {
                                    let _ = res_tx.send((k, Err(s))).await;
                                    return;
                                }
                            }
                        }
                    }
                    Err(s) => {
                        let _ = res_tx.send((k, Err(s))).await;
                    }
                }
            });
            senders.push(tx);
        }
        drop(res_tx);

        // What is outstanding: seq → (stream, article), for retries and stream failures.
        let pending: Arc<Mutex<HashMap<u64, (usize, ArticleInput)>>> = Arc::new(Mutex::new(HashMap::new()));
        let permits = Arc::new(Semaphore::new(inflight));
        let dead: Arc<Vec<AtomicBool>> = Arc::new((0..n_streams).map(|_| AtomicBool::new(false)).collect());
        let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<(u64, String, Failure)>();
        {
            let (senders, pending, permits, fail_tx, dead) =
                (senders.clone(), pending.clone(), permits.clone(), fail_tx.clone(), dead.clone());
            let max_request_bytes = self.max_request_bytes;
            tokio::spawn(async move {
                for (i, (seq, article)) in items.into_iter().enumerate() {
                    permits.acquire().await.expect("never closed").forget();
                    let id = article.id.clone();
                    let req = pb::ScoreArticleRequest { article: Some(article.clone().into()), seq };
                    let size = prost::Message::encoded_len(&req);
                    if size > max_request_bytes {
                        let failure = Failure {
                            code: Code::ResourceExhausted,
                            message: format!(
                                "the article is {size} bytes as a request, more than the server accepts ({max_request_bytes} bytes, its --max-message-bytes); split it or raise the limit"
                            ),
                            transport: false,
                        };
                        let _ = fail_tx.send((seq, id, failure));
                        continue;
                    }
                    let n = senders.len();
                    let Some(k) = (0..n).map(|j| (i + j) % n).find(|&k| !dead[k].load(Ordering::Relaxed)) else {
                        let failure = Failure {
                            code: Code::Unavailable,
                            message: "every stream to the server(s) has ended".into(),
                            transport: true,
                        };
                        let _ = fail_tx.send((seq, id, failure));
                        continue;
                    };
                    pending.lock().expect("pending lock").insert(seq, (k, article));
                    if senders[k].send(req).await.is_err()
                        && pending.lock().expect("pending lock").remove(&seq).is_some()
                    {
                        let failure = Failure {
                            code: Code::Unavailable,
                            message: "the stream to the server has ended".into(),
                            transport: true,
                        };
                        let _ = fail_tx.send((seq, id, failure));
                    }
                }
            });
        }
        drop(fail_tx);

        let mut done = 0usize;
        while done < total {
            tokio::select! {
                Some((seq, id, failure)) = fail_rx.recv() => {
                    done += 1;
                    permits.add_permits(1);
                    on_result(seq, id, Err(failure))?;
                }
                msg = res_rx.recv() => {
                    let Some((k, msg)) = msg else { break };
                    match msg {
                        Ok(item) => {
                            let retry = matches!(&item.result, Some(score_articles_response::Result::Error(e)) if e.code == Code::ResourceExhausted as i32);
                            if retry {
                                let article = pending.lock().expect("pending lock").get(&item.seq).map(|p| p.1.clone());
                                if let Some(article) = article {
                                    let tx = senders[k].clone();
                                    let seq = item.seq;
                                    tokio::spawn(async move {
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                        let _ = tx.send(pb::ScoreArticleRequest { article: Some(article.into()), seq }).await;
                                    });
                                    continue;
                                }
                            }
                            if pending.lock().expect("pending lock").remove(&item.seq).is_none() {
                                continue; // not ours, or answered already
                            }
                            done += 1;
                            permits.add_permits(1);
                            let result = match item.result {
                                Some(score_articles_response::Result::Score(s)) => ArticleScore::try_from(s).map_err(|e| Failure {
                                    code: Code::Internal,
                                    message: format!("the server sent a malformed result: {e}"),
                                    transport: false,
                                }),
                                Some(score_articles_response::Result::Error(e)) => {
                                    Err(Failure { code: Code::from_i32(e.code), message: e.message, transport: false })
                                }
                                None => Err(Failure { code: Code::Internal, message: "the server sent an empty result".into(), transport: false }),
                            };
                            on_result(item.seq, item.id, result)?;
                        }
                        Err(status) => {
                            // The whole stream failed: everything outstanding on it is lost.
                            dead[k].store(true, Ordering::Relaxed);
                            let lost: Vec<(u64, ArticleInput)> = {
                                let mut p = pending.lock().expect("pending lock");
                                let seqs: Vec<u64> = p.iter().filter(|(_, (s, _))| *s == k).map(|(q, _)| *q).collect();
                                seqs.into_iter().filter_map(|q| p.remove(&q).map(|(_, a)| (q, a))).collect()
                            };
                            for (seq, article) in lost {
                                done += 1;
                                permits.add_permits(1);
                                let failure = Failure { code: status.code(), message: status.message().to_string(), transport: true };
                                on_result(seq, article.id, Err(failure))?;
                            }
                        }
                    }
                }
            }
        }
        drop(senders);
        // Streams that all failed leave items that were never sent: report them too.
        if done < total {
            bail!("{} articles got no answer: every stream to the server(s) ended", total - done);
        }
        Ok(())
    }
}
