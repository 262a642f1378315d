//! The one scoring pipeline: article → sentences → mentions → windows → encoder → heads →
//! aggregates. The CLI, the batch jobs and the gRPC service all call it; nothing is scored
//! anywhere else.
//!
//! Scoring is split in three steps so that a server can batch windows of many articles
//! together: [`Engine::prepare`] (CPU-light, validates the input), [`Engine::run_windows`]
//! (the model's [`Backend`](crate::backend::Backend), batched by its token budget) and
//! [`Engine::finish`] (aggregation).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::aggregates;
use crate::batches::{self, WindowInput};
use crate::error::{EngineError, InputError};
use crate::mentions::lexicon::{ActorDef, Lexicon};
use crate::mentions::matcher::ActorMatcher;
use crate::model::StanceModel;
use crate::scores::{ArticleScore, MentionSpan, ModelRef, Polarity, SentenceActor, SentenceKind, SentenceScore};
use crate::sentences::{self, SegmentKind};
use crate::tokens::{self, SentenceTokenizer};

/// A mention found by the caller's own recogniser: byte offsets into the article text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplicitMention {
    pub start: usize,
    pub end: usize,
    pub actor: String,
}

/// A sentence span given by the caller: byte offsets into the article text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpanInput {
    pub start: usize,
    pub end: usize,
}

/// One article to score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArticleInput {
    /// The caller's name for the article, echoed in the result (required in JSONL input).
    #[serde(default)]
    pub id: String,
    pub text: String,
    /// Mentions to score instead of those the lexicon finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Vec<ExplicitMention>>,
    /// Actor definitions replacing the default lexicon for this article (`Some([])`: no actors,
    /// sentiment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actors: Option<Vec<ActorDef>>,
    /// Sentence spans to use instead of the built-in splitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentences: Option<Vec<SpanInput>>,
}

/// Input limits, checked before any work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_article_bytes: usize,
    pub max_sentences: usize,
    pub max_mentions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_article_bytes: 1 << 20, max_sentences: 5_000, max_mentions: 20_000 }
    }
}

/// Calibrated probabilities for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScores {
    pub sentence: [f32; 3],
    pub targets: Vec<[f32; 3]>,
}

/// An actor in one sentence, with where its mentions went among the windows.
#[derive(Debug, Clone)]
pub struct PreparedActor {
    pub name: String,
    /// Byte spans in the article text.
    pub mentions: Vec<(usize, usize)>,
    /// `(window, target in that window, number of mentions placed there)`.
    pub refs: Vec<(usize, usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct PreparedSentence {
    pub start: usize,
    pub end: usize,
    pub kind: SentenceKind,
    /// Indices into [`Prepared::windows`] of the sentence's plain windows (its sentiment), with
    /// each window's content length. Target-marker windows follow them; actors' `refs` say
    /// which.
    pub windows: Range<usize>,
    pub window_lengths: Vec<usize>,
    pub actors: Vec<PreparedActor>,
}

/// An article ready for the encoder.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub text: String,
    pub sentences: Vec<PreparedSentence>,
    pub windows: Vec<WindowInput>,
}

/// The scoring engine: a loaded model, the default actor lexicon and the limits.
pub struct Engine {
    model: StanceModel,
    lexicon: Lexicon,
    matcher: ActorMatcher,
    limits: Limits,
    max_batch_tokens: usize,
}

impl Engine {
    pub fn new(model: StanceModel, lexicon: Lexicon, limits: Limits) -> Result<Self, EngineError> {
        let matcher = ActorMatcher::new(&lexicon).map_err(InputError::Actors)?;
        Ok(Self { model, lexicon, matcher, limits, max_batch_tokens: batches::DEFAULT_MAX_BATCH_TOKENS })
    }

    pub fn model(&self) -> &StanceModel {
        &self.model
    }

