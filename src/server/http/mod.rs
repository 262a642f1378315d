//! The HTTP/JSON face of `stance serve`, on the gRPC port (tonic serves HTTP/1.1 and HTTP/2 on
//! one listener, with the same TLS): `POST /v1/score`, `POST /v1/score:batch` (NDJSON in and
//! out), `GET /v1/actors`, `GET /v1/info`, `GET /health`, the OpenAPI document at
//! `/openapi.json` and the analysts' page at `/` (its assets are compiled into the binary).
//!
//! Nothing is scored here: every article goes through [`StanceService::score_input`], the
//! admission, queue, compute threads and deadline of the gRPC calls, with the same API key
//! (`authorization: Bearer KEY`), limits (`--max-message-bytes` bounds a body, or one NDJSON
//! line) and metrics (`stance_requests_total{rpc="http:score"}`, codes named as gRPC's).
//! Errors are `{"code", "message"}` with the HTTP status that fits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::StreamExt;
use tonic::Code;

use super::auth::ApiKey;
use super::{Arrival, RequestMetric, ScoreError, StanceService};
use crate::input::{ArticleInput, ArticleRecord};

/// The OpenAPI 3 description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The header that bounds a request's time, in seconds (`2`, `0.5`): gRPC's `grpc-timeout`.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";

#[derive(Clone)]
struct Http {
    svc: StanceService,
    key: ApiKey,
    /// Largest body (`/v1/score`) or NDJSON line (`/v1/score:batch`), in bytes.
    max_body: usize,
    /// Lines of one batch request scored at once.
    inflight: usize,
}

/// The routes of the HTTP face; the gRPC services are added beside them.
pub(crate) fn router(svc: StanceService, key: ApiKey) -> Router {
    let state =
        Http { max_body: svc.config.max_message_bytes, inflight: svc.config.max_stream_inflight.max(1), svc, key };
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
        .route("/openapi.json", get(|| async { asset("application/json", OPENAPI) }))
        .route("/health", get(health))
        .route("/v1/info", get(info))
        .route("/v1/actors", get(actors))
        .route("/v1/score", post(score))
        .route("/v1/score:batch", post(score_batch))
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this path does not take that method; see /openapi.json")
        })
        .fallback(not_found)
        .with_state(state)
}

/// An unknown path: a gRPC call to a service this server lacks gets gRPC's UNIMPLEMENTED (as
/// tonic's own router answers), anything else a JSON 404.
async fn not_found(headers: HeaderMap) -> Response {
    let grpc = headers.get(header::CONTENT_TYPE).is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("").into_http::<()>().into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    ApiError::new(StatusCode::NOT_FOUND, "no such path; the API is described at /openapi.json").into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Everything the page needs is served from here: no other origin, no inline script.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    r
}

/// An HTTP error: `{"code", "message"}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The `code` of the JSON body: the name of the status's case.
    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid_argument",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::TOO_MANY_REQUESTS => "resource_exhausted",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "deadline_exceeded",
            _ => "internal",
        }
    }

    /// The gRPC code counted in `stance_requests_total`, so both faces count alike.
    fn grpc_code(&self) -> Code {
        match self.status {
            StatusCode::BAD_REQUEST => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
    }

    fn body(&self) -> serde_json::Value {
        json!({"code": self.code(), "message": self.message})
    }
}

impl From<ScoreError> for ApiError {
    fn from(e: ScoreError) -> Self {
        let status = match e.code() {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match e {
            // The gRPC message points at gRPC health; here the probe is GET /health.
            ScoreError::Loading => {
                "the model is still loading; retry shortly (GET /health answers 503 until it is ready)".to_string()
            }
            e => e.to_string(),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status, self.body().to_string().into());
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

impl Http {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.key.accepts(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send the header `Authorization: Bearer KEY`",
            ))
        }
    }
}

/// When the request reached the server: stamped by the server's layer for both faces.
fn arrival(req: &Request) -> Instant {
    req.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0)
}

/// The deadline from `X-Request-Timeout` (seconds), counted from `arrival`.
fn deadline_of(headers: &HeaderMap, arrival: Instant) -> Result<Option<Instant>, ApiError> {
    let Some(v) = headers.get(TIMEOUT_HEADER) else { return Ok(None) };
    let bad = || {
        ApiError::bad_request(format!(
            "X-Request-Timeout {:?} is not a number of seconds; give e.g. 2 or 0.5",
            String::from_utf8_lossy(v.as_bytes())
        ))
    };
    let secs: f64 = v.to_str().map_err(|_| bad())?.trim().parse().map_err(|_| bad())?;
    let timeout = Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    Ok(Some(arrival.checked_add(timeout).unwrap_or(arrival + Duration::from_secs(365 * 86_400))))
}

