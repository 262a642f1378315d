//! `stance train`: fine-tunes the top encoder layers and the target head on NewsMTSC, then
//! fits the sentence head on VADER, choosing epochs on the dev sets only.
//!
//! Stage 1 (targets): the bottom `layers - train_layers` layers are frozen and their output is
//! computed once per window and cached; each step runs the trainable top layers and the heads
//! with candle's autograd and AdamW (linear warm-up and decay). After each epoch the whole
//! pipeline scores the dev sets; the epoch with the best selection mean is kept.
//! Stage 2 (sentence sentiment): with the chosen encoder frozen, sentence vectors of VADER's
//! train split are computed once and the sentence head is fitted on them; the epoch with the
//! best macro-F1 on VADER's dev split is kept.
//!
//! Only the steps differentiate through the reference (candle-op) encoder; what runs forward
//! only (the frozen prefix, the dev sets, the sentence vectors) runs on the fast encoder, built
//! from the current weights, as the service runs it.
//!
//! Everything random (head initialisation, shuffling, dropout) comes from one ChaCha seed, so a
//! run repeats exactly on the same machine and thread count.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::backend::{FastBackend, ReferenceBackend};
use crate::batches::{self, Batch, WindowInput};
use crate::encoder::{Encoder, EncoderConfig, FastEncoder, Ops, Precision};
use crate::error::{EngineError, InputError};
use crate::heads::Heads;
use crate::input::Limits;
use crate::mentions::lexicon::{Lexicon, LexiconError};
use crate::mentions::matcher::ActorMatcher;
use crate::model::manifest::{HeadsConfig, Manifest, TargetInput, LABELS};
use crate::model::{self, ModelError, ModelFiles, StanceModel};
use crate::pipeline::Engine;
use crate::scores::Label;
use crate::training::data::{self, DataDir, DataError, Example, Split};
use crate::training::eval::evaluate;
use crate::training::metrics::Confusion;

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A flag or combination of flags training cannot honour; the message names the flag.
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("preparing training example {id}: {source}")]
    Prepare {
        id: String,
        #[source]
        source: InputError,
    },
    #[error(transparent)]
    Lexicon(#[from] LexiconError),
    #[error("tensor computation: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = TrainError> = std::result::Result<T, E>;

fn settings(message: impl Into<String>) -> TrainError {
    TrainError::Settings(message.into())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { what, path, source }
}

/// Training settings (the CLI's flags).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub train_layers: usize,
    pub lr_encoder: f64,
    pub lr_heads: f64,
    pub weight_decay: f64,
    pub warmup: f64,
    pub dropout: f32,
    pub head_hidden: usize,
    pub max_tokens: usize,
    pub sentence_epochs: usize,
    /// Wrap each judged actor's mentions in these two vocabulary tokens (one encoder pass per
    /// sentence and actor); `None`: pool mention states from one pass per sentence.
    pub markers: Option<(String, String)>,
    /// Train on conflict-stance train besides NewsMTSC train (and choose on its dev too).
    pub conflict: bool,
    /// How many times each conflict-stance pair is seen per epoch.
    pub conflict_repeat: usize,
    /// Use only the first N sentences of every data set, dev sets included (smoke tests and
    /// the reproducibility test); 0 = all.
    pub limit: usize,
    /// Share of NewsMTSC train's sentences trained on (a fixed seeded sample; 1 = all).
    pub newsmtsc_fraction: f64,
    /// Start from the base folder's trained part (stance.safetensors) instead of the base
    /// encoder alone: training continues that model.
    pub init_trained: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            epochs: 3,
            batch_size: 16,
            train_layers: 6,
            lr_encoder: 5e-5,
            lr_heads: 1e-3,
            weight_decay: 0.01,
            warmup: 0.06,
            dropout: 0.1,
            head_hidden: 256,
            max_tokens: 128,
            sentence_epochs: 40,
            markers: None,
            conflict: false,
            conflict_repeat: 1,
            limit: 0,
            newsmtsc_fraction: 1.0,
            init_trained: false,
        }
    }
}