    pub fn lexicon(&self) -> &Lexicon {
        &self.lexicon
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn model_ref(&self) -> ModelRef {
        ModelRef { name: self.model.manifest.name.clone(), version: self.model.manifest.version.clone() }
    }

    /// Scores one article.
    pub fn score(&self, input: ArticleInput) -> Result<ArticleScore, EngineError> {
        self.score_many(vec![input]).pop().expect("one result per input")
    }

    /// Scores several articles, batching their sentences together. One result per input, in
    /// order; a bad input fails alone.
    pub fn score_many(&self, inputs: Vec<ArticleInput>) -> Vec<Result<ArticleScore, EngineError>> {
        let prepared: Vec<Result<Prepared, EngineError>> =
            inputs.into_iter().map(|i| self.prepare(i).map_err(EngineError::from)).collect();
        let all: Vec<&WindowInput> = prepared.iter().flatten().flat_map(|p| p.windows.iter()).collect();
        let scores = match self.run_windows(&all) {
            Ok(s) => s,
            Err(e) => return prepared.into_iter().map(|_| Err(EngineError::Compute(e.to_string()))).collect(),
        };
        let mut scores = scores.into_iter();
        prepared
            .into_iter()
            .map(|p| {
                let p = p?;
                let mine: Vec<WindowScores> = scores.by_ref().take(p.windows.len()).collect();
                Ok(self.finish(p, mine))
            })
            .collect()
    }

    /// Validates an article, splits it, finds mentions and cuts encoder windows.
    pub fn prepare(&self, input: ArticleInput) -> Result<Prepared, InputError> {
        prepare(&self.model.tokenizer, &self.matcher, &self.limits, input)
    }

    /// Runs the backend over windows (of any articles), in batches of at most
    /// [`Engine::max_batch_tokens`], and turns its logits into calibrated probabilities.
    pub fn run_windows(&self, windows: &[&WindowInput]) -> candle_core::Result<Vec<WindowScores>> {
        let cal = self.model.manifest.calibration;
        let logits = self.model.backend.score(windows, self.max_batch_tokens)?;
        Ok(logits
            .into_iter()
            .map(|l| WindowScores {
                sentence: softmax(l.sentence, cal.sentence_temperature),
                targets: l.targets.into_iter().map(|t| softmax(t, cal.target_temperature)).collect(),
            })
            .collect())
    }

    /// What a batch of these windows costs the backend, in tokens (for batching and metrics).
    pub fn batch_tokens(&self, windows: &[&WindowInput]) -> usize {
        self.model.backend.batch_tokens(windows)
    }

    /// The token budget of one backend batch.
    pub fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    /// Sets the token budget of one backend batch (the server's `--max-batch-tokens`).
    pub fn with_max_batch_tokens(mut self, tokens: usize) -> Self {
        self.max_batch_tokens = tokens.max(1);
        self
    }

    /// Turns window scores into the article's result.
    pub fn finish(&self, p: Prepared, scores: Vec<WindowScores>) -> ArticleScore {
        let chars = CharIndex::new(&p.text);
        let span = |a: usize, b: usize| MentionSpan {
            start: a,
            end: b,
            char_start: chars.at(a),
            char_end: chars.at(b),
            text: p.text[a..b].to_string(),
        };
        let sentences: Vec<SentenceScore> = p
            .sentences
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let sentiment = mean_probs(
                    s.windows.clone().zip(&s.window_lengths).map(|(w, &len)| (scores[w].sentence, len.max(1) as f32)),
                );
                let actors = s
                    .actors
                    .iter()
                    .map(|a| SentenceActor {
                        actor: a.name.clone(),
                        mentions: a.mentions.iter().map(|&(x, y)| span(x, y)).collect(),
                        polarity: mean_probs(a.refs.iter().map(|&(w, t, n)| (scores[w].targets[t], n as f32))),
                    })
                    .collect();
                SentenceScore {
                    index,
                    start: s.start,
                    end: s.end,
                    char_start: chars.at(s.start),
                    char_end: chars.at(s.end),
                    kind: s.kind,
                    text: p.text[s.start..s.end].to_string(),
                    windows: s.windows.len(),
                    sentiment,
                    actors,
                }
            })
            .collect();
        ArticleScore {
            id: p.id,
            model: self.model_ref(),
            actors: aggregates::actors(&sentences),
            sentiment: aggregates::article_sentiment(&sentences),
            sentences,
        }
    }
}

