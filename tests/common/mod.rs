//! Shared by the service and batch tests: starting the real `stance serve` binary on an
//! ephemeral port and waiting until it is SERVING.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stance")
}

/// `--model` arguments: none (the small model, from `stance()`'s environment) unless
/// `STANCE_TEST_MODEL` names a folder (development only).
pub fn model_args() -> Vec<String> {
    match std::env::var("STANCE_TEST_MODEL") {
        Ok(m) if !m.is_empty() => vec!["--model".into(), m],
        _ => Vec::new(),
    }
}

/// A `stance` command with the test environment: run from the repository root, no stray
/// configuration from the caller's environment (the forced CPU paths, STANCE_KERNEL and
/// STANCE_GEMM, pass through).
pub fn stance() -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root());
    let stray = |v: &str| {
        (v.starts_with("STANCE_") && !matches!(v, "STANCE_KERNEL" | "STANCE_GEMM")) || v == "JOB_COMPLETION_INDEX"
    };
    for (v, _) in std::env::vars_os() {
        if v.to_str().is_some_and(stray) {
            cmd.env_remove(v);
        }
    }
    // The small committed model: the tests run on a fresh clone, where the default model's
    // base weights are not fetched yet (a test of the default removes this).
    cmd.env("STANCE_MODEL", root().join(stance::SMALL_MODEL_DIR));
    cmd
}

/// A running `stance serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Starts the server on 127.0.0.1 with an ephemeral port and reads the bound address from
    /// the first stdout line (`listening on ADDR`). Does not wait for the model.
    pub fn start(extra: &[&str]) -> Server {
        let mut cmd = stance();
        cmd.args(["serve", "--addr", "127.0.0.1:0"]).args(model_args()).args(extra);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start stance serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the first stdout line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(self.url()).unwrap().connect().await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until health says SERVING for stance.v1.Stance.
    pub async fn ready(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(ch) = self.channel().await {
                let mut h = HealthClient::new(ch);
                if let Ok(r) = h.check(HealthCheckRequest { service: "stance.v1.Stance".into() }).await {
                    if r.get_ref().status == ServingStatus::Serving as i32 {
                        return;
                    }
                }
            }
            assert!(Instant::now() < until, "the server did not become SERVING in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fixture_text() -> String {
    std::fs::read_to_string(root().join("tests/fixtures/article.txt")).unwrap()
}

/// The first `n` bytes of `s`, cut back to a char boundary.
pub fn cut(s: &str, n: usize) -> &str {
    let mut n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Asserts two JSON values are equal except that numbers may differ by `tol`: an article
/// scored in another batch can differ in the last float bits (README, Service: Numbers).
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, tol: f64, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tol, "{path}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: array lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, tol, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{path}: keys");
            for (k, v) in x {
                assert_json_close(v, &y[k], tol, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// What `stance score --format json` prints for the fixture article, in-process.
pub fn in_process_fixture() -> String {
    let out = stance()
        .args(["score", "--format", "json"])
        .args(model_args())
        .arg("tests/fixtures/article.txt")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