/// Tokens per packed forward-only batch (frozen prefix, sentence vectors).
const FORWARD_TOKENS: usize = batches::DEFAULT_MAX_BATCH_TOKENS;

/// A training window with its labels.
#[derive(Clone)]
struct Item {
    window: WindowInput,
    /// One label per target of the window.
    labels: Vec<u32>,
    /// Output of the frozen layers for the window's real tokens, `[len, hidden]`.
    prefix: Tensor,
}

/// Trains a model from the base encoder in `base` and writes the complete model folder to
/// `out` (base files copied, `stance.safetensors` and `manifest.json` written).
pub fn train(
    base: &ModelFiles,
    data_dir: &Path,
    out: &Path,
    cfg: &TrainConfig,
    name: &str,
    version: &str,
) -> Result<()> {
    let started = Instant::now();
    let device = Device::Cpu;
    let data = DataDir(data_dir.to_path_buf());
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);

    // Model: every base tensor becomes a Var (only the trainable ones are optimised; frozen
    // layers never enter the autograd graph because their output is cached).
    let config = model::load_config(&base.config)?;
    if cfg.train_layers == 0 || cfg.train_layers > config.num_hidden_layers {
        return Err(settings(format!("--train-layers must be within 1..={}", config.num_hidden_layers)));
    }
    if !(cfg.newsmtsc_fraction > 0.0 && cfg.newsmtsc_fraction <= 1.0) {
        return Err(settings(format!("--newsmtsc-fraction must be within (0, 1], got {}", cfg.newsmtsc_fraction)));
    }
    let target_input = match &cfg.markers {
        None => TargetInput::Pooled,
        Some((open, close)) => TargetInput::Markers { open: open.clone(), close: close.clone() },
    };
    // What training continues from, when it does: the folder's trained part, recorded. Checked
    // before any weights load.
    let initialised_from = if cfg.init_trained {
        let stance = base.stance.as_ref().ok_or_else(|| {
            settings(format!(
                "--init-trained: {} has no stance.safetensors (a trained part) to start from",
                base.origin
            ))
        })?;
        let path = base
            .manifest
            .as_ref()
            .ok_or_else(|| settings(format!("--init-trained: {} has no manifest.json", base.origin)))?;
        let m = Manifest::load(path)?;
        if m.target_input != target_input {
            return Err(settings(format!(
                "--init-trained: {} was trained with target input {}; pass the same --markers",
                base.origin,
                json!(m.target_input)
            )));
        }
        json!({"name": m.name, "version": m.version, "stance_safetensors_sha256": sha256_file(stance)?})
    } else {
        serde_json::Value::Null
    };
    let varmap = VarMap::new();
    {
        let mut vars = varmap.data().lock().expect("varmap lock");
        // From the base encoder alone unless continuing: a folder's own trained overrides
        // (stance.safetensors) are ignored, so that retraining a model folder repeats, not
        // continues, its training.
        let start = if cfg.init_trained { base.clone() } else { ModelFiles { stance: None, ..base.clone() } };
        for (name, t) in model::merged_tensors(&start, &device)? {
            vars.insert(name, Var::from_tensor(&t)?);
        }
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let encoder = Encoder::load(vb.clone(), &config)?;
    let heads_cfg = HeadsConfig { input: config.hidden_size, hidden: cfg.head_hidden };
    let heads = Heads::load(vb.pp("heads"), &heads_cfg)?;
    if !cfg.init_trained {
        init_heads(&varmap, &mut rng)?;
    }
    let frozen = config.num_hidden_layers - cfg.train_layers;
    let prefix_of = |name: &str| -> Option<usize> {
        let rest = name.strip_prefix("encoder.layer.")?;
        rest.split('.').next()?.parse().ok()
    };
    let (encoder_vars, head_vars, trained_names) = {
        let vars = varmap.data().lock().expect("varmap lock");
        let mut enc = Vec::new();
        let mut hd = Vec::new();
        let mut names = Vec::new();
        let mut sorted: Vec<(&String, &Var)> = vars.iter().collect();
        sorted.sort_by_key(|(n, _)| n.as_str());
        for (n, v) in sorted {
            if n.starts_with("heads.") {
                hd.push(v.clone());
                names.push(n.clone());
            } else if prefix_of(n).is_some_and(|l| l >= frozen) {
                enc.push(v.clone());
                names.push(n.clone());
            }
        }
        (enc, hd, names)
    };
    let manifest = Manifest {
        name: name.to_string(),
        version: version.to_string(),
        max_tokens: cfg.max_tokens,
        labels: LABELS.iter().map(|s| s.to_string()).collect(),
        heads: heads_cfg.clone(),
        target_input,
        calibration: Default::default(),
        precision: None,
        training: serde_json::Value::Null,
        scores: serde_json::Value::Null,
    };
    let tokenizer = model::tokenizer_for(&base.tokenizer, &manifest, &config)?;
    // The engine scores dev sets through a backend that shares the trained weights.
    let backend = Box::new(ReferenceBackend::new(encoder.clone(), heads.clone()));
    let stance_model = StanceModel { tokenizer, backend, manifest: manifest.clone(), files: base.clone() };
    let engine = Engine::new(stance_model, Lexicon::default_actors(), Limits::default())?;

    // Data.
    let mut train_ex = limited(data::newsmtsc(&data.newsmtsc("train"))?, cfg.limit);
    if cfg.newsmtsc_fraction < 1.0 {
        // A seeded sample, kept in file order; with the fraction at 1 the generator is not
        // touched, so earlier recipes repeat exactly.
        let keep = ((train_ex.len() as f64) * cfg.newsmtsc_fraction).ceil() as usize;
        let mut idx: Vec<usize> = (0..train_ex.len()).collect();
        idx.shuffle(&mut rng);
        let mut chosen = idx[..keep].to_vec();
        chosen.sort_unstable();
        train_ex = chosen.into_iter().map(|i| train_ex[i].clone()).collect();
    }
    let rw_dev = limited(data::newsmtsc(&data.newsmtsc("rw_dev"))?, cfg.limit);
    let mt_dev = limited(data::newsmtsc(&data.newsmtsc("mt_dev"))?, cfg.limit);
    let mut items = windows_with_labels(&engine, &train_ex)?;
    tracing::info!(sentences = train_ex.len(), windows = items.len(), "NewsMTSC train loaded");
    // conflict-stance: train pairs with every lexicon occurrence of the actor marked, as end to
    // end; dev with the records' own mentions (the explicit score).
    let (conflict_train, conflict_dev) = if cfg.conflict {
        let lexicon = Lexicon::from_toml_file(&data.conflict_actors())?;
        let matcher = ActorMatcher::new(&lexicon)?;
        let examples = |name: &str, m: Option<&ActorMatcher>| -> Result<Vec<Example>> {
            let articles = data::conflict_stance(&data.conflict(name))?;
            Ok(limited(articles.iter().flat_map(|a| a.sentence_examples(m)).collect(), cfg.limit))
        };
        (examples("train", Some(&matcher))?, examples("dev", None)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let newsmtsc_items = items.len();
    if !conflict_train.is_empty() {
        let conflict_items = windows_with_labels(&engine, &conflict_train)?;
        tracing::info!(
            sentences = conflict_train.len(),
            windows = conflict_items.len(),
            repeat = cfg.conflict_repeat,
            "conflict-stance train loaded"
        );
        for _ in 0..cfg.conflict_repeat.max(1) {
            items.extend(conflict_items.iter().cloned());
        }
    }

    // Cache the frozen layers' output.
    let t0 = Instant::now();
    cache_prefix(&fast_encoder(&varmap, &config)?, &mut items, frozen, &device)?;
    tracing::info!(secs = t0.elapsed().as_secs_f32(), frozen_layers = frozen, "frozen prefix cached");

    // Stage 1.
    let steps_per_epoch = items.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup_steps = ((total_steps as f64) * cfg.warmup).ceil() as usize;
    let adamw = |vars: Vec<Var>, lr: f64| {
        AdamW::new(vars, ParamsAdamW { lr, weight_decay: cfg.weight_decay, ..Default::default() })
    };
    let mut opt_enc = adamw(encoder_vars, cfg.lr_encoder)?;
    let mut opt_head = adamw(head_vars, cfg.lr_heads)?;
    let drop_rng = RefCell::new(ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed));
    let dropout =
        |x: &Tensor| -> candle_core::Result<Tensor> { dropout_with(x, cfg.dropout, &mut drop_rng.borrow_mut()) };
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, HashMap<String, Tensor>)> = None;
    let mut step = 0usize;
    let stage1 = Instant::now();
    for epoch in 1..=cfg.epochs {
        let order = epoch_batches(&items, cfg.batch_size, &mut rng);
        let mut loss_sum = 0f64;
        let epoch_start = Instant::now();
        for (b, batch_idx) in order.iter().enumerate() {
            let lr_scale = if step < warmup_steps {
                (step + 1) as f64 / warmup_steps as f64
            } else {
                ((total_steps - step) as f64 / (total_steps - warmup_steps).max(1) as f64).max(0.0)
            };
            opt_enc.set_learning_rate(cfg.lr_encoder * lr_scale);
            opt_head.set_learning_rate(cfg.lr_heads * lr_scale);
            let members: Vec<&Item> = batch_idx.iter().map(|&i| &items[i]).collect();
            let loss = stage1_loss(&encoder, &heads, &members, frozen, &device, &dropout)?;
            let grads = loss.backward()?;
            opt_enc.step(&grads)?;
            opt_head.step(&grads)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            step += 1;
            if (b + 1) % 50 == 0 || b + 1 == order.len() {
                let per_step = epoch_start.elapsed().as_secs_f64() / (b + 1) as f64;
                tracing::info!(
                    epoch,
                    step = b + 1,
                    of = order.len(),
                    loss = loss_sum / (b + 1) as f64,
                    eta_epoch_s = (per_step * (order.len() - b - 1) as f64) as u64,
                    "training targets"
                );
            }
        }
        let dev_engine = fast_engine(&varmap, &config, &heads, &manifest, base)?;
        let (rw, _, _) = evaluate(&dev_engine, &rw_dev)?;
        let (mt, _, _) = evaluate(&dev_engine, &mt_dev)?;
        let newsmtsc_mean = (rw.f1_macro() + mt.f1_macro()) / 2.0;
        // With conflict-stance: the users' domain and NewsMTSC count half each, so that neither
        // domain is bought with the other.
        let conflict =
            if conflict_dev.is_empty() { None } else { Some(evaluate(&dev_engine, &conflict_dev)?.0.f1_macro()) };
        let mean = match conflict {
            Some(c) => (c + newsmtsc_mean) / 2.0,
            None => newsmtsc_mean,
        };
        tracing::info!(epoch, rw_dev = rw.f1_macro(), mt_dev = mt.f1_macro(), conflict_dev = ?conflict, selection = mean, "dev F1-macro");
        history.push(json!({
            "epoch": epoch,
            "train_loss": loss_sum / order.len() as f64,
            "rw_dev_f1_macro": rw.f1_macro(),
            "mt_dev_f1_macro": mt.f1_macro(),
            "conflict_dev_explicit_f1_macro": conflict,
            "selection": mean,
            "seconds": epoch_start.elapsed().as_secs(),
        }));
        if best.as_ref().is_none_or(|(b, _, _)| mean > *b) {
            best = Some((mean, epoch, snapshot(&varmap, &trained_names)?));
        }
    }
    let (best_mean, best_epoch, weights) = best.ok_or_else(|| settings("--epochs must be at least 1"))?;
    restore(&varmap, &weights)?;
    let stage1_secs = stage1.elapsed().as_secs();

    // Stage 2: sentence head on VADER.
    let stage2 = Instant::now();
    let chosen = fast_encoder(&varmap, &config)?;
    let sentence_record = train_sentence_head(&engine, &chosen, &heads, &data, &varmap, cfg, &mut rng, &drop_rng)?;
    let stage2_secs = stage2.elapsed().as_secs();

    // Write the model folder.
    std::fs::create_dir_all(out).map_err(io("creating the output folder", out))?;
    let base_tensors = model::load_tensors(&base.encoder, &device)?;
    let mut to_save = HashMap::new();
    {
        let vars = varmap.data().lock().expect("varmap lock");
        for name in &trained_names {
            to_save.insert(name.clone(), vars[name].as_tensor().clone());
        }
        // Continuing from a trained part with fewer trainable layers: the layers frozen now
        // were still fine-tuned before, and this model was trained on top of them.
        if cfg.init_trained {
            for (name, var) in vars.iter() {
                if !to_save.contains_key(name) && differs(var.as_tensor(), base_tensors.get(name))? {
                    to_save.insert(name.clone(), var.as_tensor().clone());
                }
            }
        }
    }
    copy_base_files(base, out)?;
    let stance_path = out.join("stance.safetensors");
    // Fine-tuned matrices are stored as deltas of the base encoder itself (never of a trained
    // part continued from), so the folder reads with its base alone.
    model::trained_part::write(&stance_path, &base_tensors, &to_save)?;
    let mut manifest = manifest;
    manifest.training = json!({
        "data": {
            "targets": "NewsMTSC train.jsonl (Hamborg & Donnay 2021, MIT)",
            "targets_sentences": train_ex.len(),
            "targets_windows": newsmtsc_items,
            "conflict": if cfg.conflict { json!({
                "source": "conflict-stance train.jsonl (synthetic articles, GUIDELINE.md labels); every lexicon occurrence (actors.toml) of a labelled actor marked",
                "sentences": conflict_train.len(),
                "windows_per_epoch": items.len() - newsmtsc_items,
                "repeat": cfg.conflict_repeat,
            }) } else { serde_json::Value::Null },
            "selection": if cfg.conflict { "epoch with the best mean of conflict-stance dev (explicit) F1-macro and the NewsMTSC dev mean (rw_dev + mt_dev) / 2" } else { "epoch with the best mean of NewsMTSC rw_dev and mt_dev F1-macro" },
            "sentences": format!("VADER nyt_editorial_snippets.tsv + tweets.tsv (Hutto & Gilbert 2014, MIT), fixed FNV-1a id split 70/10/20 train/dev/test, valence < -{t} negative, > +{t} positive, else neutral", t = data::VADER_THRESHOLD),
        },
        "config": cfg,
        "initialised_from": initialised_from,
        "frozen_layers": frozen,
        "trained_tensors": trained_names.len(),
        "epochs": history,
        "chosen_epoch": best_epoch,
        "chosen_mean_dev_f1_macro": best_mean,
        "sentence_head": sentence_record,
        "seconds": { "stage1_targets": stage1_secs, "stage2_sentences": stage2_secs, "total": started.elapsed().as_secs() },
        "machine": format!("{} threads, {}", rayon_threads(), std::env::consts::ARCH),
        "stance_safetensors_sha256": sha256_file(&stance_path)?,
    });
    let manifest_path = out.join("manifest.json");
    manifest.save(&manifest_path).map_err(io("writing", &manifest_path))?;
    tracing::info!(out = %out.display(), secs = started.elapsed().as_secs(), "model written");
    Ok(())
}

