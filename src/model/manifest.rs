//! `manifest.json`: what a model folder is, how its heads are shaped, how it was trained.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;
pub use crate::heads::HeadsConfig;

/// The model folder's description. `training` and `scores` are free-form records written by
/// `stance train` / `stance eval`, kept for people.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Tokens per encoder window, special tokens included; longer sentences are windowed.
    pub max_tokens: usize,
    /// Class order of both heads' outputs.
    pub labels: Vec<String>,
    pub heads: HeadsConfig,
    /// How the encoder is told which actor is judged.
    #[serde(default)]
    pub target_input: TargetInput,
    /// Temperatures that calibrate the heads' probabilities (fitted on dev by `stance eval
    /// --calibrate`).
    #[serde(default)]
    pub calibration: Calibration,
    /// The dense-layer precision the model serves at unless told otherwise: the fastest that
    /// passed its accuracy gate (`stance eval --precision`); absent means fp32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::encoder::Precision>,
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub scores: serde_json::Value,
}

/// What the encoder sees for a (sentence, actor) pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TargetInput {
    /// One pass per sentence window; each actor's mention states are pooled from it. Cheapest,
    /// but the encoder does not know which actor is judged.
    #[default]
    Pooled,
    /// One pass per (window, actor): the actor's mentions are wrapped in the two marker tokens
    /// (vocabulary entries, inserted as ids, so offsets into the text are untouched), and the
    /// sentence's sentiment has a pass of its own without markers.
    Markers { open: String, close: String },
}

/// Softmax temperatures: probabilities are `softmax(logits / T)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub target_temperature: f32,
    pub sentence_temperature: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self { target_temperature: 1.0, sentence_temperature: 1.0 }
    }
}

pub const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

impl Manifest {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
        let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), what: "model manifest", reason };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if m.labels != LABELS {
            return Err(invalid(format!("labels must be {LABELS:?}, found {:?}", m.labels)));
        }
        if !(8..=512).contains(&m.max_tokens) {
            return Err(invalid(format!("max_tokens must be within 8..=512, found {}", m.max_tokens)));
        }
        for (what, t) in
            [("target", m.calibration.target_temperature), ("sentence", m.calibration.sentence_temperature)]
        {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid(format!(
                    "calibration: the {what} temperature must be a positive number, found {t}"
                )));
            }
        }
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}