/// The whole body, refused with 413 past `limit` bytes (counted as it arrives, so a client
/// cannot make the server hold more).
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large("the request body", limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{what} is larger than the server accepts, --max-message-bytes ({limit} bytes)"),
    )
}

/// A JSON article (`{"id"?, "text", "mentions"?, "actors"?, "sentences"?, "meta"?}`), or with
/// `Content-Type: text/plain` the article's text itself.
fn parse_article(headers: &HeaderMap, body: &[u8]) -> Result<ArticleRecord, ApiError> {
    let plain = headers.get(header::CONTENT_TYPE).is_some_and(|c| c.as_bytes().starts_with(b"text/plain"));
    if plain {
        let text = std::str::from_utf8(body).map_err(|e| {
            ApiError::bad_request(format!("the body is not UTF-8 text (first bad byte at offset {})", e.valid_up_to()))
        })?;
        let article = ArticleInput { text: text.to_string(), ..Default::default() };
        return Ok(ArticleRecord { article, meta: Default::default() });
    }
    parse_json_article(body)
}

fn parse_json_article(body: &[u8]) -> Result<ArticleRecord, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "not a valid article: {e}; send a JSON object {{\"id\"?, \"text\", \"mentions\"?, \"actors\"?, \"sentences\"?, \"meta\"?}}"
        ))
    })
}

/// Counts one HTTP request in the service's metrics when it ends.
fn finish<T>(metric: RequestMetric, result: &Result<T, ApiError>) {
    metric.done_with(result.as_ref().err().map_or(Code::Ok, ApiError::grpc_code));
}

async fn health(State(h): State<Http>) -> Response {
    if h.svc.serving() {
        return json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"serving"}"#));
    }
    let message = if h.svc.core.get().is_none() {
        "the model is still loading; retry shortly"
    } else {
        "the server is shutting down"
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

async fn info(State(h): State<Http>, headers: HeaderMap) -> Result<Response, ApiError> {
    let metric = RequestMetric::start("http:info", Instant::now());
    let result = h.authorize(&headers).and_then(|()| Ok(h.svc.info()?));
    finish(metric, &result);
    Ok(json_response(StatusCode::OK, to_json(&result?)?))
}

async fn actors(State(h): State<Http>, headers: HeaderMap) -> Result<Response, ApiError> {
    let metric = RequestMetric::start("http:actors", Instant::now());
    let result = h.authorize(&headers).and_then(|()| Ok(h.svc.actors()?));
    finish(metric, &result);
    Ok(json_response(StatusCode::OK, to_json(&json!({ "actors": result? }))?))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("serialising the answer: {e}")))
}

/// `POST /v1/score`: one article; the answer is the JSON of `stance score --format json`.
async fn score(State(h): State<Http>, req: Request) -> Result<Response, ApiError> {
    let started = arrival(&req);
    let metric = RequestMetric::start("http:score", started);
    let result = async {
        h.authorize(req.headers())?;
        let deadline = deadline_of(req.headers(), started)?;
        // Refuse before reading a body that could not be scored anyway.
        h.svc.core()?;
        let (parts, body) = req.into_parts();
        let r = parse_article(&parts.headers, &read_body(body, h.max_body).await?)?;
        Ok(h.svc.score_input(r.article, r.meta, deadline).await?)
    }
    .await;
    finish(metric, &result);
    Ok(json_response(StatusCode::OK, to_json(&result?)?))
}

/// Aborts a line's scoring task when the answer no longer wants it (the client went away).
struct Scoring(tokio::task::JoinHandle<Bytes>);

