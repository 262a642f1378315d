//! `stance batch INPUT -o OUT.jsonl`: scores a JSONL file, a directory of `.txt` files or stdin
//! into a JSONL file, in-process or on `--remote` servers.
//!
//! The output is resumable: a rerun with the same OUT first reads it (a torn last line, from a
//! job killed mid-write, is cut off), skips every id already there and appends the rest. Each
//! line is written whole and flushed, so a killed job loses nothing it reported. A record that
//! fails is written as `{"id": ..., "error": ...}`; the job goes on and exits with 1.
//!
//! `--shard K/N` scores one shard of the records, `--merge` joins shard outputs (`shard.rs`).

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
use stance::input::{ArticleInput, Meta};
use stance::pipeline::Engine;
use stance::scores::ArticleScore;

use super::input::{parse_jsonl, read_text, source_name, text_article, Record};
use super::shard::{self, ShardSpec};

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
    #[command(flatten)]
    pub connect: super::remote::ConnectOpts,
    /// Articles outstanding at once on the servers (remote mode).
    #[arg(long, default_value_t = super::remote::INFLIGHT)]
    pub inflight: usize,
    /// Articles scored together (in-process mode).
    #[arg(long, default_value_t = super::score::CHUNK)]
    pub chunk: usize,
    /// Score only shard K of N: the records whose id hashes (SHA-256) to K. `N` alone takes K
    /// from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's pod index). Each shard writes its
    /// own OUT, resumable as usual.
    #[arg(long, env = "STANCE_SHARD", value_name = "K/N")]
    pub shard: Option<ShardSpec>,
    /// Score nothing: join these shard outputs into OUT, checking them against INPUT (every id
    /// once; a missing or repeated id fails the merge and writes nothing).
    #[arg(long, value_name = "SHARD_OUT", num_args = 1.., conflicts_with_all = ["shard", "remote"])]
    pub merge: Vec<PathBuf>,
}

/// One input record, and whether an earlier record has the same key (then only the first is
/// scored; this one becomes an error record marked `"duplicate": true`).
pub(super) struct Item {
    pub(super) record: Record,
    duplicate: bool,
}

/// An output line's id, whether it is the error record of a repeated id, and whether it is an
/// error record; `None` for a line that is not a JSON object with an id.
pub(super) fn line_id(line: &[u8]) -> Option<(String, bool, bool)> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        tracing::warn!("ignoring an output line that is not JSON");
        return None;
    };
    let id = v.get("id").and_then(Value::as_str)?.to_string();
    Some((id, v.get("duplicate").and_then(Value::as_bool) == Some(true), v.get("error").is_some()))
}

/// A directory of `.txt` files (the file name is the id), or JSONL from a file or stdin.
fn read_input(input: &str) -> Result<Vec<Item>> {
    let records: Vec<Record> = if input != "-" && Path::new(input).is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading directory {input}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{input}: no .txt files in the directory");
        }
        files
            .iter()
            .map(|p| {
                let path = p.to_string_lossy();
                match read_text(&path) {
                    Ok(text) => text_article(&path, text),
                    Err(e) => Record::failed(source_name(&path), e),
                }
            })
            .collect()
    } else {
        let text = read_text(input).map_err(anyhow::Error::msg)?;
        parse_jsonl(&source_name(input), &text)
    };
    // A repeated id is an error record of its own; only the first is scored.
    let mut seen = HashSet::new();
    Ok(records
        .into_iter()
        .map(|mut record| {
            let duplicate = !seen.insert(record.key.clone());
            if duplicate {
                record.article = Err(format!(
                    "duplicate id {:?}: an earlier record has this id; only the first is scored",
                    record.key
                ));
            }
            Item { record, duplicate }
        })
        .collect())
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
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            bail!(
                "{}: not a regular file; the output is read back to resume a job, so it must be a file",
                path.display()
            );
        }
    }
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
        let Some((id, duplicate, error)) = line_id(line) else { continue };
        prev.lines += 1;
        prev.errors += usize::from(error);
        if duplicate {
            *prev.duplicates.entry(id).or_default() += 1;
        } else {
            prev.done.insert(id);
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
    let mut items = read_input(&o.input)?;
    if !o.merge.is_empty() {
        return shard::merge(&items, &o.merge, &o.output);
    }
    if let Some(spec) = o.shard {
        let all = items.len();
        items.retain(|it| spec.holds(&it.record.key));
        eprintln!("batch: shard {spec}: {} of {all} records", items.len());
    }
    let total = items.len();
    let (file, prev) = open_output(&o.output)?;

    // Skip what OUT has already.
    let mut dup_seen: HashMap<String, usize> = HashMap::new();
    let todo: Vec<Item> = items
        .into_iter()
        .filter(|it| {
            let key = &it.record.key;
            if it.duplicate {
                let k = dup_seen.entry(key.clone()).or_default();
                *k += 1;
                *k > prev.duplicates.get(key).copied().unwrap_or(0)
            } else {
                !prev.done.contains(key)
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
    // Each record's metadata, by its place in `work`: echoed in its result.
    let mut metas: Vec<Meta> = Vec::new();
    for it in todo {
        match it.record.article {
            Ok(a) => {
                work.push((it.record.key, a));
                metas.push(it.record.meta);
            }
            Err(e) => out.error(&it.record.key, &e, it.duplicate)?,
        }
    }

    let mut unanswered = 0usize;
    if work.is_empty() {
        // Nothing to score: no need to load a model or reach a server.
    } else if o.remote.is_empty() {
        let engine = load().context("loading the model")?;
        let mut work = work.into_iter().zip(metas).peekable();
        while work.peek().is_some() {
            let chunk: Vec<((String, ArticleInput), Meta)> = work.by_ref().take(o.chunk.max(1)).collect();
            let (records, metas): (Vec<(String, ArticleInput)>, Vec<Meta>) = chunk.into_iter().unzip();
            let (keys, inputs): (Vec<String>, Vec<ArticleInput>) = records.into_iter().unzip();
            for ((key, meta), res) in keys.iter().zip(metas).zip(engine.score_many(inputs)) {
                match res {
                    Ok(mut s) => {
                        s.meta = meta;
                        out.score(&s)?
                    }
                    Err(e) => out.error(key, &e.to_string(), false)?,
                }
            }
        }
    } else {
        let rt =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
        rt.block_on(async {
            let remote = Remote::connect(&o.remote, super::remote::MAX_MESSAGE_BYTES, &o.connect.options()).await?;
            let keys: Vec<String> = work.iter().map(|(k, _)| k.clone()).collect();
            let items: Vec<(u64, ArticleInput)> =
                work.into_iter().enumerate().map(|(i, (_, a))| (i as u64, a)).collect();
            remote
                .score_all(items, o.inflight, |seq, _id, res| {
                    let key = &keys[seq as usize];
                    match res {
                        Ok(mut s) => {
                            // Kept here rather than sent: the result is the same either way.
                            s.meta = std::mem::take(&mut metas[seq as usize]);
                            out.score(&s)
                        }
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
