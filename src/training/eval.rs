//! Scoring labelled examples through the pipeline, exactly as the service would.

use crate::error::EngineError;
use crate::mentions::lexicon::Lexicon;
use crate::pipeline::Engine;
use crate::scores::{ArticleScore, Label};
use crate::training::data::{ConflictArticle, Example};
use crate::training::metrics::{self, Confusion};

/// Examples per `score_many` call: enough to batch windows well, small enough for memory.
const CHUNK: usize = 128;

/// One scored item: a target (`Some(k)`) or a sentence (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub target: Option<usize>,
    pub gold: Label,
    pub predicted: Label,
    /// Negative, neutral, positive.
    pub probs: [f32; 3],
}

impl Prediction {
    pub fn item(&self) -> ([f32; 3], Label) {
        (self.probs, self.gold)
    }
}

/// Scores `examples` and counts target labels (NewsMTSC) and sentence labels (VADER); also
/// returns every prediction.
pub fn evaluate(engine: &Engine, examples: &[Example]) -> Result<(Confusion, Confusion, Vec<Prediction>), EngineError> {
    let mut targets = Confusion::default();
    let mut sentences = Confusion::default();
    let mut predictions = Vec::new();
    for chunk in examples.chunks(CHUNK) {
        let results = engine.score_many(chunk.iter().map(|e| e.input.clone()).collect());
        for (ex, res) in chunk.iter().zip(results) {
            let score = res?;
            if let Some(gold) = ex.sentence {
                let p = score
                    .sentences
                    .first()
                    .map(|s| s.sentiment)
                    .ok_or_else(|| EngineError::Compute(format!("{}: no sentence was scored", ex.input.id)))?;
                sentences.add(gold, p.label);
                predictions.push(Prediction {
                    id: ex.input.id.clone(),
                    target: None,
                    gold,
                    predicted: p.label,
                    probs: p.probs(),
                });
            }
            for (k, gold) in ex.targets.iter().enumerate() {
                let name = format!("t{k}");
                let p = score
                    .sentences
                    .iter()
                    .flat_map(|s| s.actors.iter())
                    .find(|a| a.actor == name)
                    .map(|a| a.polarity)
                    .ok_or_else(|| EngineError::Compute(format!("{}: target {name} was not scored", ex.input.id)))?;
                targets.add(*gold, p.label);
                predictions.push(Prediction {
                    id: ex.input.id.clone(),
                    target: Some(k),
                    gold: *gold,
                    predicted: p.label,
                    probs: p.probs(),
                });
            }
        }
    }
    Ok((targets, sentences, predictions))
}

/// An article label against the article score the engine gave the actor.
#[derive(Debug, Clone, PartialEq)]
pub struct ArticleItem {
    pub id: String,
    pub actor: String,
    /// −2..+2.
    pub gold: i64,
    /// The actor's article score; `None` when the engine found no mention of it.
    pub score: Option<f32>,
}

/// conflict-stance scored as a user would: the text alone, the data set's lexicon, the
/// engine's own sentences and mentions.
#[derive(Debug, Clone, Default)]
pub struct EndToEnd {
    /// Gold pairs against predictions; a pair whose actor the engine found in no sentence
    /// overlapping the gold sentence counts as predicted neutral.
    pub pairs: Confusion,
    /// Gold pairs whose actor was found.
    pub found: usize,
    pub articles: Vec<ArticleItem>,
}

impl EndToEnd {
    /// Share of non-zero article labels whose sign the article score has (a score of exactly 0,
    /// or an actor not found, agrees with no sign), and how many such labels there are.
    pub fn sign_agreement(&self) -> (f64, usize, usize) {
        let nonzero: Vec<&ArticleItem> = self.articles.iter().filter(|a| a.gold != 0).collect();
        let agree = nonzero
            .iter()
            .filter(|a| {
                let s = a.score.unwrap_or(0.0);
                (a.gold > 0 && s > 0.0) || (a.gold < 0 && s < 0.0)
            })
            .count();
        (agree as f64 / nonzero.len().max(1) as f64, agree, nonzero.len())
    }

    /// Spearman's correlation of article labels and scores over all labelled (article, actor)
    /// pairs (an actor not found scores 0).
    pub fn spearman(&self) -> Option<f64> {
        let gold: Vec<f64> = self.articles.iter().map(|a| a.gold as f64).collect();
        let score: Vec<f64> = self.articles.iter().map(|a| a.score.unwrap_or(0.0) as f64).collect();
        metrics::spearman(&gold, &score)
    }
}

/// Articles per `score_many` call.
const ARTICLE_CHUNK: usize = 8;