impl Drop for Scoring {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One answer line for a line that could not be scored.
fn error_line(line: usize, id: Option<&str>, e: &ApiError) -> Bytes {
    let mut v = json!({"line": line, "error": e.body()});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    let mut s = v.to_string();
    s.push('\n');
    s.into()
}

/// `POST /v1/score:batch`: NDJSON in, NDJSON out, one answer line per non-blank input line and
/// in the same order, streamed as they are ready: a score (the JSON of `stance score`) or
/// `{"line", "id"?, "error": {"code", "message"}}`. At most `--max-stream-inflight` lines are
/// scored at once; the rest wait in the request body (flow control), as in ScoreArticles. The
/// deadline, if any, is the whole request's.
async fn score_batch(State(h): State<Http>, req: Request) -> Result<Response, ApiError> {
    let started = arrival(&req);
    let admitted = (|| {
        h.authorize(req.headers())?;
        let deadline = deadline_of(req.headers(), started)?;
        h.svc.core()?;
        Ok(deadline)
    })();
    if admitted.is_err() {
        finish(RequestMetric::start("http:score:batch", started), &admitted);
    }
    let deadline = admitted?;
    let (tasks_tx, mut tasks_rx) = mpsc::channel::<Scoring>(h.inflight);
    let (out_tx, out_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(h.inflight);
    tokio::spawn(read_lines(h.clone(), req.into_body(), deadline, tasks_tx));
    // Answers in input order: each line's task is awaited in turn.
    tokio::spawn(async move {
        while let Some(mut task) = tasks_rx.recv().await {
            let line = match (&mut task.0).await {
                Ok(b) => b,
                Err(e) => error_line(0, None, &ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            };
            if out_tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out_rx)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(r)
}

/// One line of a batch body: its bytes, or that it ran past the line limit.
enum Line {
    Text(Vec<u8>),
    TooLarge,
}

/// Splits a byte stream into lines of at most `limit` bytes, numbered from 1 (blank lines
/// count, so numbers match the client's file, but are not answered); a longer line is
/// dropped as it arrives, up to its newline, and answered as too large.
struct Splitter {
    limit: usize,
    buf: Vec<u8>,
    skipping: bool,
    number: usize,
}

impl Splitter {
    fn new(limit: usize) -> Self {
        Self { limit, buf: Vec::new(), skipping: false, number: 0 }
    }

    /// The lines `chunk` completes.
    fn push(&mut self, mut chunk: &[u8], out: &mut VecDeque<(usize, Line)>) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..i], out);
            chunk = &chunk[i + 1..];
        }
        if !self.skipping {
            self.buf.extend_from_slice(chunk);
            if self.buf.len() > self.limit {
                self.buf = Vec::new();
                self.skipping = true;
            }
        }
    }

    /// The last line, when the body ends without a newline.
    fn end(&mut self, out: &mut VecDeque<(usize, Line)>) {
        if self.skipping || !self.buf.is_empty() {
            self.take(&[], out);
        }
    }

    fn take(&mut self, tail: &[u8], out: &mut VecDeque<(usize, Line)>) {
        self.number += 1;
        if std::mem::take(&mut self.skipping) || self.buf.len() + tail.len() > self.limit {
            self.buf.clear();
            out.push_back((self.number, Line::TooLarge));
            return;
        }
        let mut line = std::mem::take(&mut self.buf);
        line.extend_from_slice(tail);
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push_back((self.number, Line::Text(line)));
        }
    }
}

/// Reads the batch body and starts each line's scoring, holding at most `inflight` lines at
/// once. Stops at shutdown (its last answer says which lines were not read) or when the client
/// stops reading.
async fn read_lines(h: Http, body: Body, deadline: Option<Instant>, tasks: mpsc::Sender<Scoring>) {
    let permits = Arc::new(Semaphore::new(h.inflight));
    let mut draining = h.svc.draining.clone();
    let mut stream = body.into_data_stream();
    let mut splitter = Splitter::new(h.max_body);
    let mut ready: VecDeque<(usize, Line)> = VecDeque::new();
    // The number of the last line handed to a scoring task.
    let mut last_read = 0usize;
    let mut ended = false;
    loop {
        while let Some((n, line)) = ready.pop_front() {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = tasks.closed() => return,
                () = shutdown(&mut draining) => return shutdown_line(&tasks, last_read).await,
            };
            last_read = n;
            let h = h.clone();
            let task = tokio::spawn(async move {
                let _permit = permit;
                score_line(&h, n, line, deadline).await
            });
            if tasks.send(Scoring(task)).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = tasks.closed() => return,
            () = shutdown(&mut draining) => return shutdown_line(&tasks, last_read).await,
        };
        match chunk {
            Some(Ok(c)) => splitter.push(&c, &mut ready),
            Some(Err(e)) => {
                // The client's side broke: nobody is left to answer.
                tracing::debug!(error = %e, "score:batch: reading the body failed");
                return;
            }
            None => {
                splitter.end(&mut ready);
                ended = true;
            }
        }
    }
}

