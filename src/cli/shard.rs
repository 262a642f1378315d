//! Sharded batch jobs: `stance batch --shard K/N` scores the records whose id hashes to shard K
//! of N (one index of a Kubernetes Indexed Job, say); `stance batch --merge SHARD...` joins the
//! shards' outputs and refuses a missing or repeated id.
//!
//! The hash is the first 8 bytes of the id's SHA-256, so a record's shard depends on nothing
//! but its id and N: the same on every machine, run and version.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::batch::{line_id, Item};

/// Which shard of how many: `K/N`, or `N` alone with K from `JOB_COMPLETION_INDEX` (set by
/// Kubernetes in each pod of an Indexed Job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: u64,
    pub count: u64,
}

/// The environment variable an Indexed Job sets to the pod's index.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

impl ShardSpec {
    fn parse(s: &str, env_index: Option<&str>) -> Result<Self, String> {
        let number = |what: &str, v: &str| -> Result<u64, String> {
            v.trim().parse::<u64>().map_err(|_| format!("{what} {v:?} is not a whole number"))
        };
        let (index, count) = match s.split_once('/') {
            Some((k, n)) => (number("shard index", k)?, number("shard count", n)?),
            None => {
                let count = number("shard count", s)?;
                let Some(k) = env_index else {
                    return Err(format!(
                        "--shard {s} takes the shard index from {INDEX_ENV}, which is not set; give --shard K/{s}"
                    ));
                };
                (number(INDEX_ENV, k)?, count)
            }
        };
        if count == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= count {
            return Err(format!("shard index {index} is not below the shard count {count}; indexes run 0..{count}"));
        }
        Ok(Self { index, count })
    }

    /// Whether the record with this id belongs to this shard.
    pub fn holds(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

impl FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s, std::env::var(INDEX_ENV).ok().as_deref())
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (of `count`) a record id falls in.
pub fn shard_of(id: &str, count: u64) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % count
}

/// How many lines of the shard outputs carry an id: its result (or error record), and error
/// records for its repeats in the input.
#[derive(Default)]
struct Seen {
    first: usize,
    repeats: usize,
}

/// Joins shard outputs into `output`, in the order the shards are given, after checking them
/// against the input: every record's id exactly once (and one `duplicate` error record for each
/// repeat), nothing else. Memory holds the ids only; lines are streamed. Writes to a temporary
/// file beside `output` and renames it, so a failed merge leaves no partial output.
pub(super) fn merge(items: &[Item], shards: &[PathBuf], output: &Path) -> Result<ExitCode> {
    if shards.is_empty() {
        bail!("--merge needs the shard outputs to join, e.g. --merge out/shard-*.jsonl");
    }
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for it in items {
        *expected.entry(it.record.key.as_str()).or_default() += 1;
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut errors = 0usize;
    for shard in shards {
        if shard == output {
            bail!("{}: the merged output cannot also be a shard", shard.display());
        }
        for line in read_lines(shard)? {
            let line = line?;
            let Some((id, duplicate, error)) = line_id(line.as_bytes()) else { continue };
            errors += usize::from(error);
            if !expected.contains_key(id.as_str()) {
                unknown.push(id);
                continue;
            }
            let s = seen.entry(id).or_default();
            if duplicate {
                s.repeats += 1;
            } else {
                s.first += 1;
            }
        }
    }
    let mut missing = Vec::new();
    let mut repeated = Vec::new();
    for (&id, &n) in &expected {
        match seen.get(id) {
            None => missing.push(id),
            Some(s) if s.first == 0 => missing.push(id),
            Some(s) if s.first > 1 || s.repeats > n - 1 => repeated.push(id),
            Some(s) if s.repeats < n - 1 => missing.push(id),
            Some(_) => {}
        }
    }
    missing.sort_unstable();
    repeated.sort_unstable();
    unknown.sort_unstable();
    let mut problems = Vec::new();
    let few = |ids: &[&str]| ids.iter().take(5).map(|id| format!("{id:?}")).collect::<Vec<_>>().join(", ");
    if !missing.is_empty() {
        problems.push(format!(
            "{} input records are in no shard output (e.g. {}): a shard is missing or unfinished; rerun it",
            missing.len(),
            few(&missing)
        ));
    }
    if !repeated.is_empty() {
        problems.push(format!(
            "{} ids are in the shard outputs more than once (e.g. {}): a shard given twice, or shards of different counts",
            repeated.len(),
            few(&repeated)
        ));
    }
    if !unknown.is_empty() {
        let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
        problems.push(format!(
            "{} lines carry ids the input does not have (e.g. {}): a shard of another input",
            unknown.len(),
            few(&unknown)
        ));
    }
    if !problems.is_empty() {
        bail!("cannot merge: {}; {} not written", problems.join("; "), output.display());
    }

    let tmp = output.with_extension("merging");
    {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = BufWriter::new(file);
        for shard in shards {
            for line in read_lines(shard)? {
                let line = line?;
                if line_id(line.as_bytes()).is_some() {
                    writeln!(out, "{line}").with_context(|| format!("writing {}", tmp.display()))?;
                }
            }
        }
        let file =
            out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, output).with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
    eprintln!(
        "batch: merged {} shard outputs into {}: {} records, {} error records",
        shards.len(),
        output.display(),
        items.len(),
        errors
    );
    Ok(if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The whole lines of a shard output (a torn last line, from a killed job, is left out: its
/// record counts as missing).
fn read_lines(path: &Path) -> Result<impl Iterator<Item = Result<String>> + '_> {
    let file = File::open(path).with_context(|| format!("opening shard output {}", path.display()))?;
    let mut reader = BufReader::new(file);
    Ok(std::iter::from_fn(move || {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) if !line.ends_with('\n') => None,
            Ok(_) => {
                line.pop();
                Some(Ok(line))
            }
            Err(e) => Some(Err(anyhow::Error::new(e).context(format!("reading {}", path.display())))),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_clear_errors() {
        assert_eq!(ShardSpec::parse("2/5", None), Ok(ShardSpec { index: 2, count: 5 }));
        assert_eq!(ShardSpec::parse("5", Some("4")), Ok(ShardSpec { index: 4, count: 5 }));
        // An explicit index wins over the environment.
        assert_eq!(ShardSpec::parse("1/5", Some("4")), Ok(ShardSpec { index: 1, count: 5 }));
        assert!(ShardSpec::parse("5", None).unwrap_err().contains("JOB_COMPLETION_INDEX, which is not set"));
        assert!(ShardSpec::parse("5/5", None).unwrap_err().contains("not below the shard count 5"));
        assert!(ShardSpec::parse("0/0", None).unwrap_err().contains("at least 1"));
        assert!(ShardSpec::parse("a/3", None).unwrap_err().contains("shard index \"a\""));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: a change of hash would move records between shards of running jobs.
        // (Python: int.from_bytes(hashlib.sha256(id).digest()[:8], "big") % n.)
        assert_eq!(shard_of("a", 1_000_003), 441_830);
        assert_eq!(shard_of("article-1", 1_000_003), 665_294);
        assert_eq!(shard_of("r0", 8), 2);
        let mut counts = [0usize; 4];
        for i in 0..4_000 {
            counts[shard_of(&format!("id-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (900..1100).contains(&c)), "{counts:?}");
        let spec = ShardSpec { index: 1, count: 4 };
        assert_eq!(spec.holds("id-7"), shard_of("id-7", 4) == 1);
    }
}