/// Validates an article, splits it, finds mentions (with `matcher`, unless the input brings its
/// own mentions or actors) and cuts encoder windows.
pub fn prepare(
    tok: &SentenceTokenizer,
    matcher: &ActorMatcher,
    limits: &Limits,
    input: ArticleInput,
) -> Result<Prepared, InputError> {
    let ArticleInput { id, text, mentions, actors, sentences } = input;
    if text.len() > limits.max_article_bytes {
        return Err(InputError::TooLarge { bytes: text.len(), max: limits.max_article_bytes });
    }
    if text.trim().is_empty() {
        return Err(InputError::EmptyText);
    }
    let segments: Vec<(usize, usize, SentenceKind)> = match sentences {
        Some(spans) => validate_sentences(&text, &spans)?,
        None => sentences::split(&text)
            .into_iter()
            .map(|s| {
                let kind = match s.kind {
                    SegmentKind::Sentence => SentenceKind::Sentence,
                    SegmentKind::Heading => SentenceKind::Heading,
                    SegmentKind::Media => SentenceKind::Media,
                };
                (s.start, s.end, kind)
            })
            .collect(),
    };
    if segments.is_empty() {
        return Err(InputError::EmptyText);
    }
    if segments.len() > limits.max_sentences {
        return Err(InputError::TooManySentences { count: segments.len(), max: limits.max_sentences });
    }
    let found: Vec<(usize, usize, String)> = match (mentions, actors) {
        (Some(explicit), _) => validate_mentions(&text, explicit)?,
        (None, Some(defs)) if defs.is_empty() => Vec::new(),
        (None, Some(defs)) => {
            let lexicon = Lexicon::from_defs(defs).map_err(InputError::Actors)?;
            let matcher = ActorMatcher::new(&lexicon).map_err(InputError::Actors)?;
            matcher.find(&text).into_iter().map(|m| (m.start, m.end, matcher.actor_name(m.actor).to_string())).collect()
        }
        (None, None) => {
            matcher.find(&text).into_iter().map(|m| (m.start, m.end, matcher.actor_name(m.actor).to_string())).collect()
        }
    };
    if found.len() > limits.max_mentions {
        return Err(InputError::TooManyMentions { count: found.len(), max: limits.max_mentions });
    }
    // Each mention belongs to the sentence holding its start (or the next one, if it
    // starts between sentences).
    let mut per_sentence: Vec<Vec<(usize, usize, String)>> = vec![Vec::new(); segments.len()];
    for m in found {
        let i = segments.partition_point(|s| s.1 <= m.0).min(segments.len() - 1);
        per_sentence[i].push(m);
    }
    let mut windows = Vec::new();
    let mut prepared = Vec::with_capacity(segments.len());
    for ((start, end, kind), mentions) in segments.into_iter().zip(per_sentence) {
        let sentence = &text[start..end];
        let t = tok.tokenize(sentence).map_err(|e| InputError::Tokenize(e.to_string()))?;
        let first = windows.len();
        let mut local: Vec<WindowInput> =
            (0..t.windows.len()).map(|w| WindowInput { ids: tok.window_ids(&t, w), targets: Vec::new() }).collect();
        let mut by_actor: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (a, b, name) in mentions {
            by_actor.entry(name).or_default().push((a, b));
        }
        let mut actors = Vec::with_capacity(by_actor.len());
        // Target-marker models: one extra window per (window, actor), after the plain ones.
        let mut marked: Vec<WindowInput> = Vec::new();
        // Actors in order of first mention.
        let mut ordered: Vec<(String, Vec<(usize, usize)>)> = by_actor.into_iter().collect();
        ordered.sort_by_key(|(_, spans)| spans.iter().map(|s| s.0).min());
        for (name, spans) in ordered {
            let mut per_window: BTreeMap<usize, Vec<Range<usize>>> = BTreeMap::new();
            for &(a, b) in &spans {
                let rel_a = a.saturating_sub(start).min(end - start);
                let rel_b = b.saturating_sub(start).min(end - start).max(rel_a);
                let pieces = t.pieces_for_span(rel_a, rel_b);
                let (w, positions) = t.place(&pieces);
                per_window.entry(w).or_default().push(positions);
            }
            let refs = per_window
                .into_iter()
                .map(|(w, positions)| {
                    let n = positions.len();
                    match tok.markers() {
                        None => {
                            local[w].targets.push(positions);
                            (first + w, local[w].targets.len() - 1, n)
                        }
                        Some(markers) => {
                            let (ids, positions) = tokens::mark(&local[w].ids, &positions, markers);
                            marked.push(WindowInput { ids, targets: vec![positions] });
                            (first + local.len() + marked.len() - 1, 0, n)
                        }
                    }
                })
                .collect();
            actors.push(PreparedActor { name, mentions: spans, refs });
        }
        let window_lengths = t.windows.iter().map(|r| r.len()).collect();
        windows.extend(local);
        let plain = first..windows.len();
        windows.extend(marked);
        prepared.push(PreparedSentence { start, end, kind, windows: plain, window_lengths, actors });
    }
    Ok(Prepared { id, text, sentences: prepared, windows })
}