/// Resolves once shutdown begins (the watch's guard is dropped here, not held across awaits).
async fn shutdown(draining: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = draining.wait_for(|d| *d).await;
}

async fn shutdown_line(tasks: &mpsc::Sender<Scoring>, last_read: usize) {
    let read = if last_read == 0 {
        "no line of this request was read".to_string()
    } else {
        format!("the lines after line {last_read} were not read")
    };
    let e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the server is shutting down: {read}; the lines read were answered; send the rest again"),
    );
    let line = error_line(last_read + 1, None, &e);
    let _ = tasks.send(Scoring(tokio::spawn(async move { line }))).await;
}

/// Scores one NDJSON line (number `n` of the body).
async fn score_line(h: &Http, n: usize, line: Line, deadline: Option<Instant>) -> Bytes {
    let metric = RequestMetric::start("http:score:batch", Instant::now());
    let mut id = None;
    let result = async {
        let line = match line {
            Line::Text(t) => t,
            Line::TooLarge => return Err(too_large(&format!("line {n}"), h.max_body)),
        };
        let r = parse_json_article(&line).map_err(|e| ApiError::bad_request(format!("line {n}: {}", e.message)))?;
        id = Some(r.article.id.clone());
        Ok(h.svc.score_input(r.article, r.meta, deadline).await?)
    }
    .await;
    finish(metric, &result);
    match result.and_then(|s| to_json(&s)) {
        Ok(b) => {
            let mut v = b.to_vec();
            v.push(b'\n');
            v.into()
        }
        Err(e) => error_line(n, id.as_deref(), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(limit: usize, chunks: &[&[u8]]) -> Vec<(usize, Option<String>)> {
        let mut s = Splitter::new(limit);
        let mut out = VecDeque::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.end(&mut out);
        out.into_iter()
            .map(|(n, l)| match l {
                Line::Text(t) => (n, Some(String::from_utf8(t).unwrap())),
                Line::TooLarge => (n, None),
            })
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_keep_their_numbers() {
        let got = split(100, &[b"{\"a\"", b":1}\n\n  \n{\"b\":2}\n{\"c\"", b":3}"]);
        assert_eq!(
            got,
            vec![(1, Some("{\"a\":1}".into())), (4, Some("{\"b\":2}".into())), (5, Some("{\"c\":3}".into()))]
        );
    }

    #[test]
    fn a_long_line_is_dropped_as_it_arrives_and_the_next_one_is_read() {
        let got = split(8, &[b"12345", b"67890", b"abc\nok\n", b"123456789"]);
        assert_eq!(got, vec![(1, None), (2, Some("ok".into())), (3, None)]);
        // Exactly the limit passes; one byte more, in the final piece of a line, does not.
        assert_eq!(split(3, &[b"abc\nabcd\n"]), vec![(1, Some("abc".into())), (2, None)]);
    }

    #[test]
    fn timeout_header_is_seconds() {
        let now = Instant::now();
        let mut h = HeaderMap::new();
        assert_eq!(deadline_of(&h, now).unwrap(), None);
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("1.5"));
        assert_eq!(deadline_of(&h, now).unwrap(), Some(now + Duration::from_millis(1500)));
        for bad in ["-1", "soon", "1e400", ""] {
            h.insert(TIMEOUT_HEADER, HeaderValue::from_static(bad));
            let e = deadline_of(&h, now).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains("X-Request-Timeout"), "{}", e.message);
        }
    }

    #[test]
    fn every_score_error_has_its_status() {
        let cases = [
            (ScoreError::Loading, 503),
            (ScoreError::Invalid("x".into()), 400),
            (ScoreError::QueueFull { capacity: 1 }, 429),
            (ScoreError::QueueTokensFull { queued: 2, max: 1 }, 429),
            (ScoreError::TooLittleTime { wait: Duration::ZERO, left: Duration::ZERO }, 429),
            (ScoreError::DeadlineExceeded, 504),
            (ScoreError::ShuttingDown, 503),
            (ScoreError::Cancelled, 503),
            (ScoreError::Internal("x".into()), 500),
        ];
        for (e, status) in cases {
            let a = ApiError::from(e.clone());
            assert_eq!(a.status.as_u16(), status, "{e:?}");
            assert_eq!(a.grpc_code(), e.code(), "{e:?}");
        }
    }
}
