//! Model folders: where a model's files are, what its manifest says, and loading them.
//!
//! A model is a folder (local, or a Hugging Face Hub repository) holding:
//! - `config.json`: the encoder's (BERT or MPNet) configuration;
//! - `tokenizer.json`: the `tokenizers` tokenizer;
//! - `encoder.safetensors` (or `model.safetensors`): the base encoder, never modified;
//! - `stance.safetensors`: what training produced: the heads, plus any encoder tensor that
//!   fine-tuning changed, whole or as an int8 delta of the base's (`trained_part.rs`);
//! - `manifest.json`: name, version, head shapes, and the training record.

mod hub;
pub mod manifest;
pub mod trained_part;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use hub::ModelSource;
pub use manifest::{Calibration, Manifest, TargetInput};

use crate::backend::{Backend, FastBackend, ReferenceBackend};
use crate::encoder::{ActivationRanges, Encoder, EncoderConfig, FastEncoder, Precision};
use crate::heads::Heads;
use crate::tokens::SentenceTokenizer;

/// Where a model is missing or broken; every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model folder {0} does not exist; pass --model with a folder that has config.json, tokenizer.json and encoder.safetensors, or a Hub id like org/name")]
    NotFound(PathBuf),
    #[error("model folder {dir} has no {file}; {hint}")]
    MissingFile { dir: PathBuf, file: &'static str, hint: &'static str },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path} is not a valid {what}: {reason}")]
    Invalid { path: PathBuf, what: &'static str, reason: String },
    #[error(transparent)]
    Tokenizer(#[from] crate::tokens::TokenizerError),
    #[error("cannot fetch {file} of {repo} from the Hugging Face Hub: {reason}. Without network access, use --model PATH with a local model folder (the default is models/mpnet-base-stance, the small one models/minilm-l6-stance), or fill the Hub cache (HF_HOME) beforehand")]
    Hub { repo: String, file: String, reason: String },
}

/// The resolved files of one model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// A label for messages: the folder or the Hub id.
    pub origin: String,
    /// What may be shown to a service's clients: the folder's name (not its path on the
    /// server's disk) or the Hub id.
    pub public_origin: String,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub encoder: PathBuf,
    pub stance: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    /// Calibrated activation ranges for int8 ([`INT8_RANGES_FILE`]), when the folder has them.
    pub int8_ranges: Option<PathBuf>,
}

/// The file of a model folder that holds its int8 activation ranges
/// ([`crate::encoder::ActivationRanges`]), written by `stance eval --precision int8
/// --fit-int8-ranges`.
pub const INT8_RANGES_FILE: &str = "int8_ranges.safetensors";

impl ModelFiles {
    /// Resolves a local model folder. `stance.safetensors` and `manifest.json` may be absent
    /// (a bare base encoder, as used to start training).
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound(dir.to_path_buf()));
        }
        let need = |file: &'static str, hint: &'static str| {
            let p = dir.join(file);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ModelError::MissingFile { dir: dir.to_path_buf(), file, hint })
            }
        };
        let optional = |file: &str| Some(dir.join(file)).filter(|p| p.is_file());
        let encoder = optional("encoder.safetensors").or_else(|| optional("model.safetensors")).ok_or(
            ModelError::MissingFile {
                dir: dir.to_path_buf(),
                file: "encoder.safetensors",
                hint: "a model folder needs the base encoder weights (encoder.safetensors or model.safetensors); where they are not committed, the folder's PROVENANCE.md says how to fetch them (models/mpnet-base-stance, the default: bash models/all-mpnet-base-v2/fetch.sh models/mpnet-base-stance; or score with the small committed model: --model models/minilm-l6-stance)",
            },
        )?;
        Ok(Self {
            origin: dir.display().to_string(),
            public_origin: dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "local model folder".into()),
            config: need("config.json", "copy the encoder's config.json into the folder")?,
            tokenizer: need("tokenizer.json", "copy the encoder's tokenizer.json into the folder")?,
            encoder,
            stance: optional("stance.safetensors"),
            manifest: optional("manifest.json"),
            int8_ranges: optional(INT8_RANGES_FILE),
        })
    }

    /// Resolves a model named on the command line: a local folder, or `org/name[@revision]`.
    pub fn resolve(spec: &str) -> Result<Self, ModelError> {
        match ModelSource::parse(spec) {
            ModelSource::Local(dir) => Self::from_dir(&dir),
            hub @ ModelSource::Hub { .. } => hub::fetch(&hub),
        }
    }
}

