//! Scoring labelled examples through the pipeline, exactly as the service would.

use crate::error::EngineError;
use crate::pipeline::Engine;
use crate::scores::Label;
use crate::training::data::Example;
use crate::training::metrics::Confusion;

/// Examples per `score_many` call: enough to batch windows well, small enough for memory.
const CHUNK: usize = 128;

/// One scored item: a target (`Some(k)`) or a sentence (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub target: Option<usize>,
    pub gold: Label,
    pub predicted: Label,
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
                let predicted = score.sentences.first().map(|s| s.sentiment.label).unwrap_or(Label::Neutral);
                sentences.add(gold, predicted);
                predictions.push(Prediction { id: ex.input.id.clone(), target: None, gold, predicted });
            }
            for (k, gold) in ex.targets.iter().enumerate() {
                let name = format!("t{k}");
                let predicted = score
                    .sentences
                    .iter()
                    .flat_map(|s| s.actors.iter())
                    .find(|a| a.actor == name)
                    .map(|a| a.polarity.label)
                    .ok_or_else(|| EngineError::Compute(format!("{}: target {name} was not scored", ex.input.id)))?;
                targets.add(*gold, predicted);
                predictions.push(Prediction { id: ex.input.id.clone(), target: Some(k), gold: *gold, predicted });
            }
        }
    }
    Ok((targets, sentences, predictions))
}