fn limited(mut v: Vec<Example>, limit: usize) -> Vec<Example> {
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Copies config, tokenizer, base encoder and provenance files into `out` (unless `out` is
/// the folder they come from).
fn copy_base_files(base: &ModelFiles, out: &Path) -> Result<()> {
    let files: Vec<PathBuf> = [&base.config, &base.tokenizer, &base.encoder].into_iter().cloned().collect();
    let mut extra = Vec::new();
    if let Some(dir) = base.encoder.parent() {
        for name in ["LICENSE", "PROVENANCE.md", "convert_base.py"] {
            let p = dir.join(name);
            if p.is_file() {
                extra.push(p);
            }
        }
    }
    for src in files.iter().chain(&extra) {
        let Some(file_name) = src.file_name() else { continue };
        let dst = out.join(file_name);
        let same = match (src.canonicalize(), dst.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            std::fs::copy(src, &dst).map_err(io("copying a base file to", &dst))?;
        }
    }
    Ok(())
}

/// Xavier-uniform weights and zero biases for the heads, from the seeded generator.
fn init_heads(varmap: &VarMap, rng: &mut ChaCha8Rng) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().filter(|n| n.starts_with("heads.")).collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; var.elem_count()]
        } else {
            let bound = (6.0 / (dims[0] + dims[1]) as f64).sqrt() as f32;
            (0..var.elem_count()).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

fn snapshot(varmap: &VarMap, names: &[String]) -> Result<HashMap<String, Tensor>> {
    let vars = varmap.data().lock().expect("varmap lock");
    names.iter().map(|n| Ok((n.clone(), vars[n].as_tensor().copy()?))).collect()
}

/// Whether a variable is not the base encoder's tensor of its name (or the base lacks one).
fn differs(t: &Tensor, base: Option<&Tensor>) -> Result<bool> {
    let Some(base) = base else { return Ok(true) };
    if base.dims() != t.dims() {
        return Ok(true);
    }
    Ok(t.ne(base)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? > 0.0)
}

fn restore(varmap: &VarMap, weights: &HashMap<String, Tensor>) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    for (n, t) in weights {
        vars[n].set(t)?;
    }
    Ok(())
}

