//! The HTTP/JSON API of the real `stance serve` binary, on the gRPC port: every route, the
//! same JSON as `stance score --format json`, errors with their statuses, the API key, the
//! deadline header, NDJSON batches with per-line errors, a full queue, the metrics listener's
//! paths, and every answer checked against the OpenAPI document the server serves.

mod common;

use std::time::Duration;

use common::{fixture_text, Server};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const KEY: &str = "s3cret-key";

/// An HTTP/1.1 client for one server.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// The server's OpenAPI document, once fetched.
    doc: Option<Value>,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `{"code", "message"}` of an error answer.
    fn error(&self, status: u16) -> (String, String) {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.content_type, "application/json");
        let v = self.json();
        (v["code"].as_str().unwrap().to_string(), v["message"].as_str().unwrap().to_string())
    }
}

impl Api {
    fn new(addr: &str) -> Self {
        Api { client: Client::builder(TokioExecutor::new()).build_http(), base: format!("http://{addr}"), doc: None }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        let mut req = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.client.request(req.body(Full::new(body.into())).unwrap()).await.expect("HTTP request");
        let status = res.status().as_u16();
        let content_type =
            res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = res.into_body().collect().await.expect("the body").to_bytes().to_vec();
        Answer { status, content_type, body }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[("authorization", &format!("Bearer {KEY}"))], Bytes::new()).await
    }

    async fn post(&self, path: &str, content_type: &str, body: impl Into<Bytes>) -> Answer {
        let auth = format!("Bearer {KEY}");
        self.call("POST", path, &[("authorization", &auth), ("content-type", content_type)], body).await
    }

    /// Checks an answer against what the OpenAPI document says `method path` answers with its
    /// status and content type (each line of an NDJSON body separately).
    fn conforms(&self, method: &str, path: &str, a: &Answer) {
        let ctype = a.content_type.split(';').next().unwrap();
        let instances: Vec<Value> = if ctype == "application/x-ndjson" {
            String::from_utf8(a.body.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        } else {
            vec![a.json()]
        };
        for v in instances {
            let errors = self.violations(method, path, a.status, ctype, &v);
            assert!(errors.is_empty(), "{method} {path} {}: {errors:?}\n{v}", a.status);
        }
    }

    /// How `instance` departs from the schema of `method path`'s answer with `status`.
    fn violations(&self, method: &str, path: &str, status: u16, ctype: &str, instance: &Value) -> Vec<String> {
        let doc = self.doc.as_ref().expect("the document is fetched first");
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the OpenAPI document");
        let mut response = &op["responses"][status.to_string()];
        if let Some(r) = response.get("$ref") {
            response = resolve(doc, r.as_str().unwrap());
        }
        assert!(response.is_object(), "{method} {path}: status {status} is not documented");
        let schema = &response["content"][ctype]["schema"];
        assert!(schema.is_object(), "{method} {path} {status}: content type {ctype} is not documented");
        // The schema is checked as part of the whole document, so that its `$ref`s resolve.
        let mut root = doc.clone();
        for (k, v) in schema.as_object().unwrap() {
            root[k] = v.clone();
        }
        let validator = jsonschema::validator_for(&root).expect("a valid schema");
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
    }
}

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    doc.pointer(r.strip_prefix('#').unwrap()).unwrap_or_else(|| panic!("{r} does not resolve"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `GET /health` until 200; every earlier answer is the documented 503.
async fn ready(api: &Api) -> Vec<Answer> {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let mut loading = Vec::new();
    loop {
        let a = api.call("GET", "/health", &[], Bytes::new()).await;
        if a.status == 200 {
            assert_eq!(a.json(), json!({"status": "serving"}));
            return loading;
        }
        let (code, message) = a.error(503);
        assert_eq!(code, "unavailable");
        assert!(message.contains("loading"), "{message}");
        loading.push(a);
        assert!(std::time::Instant::now() < until, "not serving after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented_and_scores_as_the_cli() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&["--api-key", KEY, "--metrics-addr", &metrics, "--max-message-bytes", "65536"]);
    let mut api = Api::new(&server.addr);
    let loading = ready(&api).await;

    let doc = api.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    api.doc = Some(doc.json());
    assert!(api.doc.as_ref().unwrap()["openapi"].as_str().unwrap().starts_with("3."));
    for a in &loading {
        api.conforms("get", "/health", a);
    }
    api.conforms("get", "/health", &api.call("GET", "/health", &[], Bytes::new()).await);

    // The page and its assets, open without a key.
    let page = api.call("GET", "/", &[], Bytes::new()).await;
    assert_eq!((page.status, page.content_type.as_str()), (200, "text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&page.body).contains("<script src=\"/app.js\""));
    for (path, ctype) in [("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8")] {
        let a = api.call("GET", path, &[], Bytes::new()).await;
        assert_eq!((a.status, a.content_type.as_str()), (200, ctype), "{path}");
        assert!(!a.body.is_empty(), "{path}");
    }

    // The same JSON as the CLI, for a JSON article and for plain text.
    let text = fixture_text();
    let want = serde_json::from_str::<Value>(&common::in_process_fixture()).unwrap();
    let a = api.post("/v1/score", "application/json", json!({"id": "article.txt", "text": text}).to_string()).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    api.conforms("post", "/v1/score", &a);
    common::assert_json_close(&a.json(), &want, 1e-5, "$");
    // The check can fail: a score missing a field, with one more, or with a probability out of
    // range does not pass.
    let mut broken = a.json();
    broken.as_object_mut().unwrap().remove("sentiment");
    broken["sentences"][0]["sentiment"]["negative"] = json!(1.5);
    broken["actors"][0]["bogus"] = json!(1);
    let errors = api.violations("post", "/v1/score", 200, "application/json", &broken);
    assert_eq!(errors.len(), 3, "{errors:?}");
    let a = api.post("/v1/score", "text/plain; charset=utf-8", text.clone()).await;
    let mut plain = want.clone();
    plain["id"] = json!("");
    common::assert_json_close(&a.json(), &plain, 1e-5, "$");
    // Metadata comes back as it was sent, and is in the document.
    let meta = json!({"source": "Wire", "published": "2020-11-10", "desk": "Caucasus"});
    let a = api.post("/v1/score", "application/json", json!({"id": "m", "text": text, "meta": meta}).to_string()).await;
    api.conforms("post", "/v1/score", &a);
    assert_eq!(a.json()["meta"], meta);
    // Request actors: sentiment only with none.
    let a = api.post("/v1/score", "application/json", json!({"text": text, "actors": []}).to_string()).await;
    assert_eq!(a.json()["actors"], json!([]));

    // Info and actors.
    let info = api.get("/v1/info").await;
    api.conforms("get", "/v1/info", &info);
    assert_eq!(info.json()["name"], want["model"]["name"]);
    assert_eq!(info.json()["limits"]["max_message_bytes"], 65536);
    let actors = api.get("/v1/actors").await;
    api.conforms("get", "/v1/actors", &actors);
    assert!(actors.json()["actors"].as_array().unwrap().iter().any(|a| a["name"] == "Russia"));

    // The API key: missing or wrong is 401, for every /v1/ route.
    for (method, path) in
        [("GET", "/v1/info"), ("GET", "/v1/actors"), ("POST", "/v1/score"), ("POST", "/v1/score:batch")]
    {
        for auth in [None, Some("Bearer wrong"), Some(KEY)] {
            let headers: Vec<(&str, &str)> = auth.map(|v| ("authorization", v)).into_iter().collect();
            let a = api.call(method, path, &headers, "{\"text\": \"Russia said.\"}").await;
            let (code, message) = a.error(401);
            assert_eq!(code, "unauthenticated");
            assert!(message.contains("Authorization: Bearer KEY"), "{message}");
            api.conforms(&method.to_lowercase(), path, &a);
        }
    }

    // Bad input: what and where, as 400.
    let bad = [
        ("application/json", "{\"text\": ".to_string(), "not a valid article: EOF"),
        ("application/json", "{\"id\": \"x\"}".to_string(), "missing field `text`"),
        ("application/json", json!({"text": "  \n"}).to_string(), "the text is empty"),
        (
            "application/json",
            json!({"text": "Russia said.", "mentions": [{"start": 0, "end": 99, "actor": "Russia"}]}).to_string(),
            "mention 0: end 99 is beyond the end of the text",
        ),
        (
            "application/json",
            json!({"text": "Russia said.", "meta": {"published": "yesterday"}}).to_string(),
            "meta.published: \"yesterday\" is not an ISO date",
        ),
        ("application/json", json!({"text": "Russia said.", "meta": {"n": 3}}).to_string(), "expected a string"),
    ];
    for (ctype, body, want) in bad {
        let a = api.post("/v1/score", ctype, body.clone()).await;
        let (code, message) = a.error(400);
        assert_eq!(code, "invalid_argument");
        assert!(message.contains(want), "{body}: {message}");
        api.conforms("post", "/v1/score", &a);
    }
    let a = api.post("/v1/score", "text/plain", &b"Russia \xff said."[..]).await;
    assert!(a.error(400).1.contains("not UTF-8 text (first bad byte at offset 7)"));

    // Over --max-message-bytes: 413 before it is all read.
    let a = api.post("/v1/score", "text/plain", "word ".repeat(20_000)).await;
    let (code, message) = a.error(413);
    assert_eq!(code, "too_large");
    assert!(message.contains("--max-message-bytes (65536 bytes)"), "{message}");
    api.conforms("post", "/v1/score", &a);

    // Deadlines: a bad header is 400, one already passed is 504.
    let auth = format!("Bearer {KEY}");
    for (timeout, status, code) in [("soon", 400, "invalid_argument"), ("0.000001", 504, "deadline_exceeded")] {
        let headers = [("authorization", auth.as_str()), ("x-request-timeout", timeout)];
        let a = api.call("POST", "/v1/score", &headers, json!({"text": text}).to_string()).await;
        assert_eq!(a.error(status).0, code, "{timeout}");
        api.conforms("post", "/v1/score", &a);
    }
    let headers = [("authorization", auth.as_str()), ("x-request-timeout", "30")];
    assert_eq!(api.call("POST", "/v1/score", &headers, json!({"text": text}).to_string()).await.status, 200);

    // NDJSON: one answer per non-blank line, in order; bad lines answered in place.
    let long = format!("{{\"id\": \"long\", \"text\": \"{}\"}}", "word ".repeat(20_000));
    let body = [
        json!({"id": "a", "text": text}).to_string(),
        String::new(),
        "{\"id\": ".to_string(),
        long,
        json!({"id": "e", "text": " "}).to_string(),
        json!({"id": "f", "text": "Ankara and Moscow agreed."}).to_string(),
    ]
    .join("\n");
    let a = api.post("/v1/score:batch", "application/x-ndjson", body).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, "application/x-ndjson"));
    api.conforms("post", "/v1/score:batch", &a);
    let lines: Vec<Value> =
        String::from_utf8(a.body.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    let mut first = want.clone();
    first["id"] = json!("a");
    common::assert_json_close(&lines[0], &first, 1e-5, "$[0]");
    assert_eq!((lines[1]["line"].as_u64(), lines[1]["error"]["code"].as_str()), (Some(3), Some("invalid_argument")));
    assert!(lines[1]["error"]["message"].as_str().unwrap().starts_with("line 3: not a valid article"));
    assert_eq!((lines[2]["line"].as_u64(), lines[2]["error"]["code"].as_str()), (Some(4), Some("too_large")));
    assert_eq!((lines[3]["line"].as_u64(), lines[3]["id"].as_str()), (Some(5), Some("e")));
    assert_eq!(lines[4]["id"], "f");
    assert_eq!(lines[4]["actors"].as_array().unwrap().len(), 2, "{}", lines[4]);

    // Unknown paths and methods, as JSON; gRPC on the same port still answers.
    let a = api.get("/nope").await;
    assert_eq!(a.error(404).0, "not_found");
    let a = api.get("/v1/score").await;
    assert_eq!(a.error(405).0, "method_not_allowed");
    {
        use stance::wire::pb;
        let mut c = pb::stance_client::StanceClient::connect(server.url()).await.unwrap();
        let mut req = tonic::Request::new(pb::ListActorsRequest {});
        req.metadata_mut().insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        assert!(!c.list_actors(req).await.unwrap().into_inner().actors.is_empty());
        // gRPC echoes meta too.
        let mut article = pb::Article { id: "g".into(), text: "Baku objected.".into(), ..Default::default() };
        article.meta.insert("source".into(), "Wire".into());
        let mut req = tonic::Request::new(pb::ScoreArticleRequest { article: Some(article), seq: 0 });
        req.metadata_mut().insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        let score = c.score_article(req).await.unwrap().into_inner().score.unwrap();
        assert_eq!(score.meta.get("source").map(String::as_str), Some("Wire"));
    }

    // The metrics listener: GET /metrics only, with the HTTP requests counted.
    let m = Api::new(&metrics);
    let a = m.call("GET", "/metrics", &[], Bytes::new()).await;
    assert_eq!(a.status, 200);
    let text = String::from_utf8(a.body).unwrap();
    assert!(text.contains("stance_requests_total{rpc=\"http:score\",code=\"Ok\"}"), "{text}");
    assert!(text.contains("stance_requests_total{rpc=\"http:score\",code=\"Unauthenticated\"} 3"), "{text}");
    assert!(text.contains("stance_requests_total{rpc=\"http:score:batch\",code=\"ResourceExhausted\"} 1"), "{text}");
    assert_eq!(m.call("GET", "/", &[], Bytes::new()).await.status, 404);
    assert_eq!(m.call("GET", "/metrics/x", &[], Bytes::new()).await.status, 404);
    assert_eq!(m.call("POST", "/metrics", &[], Bytes::new()).await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_and_the_rest_are_scored() {
    let server = Server::start(&["--max-queue", "1", "--max-batch-tokens", "256", "--max-batch-wait-ms", "0"]);
    let mut api = Api::new(&server.addr);
    ready(&api).await;
    api.doc = Some(api.get("/openapi.json").await.json());
    let api = std::sync::Arc::new(api);
    let body = json!({"text": fixture_text()}).to_string();
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let (api, body) = (api.clone(), body.clone());
            tokio::spawn(async move { api.post("/v1/score", "application/json", body).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        api.conforms("post", "/v1/score", &a);
        if a.status == 429 {
            let (code, message) = a.error(429);
            assert_eq!(code, "resource_exhausted");
            assert!(message.contains("--max-queue"), "{message}");
        }
        statuses.push(a.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_open_batch_with_a_line_naming_the_last_line_read_and_exits_0() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let mut server = Server::start(&[]);
    ready(&Api::new(&server.addr)).await;
    // A request body the test keeps open: the client has more to send when the signal comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let client: Client<HttpConnector, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::post(format!("http://{}/v1/score:batch", server.addr))
        .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap();
    let line = json!({"id": "first", "text": "Baku objected."}).to_string() + "\n";
    tx.send(Ok(Frame::data(Bytes::from(line)))).await.unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&first).unwrap()["id"], "first");

    let signalled = std::time::Instant::now();
    server.signal("TERM");
    let rest = body.collect().await.expect("the answer ends cleanly").to_bytes();
    let last: Value = serde_json::from_slice(&rest).unwrap();
    assert_eq!(last["line"], 2);
    assert_eq!(last["error"]["code"], "unavailable");
    assert!(last["error"]["message"].as_str().unwrap().contains("the lines after line 1 were not read"), "{last}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "ended by the grace period, not by the drain");
    drop(tx);
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}
