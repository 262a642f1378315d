//! The real server with an API key, with TLS and with mutual TLS, driven by tonic clients and
//! the real CLI (`stance health`, `stance score --remote`). Certificates: tests/fixtures/tls
//! (made by its make.sh; test-only).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{fixture_text, root, stance, Server};
use stance::wire::pb;
use stance::wire::pb::stance_client::StanceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn pem(name: &str) -> String {
    root().join("tests/fixtures/tls").join(name).to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> Output {
    stance().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `stance health` with these connection arguments until it says SERVING.
fn wait_serving(addr: &str, connect: &[&str]) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut args = vec!["health", "--remote", addr];
        args.extend_from_slice(connect);
        if run(&args).status.success() {
            return;
        }
        assert!(Instant::now() < until, "{addr} did not become SERVING in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn article_file(dir: &tempfile::TempDir) -> String {
    let p = dir.path().join("a.txt");
    std::fs::write(&p, fixture_text()).unwrap();
    p.to_str().unwrap().to_string()
}

fn score_request() -> tonic::Request<pb::ScoreArticleRequest> {
    let article = stance::ArticleInput { id: "a".into(), text: fixture_text(), ..Default::default() };
    tonic::Request::new(pb::ScoreArticleRequest { article: Some(article.into()), seq: 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_the_stance_rpcs_but_not_health() {
    let server = Server::start(&["--api-key", "s3cret-key"]);
    server.ready().await; // health needs no key
    let mut c = StanceClient::new(server.channel().await.unwrap());
    let err = c.score_article(score_request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("missing or wrong API key"), "{}", err.message());
    let mut wrong = score_request();
    wrong.metadata_mut().insert("authorization", "Bearer s3cret-kez".parse().unwrap());
    assert_eq!(c.score_article(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut right = score_request();
    right.metadata_mut().insert("authorization", "Bearer s3cret-key".parse().unwrap());
    assert!(c.score_article(right).await.unwrap().into_inner().score.is_some());
    let err = c.get_model_info(pb::GetModelInfoRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The CLI: with the key (flag or environment) it scores; without, it says why it cannot.
    let dir = tempfile::tempdir().unwrap();
    let file = article_file(&dir);
    let addr = server.addr.clone();
    tokio::task::spawn_blocking(move || {
        let o = run(&["score", "--remote", &addr, "--api-key", "s3cret-key", "--format", "json", &file]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let o = stance()
            .args(["score", "--remote", &addr, "--format", "json", &file])
            .env("STANCE_API_KEY", "s3cret-key")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let o = run(&["score", "--remote", &addr, &file]);
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains("missing or wrong API key"), "{}", stderr(&o));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let (cert, key, ca) = (pem("server.pem"), pem("server.key"), pem("ca.pem"));
    let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let addr = server.addr.clone();
    tokio::task::spawn_blocking({
        let (addr, file_dir) = (addr.clone(), tempfile::tempdir().unwrap());
        move || {
            wait_serving(&addr, &["--tls-ca", &pem("ca.pem")]);
            let file = article_file(&file_dir);
            let o = run(&["score", "--remote", &addr, "--tls-ca", &pem("ca.pem"), "--format", "json", &file]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            // Plaintext to a TLS server, and TLS without trusting its CA, both fail.
            assert!(!run(&["health", "--remote", &addr, "--timeout-s", "3"]).status.success());
            let o = run(&["health", "--remote", &addr, "--tls", "--timeout-s", "3"]);
            assert!(!o.status.success(), "the Mozilla roots do not know the test CA");
        }
    })
    .await
    .unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()));
    let ch = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls.clone()).unwrap().connect().await;
    let mut c = StanceClient::new(ch.expect("a TLS connection"));
    assert!(c.score_article(score_request()).await.unwrap().into_inner().score.is_some());
    drop(server);

    // Mutual TLS: a client without a certificate signed by the CA is refused.
    let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca]);
    let addr = server.addr.clone();
    let (client_cert, client_key) = (pem("client.pem"), pem("client.key"));
    tokio::task::spawn_blocking({
        let (addr, ca) = (addr.clone(), ca.clone());
        move || {
            let with_cert =
                ["--tls-ca", ca.as_str(), "--tls-cert", client_cert.as_str(), "--tls-key", client_key.as_str()];
            wait_serving(&addr, &with_cert);
            let o = run(&["health", "--remote", &addr, "--tls-ca", &ca, "--timeout-s", "3"]);
            assert!(!o.status.success(), "no client certificate: {}", String::from_utf8_lossy(&o.stdout));
        }
    })
    .await
    .unwrap();
    let identity =
        Identity::from_pem(std::fs::read(pem("client.pem")).unwrap(), std::fs::read(pem("client.key")).unwrap());
    let ch = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls.identity(identity)).unwrap();
    let mut c = StanceClient::new(ch.connect().await.expect("a mutual TLS connection"));
    assert!(c.score_article(score_request()).await.unwrap().into_inner().score.is_some());
}