/// Inverted dropout with a mask drawn from `rng`.
fn dropout_with(x: &Tensor, p: f32, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let mask: Vec<f32> =
        (0..x.elem_count()).map(|_| if rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
    x * Tensor::from_vec(mask, x.shape(), x.device())?
}

/// Prepares NewsMTSC examples through the pipeline and labels each window's targets.
fn windows_with_labels(engine: &Engine, examples: &[Example]) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for ex in examples {
        let prepared = engine
            .prepare(ex.input.clone())
            .map_err(|source| TrainError::Prepare { id: ex.input.id.clone(), source })?;
        let mut labels: Vec<Vec<u32>> = prepared.windows.iter().map(|w| vec![u32::MAX; w.targets.len()]).collect();
        for s in &prepared.sentences {
            for a in &s.actors {
                // Training examples name their targets t0, t1, … (data.rs).
                let k: usize = a
                    .name
                    .trim_start_matches('t')
                    .parse()
                    .map_err(|_| settings(format!("{}: target {:?} is not named t<index>", ex.input.id, a.name)))?;
                for &(w, t, _) in &a.refs {
                    labels[w][t] = ex.targets[k].index() as u32;
                }
            }
        }
        for (window, labels) in prepared.windows.into_iter().zip(labels) {
            if window.targets.is_empty() {
                continue;
            }
            items.push(Item { window, labels, prefix: Tensor::zeros(0, DType::F32, &Device::Cpu)? });
        }
    }
    Ok(items)
}

