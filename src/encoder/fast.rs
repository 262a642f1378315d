//! The serving forward pass: the same BERT or MPNet function as [`super::Encoder`], written
//! for CPU throughput.
//!
//! - Sequences are packed, not padded: the dense layers run on `[total_tokens, hidden]`, so no
//!   FLOP is spent on padding, and attention runs per sequence.
//! - Q, K and V are one GEMM with a fused `[3h, h]` weight; every bias (and every residual) is
//!   written into the GEMM's destination first and accumulated into (`dst += x·Wᵀ`), so no
//!   separate pass adds them.
//! - GELU (exact, erf-based), softmax and layer norm are vectorisable loops: erf and exp are
//!   polynomial approximations accurate to a few 1e-7, compiled for AVX-512F+AVX2+FMA,
//!   AVX2+FMA or the baseline; [`super::cpu`] picks one at run time (or the one forced).
//! - The dense layers run on [`super::sgemm`] (our AVX-512 kernel, or the `gemm` crate);
//!   attention's small GEMMs are the `gemm` crate's, called with row/column strides so that
//!   nothing is transposed or copied at run time. Threads come from rayon's pool.
//!
//! The parity test holds its states within 1e-4 of the reference forward.

use candle_core::Result;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::cpu::{self, Paths, Simd};
use super::dense::{Dense, Precision, SharedMut};
use super::{relative_bucket, unprefixed, Architecture, EncoderConfig, LayerNames};

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct FastLayer {
    /// `[3h, h]`: query, key and value weights stacked.
    wqkv: Dense,
    bqkv: Vec<f32>,
    /// `[h, h]`.
    wo: Dense,
    bo: Vec<f32>,
    ln1: Norm,
    /// `[inter, h]`.
    wi: Dense,
    bi: Vec<f32>,
    /// `[h, inter]`.
    wo2: Dense,
    bo2: Vec<f32>,
    ln2: Norm,
}

/// The packed-sequence forward.
pub struct FastEncoder {
    word: Vec<f32>,
    /// Position embeddings from the first token's (row `position_offset` of the table).
    position: Vec<f32>,
    /// BERT's token type 0 embedding; zeros for MPNet, which has none.
    token_type0: Vec<f32>,
    /// MPNet's relative-position bias by head and `key - query`: row `head` holds
    /// `2·max_positions - 1` values, the one for distance `d` at `d + max_positions - 1`.
    relative: Option<Vec<f32>>,
    emb_norm: Norm,
    layers: Vec<FastLayer>,
    hidden: usize,
    heads: usize,
    inter: usize,
    max_positions: usize,
    vocab: usize,
    eps: f32,
    paths: Paths,
    precision: Precision,
    kernels: &'static Kernels,
}

fn vec1(vb: &VarBuilder, n: usize, name: &str) -> Result<Vec<f32>> {
    vb.get(n, name)?.to_vec1::<f32>()
}

fn vec2(vb: &VarBuilder, shape: (usize, usize), name: &str) -> Result<Vec<f32>> {
    vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
}

/// Per input channel, the scale of what a layer norm writes there: `|γ|` or `|β|`, whichever
/// is larger. A layer fed by that norm quantises its input divided by these (its weight
/// multiplied by them), so a channel the norm amplifies does not take the row's 8-bit range.
fn smoothing(n: &Norm) -> Vec<f32> {
    n.gamma.iter().zip(&n.beta).map(|(g, b)| g.abs().max(b.abs()).max(1e-6)).collect()
}

/// SmoothQuant's migration strength (Xiao et al. 2023): half of an input channel's range moves
/// into the weight, half stays in the activation.
const SMOOTH_ALPHA: f32 = 0.5;

/// Per input channel `j` of an int8 layer fed by a layer norm, the divisor of its input from
/// the input's observed range `r_j` (calibration) and the weight column's range `w_j`:
/// `r_j^α / w_j^(1-α)`, which evens the two ranges out (SmoothQuant).
fn calibrated_smoothing(range: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let mut wmax = vec![0f32; k];
    for row in w.chunks_exact(k) {
        for (m, v) in wmax.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    range
        .iter()
        .zip(&wmax)
        .map(|(r, w)| (r.max(1e-5).powf(SMOOTH_ALPHA) / w.max(1e-5).powf(1.0 - SMOOTH_ALPHA)).max(1e-5))
        .collect()
}

/// The largest `|value|` each input channel of a layer's int8-quantised inputs reached over
/// calibration sequences ([`FastEncoder::activation_ranges`]): per layer, the input of the
/// QKV projection and the input of the FFN's first layer (both layer-norm outputs), `hidden`
/// values each, and the input of the FFN's output layer (GELU's output, `intermediate`
/// values). Under int8 they set the per-channel smoothing (SmoothQuant) in place of the
/// norms' `max(|γ|, |β|)`; the FFN's output layer runs int8 only with its ranges (a file
/// written before they were observed has none, and that layer then runs bf16).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRanges {
    pub qkv_input: Vec<Vec<f32>>,
    pub ffn_input: Vec<Vec<f32>>,
    pub ffn_output_input: Option<Vec<Vec<f32>>>,
}