fn read_to_string(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path)
        .map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })
}

/// The tokenizer a manifest asks for: its window size and, for target-marker models, the
/// marker tokens (checked to fit the encoder's positions).
pub fn tokenizer_for(
    path: &Path,
    manifest: &Manifest,
    config: &EncoderConfig,
) -> Result<SentenceTokenizer, ModelError> {
    let tokenizer = SentenceTokenizer::from_file(path, manifest.max_tokens, config.framing())?;
    if manifest.max_tokens > config.max_positions() {
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            what: "model (manifest max_tokens)",
            reason: format!(
                "max_tokens {} is more than the encoder's {} positions",
                manifest.max_tokens,
                config.max_positions()
            ),
        });
    }
    match &manifest.target_input {
        TargetInput::Pooled => Ok(tokenizer),
        TargetInput::Markers { open, close } => {
            let longest = manifest.max_tokens + 2 * crate::tokens::MAX_MARKED;
            if longest > config.max_positions() {
                return Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    what: "model (manifest max_tokens with target markers)",
                    reason: format!(
                        "a marked window can reach {longest} tokens, more than the encoder's {} positions; lower max_tokens",
                        config.max_positions()
                    ),
                });
            }
            Ok(tokenizer.with_markers(path, open, close)?)
        }
    }
}

/// Reads `config.json`.
pub fn load_config(path: &Path) -> Result<EncoderConfig, ModelError> {
    let invalid =
        |reason: String| ModelError::Invalid { path: path.to_path_buf(), what: "encoder config.json", reason };
    let config: EncoderConfig = serde_json::from_str(&read_to_string(path)?).map_err(|e| invalid(e.to_string()))?;
    config.validate().map_err(invalid)?;
    Ok(config)
}

/// Loads a safetensors file as f32 tensors on `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| ModelError::Invalid {
        path: path.to_path_buf(),
        what: "safetensors file",
        reason: e.to_string(),
    })?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.to_dtype(DType::F32).map_err(|e| ModelError::Invalid {
                path: path.to_path_buf(),
                what: "safetensors file",
                reason: format!("tensor {name}: {e}"),
            })?;
            Ok((name, t))
        })
        .collect()
}

/// The base encoder's tensors with the trained part of `stance.safetensors` applied.
pub fn merged_tensors(files: &ModelFiles, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut tensors = load_tensors(&files.encoder, device)?;
    if let Some(stance) = &files.stance {
        trained_part::apply(stance, &mut tensors, device)?;
    }
    Ok(tensors)
}

/// Which encoder a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderChoice {
    /// The serving encoder, with its dense layers in this precision (`None`: the one the
    /// manifest records as passing its accuracy gate, else fp32).
    Fast(Option<Precision>),
    /// The candle-op reference encoder (fp32).
    Reference,
}

/// The precision a model serves at when none is asked for: the one its manifest records as
/// passing its accuracy gate, unless this CPU would only emulate it (the portable bf16 and int8
/// paths are slower than fp32), else fp32.
pub fn auto_precision(recorded: Option<Precision>) -> Precision {
    auto_precision_on(recorded, crate::encoder::cpu::paths().ok())
}

/// [`auto_precision`] on the CPU paths `paths` (`None`: this CPU has none the encoder runs).
fn auto_precision_on(recorded: Option<Precision>, paths: Option<crate::encoder::cpu::Paths>) -> Precision {
    use crate::encoder::cpu::Dot;
    let native = |p: Precision| match (paths, p) {
        (Some(paths), Precision::Bf16) => paths.bf16 != Dot::Portable,
        // int8 needs no bf16: the FFN's output layer runs bf16 only for int8 ranges that lack
        // its own (older files), and even with that layer emulated int8 stays the faster (MPNet
        // with BF16 forced portable: 1.63x fp32 at batch 1, 1.70x at batch 32).
        (Some(paths), Precision::Int8) => paths.int8 != Dot::Portable,
        (_, Precision::Fp32) => true,
        (None, _) => false,
    };
    recorded.filter(|&p| native(p)).unwrap_or(Precision::Fp32)
}

/// A loaded model: tokenizer, backend (encoder, pooling and heads) and the manifest's
/// description.
pub struct StanceModel {
    pub tokenizer: SentenceTokenizer,
    pub backend: Box<dyn Backend>,
    pub manifest: Manifest,
    pub files: ModelFiles,
}

