//! `stance batch INPUT -o OUT.jsonl`: scores a JSONL file, a directory of `.txt` files or stdin
//! into a JSONL file, in-process or on `--remote` servers.
//!
//! The output is resumable: a rerun with the same OUT first reads it (a torn last line, from a
//! job killed mid-write, is cut off), skips every id already there and appends the rest. Each
//! line is written whole and flushed, so a killed job loses nothing it reported. A record that
//! fails is written as `{"id": ..., "error": ...}`; the job goes on and exits with 1.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use stance::client::Remote;
use stance::pipeline::{ArticleInput, Engine};
use stance::scores::ArticleScore;

#[derive(Args, Debug, Clone)]
pub struct BatchOpts {
    /// A JSONL file (`{"id", "text", "mentions"?, "actors"?, "sentences"?}` per line), a
    /// directory of `.txt` files (the file name is the id) or `-` (JSONL on stdin).
    pub input: String,
    /// The output JSONL file: one result or error record per input record. Reused to resume.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Score on this server instead of in-process; repeat (or separate with commas) to spread
    /// the load across several.
    #[arg(long, value_delimiter = ',')]
    pub remote: Vec<String>,
    /// Articles outstanding at once on the servers (remote mode).
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    /// Articles scored together (in-process mode).
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
}

/// One input record: its id (or `NAME:LINE` when it has no usable id) and the article, or why
/// it cannot be scored.
struct Item {
    key: String,
    article: Result<ArticleInput, String>,
    duplicate: bool,
}

fn parse_line(name: &str, n: usize, line: &str) -> Item {
    let fallback = format!("{name}:{n}");
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Item { key: fallback, article: Err(format!("line {n}: malformed JSON: {e}")), duplicate: false }
        }
    };
    let id = match v.get("id") {
        _ if !v.is_object() => Err("not a JSON object".to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("bad id: the id is empty".to_string()),
        Some(other) => Err(format!("bad id {other}: ids must be non-empty strings")),
        None => Err("missing id: every record needs a non-empty string id".to_string()),
    };
    match id {
        Err(e) => Item { key: fallback, article: Err(format!("line {n}: {e}")), duplicate: false },
        Ok(id) => match serde_json::from_value::<ArticleInput>(v) {
            Ok(a) => Item { key: id, article: Ok(a), duplicate: false },
            Err(e) => Item { key: id, article: Err(format!("line {n}: invalid record: {e}")), duplicate: false },
        },
    }
}

fn read_input(input: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    if input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading stdin (expected UTF-8 JSONL)")?;
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                items.push(parse_line("stdin", i + 1, line));
            }
        }
    } else if Path::new(input).is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading directory {input}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for p in files {
            let key = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let article = match std::fs::read(&p) {
                Err(e) => Err(format!("cannot read {}: {e}", p.display())),
                Ok(b) => match String::from_utf8(b) {
                    Err(e) => {
                        Err(format!("not valid UTF-8 (first bad byte at offset {})", e.utf8_error().valid_up_to()))
                    }
                    Ok(text) => Ok(ArticleInput { id: key.clone(), text, ..Default::default() }),
                },
            };
            items.push(Item { key, article, duplicate: false });
        }
        if items.is_empty() {
            bail!("{input}: no .txt files in the directory");
        }
    } else {
        let text = std::fs::read_to_string(input).with_context(|| format!("reading {input} (expected UTF-8 JSONL)"))?;
        let name =
            Path::new(input).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| input.to_string());
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                items.push(parse_line(&name, i + 1, line));
            }
        }
    }
    // A repeated id is an error record of its own; only the first is scored.
    let mut seen = HashSet::new();
    for item in &mut items {
        if !seen.insert(item.key.clone()) {
            item.duplicate = true;
            item.article =
                Err(format!("duplicate id {:?}: an earlier record has this id; only the first is scored", item.key));
        }
    }
    Ok(items)
}

/// What an earlier run left in OUT.
#[derive(Default)]
struct Previous {
    done: HashSet<String>,
    duplicates: HashMap<String, usize>,
    errors: usize,
    lines: usize,
}

/// Reads OUT (when it exists), cuts off a torn last line, and opens it for appending.
fn open_output(path: &Path) -> Result<(File, Previous)> {
    let mut prev = Previous::default();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        tracing::warn!("{}: cutting off a torn last line ({} bytes)", path.display(), bytes.len() - whole);
        file.set_len(whole as u64)?;
    }
    for line in bytes[..whole].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            tracing::warn!("{}: ignoring a line that is not JSON", path.display());
            continue;
        };
        let Some(id) = v.get("id").and_then(Value::as_str) else { continue };
        prev.lines += 1;
        if v.get("error").is_some() {
            prev.errors += 1;
        }
        if v.get("duplicate").and_then(Value::as_bool) == Some(true) {
            *prev.duplicates.entry(id.to_string()).or_default() += 1;
        } else {
            prev.done.insert(id.to_string());
        }
    }
    file.seek(SeekFrom::End(0))?;
    Ok((file, prev))
}

struct Output {
    file: File,
    scored: usize,
    sentences: usize,
    errors: usize,
    bar: ProgressBar,
}

impl Output {
    fn line(&mut self, v: String) -> Result<()> {
        let mut line = v;
        line.push('\n');
        self.file.write_all(line.as_bytes()).context("writing the output")?;
        self.file.flush().context("writing the output")?;
        self.bar.inc(1);
        Ok(())
    }