impl ActivationRanges {
    fn new(layers: usize, h: usize, inter: usize) -> Self {
        Self {
            qkv_input: vec![vec![0.0; h]; layers],
            ffn_input: vec![vec![0.0; h]; layers],
            ffn_output_input: Some(vec![vec![0.0; inter]; layers]),
        }
    }

    fn observe(range: &mut [f32], x: &[f32]) {
        for row in x.chunks_exact(range.len()) {
            for (r, v) in range.iter_mut().zip(row) {
                *r = r.max(v.abs());
            }
        }
    }

    /// The ranges as named tensors (`layer.{i}.qkv_input`, `layer.{i}.ffn_input`,
    /// `layer.{i}.ffn_output_input`), for a safetensors file.
    pub fn to_tensors(&self) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
        let mut out = std::collections::HashMap::new();
        for (i, (q, f)) in self.qkv_input.iter().zip(&self.ffn_input).enumerate() {
            out.insert(
                format!("layer.{i}.qkv_input"),
                candle_core::Tensor::new(q.as_slice(), &candle_core::Device::Cpu)?,
            );
            out.insert(
                format!("layer.{i}.ffn_input"),
                candle_core::Tensor::new(f.as_slice(), &candle_core::Device::Cpu)?,
            );
        }
        for (i, o) in self.ffn_output_input.iter().flatten().enumerate() {
            out.insert(
                format!("layer.{i}.ffn_output_input"),
                candle_core::Tensor::new(o.as_slice(), &candle_core::Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Reads what [`Self::to_tensors`] wrote, for an encoder of `layers` layers of width `h`
    /// and FFN width `inter`.
    pub fn from_tensors(
        t: &std::collections::HashMap<String, candle_core::Tensor>,
        layers: usize,
        h: usize,
        inter: usize,
    ) -> Result<Self> {
        let get = |name: String, width: usize| -> Result<Vec<f32>> {
            let v =
                t.get(&name).ok_or_else(|| candle_core::Error::Msg(format!("no tensor {name}")))?.to_vec1::<f32>()?;
            if v.len() != width || v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                candle_core::bail!("{name}: expected {width} finite ranges >= 0, found {} values", v.len());
            }
            Ok(v)
        };
        let layer_set = |what: &str, width: usize| -> Result<Vec<Vec<f32>>> {
            (0..layers).map(|i| get(format!("layer.{i}.{what}"), width)).collect()
        };
        // All layers' FFN output ranges or none (an older file): half a set is a damaged file.
        let ffn_output_input = if t.keys().any(|k| k.ends_with(".ffn_output_input")) {
            Some(layer_set("ffn_output_input", inter)?)
        } else {
            None
        };
        Ok(Self { qkv_input: layer_set("qkv_input", h)?, ffn_input: layer_set("ffn_input", h)?, ffn_output_input })
    }
}

/// The FFN's output layer (`[h, inter]`). It reads GELU's output, a few of whose channels
/// reach up to 40 times the median channel's range (on MPNet's middle layers) and, left in,
/// stretch a row's 8-bit range until the rest lose their resolution (plain int8 there cost 1.5
/// points of MPNet's mt_dev and 1.6% of fp32's labels). Under int8 it needs its calibrated
/// `range`: those channels are summed in fp32 and the rest smoothed (SmoothQuant); without a
/// range it runs bf16.
fn ffn_output(
    w: Vec<f32>,
    (h, inter): (usize, usize),
    precision: Precision,
    paths: Paths,
    range: Option<&[f32]>,
) -> Dense {
    match (precision, range) {
        (Precision::Int8, Some(r)) => {
            let smooth = calibrated_smoothing(r, &w, inter);
            Dense::split(w, h, inter, precision, paths, &smooth, &outlier_channels(r))
        }
        (Precision::Int8, None) => Dense::new(w, h, inter, Precision::Bf16, paths),
        _ => Dense::new(w, h, inter, precision, paths),
    }
}

/// The input channels an int8 layer sums in fp32: those whose calibrated range is more than
/// [`OUTLIER_RATIO`] times the median channel's, at most [`MAX_OUTLIERS`] (the largest), in
/// increasing order.
fn outlier_channels(range: &[f32]) -> Vec<usize> {
    if range.is_empty() {
        return Vec::new();
    }
    let mut sorted = range.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let mut out: Vec<usize> = (0..range.len()).filter(|&j| range[j] > OUTLIER_RATIO * median).collect();
    out.sort_by(|&a, &b| range[b].total_cmp(&range[a]));
    out.truncate(MAX_OUTLIERS);
    out.sort_unstable();
    out
}

/// Chosen on the int8 gate (MPNet, dev pairs): 4 leaves one to five channels per layer out of
/// 3,072 (99.33% of fp32's labels); 2.5 leaves up to 58 and agreed no better (98.99%), the
/// difference being a few labels near a boundary either way. Public so that the calibration
/// record says what ran.
pub const OUTLIER_RATIO: f32 = 4.0;
/// A bound on the fp32 side's cost: 2% of MPNet's FFN width, 4% of MiniLM's.
const MAX_OUTLIERS: usize = 64;

fn norm(vb: &VarBuilder, h: usize) -> Result<Norm> {
    Ok(Norm { gamma: vec1(vb, h, "weight")?, beta: vec1(vb, h, "bias")? })
}

impl FastEncoder {
    /// Loads the same tensors as [`super::Encoder::load`], with the dense layers in
    /// `precision`, for the CPU paths of [`cpu::paths`]; fails if a path forced there cannot
    /// run on this CPU.
    pub fn load(vb: VarBuilder, c: &EncoderConfig, precision: Precision) -> Result<Self> {
        Self::load_calibrated(vb, c, precision, None)
    }

    /// As [`Self::load`]; under int8, `ranges` (from [`Self::activation_ranges`] on the same
    /// weights) set the smoothing of the layers fed by layer norms.
    pub fn load_calibrated(
        vb: VarBuilder,
        c: &EncoderConfig,
        precision: Precision,
        ranges: Option<&ActivationRanges>,
    ) -> Result<Self> {
        if let Some(r) = ranges {
            let (layers, h, inter) = (c.num_hidden_layers, c.hidden_size, c.intermediate_size);
            let fits = |set: &[Vec<f32>], width: usize| set.len() == layers && set.iter().all(|v| v.len() == width);
            let output_fits = r.ffn_output_input.as_deref().is_none_or(|o| fits(o, inter));
            if !fits(&r.qkv_input, h) || !fits(&r.ffn_input, h) || !output_fits {
                candle_core::bail!(
                    "int8 activation ranges for {} layers do not fit the encoder's {layers} layers of width {h} \
                     (FFN {inter}): refit them with `stance eval --precision int8 --fit-int8-ranges N`",
                    r.qkv_input.len(),
                );
            }
        }
        let paths = cpu::paths().map_err(candle_core::Error::wrap)?;
        let arch = c.architecture();
        let vb = unprefixed(vb, arch);
        let names = LayerNames::of(arch);
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let mut layers: Vec<FastLayer> = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let mut wqkv = vec2(&a.pp(names.query), (h, h), "weight")?;
            wqkv.extend(vec2(&a.pp(names.key), (h, h), "weight")?);
            wqkv.extend(vec2(&a.pp(names.value), (h, h), "weight")?);
            let mut bqkv = vec1(&a.pp(names.query), h, "bias")?;
            bqkv.extend(vec1(&a.pp(names.key), h, "bias")?);
            bqkv.extend(vec1(&a.pp(names.value), h, "bias")?);
            let inter = c.intermediate_size;
            let ln1 = norm(&a.pp(names.attn_norm), h)?;
            let input_norm = match layers.last() {
                Some(prev) => smoothing(&prev.ln2),
                None => smoothing(&norm(&vb.pp("embeddings").pp("LayerNorm"), h)?),
            };
            let ffn_norm = smoothing(&ln1);
            let wi = vec2(&l.pp("intermediate").pp("dense"), (inter, h), "weight")?;
            let (input_norm, ffn_norm) = match ranges {
                Some(r) => {
                    (calibrated_smoothing(&r.qkv_input[i], &wqkv, h), calibrated_smoothing(&r.ffn_input[i], &wi, h))
                }
                None => (input_norm, ffn_norm),
            };
            layers.push(FastLayer {
                wqkv: Dense::smoothed(wqkv, 3 * h, h, precision, paths, &input_norm),
                bqkv,
                wo: Dense::new(vec2(&a.pp(names.attn_out), (h, h), "weight")?, h, h, precision, paths),
                bo: vec1(&a.pp(names.attn_out), h, "bias")?,
                ln1,
                wi: Dense::smoothed(wi, inter, h, precision, paths, &ffn_norm),
                bi: vec1(&l.pp("intermediate").pp("dense"), c.intermediate_size, "bias")?,
                wo2: ffn_output(
                    vec2(&l.pp("output").pp("dense"), (h, inter), "weight")?,
                    (h, inter),
                    precision,
                    paths,
                    ranges.and_then(|r| r.ffn_output_input.as_ref()).map(|o| o[i].as_slice()),
                ),
                bo2: vec1(&l.pp("output").pp("dense"), h, "bias")?,
                ln2: norm(&l.pp("output").pp("LayerNorm"), h)?,
            });
        }
        let max_positions = c.max_positions();
        let (token_type0, relative) = match arch {
            Architecture::Bert => {
                let types = vec2(&e.pp("token_type_embeddings"), (c.type_vocab_size, h), "weight")?;
                (types[..h].to_vec(), None)
            }
            Architecture::MPNet => {
                let (buckets, heads) = (c.relative_attention_num_buckets, c.num_attention_heads);
                let table = vec2(&vb.pp("encoder.relative_attention_bias"), (buckets, heads), "weight")?;
                let span = 2 * max_positions - 1;
                let mut rel = vec![0f32; heads * span];
                for (i, d) in (-(max_positions as i64 - 1)..max_positions as i64).enumerate() {
                    let b = relative_bucket(d, buckets);
                    for hd in 0..heads {
                        rel[hd * span + i] = table[b * heads + hd];
                    }
                }
                (vec![0f32; h], Some(rel))
            }
        };
        let position = vec2(&e.pp("position_embeddings"), (c.max_position_embeddings, h), "weight")?;
        Ok(Self {
            word: vec2(&e.pp("word_embeddings"), (c.vocab_size, h), "weight")?,
            position: position[c.position_offset() * h..].to_vec(),
            token_type0,
            relative,
            emb_norm: norm(&e.pp("LayerNorm"), h)?,
            layers,
            hidden: h,
            heads: c.num_attention_heads,
            inter: c.intermediate_size,
            max_positions,
            vocab: c.vocab_size,
            eps: c.layer_norm_eps as f32,
            paths,
            precision,
            kernels: Kernels::of(paths.simd),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The CPU paths this encoder runs.
    pub fn paths(&self) -> Paths {
        self.paths
    }

    /// The dense layers' number format.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes the dense layers' weights hold (the bulk of the model in memory).
    pub fn dense_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.wqkv.bytes() + l.wo.bytes() + l.wi.bytes() + l.wo2.bytes()).sum()
    }

    /// Final hidden states of every token of every sequence, packed in order: row `r` of the
    /// result (`hidden_size` floats) is token `r - offset(s)` of sequence `s`.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        self.forward_layers(seqs, self.layers.len())
    }

    /// The hidden states after the first `layers` layers, packed as by [`Self::forward`]
    /// (training caches its frozen layers' output this way).
    pub fn forward_layers(&self, seqs: &[&[u32]], layers: usize) -> Result<Vec<f32>> {
        self.forward_observed(seqs, layers, None)
    }

    /// Runs `seqs` and returns the largest `|value|` per channel that each int8-quantised
    /// layer input reached (accumulated into `ranges` over calls), for
    /// [`Self::load_calibrated`]. Meant for an fp32 encoder: the ranges of what int8 will see.
    pub fn activation_ranges(&self, seqs: &[&[u32]], ranges: &mut Option<ActivationRanges>) -> Result<()> {
        let r = ranges.get_or_insert_with(|| ActivationRanges::new(self.layers.len(), self.hidden, self.inter));
        self.forward_observed(seqs, self.layers.len(), Some(r)).map(|_| ())
    }

    fn forward_observed(
        &self,
        seqs: &[&[u32]],
        layers: usize,
        ranges: Option<&mut ActivationRanges>,
    ) -> Result<Vec<f32>> {
        // The whole pass runs on one of rayon's threads: each layer has several parallel
        // sections, and one entered from outside the pool sends the caller to sleep on a futex
        // and wakes it after, where a worker that enters one finds the others still spinning
        // from the last (at batch 1 that hand-off was ~15% of the time).
        rayon::scope(|_| self.forward_in_pool(seqs, layers, ranges))
    }

    fn forward_in_pool(
        &self,
        seqs: &[&[u32]],
        layers: usize,
        mut ranges: Option<&mut ActivationRanges>,
    ) -> Result<Vec<f32>> {
        if layers > self.layers.len() {
            candle_core::bail!("the encoder has {} layers, not {layers}", self.layers.len());
        }
        let h = self.hidden;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut starts = Vec::with_capacity(seqs.len() + 1);
        let mut acc = 0;
        for s in seqs {
            if s.len() > self.max_positions {
                candle_core::bail!(
                    "sequence of {} tokens exceeds the model's {} positions",
                    s.len(),
                    self.max_positions
                );
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= self.vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary ({})", self.vocab);
            }
            starts.push(acc);
            acc += s.len();
        }
        starts.push(acc);
        let k = self.kernels;

        // Embeddings + layer norm.
        let mut x = vec![0f32; total * h];
        let embed = |(row, out): (usize, &mut [f32])| {
            let s = starts.partition_point(|&st| st <= row) - 1;
            let pos = row - starts[s];
            let id = seqs[s][pos] as usize;
            let w = &self.word[id * h..(id + 1) * h];
            let p = &self.position[pos * h..(pos + 1) * h];
            for i in 0..h {
                out[i] = w[i] + p[i] + self.token_type0[i];
            }
            k.layer_norm(out, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);
        };
        if x.len() >= PAR_MIN {
            x.par_chunks_mut(h).enumerate().for_each(embed);
        } else {
            x.chunks_mut(h).enumerate().for_each(embed);
        }

        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut x1 = vec![0f32; total * h];
        let mut inter = vec![0f32; total * self.inter];
        for (i, layer) in self.layers[..layers].iter().enumerate() {
            if let Some(r) = ranges.as_deref_mut() {
                ActivationRanges::observe(&mut r.qkv_input[i], &x);
            }
            // qkv = x·Wqkvᵀ + b
            fill_rows(&mut qkv, &layer.bqkv);
            layer.wqkv.acc(&mut qkv, &x, total);
            self.attention(&qkv, &mut ctx, &starts, k);
            // x1 = LN(ctx·Woᵀ + bo + x)
            add_rows(&mut x1, &x, &layer.bo);
            layer.wo.acc(&mut x1, &ctx, total);
            each_row(&mut x1, h, |row| k.layer_norm(row, &layer.ln1.gamma, &layer.ln1.beta, self.eps));
            if let Some(r) = ranges.as_deref_mut() {
                ActivationRanges::observe(&mut r.ffn_input[i], &x1);
            }
            // inter = GELU(x1·Wiᵀ + bi)
            fill_rows(&mut inter, &layer.bi);
            layer.wi.acc(&mut inter, &x1, total);
            each_row(&mut inter, self.inter * 8, |c| k.gelu(c));
            if let Some(o) = ranges.as_deref_mut().and_then(|r| r.ffn_output_input.as_mut()) {
                ActivationRanges::observe(&mut o[i], &inter);
            }
            // x = LN(inter·Wo2ᵀ + bo2 + x1)
            add_rows(&mut x, &x1, &layer.bo2);
            layer.wo2.acc(&mut x, &inter, total);
            each_row(&mut x, h, |row| k.layer_norm(row, &layer.ln2.gamma, &layer.ln2.beta, self.eps));
        }
        Ok(x)
    }

    /// Scaled dot-product attention per sequence and head, reading Q/K/V from the fused
    /// `[tokens, 3h]` buffer and writing `[tokens, h]`. Per task, two small GEMMs read Q, K
    /// and V in place through strides (`S = scale·Q·Kᵀ (+ relative bias)`,
    /// `ctx = softmax(S)·V`) and the second writes straight into the task's columns of `ctx`.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], starts: &[usize], k: &Kernels) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let tasks: Vec<(usize, usize)> =
            (0..starts.len() - 1).flat_map(|s| (0..self.heads).map(move |hd| (s, hd))).collect();
        let out = SharedMut(ctx.as_mut_ptr());
        let row = 3 * h as isize;
        tasks.par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, &(s, hd)| {
            let (a, b) = (starts[s], starts[s + 1]);
            let len = b - a;
            scores.resize(len * len, 0.0);
            let q = qkv[a * 3 * h + hd * d..].as_ptr();
            // SAFETY: every pointer and stride stays inside `qkv` (rows a..b, this head's
            // columns) or `scores` (len×len); the output rows a..b, columns hd*d..hd*d+d of
            // `ctx` belong to this task alone.
            unsafe {
                gemm::gemm(
                    len,
                    len,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q,
                    1,
                    row,
                    q.add(h),
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                if let Some(rel) = &self.relative {
                    // Row i adds the biases of distances -i..len-i: one contiguous run.
                    let span = 2 * self.max_positions - 1;
                    let head = &rel[hd * span..(hd + 1) * span];
                    for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                        let from = self.max_positions - 1 - i;
                        for (v, b) in row.iter_mut().zip(&head[from..from + len]) {
                            *v += b;
                        }
                    }
                }
                k.softmax_rows(scores, len);
                gemm::gemm(
                    len,
                    d,
                    len,
                    out.get().add(a * h + hd * d),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    q.add(2 * h),
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    }
}

/// Below this many floats, elementwise passes run on the calling thread: waking the pool costs
/// more than the work.
const PAR_MIN: usize = 1 << 15;

/// Applies `f` to each `width`-wide row of `buf`.
fn each_row(buf: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    if buf.len() >= PAR_MIN {
        buf.par_chunks_mut(width).for_each(f);
    } else {
        buf.chunks_mut(width).for_each(f);
    }
}

/// Writes `src + bias` into `dst`, row by row.
fn add_rows(dst: &mut [f32], src: &[f32], bias: &[f32]) {
    let w = bias.len();
    let f = |(o, x): (&mut [f32], &[f32])| {
        for i in 0..w {
            o[i] = x[i] + bias[i];
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(w).zip(src.par_chunks(w)).for_each(f);
    } else {
        dst.chunks_mut(w).zip(src.chunks(w)).for_each(f);
    }
}

/// Writes `bias` into every row of `dst`.
fn fill_rows(dst: &mut [f32], bias: &[f32]) {
    each_row(dst, bias.len(), |row| row.copy_from_slice(bias));
}

/// The elementwise kernels of one instruction set. The SIMD ones are compiled with
/// `#[target_feature]`, so they are `unsafe` to call; a `Kernels` is only ever made by
/// [`Kernels::of`], which checks that the CPU has those features, so its methods are safe.
struct Kernels {
    softmax_rows_fn: unsafe fn(&mut [f32], usize),
    gelu_fn: unsafe fn(&mut [f32]),
    layer_norm_fn: unsafe fn(&mut [f32], &[f32], &[f32], f32),
}

/// One kernel set compiled with `#[target_feature]`s, and the run-time check of exactly those
/// features: the list is written once, so the check cannot miss one the code is compiled with.
macro_rules! kernel_set {
    ($name:ident, $features:ident, $missing:ident, [$($feat:tt),+]) => {
        /// The features this kernel set is compiled with.
        pub(crate) const $features: &[&str] = &[$($feat),+];

        /// The features of this kernel set that this CPU lacks (all of them off x86-64).
        pub(crate) fn $missing() -> Vec<&'static str> {
            #[cfg(target_arch = "x86_64")]
            {
                let mut missing = Vec::new();
                $(
                    if !std::arch::is_x86_feature_detected!($feat) {
                        missing.push($feat);
                    }
                )+
                missing
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                $features.to_vec()
            }
        }

        #[cfg(target_arch = "x86_64")]
        mod $name {
            $(#[target_feature(enable = $feat)])+
            pub fn softmax_rows(x: &mut [f32], width: usize) {
                super::generic::softmax_rows(x, width)
            }
            $(#[target_feature(enable = $feat)])+
            pub fn gelu(x: &mut [f32]) {
                super::generic::gelu(x)
            }
            $(#[target_feature(enable = $feat)])+
            pub fn layer_norm(x: &mut [f32], g: &[f32], b: &[f32], eps: f32) {
                super::generic::layer_norm(x, g, b, eps)
            }
        }
    };
}

kernel_set!(avx512, AVX512_FEATURES, avx512_missing, ["avx512f", "avx2", "fma"]);
kernel_set!(avx2, AVX2_FEATURES, avx2_missing, ["avx2", "fma"]);

impl Kernels {
    /// The kernels of `simd`. Panics if this CPU lacks a feature they are compiled with
    /// ([`cpu::paths`] never chooses such a path; this keeps the methods sound regardless).
    fn of(simd: Simd) -> &'static Kernels {
        let missing = simd.missing();
        assert!(missing.is_empty(), "the {simd:?} kernels need {}, which this CPU lacks", missing.join(", "));
        #[cfg(target_arch = "x86_64")]
        static AVX512: Kernels =
            Kernels { softmax_rows_fn: avx512::softmax_rows, gelu_fn: avx512::gelu, layer_norm_fn: avx512::layer_norm };
        #[cfg(target_arch = "x86_64")]
        static AVX2: Kernels =
            Kernels { softmax_rows_fn: avx2::softmax_rows, gelu_fn: avx2::gelu, layer_norm_fn: avx2::layer_norm };
        static BASELINE: Kernels = Kernels {
            softmax_rows_fn: generic::softmax_rows,
            gelu_fn: generic::gelu,
            layer_norm_fn: generic::layer_norm,
        };
        match simd {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => &AVX512,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => &AVX2,
            Simd::Baseline => &BASELINE,
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the baseline has no missing features off x86-64"),
        }
    }

    /// Softmax of each `width`-wide row of `x`.
    fn softmax_rows(&self, x: &mut [f32], width: usize) {
        // SAFETY: `self` was made by `Kernels::of`, which checked every feature the function
        // is compiled with.
        unsafe { (self.softmax_rows_fn)(x, width) }
    }

    /// Exact (erf) GELU in place.
    fn gelu(&self, x: &mut [f32]) {
        // SAFETY: as in `softmax_rows`.
        unsafe { (self.gelu_fn)(x) }
    }

    /// Layer norm of one row in place.
    fn layer_norm(&self, x: &mut [f32], g: &[f32], b: &[f32], eps: f32) {
        // SAFETY: as in `softmax_rows`.
        unsafe { (self.layer_norm_fn)(x, g, b, eps) }
    }
}

/// Plain loops written so that the compiler vectorises them (fixed-width lanes, no calls).
mod generic {
    /// exp(x) for x ≤ 1 (softmax arguments after max subtraction, erfc's exponent):
    /// Cephes-style range reduction and a degree-6 polynomial; relative error below 2e-7;
    /// arguments below −87 give about 1.6e-38 instead of underflowing.
    #[inline(always)]
    fn exp_neg(x: f32) -> f32 {
        let x = x.max(-87.0);
        // Round to nearest with the 1.5·2²³ trick: plain adds, and the integer n is read from
        // the same bits, so no float-to-int conversion breaks vectorisation.
        const MAGIC: f32 = 12_582_912.0;
        let t = x * std::f32::consts::LOG2_E + MAGIC;
        let n = t - MAGIC;
        let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
        let r = n.mul_add(-0.693_145_75, x);
        let r = n.mul_add(-1.428_606_8e-6, r);
        let p = 1.987_569_2e-4f32;
        let p = p.mul_add(r, 1.398_199_9e-3);
        let p = p.mul_add(r, 8.333_452e-3);
        let p = p.mul_add(r, 4.166_579_6e-2);
        let p = p.mul_add(r, 0.166_666_65);
        let p = p.mul_add(r, 0.5);
        let p = p.mul_add(r * r, r) + 1.0;
        f32::from_bits(p.to_bits().wrapping_add((ni << 23) as u32))
    }

    #[inline(always)]
    pub fn softmax(x: &mut [f32]) {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        for v in x.iter_mut() {
            *v = exp_neg(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }

    #[inline(always)]
    pub fn softmax_rows(x: &mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width) {
            softmax(row);
        }
    }

    /// erf(x) = 1 − erfc(|x|) with sign, erfc from Numerical Recipes' Chebyshev fit
    /// (fractional error below 1.2e-7), using the vectorisable exp above.
    #[inline(always)]
    fn erf(x: f32) -> f32 {
        let z = x.abs();
        let t = 1.0 / 0.5f32.mul_add(z, 1.0);
        let p = 0.170_872_77f32;
        let p = p.mul_add(t, -0.822_152_23);
        let p = p.mul_add(t, 1.488_515_9);
        let p = p.mul_add(t, -1.135_204);
        let p = p.mul_add(t, 0.278_868_07);
        let p = p.mul_add(t, -0.186_288_06);
        let p = p.mul_add(t, 0.096_784_18);
        let p = p.mul_add(t, 0.374_091_96);
        let p = p.mul_add(t, 1.000_023_7);
        let p = p.mul_add(t, -1.265_512_2);
        let erfc = t * exp_neg((-z).mul_add(z, p));
        (1.0 - erfc).copysign(x)
    }

    #[inline(always)]
    pub fn gelu(x: &mut [f32]) {
        for v in x.iter_mut() {
            let u = *v;
            *v = 0.5 * u * (1.0 + erf(u * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    #[inline(always)]
    pub fn layer_norm(x: &mut [f32], g: &[f32], b: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, gi), bi) in x.iter_mut().zip(g).zip(b) {
            *v = ((*v - mean) * inv).mul_add(*gi, *bi);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn erf_ref(x: f64) -> f64 {
            // High-precision series / continued fraction via libm-quality f64 erf substitute.
            // erf(x) = 2/sqrt(pi) * sum_{n} (-1)^n x^(2n+1) / (n! (2n+1)), fine for |x| <= 6.
            if x.abs() > 2.0 {
                // erfc by its continued fraction, evaluated backwards.
                let z = x.abs();
                let mut f = z;
                for k in (1..=80).rev() {
                    f = z + (k as f64 / 2.0) / f;
                }
                let erfc = (-z * z).exp() / (std::f64::consts::PI.sqrt() * f);
                return (1.0 - erfc) * x.signum();
            }
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            loop {
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() < 1e-17 || n > 200.0 {
                    break;
                }
                n += 1.0;
                term *= -x * x / n;
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        }

        #[test]
        fn erf_and_exp_are_accurate() {
            let mut worst_erf = 0f64;
            let mut worst_exp = 0f64;
            for i in -6000..=6000 {
                let x = i as f32 / 1000.0;
                worst_erf = worst_erf.max((erf(x) as f64 - erf_ref(x as f64)).abs());
                if x <= 0.0 {
                    let a = x * 10.0;
                    let e = (a as f64).exp();
                    worst_exp = worst_exp.max(((exp_neg(a) as f64) - e).abs() / e);
                }
            }
            assert!(worst_erf < 1e-6, "erf error {worst_erf}");
            assert!(worst_exp < 1e-6, "exp relative error {worst_exp}");
        }

        #[test]
        fn softmax_and_layer_norm() {
            let mut x = vec![1.0, 2.0, 3.0, -1000.0];
            softmax(&mut x);
            let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| (v - 3.0).exp()).collect();
            let s: f64 = e.iter().sum();
            for k in 0..3 {
                assert!((x[k] as f64 - e[k] / s).abs() < 1e-6);
            }
            assert!(x[3] < 1e-30);
            let mut y = vec![1.0, 2.0, 3.0, 4.0];
            layer_norm(&mut y, &[1.0; 4], &[0.5; 4], 0.0);
            let sd = 1.25f32.sqrt();
            assert!((y[0] - (0.5 - 1.5 / sd)).abs() < 1e-6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_smoothing_evens_activation_and_weight_ranges() {
        // Two input channels (k = 2), three output rows: column maxima 4 and 0.5.
        let w = [1.0, -0.5, -4.0, 0.25, 2.0, 0.1];
        let range = [16.0, 2.0];
        let s = calibrated_smoothing(&range, &w, 2);
        for (j, wmax) in [4.0f32, 0.5].into_iter().enumerate() {
            // With alpha = 0.5, what int8 sees of the input (range / s) and of the weight
            // (wmax * s) have the same range.
            assert!((range[j] / s[j] - wmax * s[j]).abs() < 1e-5, "channel {j}: {s:?}");
        }
        // A channel never seen (range 0) gets a finite, positive divisor.
        assert!(calibrated_smoothing(&[0.0, 1.0], &w, 2).iter().all(|v| v.is_finite() && *v > 0.0));
    }

    #[test]
    fn outlier_channels_are_the_few_far_past_the_median() {
        let mut range = vec![1.0f32; 101];
        range[7] = 4.5;
        range[3] = 40.0;
        range[60] = 3.9;
        assert_eq!(outlier_channels(&range), vec![3, 7]);
        assert_eq!(outlier_channels(&[1.0; 16]), Vec::<usize>::new());
        assert_eq!(outlier_channels(&[]), Vec::<usize>::new());
        // At most MAX_OUTLIERS, the largest, in channel order.
        let many: Vec<f32> = (0..1000).map(|j| if j % 5 == 0 { 100.0 + j as f32 } else { 1.0 }).collect();
        let got = outlier_channels(&many);
        assert_eq!(got.len(), MAX_OUTLIERS);
        assert!(got.windows(2).all(|p| p[0] < p[1]) && got[0] == 1000 - 5 * MAX_OUTLIERS);
    }

    #[test]
    fn activation_ranges_round_trip_through_tensors_and_refuse_bad_ones() {
        let r = ActivationRanges {
            qkv_input: vec![vec![1.0, 2.0], vec![3.0, 0.0]],
            ffn_input: vec![vec![0.5, 0.25], vec![8.0, 1.0]],
            ffn_output_input: Some(vec![vec![0.5, 0.25, 2.0], vec![8.0, 1.0, 0.0]]),
        };
        let t = r.to_tensors().unwrap();
        assert_eq!(ActivationRanges::from_tensors(&t, 2, 2, 3).unwrap(), r);
        assert!(ActivationRanges::from_tensors(&t, 3, 2, 3).is_err(), "a missing layer");
        assert!(ActivationRanges::from_tensors(&t, 2, 3, 3).is_err(), "the wrong width");
        assert!(ActivationRanges::from_tensors(&t, 2, 2, 4).is_err(), "the wrong FFN width");
        let mut bad = t.clone();
        bad.insert(
            "layer.0.qkv_input".into(),
            candle_core::Tensor::new(&[f32::NAN, 1.0], &candle_core::Device::Cpu).unwrap(),
        );
        assert!(ActivationRanges::from_tensors(&bad, 2, 2, 3).is_err(), "a NaN range");
        // A file from before the FFN output's ranges reads as having none; half a set is refused.
        let mut older = t.clone();
        older.retain(|k, _| !k.ends_with(".ffn_output_input"));
        let read = ActivationRanges::from_tensors(&older, 2, 2, 3).unwrap();
        assert_eq!(read.ffn_output_input, None);
        assert_eq!((read.qkv_input, read.ffn_input), (r.qkv_input.clone(), r.ffn_input.clone()));
        let mut half = t.clone();
        half.remove("layer.1.ffn_output_input");
        assert!(ActivationRanges::from_tensors(&half, 2, 2, 3).is_err(), "one layer's FFN output ranges missing");
    }
}
