//! Training and evaluation data: NewsMTSC and conflict-stance (targets) and VADER (sentence
//! sentiment), turned into the same [`ArticleInput`]s the service scores.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::input::{check_span, ArticleInput, ExplicitMention, SpanInput};
use crate::mentions::matcher::ActorMatcher;
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
            let label =
                polarity_label(t.polarity).ok_or_else(|| bad(format!("target {k}: polarity {}", t.polarity)))?;
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

#[derive(Deserialize)]
struct ConflictLine {
    id: String,
    text: String,
    sentences: Vec<SpanInput>,
    targets: Vec<ConflictTargetLine>,
    #[serde(default)]
    article: Vec<ArticleLabel>,
}

#[derive(Deserialize)]
struct ConflictTargetLine {
    sentence: usize,
    actor: String,
    start: usize,
    end: usize,
    label: i64,
    #[serde(default)]
    confidence: u8,
}

/// A labelled (sentence, actor) pair of a conflict-stance article.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictTarget {
    /// Index into [`ConflictArticle::sentences`].
    pub sentence: usize,
    pub actor: String,
    /// Byte offsets of the first mention of the actor in the sentence, into the article text.
    pub start: usize,
    pub end: usize,
    pub label: Label,
    /// 1 (judgement call) to 3 (any careful annotator agrees).
    pub confidence: u8,
}

/// A holistic article label, −2..+2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ArticleLabel {
    pub actor: String,
    pub label: i64,
}

/// A conflict-stance article: text, sentence spans, labelled pairs and article labels.
#[derive(Debug, Clone)]
pub struct ConflictArticle {
    pub id: String,
    pub text: String,
    pub sentences: Vec<SpanInput>,
    pub targets: Vec<ConflictTarget>,
    pub article: Vec<ArticleLabel>,
}

/// Loads a conflict-stance JSONL file (one article per line), checking every offset.
pub fn conflict_stance(path: &Path) -> Result<Vec<ConflictArticle>, DataError> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |reason: String| DataError::Bad { path: path.to_path_buf(), line: i + 1, reason };
        let row: ConflictLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        for (k, s) in row.sentences.iter().enumerate() {
            check_span(&row.text, s.start, s.end).map_err(|e| bad(format!("sentence {k}: {e}")))?;
        }
        let mut targets = Vec::with_capacity(row.targets.len());
        for (k, t) in row.targets.into_iter().enumerate() {
            let label = match t.label {
                -1 => Label::Negative,
                0 => Label::Neutral,
                1 => Label::Positive,
                other => return Err(bad(format!("target {k}: label {other} is not -1, 0 or 1"))),
            };
            let Some(s) = row.sentences.get(t.sentence) else {
                return Err(bad(format!("target {k}: sentence {} does not exist", t.sentence)));
            };
            check_span(&row.text, t.start, t.end).map_err(|e| bad(format!("target {k}: {e}")))?;
            if t.start < s.start || t.end > s.end {
                return Err(bad(format!(
                    "target {k}: mention {}..{} is not inside sentence {}",
                    t.start, t.end, t.sentence
                )));
            }
            targets.push(ConflictTarget {
                sentence: t.sentence,
                actor: t.actor,
                start: t.start,
                end: t.end,
                label,
                confidence: t.confidence,
            });
        }
        out.push(ConflictArticle {
            id: row.id,
            text: row.text,
            sentences: row.sentences,
            targets,
            article: row.article,
        });
    }
    Ok(out)
}

impl ConflictArticle {
    /// One example per sentence with labelled pairs: the sentence alone as the text, each
    /// labelled actor a target `t{k}`. The record gives the actor's first mention; with
    /// `matcher` (the data set's lexicon) every other occurrence of the actor in the sentence is
    /// added too, as the lexicon would find it end to end.
    pub fn sentence_examples(&self, matcher: Option<&ActorMatcher>) -> Vec<Example> {
        let mut by_sentence: std::collections::BTreeMap<usize, Vec<&ConflictTarget>> = Default::default();
        for t in &self.targets {
            by_sentence.entry(t.sentence).or_default().push(t);
        }
        by_sentence
            .into_iter()
            .map(|(si, targets)| {
                let s = self.sentences[si];
                let sentence = &self.text[s.start..s.end];
                let found = matcher.map(|m| m.find(sentence)).unwrap_or_default();
                // The records' own mentions first; then (training) every other lexicon occurrence
                // of a labelled actor, unless it overlaps a mention already taken (a name is
                // marked once).
                let mut mentions: Vec<ExplicitMention> = targets
                    .iter()
                    .enumerate()
                    .map(|(k, t)| ExplicitMention {
                        start: t.start - s.start,
                        end: t.end - s.start,
                        actor: format!("t{k}"),
                    })
                    .collect();
                let labels = targets.iter().map(|t| t.label).collect();
                if let Some(m) = matcher {
                    for (k, t) in targets.iter().enumerate() {
                        for f in found.iter().filter(|f| m.actor_name(f.actor) == t.actor) {
                            if !mentions.iter().any(|g| f.start < g.end && g.start < f.end) {
                                mentions.push(ExplicitMention { start: f.start, end: f.end, actor: format!("t{k}") });
                            }
                        }
                    }
                }
                Example {
                    input: ArticleInput {
                        id: format!("{}#{si}", self.id),
                        text: sentence.to_string(),
                        mentions: Some(mentions),
                        actors: None,
                        sentences: Some(vec![SpanInput { start: 0, end: sentence.len() }]),
                    },
                    targets: labels,
                    sentence: None,
                }
            })
            .collect()
    }