/// Softmax of one window's logits at temperature `t`.
fn softmax(logits: [f32; 3], t: f32) -> [f32; 3] {
    let z = logits.map(|x| x / t);
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e = z.map(|x| (x - m).exp());
    let total: f32 = e.iter().sum();
    e.map(|x| x / total)
}

/// Weighted mean of probability vectors.
fn mean_probs(items: impl Iterator<Item = ([f32; 3], f32)>) -> Polarity {
    let mut acc = [0f32; 3];
    let mut total = 0f32;
    for (p, w) in items {
        for k in 0..3 {
            acc[k] += w * p[k];
        }
        total += w;
    }
    if total > 0.0 {
        Polarity::from_probs(acc.map(|a| a / total))
    } else {
        Polarity::from_probs([0.0, 1.0, 0.0])
    }
}

/// Byte offset → Unicode scalar offset.
struct CharIndex {
    starts: Vec<usize>,
}

impl CharIndex {
    fn new(text: &str) -> Self {
        Self { starts: text.char_indices().map(|(i, _)| i).collect() }
    }

    fn at(&self, byte: usize) -> usize {
        self.starts.partition_point(|&b| b < byte)
    }
}

fn validate_mentions(text: &str, explicit: Vec<ExplicitMention>) -> Result<Vec<(usize, usize, String)>, InputError> {
    explicit
        .into_iter()
        .enumerate()
        .map(|(index, m)| {
            let bad = |reason: String| InputError::Mention { index, reason };
            if m.actor.trim().is_empty() {
                return Err(bad("actor name is empty".into()));
            }
            check_span(text, m.start, m.end).map_err(bad)?;
            Ok((m.start, m.end, m.actor))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|mut v| {
            v.sort_by_key(|m| (m.0, m.1));
            v
        })
}

fn validate_sentences(text: &str, spans: &[SpanInput]) -> Result<Vec<(usize, usize, SentenceKind)>, InputError> {
    if spans.is_empty() {
        return Err(InputError::Sentence {
            index: 0,
            reason: "the sentence list is empty; omit it to use the built-in splitter".into(),
        });
    }
    let mut prev_end = 0;
    spans
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let bad = |reason: String| InputError::Sentence { index, reason };
            check_span(text, s.start, s.end).map_err(bad)?;
            if s.start < prev_end {
                return Err(bad(format!("starts at {} before the previous sentence ends ({prev_end}); sentences must be in order and not overlap", s.start)));
            }
            prev_end = s.end;
            Ok((s.start, s.end, SentenceKind::Sentence))
        })
        .collect()
}

