//! The engine: the one scoring pipeline, article → sentences → mentions → windows → encoder →
//! heads → aggregates. The CLI, the batch jobs and the gRPC service all call it; nothing is
//! scored anywhere else.
//!
//! Scoring is split in three steps so that a server can batch windows of many articles
//! together: [`Engine::prepare`] ([`crate::prepare`]: CPU-light, validates the input),
//! [`Engine::run_windows`] (the model's [`Backend`](crate::backend::Backend), batched by its
//! token budget) and [`Engine::finish`] (aggregation).

use crate::aggregates;
use crate::batches::{self, WindowInput};
use crate::error::{EngineError, InputError};
use crate::input::{ArticleInput, Limits};
use crate::mentions::lexicon::Lexicon;
use crate::mentions::matcher::ActorMatcher;
use crate::model::StanceModel;
use crate::prepare::{self, Prepared};
use crate::scores::{ArticleScore, MentionSpan, ModelRef, Polarity, SentenceActor, SentenceScore};

/// Calibrated probabilities for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScores {
    pub sentence: [f32; 3],
    pub targets: Vec<[f32; 3]>,
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
        ModelRef {
            name: self.model.manifest.name.clone(),
            version: self.model.manifest.version.clone(),
            precision: self.model.backend.precision(),
        }
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
        prepare::prepare(&self.model.tokenizer, &self.matcher, &self.limits, input)
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
            // The faces echo the caller's metadata; the engine never sees it.
            meta: Default::default(),
            model: self.model_ref(),
            actors: aggregates::actors(&sentences),
            sentiment: aggregates::article_sentiment(&sentences),
            sentences,
        }
    }
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