    fn score(&mut self, s: &ArticleScore) -> Result<()> {
        self.scored += 1;
        self.sentences += s.sentences.len();
        self.line(serde_json::to_string(s).expect("serialisable"))
    }

    fn error(&mut self, id: &str, error: &str, duplicate: bool) -> Result<()> {
        self.errors += 1;
        let v = if duplicate {
            json!({"id": id, "error": error, "duplicate": true})
        } else {
            json!({"id": id, "error": error})
        };
        self.line(v.to_string())
    }
}

pub fn run<F>(o: BatchOpts, load: F) -> Result<ExitCode>
where
    F: FnOnce() -> Result<Engine>,
{
    let started = Instant::now();
    let items = read_input(&o.input)?;
    let total = items.len();
    let (file, prev) = open_output(&o.output)?;

    // Skip what OUT has already.
    let mut dup_seen: HashMap<String, usize> = HashMap::new();
    let todo: Vec<Item> = items
        .into_iter()
        .filter(|it| {
            if it.duplicate {
                let k = dup_seen.entry(it.key.clone()).or_default();
                *k += 1;
                *k > prev.duplicates.get(&it.key).copied().unwrap_or(0)
            } else {
                !prev.done.contains(&it.key)
            }
        })
        .collect();
    let skipped = total - todo.len();

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(todo.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} articles  {per_sec}  ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut out = Output { file, scored: 0, sentences: 0, errors: 0, bar };

    // Records that cannot be scored are written at once.
    let mut work: Vec<(String, ArticleInput)> = Vec::new();
    for it in todo {
        match it.article {
            Ok(mut a) => {
                a.id = it.key.clone();
                work.push((it.key, a));
            }
            Err(e) => out.error(&it.key, &e, it.duplicate)?,
        }
    }

    let mut unanswered = 0usize;
    if work.is_empty() {
        // Nothing to score: no need to load a model or reach a server.
    } else if o.remote.is_empty() {
        let engine = load().context("loading the model")?;
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            let chunk: Vec<(String, ArticleInput)> = work.by_ref().take(o.chunk.max(1)).collect();
            let (keys, inputs): (Vec<String>, Vec<ArticleInput>) = chunk.into_iter().unzip();
            for (key, res) in keys.iter().zip(engine.score_many(inputs)) {
                match res {
                    Ok(s) => out.score(&s)?,
                    Err(e) => out.error(key, &e.to_string(), false)?,
                }
            }
        }
    } else {
        let rt =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
        rt.block_on(async {
            let remote = Remote::connect(&o.remote, 64 << 20).await?;
            let keys: Vec<String> = work.iter().map(|(k, _)| k.clone()).collect();
            let items: Vec<(u64, ArticleInput)> =
                work.into_iter().enumerate().map(|(i, (_, a))| (i as u64, a)).collect();
            remote
                .score_all(items, o.inflight, |seq, _id, res| {
                    let key = &keys[seq as usize];
                    match res {
                        Ok(s) => out.score(&s),
                        Err(f) if f.transport => {
                            // Not judged by a server: left out of OUT so that a rerun retries it.
                            unanswered += 1;
                            tracing::warn!("{key}: not scored: {f}");
                            Ok(())
                        }
                        Err(f) => out.error(key, &f.message, false),
                    }
                })
                .await
        })?;
    }
    out.bar.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let rate = (out.scored + out.errors) as f64 / secs.max(1e-9);
    eprintln!(
        "batch: {} articles scored ({} sentences), {} errors, {} already in {}, in {:.1}s ({:.1} articles/s)",
        out.scored,
        out.sentences,
        out.errors,
        skipped,
        o.output.display(),
        secs,
        rate
    );
    if prev.errors > 0 {
        eprintln!("batch: {} error records from earlier runs are in {}", prev.errors, o.output.display());
    }
    if unanswered > 0 {
        eprintln!("batch: {unanswered} articles got no answer from the server(s); rerun the same command to resume");
    }
    Ok(if out.errors + prev.errors + unanswered > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_ids() {
        assert_eq!(parse_line("x.jsonl", 3, "{\"id\":\"a\",\"text\":\"Hi.\"}").key, "a");
        let bad = parse_line("x.jsonl", 4, "{\"id\":");
        assert_eq!(bad.key, "x.jsonl:4");
        assert!(bad.article.unwrap_err().contains("malformed JSON"));
        assert!(parse_line("x.jsonl", 5, "{\"id\":7,\"text\":\"Hi.\"}").article.unwrap_err().contains("bad id 7"));
        assert!(parse_line("x.jsonl", 6, "{\"text\":\"Hi.\"}").article.unwrap_err().contains("missing id"));
        assert!(parse_line("x.jsonl", 7, "{\"id\":\"b\",\"txt\":1}").article.unwrap_err().contains("invalid record"));
    }

    #[test]
    fn torn_output_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "{\"id\":\"a\"}\n{\"id\":\"b\",\"error\":\"x\"}\n{\"id\":\"c\",\"dup").unwrap();
        let (_, prev) = open_output(&p).unwrap();
        assert_eq!(prev.lines, 2);
        assert_eq!(prev.errors, 1);
        assert!(prev.done.contains("a") && prev.done.contains("b") && !prev.done.contains("c"));
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("\"x\"}\n"));
    }
}