/// The model folder's calibrated int8 activation ranges ([`INT8_RANGES_FILE`]), if it has them.
pub fn int8_ranges(files: &ModelFiles, config: &EncoderConfig) -> Result<Option<ActivationRanges>, ModelError> {
    let Some(path) = &files.int8_ranges else { return Ok(None) };
    let tensors = load_tensors(path, &Device::Cpu)?;
    ActivationRanges::from_tensors(&tensors, config.num_hidden_layers, config.hidden_size, config.intermediate_size)
        .map(Some)
        .map_err(|e| ModelError::Invalid { path: path.clone(), what: "int8 activation ranges", reason: e.to_string() })
}

impl StanceModel {
    /// Loads a complete model (one with trained heads) on the CPU, with the fast encoder at
    /// the model's own precision.
    pub fn load(files: &ModelFiles) -> Result<Self, ModelError> {
        Self::load_with(files, EncoderChoice::Fast(None))
    }

    /// Loads a complete model on the encoder `choice`.
    pub fn load_with(files: &ModelFiles, choice: EncoderChoice) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let manifest_path = files.manifest.clone().ok_or_else(|| ModelError::MissingFile {
            dir: PathBuf::from(&files.origin),
            file: "manifest.json",
            hint: "this looks like a bare encoder; train heads for it with `stance train --base <it>`",
        })?;
        let manifest = Manifest::load(&manifest_path)?;
        if files.stance.is_none() {
            return Err(ModelError::MissingFile {
                dir: PathBuf::from(&files.origin),
                file: "stance.safetensors",
                hint: "the trained heads are missing; train them with `stance train`",
            });
        }
        let config = load_config(&files.config)?;
        let tokenizer = tokenizer_for(&files.tokenizer, &manifest, &config)?;
        let tensors = merged_tensors(files, &device)?;
        let invalid = |what: &'static str, e: candle_core::Error| ModelError::Invalid {
            path: PathBuf::from(&files.origin),
            what,
            reason: e.to_string(),
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let heads = Heads::load(vb.pp("heads"), &manifest.heads).map_err(|e| invalid("stance heads", e))?;
        let backend: Box<dyn Backend> = match choice {
            EncoderChoice::Fast(precision) => {
                let precision = precision.unwrap_or_else(|| auto_precision(manifest.precision));
                let ranges = if precision == Precision::Int8 { int8_ranges(files, &config)? } else { None };
                let encoder = FastEncoder::load_calibrated(vb, &config, precision, ranges.as_ref())
                    .map_err(|e| invalid("encoder", e))?;
                Box::new(FastBackend::new(encoder, heads))
            }
            EncoderChoice::Reference => {
                Box::new(ReferenceBackend::new(Encoder::load(vb, &config).map_err(|e| invalid("encoder", e))?, heads))
            }
        };
        Ok(Self { tokenizer, backend, manifest, files: files.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::cpu::{Dot, Gemm, Paths, Simd};

    #[test]
    fn auto_precision_keeps_what_the_cpu_runs_natively() {
        let on = |bf16, int8| Some(Paths { simd: Simd::Avx512, gemm: Gemm::Avx512, bf16, int8 });
        let (int8, bf16) = (Some(Precision::Int8), Some(Precision::Bf16));
        assert_eq!(auto_precision_on(int8, on(Dot::Avx512, Dot::Avx512)), Precision::Int8);
        assert_eq!(auto_precision_on(int8, on(Dot::Amx, Dot::Amx)), Precision::Int8);
        // VNNI without BF16 (Ice Lake, Cascade Lake) still runs int8.
        assert_eq!(auto_precision_on(int8, on(Dot::Portable, Dot::Avx512)), Precision::Int8);
        assert_eq!(auto_precision_on(int8, on(Dot::Avx512, Dot::Portable)), Precision::Fp32);
        assert_eq!(auto_precision_on(bf16, on(Dot::Portable, Dot::Avx512)), Precision::Fp32);
        assert_eq!(auto_precision_on(bf16, on(Dot::Avx512, Dot::Portable)), Precision::Bf16);
        assert_eq!(auto_precision_on(None, on(Dot::Avx512, Dot::Avx512)), Precision::Fp32);
        assert_eq!(auto_precision_on(int8, None), Precision::Fp32);
    }
}