    /// The article as a user would send it: the text alone (sentences and mentions are the
    /// engine's own).
    pub fn end_to_end_input(&self) -> ArticleInput {
        ArticleInput { id: self.id.clone(), text: self.text.clone(), ..Default::default() }
    }
}

/// The files under a data folder (`../shared/data` by default).
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn newsmtsc(&self, name: &str) -> PathBuf {
        self.0.join("newsmtsc").join(format!("{name}.jsonl"))
    }
    /// `conflict-stance/{name}.jsonl` (`train` or `dev`).
    pub fn conflict(&self, name: &str) -> PathBuf {
        self.0.join("conflict-stance").join(format!("{name}.jsonl"))
    }
    /// The conflict-stance lexicon (31 states).
    pub fn conflict_actors(&self) -> PathBuf {
        self.0.join("conflict-stance").join("actors.toml")
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
    fn conflict_records_become_sentence_examples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.jsonl");
        // Sentence 1 mentions Russia twice ("Moscow", "Russia"); the record gives the first.
        let text = "Talks stall\n\nMoscow blamed Baku, and Russia walked out. Yerevan said nothing.";
        let s1 = text.find("Moscow").unwrap();
        let s2 = text.find("Yerevan").unwrap();
        let line = serde_json::json!({
            "id": "a1", "text": text,
            "sentences": [{"start": 0, "end": 11}, {"start": s1, "end": s2 - 1}, {"start": s2, "end": text.len()}],
            "targets": [
                {"sentence": 1, "actor": "Russia", "start": s1, "end": s1 + 6, "label": -1, "confidence": 3},
                {"sentence": 1, "actor": "Azerbaijan", "start": s1 + 14, "end": s1 + 18, "label": 0, "confidence": 2},
                {"sentence": 2, "actor": "Armenia", "start": s2, "end": s2 + 7, "label": 0, "confidence": 3}
            ],
            "article": [{"actor": "Russia", "label": -2}]
        });
        std::fs::write(&p, format!("{line}\n")).unwrap();
        let articles = conflict_stance(&p).unwrap();
        assert_eq!(articles[0].article, vec![ArticleLabel { actor: "Russia".into(), label: -2 }]);
        let explicit = articles[0].sentence_examples(None);
        assert_eq!(explicit.len(), 2, "one example per sentence with labelled pairs");
        let first = &explicit[0];
        assert_eq!(first.targets, vec![Label::Negative, Label::Neutral]);
        let m = first.input.mentions.as_ref().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(&first.input.text[m[0].start..m[0].end], "Moscow");
        assert_eq!(&first.input.text[m[1].start..m[1].end], "Baku");
        // With the lexicon, the second mention of Russia is added to the same target.
        let lexicon = crate::mentions::lexicon::Lexicon::default_actors();
        let matcher = ActorMatcher::new(&lexicon).unwrap();
        let full = articles[0].sentence_examples(Some(&matcher));
        let m = full[0].input.mentions.as_ref().unwrap();
        let russia: Vec<&str> =
            m.iter().filter(|x| x.actor == "t0").map(|x| &full[0].input.text[x.start..x.end]).collect();
        assert_eq!(russia, vec!["Moscow", "Russia"]);
        // A mention outside its sentence is refused with the line.
        let mut bad = line.clone();
        bad["targets"][2]["start"] = 0.into();
        bad["targets"][2]["end"] = 5.into();
        std::fs::write(&p, format!("{line}\n{bad}\n")).unwrap();
        let err = conflict_stance(&p).unwrap_err().to_string();
        assert!(err.contains("dev.jsonl:2") && err.contains("not inside sentence 2"), "{err}");
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