/// Scores `articles` end to end with `lexicon` as the request's actors.
pub fn evaluate_end_to_end(
    engine: &Engine,
    articles: &[ConflictArticle],
    lexicon: &Lexicon,
) -> Result<EndToEnd, EngineError> {
    let mut out = EndToEnd::default();
    for chunk in articles.chunks(ARTICLE_CHUNK) {
        let inputs = chunk
            .iter()
            .map(|a| {
                let mut input = a.end_to_end_input();
                input.actors = Some(lexicon.actors.clone());
                input
            })
            .collect();
        for (article, res) in chunk.iter().zip(engine.score_many(inputs)) {
            let score = res?;
            for t in &article.targets {
                let predicted = match match_pair(&score, article, t) {
                    Some(label) => {
                        out.found += 1;
                        label
                    }
                    None => Label::Neutral,
                };
                out.pairs.add(t.label, predicted);
            }
            for a in &article.article {
                let score = score.actors.iter().find(|x| x.actor == a.actor).map(|x| x.score);
                out.articles.push(ArticleItem { id: article.id.clone(), actor: a.actor.clone(), gold: a.label, score });
            }
        }
    }
    Ok(out)
}

/// The engine's label for a gold pair: the actor in the engine's sentence that holds the gold
/// mention, else in any engine sentence overlapping the gold sentence.
fn match_pair(
    score: &ArticleScore,
    article: &ConflictArticle,
    t: &crate::training::data::ConflictTarget,
) -> Option<Label> {
    let gold = article.sentences[t.sentence];
    let overlapping = score.sentences.iter().filter(|s| s.start < gold.end && gold.start < s.end);
    let mut fallback = None;
    for s in overlapping {
        if let Some(a) = s.actors.iter().find(|a| a.actor == t.actor) {
            if s.start <= t.start && t.start < s.end {
                return Some(a.polarity.label);
            }
            fallback.get_or_insert(a.polarity.label);
        }
    }
    fallback
}

/// A lower precision against fp32 on the dev pair sets: the accuracy gate a precision must
/// pass to serve by default (macro-F1 within [`GATE_F1_POINTS`] of fp32 on every set, labels
/// the same as fp32's on at least [`GATE_AGREEMENT`] of all pairs).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrecisionGate {
    /// Per set: its name, fp32's macro-F1 and this precision's.
    pub sets: Vec<(String, f64, f64)>,
    /// Pairs whose predicted label is fp32's, and all pairs.
    pub agree: usize,
    pub pairs: usize,
    pub passed: bool,
}

/// Most macro-F1 a precision may lose on a dev set, in points (0.005).
pub const GATE_F1_POINTS: f64 = 0.5;
/// Least share of dev pairs whose label must be fp32's.
pub const GATE_AGREEMENT: f64 = 0.99;

impl PrecisionGate {
    /// `ours` and `fp32`: per dev set, its name, macro-F1 and predictions, in the same order
    /// (the same examples scored by both).
    pub fn new(ours: &[(String, f64, Vec<Prediction>)], fp32: &[(String, f64, Vec<Prediction>)]) -> Self {
        assert_eq!(ours.len(), fp32.len(), "the same sets");
        let (mut agree, mut pairs, mut sets) = (0, 0, Vec::new());
        for ((name, f1, preds), (name32, f1_32, preds32)) in ours.iter().zip(fp32) {
            assert_eq!((name, preds.len()), (name32, preds32.len()), "the same examples");
            for (a, b) in preds.iter().zip(preds32) {
                debug_assert_eq!((&a.id, a.target), (&b.id, b.target));
                pairs += 1;
                agree += usize::from(a.predicted == b.predicted);
            }
            sets.push((name.clone(), *f1_32, *f1));
        }
        let f1_ok = sets.iter().all(|(_, f32_, f)| (f32_ - f) * 100.0 <= GATE_F1_POINTS);
        let passed = f1_ok && pairs > 0 && agree as f64 >= GATE_AGREEMENT * pairs as f64;
        Self { sets, agree, pairs, passed }
    }

    pub fn agreement(&self) -> f64 {
        self.agree as f64 / self.pairs.max(1) as f64
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn preds(labels: &[Label]) -> Vec<Prediction> {
        labels
            .iter()
            .enumerate()
            .map(|(i, &l)| Prediction { id: format!("x{i}"), target: Some(0), gold: l, predicted: l, probs: [0.0; 3] })
            .collect()
    }

    #[test]
    fn the_gate_holds_f1_and_agreement() {
        let fp32 = preds(&[Label::Negative; 200]);
        let mut two_off = fp32.clone();
        two_off[0].predicted = Label::Neutral;
        two_off[1].predicted = Label::Positive;
        let set = |f1, p: &Vec<Prediction>| vec![("dev".to_string(), f1, p.clone())];
        // 198/200 agree (99%), F1 0.4 points lower: passes.
        let g = PrecisionGate::new(&set(0.796, &two_off), &set(0.800, &fp32));
        assert!(g.passed && (g.agree, g.pairs) == (198, 200), "{g:?}");
        // 0.6 points lower: fails however well labels agree.
        assert!(!PrecisionGate::new(&set(0.794, &fp32), &set(0.800, &fp32)).passed);
        // A better F1 never fails the gate; 197/200 agreeing does.
        let mut three_off = two_off.clone();
        three_off[2].predicted = Label::Neutral;
        let g = PrecisionGate::new(&set(0.9, &three_off), &set(0.8, &fp32));
        assert!(!g.passed && g.agree == 197, "{g:?}");
    }
}
