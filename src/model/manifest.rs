//! `manifest.json`: what a model folder is, how its heads are shaped, how it was trained.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Shapes of the scoring heads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadsConfig {
    /// Hidden size of the encoder output the heads read.
    pub input: usize,
    /// Hidden width of each head's two-layer MLP.
    pub hidden: usize,
}

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
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub scores: serde_json::Value,
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
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}
