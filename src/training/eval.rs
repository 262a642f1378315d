//! Scoring labelled examples through the pipeline, exactly as the service would.

use crate::error::EngineError;
use crate::pipeline::Engine;
use crate::scores::Label;
use crate::training::data::Example;
use crate::training::metrics::Confusion;

/// Examples per `score_many` call: enough to batch windows well, small enough for memory.
const CHUNK: usize = 128;

/// Scores `examples` and counts target labels (NewsMTSC) and sentence labels (VADER).
pub fn evaluate(engine: &Engine, examples: &[Example]) -> Result<(Confusion, Confusion), EngineError> {
    let mut targets = Confusion::default();
    let mut sentences = Confusion::default();
    for chunk in examples.chunks(CHUNK) {
        let results = engine.score_many(chunk.iter().map(|e| e.input.clone()).collect());
        for (ex, res) in chunk.iter().zip(results) {
            let score = res?;
            if let Some(gold) = ex.sentence {
                let predicted = score.sentences.first().map(|s| s.sentiment.label).unwrap_or(Label::Neutral);
                sentences.add(gold, predicted);
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
            }
        }
    }
    Ok((targets, sentences))
}
