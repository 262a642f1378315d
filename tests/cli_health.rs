//! `stance health --remote`: the real CLI binary against the real server.

mod common;

use common::{stance, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_when_serving_and_1_when_unreachable() {
    let server = Server::start(&[]);
    server.ready().await;
    let o = stance().args(["health", "--remote", &server.addr]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("{}: SERVING", server.addr));

    // A port nobody listens on (the server's, once it is gone).
    let addr = server.addr.clone();
    drop(server);
    let o = stance().args(["health", "--remote", &addr, "--timeout-s", "2"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("cannot connect to the stance server at {addr}")), "{err}");

    let o = stance().args(["health", "--remote", &addr, "--timeout-s", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--timeout-s must be a positive number"));
}