/// The fast encoder over the current weights of `varmap` (a copy: later steps do not reach it).
fn fast_encoder(varmap: &VarMap, config: &EncoderConfig) -> Result<FastEncoder> {
    Ok(FastEncoder::load(VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu), config, Precision::Fp32)?)
}

/// An engine that scores as the service would, on the current weights.
fn fast_engine(
    varmap: &VarMap,
    config: &EncoderConfig,
    heads: &Heads,
    manifest: &Manifest,
    base: &ModelFiles,
) -> Result<Engine> {
    let backend = Box::new(FastBackend::new(fast_encoder(varmap, config)?, heads.clone()));
    let tokenizer = model::tokenizer_for(&base.tokenizer, manifest, config)?;
    let m = StanceModel { tokenizer, backend, manifest: manifest.clone(), files: base.clone() };
    Ok(Engine::new(m, Lexicon::default_actors(), Limits::default())?)
}

/// Computes the frozen layers once for every window and keeps each real-token slice.
fn cache_prefix(encoder: &FastEncoder, items: &mut [Item], frozen: usize, device: &Device) -> Result<()> {
    let h = encoder.hidden_size();
    let windows: Vec<&WindowInput> = items.iter().map(|i| &i.window).collect();
    // `pack` keeps the order, so the groups' windows are the items in turn.
    let mut prefixes = Vec::with_capacity(items.len());
    for group in batches::pack(&windows, FORWARD_TOKENS) {
        let seqs: Vec<&[u32]> = group.iter().map(|w| w.ids.as_slice()).collect();
        let states = encoder.forward_layers(&seqs, frozen)?;
        let mut offset = 0;
        for w in &group {
            let len = w.ids.len();
            prefixes.push(Tensor::from_slice(&states[offset * h..(offset + len) * h], (len, h), device)?);
            offset += len;
        }
    }
    for (item, prefix) in items.iter_mut().zip(prefixes) {
        item.prefix = prefix;
    }
    Ok(())
}

