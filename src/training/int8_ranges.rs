//! Calibrating int8: the per-channel activation ranges of the int8 layers' inputs, observed
//! with the fp32 encoder on training sentences (never dev or test), written beside the model
//! (`int8_ranges.safetensors`) where the int8 encoder reads them (SmoothQuant smoothing).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::data::{self, DataDir};
use super::train::TrainError;
use crate::encoder::{ActivationRanges, FastEncoder, Precision};
use crate::input::Limits;
use crate::mentions::lexicon::Lexicon;
use crate::model::{load_config, merged_tensors, EncoderChoice, ModelFiles, StanceModel, INT8_RANGES_FILE};
use crate::pipeline::Engine;

/// Sequences per forward pass while observing.
const BATCH: usize = 32;

/// Observes the ranges over the encoder windows (plain and target-marked, as served) of the
/// first `per_set` sentences of NewsMTSC train and of conflict-stance train each, in file
/// order. Returns the ranges and how many windows they were observed on.
pub fn fit(files: &ModelFiles, data: &DataDir, per_set: usize) -> Result<(ActivationRanges, usize), TrainError> {
    let model = StanceModel::load_with(files, EncoderChoice::Fast(Some(Precision::Fp32)))?;
    let engine = Engine::new(model, Lexicon::default_actors(), Limits::default())?;
    let mut inputs: Vec<_> =
        data::newsmtsc(&data.newsmtsc("train"))?.into_iter().take(per_set).map(|e| e.input).collect();
    let conflict = data::conflict_stance(&data.conflict("train"))?;
    inputs.extend(conflict.iter().flat_map(|a| a.sentence_examples(None)).take(per_set).map(|e| e.input));
    let mut windows = Vec::new();
    for input in inputs {
        let id = input.id.clone();
        let prepared = engine.prepare(input).map_err(|source| TrainError::Prepare { id, source })?;
        windows.extend(prepared.windows.into_iter().map(|w| w.ids));
    }
    let device = Device::Cpu;
    let config = load_config(&files.config)?;
    let vb = VarBuilder::from_tensors(merged_tensors(files, &device)?, DType::F32, &device);
    let encoder = FastEncoder::load(vb, &config, Precision::Fp32)?;
    let mut ranges = None;
    for chunk in windows.chunks(BATCH) {
        let seqs: Vec<&[u32]> = chunk.iter().map(|w| w.as_slice()).collect();
        encoder.activation_ranges(&seqs, &mut ranges)?;
    }
    let ranges = ranges.ok_or_else(|| TrainError::Settings("no training windows to observe int8 ranges on".into()))?;
    Ok((ranges, windows.len()))
}

/// Writes `ranges` into the model folder `dir`.
pub fn save(ranges: &ActivationRanges, dir: &Path) -> Result<std::path::PathBuf, TrainError> {
    let path = dir.join(INT8_RANGES_FILE);
    candle_core::safetensors::save(&ranges.to_tensors()?, &path)?;
    Ok(path)
}
