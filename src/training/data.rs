//! Training and evaluation data: NewsMTSC (targets) and VADER (sentence sentiment), turned
//! into the same [`ArticleInput`]s the service scores.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pipeline::{ArticleInput, ExplicitMention, SpanInput};
use crate::scores::Label;

/// A sentence with labelled targets, or with a sentence label.
#[derive(Debug, Clone)]
pub struct Example {
    /// One sentence, with explicit mentions named `t0, t1, ...` for targets, or `actors: []`
    /// for a sentence-sentiment example.
    pub input: ArticleInput,
    /// Target labels, in the order of the names `t0, t1, ...`.
    pub targets: Vec<Label>,
    /// The sentence label (VADER), if any.
    pub sentence: Option<Label>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {reason}; training and evaluation read ../shared/data (pass --data DIR)")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}:{line}: {reason}")]
    Bad { path: PathBuf, line: usize, reason: String },
}

#[derive(Deserialize)]
struct NewsMtscLine {
    sentence_normalized: String,
    targets: Vec<NewsMtscTarget>,
}

#[derive(Deserialize)]
struct NewsMtscTarget {
    from: usize,
    to: usize,
    polarity: f64,
}

fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })
}

/// Byte offset of the `n`th Unicode scalar (NewsMTSC offsets count code points).
fn byte_of_char(s: &str, n: usize) -> Option<usize> {
    if n == s.chars().count() {
        return Some(s.len());
    }
    s.char_indices().nth(n).map(|(b, _)| b)
}

fn polarity_label(p: f64) -> Option<Label> {
    match p as i64 {
        2 => Some(Label::Negative),
        4 => Some(Label::Neutral),
        6 => Some(Label::Positive),
        _ => None,
    }
}

/// Loads a NewsMTSC JSONL file: one example per sentence, all its targets scored together.
pub fn newsmtsc(path: &Path) -> Result<Vec<Example>, DataError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |reason: String| DataError::Bad { path: path.to_path_buf(), line: i + 1, reason };
        let row: NewsMtscLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let s = row.sentence_normalized;
        let mut mentions = Vec::new();
        let mut labels = Vec::new();
        for (k, t) in row.targets.iter().enumerate() {
            let (Some(a), Some(b)) = (byte_of_char(&s, t.from), byte_of_char(&s, t.to)) else {
                return Err(bad(format!("target {k}: offsets {}..{} outside the sentence", t.from, t.to)));
            };
            let label = polarity_label(t.polarity).ok_or_else(|| bad(format!("target {k}: polarity {}", t.polarity)))?;
            mentions.push(ExplicitMention { start: a, end: b, actor: format!("t{k}") });
            labels.push(label);
        }
        let len = s.len();
        out.push(Example {
            input: ArticleInput {
                id: format!("{}:{}", path.file_name().unwrap_or_default().to_string_lossy(), i + 1),
                text: s,
                mentions: Some(mentions),
                actors: None,
                sentences: Some(vec![SpanInput { start: 0, end: len }]),
            },
            targets: labels,
            sentence: None,
        });
    }
    Ok(out)
}

/// VADER valence (−4..+4) → class: below −0.5 negative, above +0.5 positive, else neutral.
pub const VADER_THRESHOLD: f64 = 0.5;

fn valence_label(v: f64) -> Label {
    if v < -VADER_THRESHOLD {
        Label::Negative
    } else if v > VADER_THRESHOLD {
        Label::Positive
    } else {
        Label::Neutral
    }
}

/// Which part of a VADER file an id falls in: a fixed hash split, 70% train, 10% dev, 20% test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Dev,
    Test,
}

fn split_of(id: &str) -> Split {
    // FNV-1a: stable across platforms and releases.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    match h % 10 {
        0 | 1 => Split::Test,
        2 => Split::Dev,
        _ => Split::Train,
    }
}

/// Loads the `split` part of a VADER ground-truth file (`id<TAB>valence<TAB>text`).
pub fn vader(path: &Path, split: Split) -> Result<Vec<Example>, DataError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |reason: String| DataError::Bad { path: path.to_path_buf(), line: i + 1, reason };
        let mut parts = line.splitn(3, '\t');
        let (Some(id), Some(v), Some(sentence)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected id<TAB>valence<TAB>text".into()));
        };
        let v: f64 = v.trim().parse().map_err(|_| bad(format!("valence {v:?} is not a number")))?;
        if split_of(id) != split || sentence.trim().is_empty() {
            continue;
        }
        let sentence = sentence.trim().to_string();
        let len = sentence.len();
        out.push(Example {
            input: ArticleInput {
                id: id.to_string(),
                text: sentence,
                mentions: None,
                actors: Some(Vec::new()),
                sentences: Some(vec![SpanInput { start: 0, end: len }]),
            },
            targets: Vec::new(),
            sentence: Some(valence_label(v)),
        });
    }
    Ok(out)
}

/// The files under a data folder (`../shared/data` by default).
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn newsmtsc(&self, name: &str) -> PathBuf {
        self.0.join("newsmtsc").join(format!("{name}.jsonl"))
    }
    pub fn vader_nyt(&self) -> PathBuf {
        self.0.join("vader").join("nyt_editorial_snippets.tsv")
    }
    pub fn vader_tweets(&self) -> PathBuf {
        self.0.join("vader").join("tweets.tsv")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newsmtsc_offsets_are_code_points() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(
            &p,
            r#"{"sentence_normalized": "“Erdoğan” won’t stop, said Putin.", "targets": [{"from": 1, "to": 8, "polarity": 2.0}, {"from": 27, "to": 32, "polarity": 4.0}]}"#,
        )
        .unwrap();
        let ex = newsmtsc(&p).unwrap();
        let m = ex[0].input.mentions.as_ref().unwrap();
        assert_eq!(&ex[0].input.text[m[0].start..m[0].end], "Erdoğan");
        assert_eq!(&ex[0].input.text[m[1].start..m[1].end], "Putin");
        assert_eq!(ex[0].targets, vec![Label::Negative, Label::Neutral]);
    }

    #[test]
    fn vader_thresholds_and_split_are_fixed() {
        assert_eq!(valence_label(-0.6), Label::Negative);
        assert_eq!(valence_label(0.5), Label::Neutral);
        assert_eq!(valence_label(0.51), Label::Positive);
        // The split never changes for an id.
        assert_eq!(split_of("1_1"), split_of("1_1"));
        let n = 10_000;
        let test = (0..n).filter(|i| split_of(&format!("{i}_x")) == Split::Test).count();
        assert!((1_700..2_300).contains(&test), "{test}");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.tsv");
        std::fs::write(&p, "1\t0.5\tfine\n2\tabc\tbad\n").unwrap();
        let err = vader(&p, Split::Train).unwrap_err().to_string();
        assert!(err.contains("v.tsv:2"), "{err}");
    }
}