/// Batches for one epoch: shuffled, then sorted by length within pools of 50 batches so that
/// padding stays small, then the batch order shuffled.
fn epoch_batches(items: &[Item], batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(rng);
    let mut out = Vec::new();
    for pool in order.chunks(batch_size * 50) {
        let mut pool = pool.to_vec();
        pool.sort_by_key(|&i| items[i].window.ids.len());
        out.extend(pool.chunks(batch_size).map(|c| c.to_vec()));
    }
    out.shuffle(rng);
    out
}

fn stage1_loss(
    encoder: &Encoder,
    heads: &Heads,
    members: &[&Item],
    frozen: usize,
    device: &Device,
    dropout: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let windows: Vec<&WindowInput> = members.iter().map(|i| &i.window).collect();
    let batch = Batch::build(&windows, device)?;
    let seq = batch.seq;
    let hidden = encoder.config().hidden_size;
    let rows = members
        .iter()
        .map(|m| {
            let len = m.prefix.dim(0)?;
            if len == seq {
                Ok(m.prefix.clone())
            } else {
                Tensor::cat(&[&m.prefix, &Tensor::zeros((seq - len, hidden), DType::F32, device)?], 0)
            }
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let x = Tensor::stack(&rows, 0)?;
    let bias = Encoder::attention_bias(&batch.mask)?;
    let h = encoder.layers(&x, &bias, frozen..encoder.num_layers(), Ops::Differentiable)?;
    let logits = heads.forward(&h, &batch, Some(dropout))?;
    let labels: Vec<u32> = batch.target_index.iter().map(|&(r, t)| members[r].labels[t]).collect();
    let labels = Tensor::from_vec(labels, batch.target_index.len(), device)?;
    Ok(candle_nn::loss::cross_entropy(&logits.target, &labels)?)
}

/// Sentence vectors (mean of the final states, as the fast backend pools them) for examples,
/// through the pipeline's windows.
fn sentence_features(
    engine: &Engine,
    encoder: &FastEncoder,
    examples: &[Example],
    device: &Device,
) -> Result<(Tensor, Vec<u32>)> {
    let mut windows = Vec::new();
    let mut labels = Vec::new();
    for ex in examples {
        let p = engine
            .prepare(ex.input.clone())
            .map_err(|source| TrainError::Prepare { id: ex.input.id.clone(), source })?;
        let label =
            ex.sentence.ok_or_else(|| settings(format!("{}: a sentence example without a label", ex.input.id)))?;
        let label = label.index() as u32;
        for w in p.windows {
            windows.push(w);
            labels.push(label);
        }
    }
    let h = encoder.hidden_size();
    let refs: Vec<&WindowInput> = windows.iter().collect();
    let mut feats = Vec::with_capacity(windows.len() * h);
    for group in batches::pack(&refs, FORWARD_TOKENS) {
        let seqs: Vec<&[u32]> = group.iter().map(|w| w.ids.as_slice()).collect();
        let states = encoder.forward(&seqs)?;
        let mut offset = 0;
        for w in &group {
            let n = w.ids.len();
            feats.extend(batches::mean_rows(&states[offset * h..(offset + n) * h], h, 0..n));
            offset += n;
        }
    }
    Ok((Tensor::from_vec(feats, (windows.len(), h), device)?, labels))
}

#[allow(clippy::too_many_arguments)]
fn train_sentence_head(
    engine: &Engine,
    encoder: &FastEncoder,
    heads: &Heads,
    data: &DataDir,
    varmap: &VarMap,
    cfg: &TrainConfig,
    rng: &mut ChaCha8Rng,
    drop_rng: &RefCell<ChaCha8Rng>,
) -> Result<serde_json::Value> {
    let device = Device::Cpu;
    let mut train = limited(data::vader(&data.vader_nyt(), Split::Train)?, cfg.limit);
    train.extend(limited(data::vader(&data.vader_tweets(), Split::Train)?, cfg.limit));
    let mut dev = limited(data::vader(&data.vader_nyt(), Split::Dev)?, cfg.limit);
    dev.extend(limited(data::vader(&data.vader_tweets(), Split::Dev)?, cfg.limit));
    let (x, y) = sentence_features(engine, encoder, &train, &device)?;
    let y = Tensor::from_vec(y.clone(), y.len(), &device)?;
    // Dev is scored on its windows' vectors; a sentence longer than one window counts once per
    // window here (rare in VADER), while `stance eval` scores whole sentences.
    let (dev_x, dev_y) = sentence_features(engine, encoder, &dev, &device)?;
    let n = x.dim(0)?;
    let head_names: Vec<String> = {
        let vars = varmap.data().lock().expect("varmap lock");
        let mut v: Vec<String> = vars.keys().filter(|k| k.starts_with("heads.sentence.")).cloned().collect();
        v.sort();
        v
    };
    let vars: Vec<Var> = {
        let all = varmap.data().lock().expect("varmap lock");
        head_names.iter().map(|k| all[k].clone()).collect()
    };
    let mut opt =
        AdamW::new(vars, ParamsAdamW { lr: cfg.lr_heads, weight_decay: cfg.weight_decay, ..Default::default() })?;
    let mut best: Option<(f64, usize, HashMap<String, Tensor>)> = None;
    let mut history = Vec::new();
    for epoch in 1..=cfg.sentence_epochs {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(rng);
        for chunk in order.chunks(64) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let xb = dropout_with(&x.index_select(&idx, 0)?, cfg.dropout, &mut drop_rng.borrow_mut())?;
            let logits = heads.sentence.forward(&xb)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y.index_select(&idx, 0)?)?;
            opt.backward_step(&loss)?;
        }
        let predicted = heads.sentence.forward(&dev_x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let mut c = Confusion::default();
        for (&g, &p) in dev_y.iter().zip(&predicted) {
            c.add(Label::ALL[g as usize], Label::ALL[p as usize]);
        }
        history.push(json!({"epoch": epoch, "vader_dev_f1_macro": c.f1_macro()}));
        if best.as_ref().is_none_or(|(b, _, _)| c.f1_macro() > *b) {
            best = Some((c.f1_macro(), epoch, snapshot(varmap, &head_names)?));
        }
    }
    let (f1, epoch, weights) = best.ok_or_else(|| settings("--sentence-epochs must be at least 1"))?;
    restore(varmap, &weights)?;
    tracing::info!(epoch, vader_dev = f1, "sentence head chosen");
    Ok(
        json!({"train_sentences": n, "dev_sentences": dev.len(), "epochs": history, "chosen_epoch": epoch, "vader_dev_f1_macro": f1}),
    )
}
