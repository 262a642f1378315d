//! The real `stance batch` binary: error records, resume after a torn write, directory input,
//! remote mode against a started server, and a 1,000-record job killed midway and resumed.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{cut, fixture_text, model_args, Server};
use serde_json::{json, Value};

fn batch(args: &[&str], remote: bool) -> Command {
    let mut cmd = common::stance();
    cmd.arg("batch").args(args);
    if !remote {
        cmd.args(model_args());
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn run(args: &[&str], remote: bool) -> Output {
    batch(args, remote).output().unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// id → how many lines carry it.
fn id_counts(out: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in out {
        *m.entry(v["id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

/// Six cuts of the fixture as JSONL records.
fn records() -> Vec<String> {
    let text = fixture_text();
    (0..6).map(|i| json!({"id": format!("r{i}"), "text": cut(&text, 150 + 100 * i)}).to_string()).collect()
}

fn argv(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// `INPUT -o OUT --remote REMOTE`, as owned strings for a job run off the async workers.
fn remote_args(input: &Path, out: &Path, remote: &str) -> Vec<String> {
    [input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--remote", remote].map(String::from).to_vec()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_records_become_error_records_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut recs = records();
    recs.insert(2, json!({"id": "empty", "text": "  "}).to_string());
    recs.insert(4, "{not json".to_string());
    recs.push(json!({"id": "r1", "text": "A duplicate id."}).to_string());
    std::fs::write(&input, recs.join("\n") + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let o = run(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()], false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got = lines(&out);
    assert_eq!(got.len(), 9);
    let by_id: HashMap<&str, Vec<&Value>> = got.iter().fold(HashMap::new(), |mut m, v| {
        m.entry(v["id"].as_str().unwrap()).or_default().push(v);
        m
    });
    assert_eq!(
        by_id["empty"][0]["error"],
        "the text is empty (or only whitespace and control characters); send the article's text"
    );
    assert!(
        by_id["in.jsonl:5"][0]["error"].as_str().unwrap().starts_with("in.jsonl:5: invalid JSON: "),
        "{:?}",
        by_id["in.jsonl:5"]
    );
    assert_eq!(by_id["r1"].len(), 2);
    assert!(by_id["r1"].iter().any(|v| v["error"].as_str().is_some_and(|e| e.starts_with("duplicate id"))));
    assert!(by_id["r1"].iter().any(|v| v["sentences"].is_array()));
    for i in [0, 2, 3, 4, 5] {
        assert!(by_id[format!("r{i}").as_str()][0]["sentences"].as_array().is_some_and(|s| !s.is_empty()));
    }
    let e = stderr(&o);
    assert!(e.contains("6 articles scored") && e.contains("3 errors"), "{e}");
    // A rerun has nothing left to do and writes nothing.
    let o = run(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()], false);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(lines(&out).len(), 9);
}

/// OUT is read back to resume, so it must be a regular file: `-o /dev/full` (which reads as
/// endless zeros and refuses every write) is a clear error, not a hang or a panic.
#[cfg(target_os = "linux")]
#[test]
fn output_that_is_not_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, records().join("\n") + "\n").unwrap();
    let o = run(&[input.to_str().unwrap(), "-o", "/dev/full"], false);
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("/dev/full: not a regular file"), "{e}");
}

#[test]
fn resume_after_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, records().join("\n") + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let args = [input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    let o = run(&args, false);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = std::fs::read_to_string(&out).unwrap();
    let first: Vec<&str> = full.lines().collect();
    assert_eq!(first.len(), 6);
    // Keep two whole lines and half of the third, as a job killed mid-write leaves it.
    let torn = format!("{}\n{}\n{}", first[0], first[1], &first[2][..first[2].len() / 2]);
    std::fs::write(&out, torn).unwrap();
    let o = run(&args, false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("4 articles scored"), "{}", stderr(&o));
    let got = lines(&out);
    assert_eq!(got.len(), 6);
    assert!(id_counts(&got).values().all(|&n| n == 1), "{:?}", id_counts(&got));
    // The resumed lines are the ones a single run writes (up to float noise: the resumed
    // articles were batched with different neighbours); labels and offsets exactly.
    let parse = |l: &str| -> serde_json::Value { serde_json::from_str(l).unwrap() };
    let mut a: Vec<serde_json::Value> = std::fs::read_to_string(&out).unwrap().lines().map(parse).collect();
    let mut b: Vec<serde_json::Value> = first.iter().map(|l| parse(l)).collect();
    a.sort_by_key(|v| v["id"].to_string());
    b.sort_by_key(|v| v["id"].to_string());
    for (x, y) in a.iter().zip(&b) {
        common::assert_json_close(x, y, 1e-5, &x["id"].to_string());
    }
}

#[test]
fn directory_of_text_files() {
    let dir = tempfile::tempdir().unwrap();
    let articles = dir.path().join("articles");
    std::fs::create_dir(&articles).unwrap();
    let text = fixture_text();
    for (i, n) in [200, 400, 762].iter().enumerate() {
        std::fs::write(articles.join(format!("a{i}.txt")), cut(&text, *n)).unwrap();
    }
    std::fs::write(articles.join("notes.md"), "not an article").unwrap();
    let out = dir.path().join("out.jsonl");
    let o = run(&[articles.to_str().unwrap(), "-o", out.to_str().unwrap()], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = lines(&out);
    let mut ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["a0.txt", "a1.txt", "a2.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_matches_in_process() {
    // Two servers: the job spreads its streams over both (tonic's balanced channel).
    let (server, second) = (Server::start(&[]), Server::start(&[]));
    server.ready().await;
    second.ready().await;
    let addrs = format!("{},{}", server.addr, second.addr);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut recs = records();
    recs.push(json!({"id": "empty", "text": ""}).to_string());
    std::fs::write(&input, recs.join("\n") + "\n").unwrap();
    let (remote, local) = (dir.path().join("remote.jsonl"), dir.path().join("local.jsonl"));
    let o = tokio::task::spawn_blocking({
        let (input, remote, addr) = (input.clone(), remote.clone(), addrs.clone());
        move || run(&[input.to_str().unwrap(), "-o", remote.to_str().unwrap(), "--remote", &addr], true)
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = run(&[input.to_str().unwrap(), "-o", local.to_str().unwrap()], false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let by_id = |p: &Path| -> HashMap<String, Value> {
        lines(p).into_iter().map(|v| (v["id"].as_str().unwrap().to_string(), v)).collect()
    };
    let (r, l) = (by_id(&remote), by_id(&local));
    assert_eq!(r.len(), 7);
    assert_eq!(r.keys().collect::<std::collections::BTreeSet<_>>(), l.keys().collect());
    assert_eq!(r["empty"], l["empty"]);
    for (id, v) in &r {
        // Same sentences, actors and labels (floats may differ in the last bits with batching).
        let shape = |v: &Value| -> Vec<(Value, Value, Value)> {
            v["sentences"].as_array().map_or_else(Vec::new, |s| {
                s.iter()
                    .map(|s| {
                        (
                            s["text"].clone(),
                            s["sentiment"]["label"].clone(),
                            s["actors"].as_array().unwrap().iter().map(|a| a["actor"].clone()).collect(),
                        )
                    })
                    .collect()
            })
        };
        assert_eq!(shape(v), shape(&l[id]), "{id}");
    }
}

/// `n` small records, `id-0` … `id-{n-1}`.
fn small_records(n: usize) -> String {
    let text = fixture_text();
    (0..n)
        .map(|i| json!({"id": format!("id-{i}"), "text": cut(&text, 120 + (i % 7) * 40)}).to_string() + "\n")
        .collect()
}

/// Two servers, one killed before the job and the other's peer killed midway: the job
/// finishes on the server that is up, every record written exactly once, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_job_finishes_on_the_servers_that_are_up() {
    let (a, b, c) = (Server::start(&[]), Server::start(&[]), Server::start(&[]));
    for s in [&a, &b, &c] {
        s.ready().await;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, small_records(300)).unwrap();
    let out = dir.path().join("out.jsonl");
    // `a` is down before the job starts: it goes on with b and c.
    let dead = a.addr.clone();
    drop(a);
    let addrs = format!("{dead},{},{}", b.addr, c.addr);
    let args =
        [input.to_str().unwrap().to_string(), "-o".into(), out.to_str().unwrap().into(), "--remote".into(), addrs];
    let job = batch(&argv(&args), true).spawn().unwrap();
    // Kill c once some lines are written; its streams' articles must move to b.
    let until = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out).map_or(0, |s| s.lines().count()) < 20 {
        assert!(Instant::now() < until, "the job wrote nothing in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    let o = tokio::task::spawn_blocking(move || job.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let counts = id_counts(&lines(&out));
    assert_eq!(counts.len(), 300, "{}", stderr(&o));
    assert!(counts.values().all(|&n| n == 1), "an id written twice");
    assert!(lines(&out).iter().all(|v| v["sentences"].is_array()), "error records: {}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("300 articles scored"), "{e}");
    drop(b);
}

/// `--remote dns:///NAME:PORT`: every address of the name is a replica (here `localhost`,
/// whose IPv6 address, if any, has no server: left out with a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_dns_name() {
    let server = Server::start(&[]);
    server.ready().await;
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, small_records(20)).unwrap();
    let out = dir.path().join("out.jsonl");
    let args = remote_args(&input, &out, &format!("dns:///localhost:{port}"));
    let o = tokio::task::spawn_blocking(move || run(&argv(&args), true)).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(id_counts(&lines(&out)).len(), 20);
    let other = dir.path().join("other.jsonl");
    let o = run(&[input.to_str().unwrap(), "-o", other.to_str().unwrap(), "--remote", "dns:///localhost"], true);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected dns:///NAME:PORT"), "{}", stderr(&o));
}

/// Three shards of one input cover every record once; `--merge` joins them and refuses a
/// missing or repeated shard; `--shard N` takes K from JOB_COMPLETION_INDEX.
#[test]
fn shards_cover_the_input_once_and_merge_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut recs = records();
    recs.push(json!({"id": "r1", "text": "A repeated id."}).to_string());
    std::fs::write(&input, recs.join("\n") + "\n").unwrap();
    let input = input.to_str().unwrap().to_string();
    let shard_out = |k: usize| dir.path().join(format!("shard-{k}.jsonl")).to_str().unwrap().to_string();
    let mut union: Vec<String> = Vec::new();
    let mut used = 0;
    for k in 0..3 {
        let o = run(&[&input, "-o", &shard_out(k), "--shard", &format!("{k}/3")], false);
        let got = lines(Path::new(&shard_out(k)));
        // Exit 1 only for the shard holding the repeated id's error record.
        let errors = got.iter().any(|v| v["error"].is_string());
        assert_eq!(o.status.code(), Some(i32::from(errors)), "{}", stderr(&o));
        union.extend(got.iter().map(|v| v["id"].as_str().unwrap().to_string()));
        used += usize::from(!got.is_empty());
    }
    union.sort();
    assert_eq!(union, ["r0", "r1", "r1", "r2", "r3", "r4", "r5"]);
    assert!(used >= 2, "the records should spread over the shards");
    // K from the environment, as in a Kubernetes Indexed Job.
    let env_out = dir.path().join("env.jsonl");
    let o = batch(&[&input, "-o", env_out.to_str().unwrap(), "--shard", "3"], false)
        .env("JOB_COMPLETION_INDEX", "2")
        .output()
        .unwrap();
    assert!(o.status.code().is_some(), "{}", stderr(&o));
    assert_eq!(id_counts(&lines(&env_out)), id_counts(&lines(Path::new(&shard_out(2)))));

    let merged = dir.path().join("merged.jsonl");
    let m = merged.to_str().unwrap();
    let o = run(&[&input, "-o", m, "--merge", &shard_out(0), &shard_out(1), &shard_out(2)], false);
    assert_eq!(o.status.code(), Some(1), "the repeated id's error record is in the output: {}", stderr(&o));
    let counts = id_counts(&lines(&merged));
    assert_eq!(counts.len(), 6);
    assert_eq!(counts["r1"], 2);
    // A shard left out, or given twice: the merge fails and writes nothing.
    std::fs::remove_file(&merged).unwrap();
    let o = run(&[&input, "-o", m, "--merge", &shard_out(0), &shard_out(1)], false);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("input records are in no shard output"), "{}", stderr(&o));
    let o = run(&[&input, "-o", m, "--merge", &shard_out(0), &shard_out(1), &shard_out(2), &shard_out(2)], false);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("more than once"), "{}", stderr(&o));
    assert!(!merged.exists());
}

/// A record larger than the server's message limit becomes its own error record, and its
/// stream neighbours are scored (it used to break the stream they travelled on, every run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_record_over_the_message_limit_is_an_error_record() {
    let server = Server::start(&["--max-message-bytes", "65536"]);
    server.ready().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut recs = records();
    recs.insert(3, json!({"id": "big", "text": "Russia said so. ".repeat(6_000)}).to_string());
    std::fs::write(&input, recs.join("\n") + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let args = remote_args(&input, &out, &server.addr);
    let job = move || run(&argv(&args), true);
    let o = tokio::task::spawn_blocking(job.clone()).await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got = lines(&out);
    assert_eq!(got.len(), 7, "{}", stderr(&o));
    let big: Vec<&Value> = got.iter().filter(|v| v["id"] == "big").collect();
    let e = big[0]["error"].as_str().unwrap_or_else(|| panic!("{:?}", big[0]));
    assert!(e.contains("more than the server accepts (65536 bytes"), "{e}");
    assert!(got.iter().filter(|v| v["id"] != "big").all(|v| v["sentences"].is_array()));
    // A rerun finds everything done.
    let o = tokio::task::spawn_blocking(job).await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(lines(&out).len(), 7);
}

/// Five real articles, each cut to its first ~300 bytes (at a char boundary, to keep 1,000
/// records quick on two cores), repeated to 1,000 records; the job is killed with SIGKILL once
/// some lines are written, then rerun: exactly 1,000 lines, each id once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ../shared"]
async fn thousand_records_killed_midway_and_resumed() {
    let shared = common::root().join("../shared/articles");
    let mut files: Vec<_> = std::fs::read_dir(&shared)
        .unwrap_or_else(|e| {
            panic!("cannot read {}: {e}; this test needs ../shared/articles beside the repository", shared.display())
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .txt articles in {}", shared.display());
    let texts: Vec<String> = files.iter().map(|p| cut(&std::fs::read_to_string(p).unwrap(), 300).to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let body: String = (0..1000)
        .map(|i| json!({"id": format!("doc{i:04}"), "text": texts[i % texts.len()]}).to_string() + "\n")
        .collect();
    std::fs::write(&input, body).unwrap();
    let out = dir.path().join("out.jsonl");

    let server = Server::start(&[]);
    server.ready().await;
    let args: Vec<String> = [input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--remote", &server.addr]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut child = batch(&argv(&args), true).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    loop {
        let n = std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 50 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(partial < 1000, "killed too late to test resuming ({partial} lines)");

    let o = tokio::task::spawn_blocking(move || batch(&argv(&args), true).output().unwrap()).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = lines(&out);
    assert_eq!(got.len(), 1000);
    let counts = id_counts(&got);
    assert_eq!(counts.len(), 1000);
    assert!(counts.values().all(|&n| n == 1));
    assert!(got.iter().all(|v| v.get("error").is_none()));
}