/// A non-empty byte span inside `text`, on character boundaries.
pub(crate) fn check_span(text: &str, start: usize, end: usize) -> Result<(), String> {
    if start >= end {
        return Err(format!("start {start} is not before end {end}"));
    }
    if end > text.len() {
        return Err(format!("end {end} is beyond the end of the text ({} bytes)", text.len()));
    }
    for o in [start, end] {
        if !text.is_char_boundary(o) {
            return Err(format!("byte offset {o} is inside a UTF-8 character; offsets are UTF-8 byte offsets"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_index_counts_scalars() {
        let c = CharIndex::new("Erdoğan’s Türkiye");
        assert_eq!(c.at(0), 0);
        assert_eq!(c.at("Erdoğ".len()), 5);
        assert_eq!(c.at("Erdoğan’s Türkiye".len()), 17);
    }

    #[test]
    fn spans_are_checked() {
        let text = "Türkiye said";
        assert!(check_span(text, 0, 8).is_ok());
        assert!(check_span(text, 0, 2).unwrap_err().contains("inside a UTF-8 character"));
        assert!(check_span(text, 3, 3).unwrap_err().contains("not before"));
        assert!(check_span(text, 0, 99).unwrap_err().contains("beyond the end"));
        let err = validate_mentions(text, vec![ExplicitMention { start: 0, end: 8, actor: " ".into() }]).unwrap_err();
        assert!(err.to_string().contains("mention 0"), "{err}");
        let err =
            validate_sentences(text, &[SpanInput { start: 0, end: 8 }, SpanInput { start: 4, end: 13 }]).unwrap_err();
        assert!(err.to_string().contains("sentence 1"), "{err}");
    }

    fn bundled_tokenizer() -> SentenceTokenizer {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::DEFAULT_MODEL_DIR).join("tokenizer.json");
        SentenceTokenizer::from_file(&path, 128, ("[CLS]", "[SEP]")).unwrap()
    }

    #[test]
    fn marker_models_get_one_marked_window_per_actor() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::DEFAULT_MODEL_DIR).join("tokenizer.json");
        let tok = bundled_tokenizer().with_markers(&path, "<", ">").unwrap();
        let (open, close) = tok.markers().unwrap();
        let lexicon = Lexicon::default_actors();
        let matcher = ActorMatcher::new(&lexicon).unwrap();
        let text = "Azerbaijan won decisively, while Armenia and Yerevan's allies lost. Nothing else.";
        let input = ArticleInput { id: "m".into(), text: text.into(), ..Default::default() };
        let p = prepare(&tok, &matcher, &Limits::default(), input).unwrap();
        let s = &p.sentences[0];
        assert_eq!(s.windows, 0..1, "the sentiment pass is the plain window");
        assert!(p.windows[0].targets.is_empty());
        assert_eq!(s.actors.len(), 2);
        // Sentence 0: plain window 0, then Azerbaijan's (1) and Armenia's (2); sentence 1: 3.
        assert_eq!(p.windows.len(), 4);
        assert_eq!(p.sentences[1].windows, 3..4);
        let plain = &p.windows[0].ids;
        for (a, (want_window, marked_mentions)) in s.actors.iter().zip([(1, 1), (2, 2)]) {
            assert_eq!(a.refs, vec![(want_window, 0, marked_mentions)], "{}", a.name);
            let w = &p.windows[want_window];
            assert_eq!(w.targets.len(), 1);
            assert_eq!(w.targets[0].len(), marked_mentions);
            assert_eq!(w.ids.len(), plain.len() + 2 * marked_mentions);
            for r in &w.targets[0] {
                assert_eq!((w.ids[r.start], w.ids[r.end - 1]), (open, close));
            }
            // Without the markers, the window is the plain one.
            let stripped: Vec<u32> = w.ids.iter().copied().filter(|&i| i != open && i != close).collect();
            assert_eq!(&stripped, plain);
        }
        // A pooled model marks nothing and scores the actors in the plain window.
        let input = ArticleInput { id: "m".into(), text: text.into(), ..Default::default() };
        let p = prepare(&bundled_tokenizer(), &matcher, &Limits::default(), input).unwrap();
        assert_eq!(p.windows.len(), 2);
        assert_eq!(p.windows[0].targets.len(), 2);
    }

    #[test]
    fn softmax_at_a_temperature() {
        let p = softmax([1.0, 2.0, 3.0], 1.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.66524096).abs() < 1e-6, "{p:?}");
        // A higher temperature flattens, the order stays.
        let q = softmax([1.0, 2.0, 3.0], 2.0);
        assert!(q[2] < p[2] && q[0] > p[0] && q[2] > q[1]);
    }

    #[test]
    fn mean_probs_weights() {
        let p = mean_probs([([1.0, 0.0, 0.0], 1.0), ([0.0, 0.0, 1.0], 3.0)].into_iter());
        assert_eq!(p.probs(), [0.25, 0.0, 0.75]);
        assert_eq!(mean_probs(std::iter::empty()).label, crate::scores::Label::Neutral);
    }
}
