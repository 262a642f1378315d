//! The transformer encoder: BERT and MPNet forward passes written against candle's tensor ops.
//!
//! One implementation serves inference and training. Inference uses candle's fused layer-norm
//! and softmax kernels; training (`Ops::Differentiable`) uses compositions of basic ops,
//! because the fused kernels have no backward pass. Both compute the same function (the parity
//! tests in `tests/` hold them, candle-transformers' `BertModel` and PyTorch's `MPNetModel` to
//! each other).
//!
//! MPNet is BERT with other tensor names, no token types, positions counted from 2 (RoBERTa's
//! padding convention) and one relative-position bias shared by every layer's attention
//! scores ([`relative_bucket`]).

mod amx;
mod bf16;
pub mod cpu;
pub mod dense;
pub mod fast;
mod int8;
pub mod sgemm;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

/// The encoder families this implementation runs (`model_type` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    MPNet,
}

/// The subset of a Hugging Face BERT or MPNet `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub model_type: Option<String>,
    /// MPNet's relative-position buckets.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_buckets() -> usize {
    32
}

/// MPNet's largest relative distance with its own bucket range (as in its pre-training).
const MPNET_MAX_DISTANCE: usize = 128;

impl EncoderConfig {
    /// Checks what this implementation supports, with a message that says what was found.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_new" | "gelu_pytorch_tanh") {
            return Err(format!("hidden_act {:?} is not supported (gelu only)", self.hidden_act));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(t) = &self.model_type {
            if !matches!(t.as_str(), "bert" | "mpnet") {
                return Err(format!("model_type {t:?} is not supported (bert or mpnet)"));
            }
        }
        if self.max_position_embeddings <= self.position_offset() {
            return Err(format!("max_position_embeddings {} leaves no usable position", self.max_position_embeddings));
        }
        if self.architecture() == Architecture::MPNet
            && (self.relative_attention_num_buckets < 4 || !self.relative_attention_num_buckets.is_multiple_of(4))
        {
            return Err(format!(
                "relative_attention_num_buckets {} must be a multiple of 4",
                self.relative_attention_num_buckets
            ));
        }
        Ok(())
    }

    /// BERT unless `model_type` says `mpnet`.
    pub fn architecture(&self) -> Architecture {
        match self.model_type.as_deref() {
            Some("mpnet") => Architecture::MPNet,
            _ => Architecture::Bert,
        }
    }

    /// Index of the first token's position embedding (MPNet skips the padding rows 0 and 1).
    pub fn position_offset(&self) -> usize {
        match self.architecture() {
            Architecture::Bert => 0,
            Architecture::MPNet => 2,
        }
    }

    /// The longest input, special tokens included.
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }

    /// The vocabulary tokens that frame every input (`[CLS] … [SEP]` or `<s> … </s>`).
    /// MPNet's vocabulary also holds `[CLS]`, unused: the framing comes from the family.
    pub fn framing(&self) -> (&'static str, &'static str) {
        match self.architecture() {
            Architecture::Bert => ("[CLS]", "[SEP]"),
            Architecture::MPNet => ("<s>", "</s>"),
        }
    }
}

/// MPNet's (T5-style, bidirectional) bucket of the relative position `key - query`: exact
/// for distances below `buckets / 4`, logarithmic up to [`MPNET_MAX_DISTANCE`], one bucket
/// beyond; the sign picks one half of the buckets. Computed in f32 as the reference does, so
/// the bucket edges fall where they fall there.
pub fn relative_bucket(relative: i64, buckets: usize) -> usize {
    let half = buckets / 2;
    let n = -relative;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let scale = ((MPNET_MAX_DISTANCE / max_exact) as f64).ln() as f32;
        let large = max_exact + ((n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32) as usize;
        bucket += large.min(half - 1);
    }
    bucket
}

pub use dense::Precision;
pub use fast::{ActivationRanges, FastEncoder, OUTLIER_RATIO};

/// Which kernels the forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ops {
    /// Fused kernels, no gradients: serving and evaluation.
    Fused,
    /// Basic ops only, so that `backward()` works: training.
    Differentiable,
}

#[derive(Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps })
    }

    fn forward(&self, x: &Tensor, p: Ops) -> Result<Tensor> {
        match p {
            Ops::Fused => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32),
            Ops::Differentiable => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centered = x.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
            }
        }
    }
}

fn linear(vb: VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?)))
}

/// Where a layer's attention tensors are, below `encoder.layer.N.attention`, per family.
pub(crate) struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
}

impl LayerNames {
    pub(crate) fn of(arch: Architecture) -> Self {
        match arch {
            Architecture::Bert => Self {
                query: "self.query",
                key: "self.key",
                value: "self.value",
                attn_out: "output.dense",
                attn_norm: "output.LayerNorm",
            },
            Architecture::MPNet => {
                Self { query: "attn.q", key: "attn.k", value: "attn.v", attn_out: "attn.o", attn_norm: "LayerNorm" }
            }
        }
    }
}

#[derive(Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl Layer {
    fn load(vb: VarBuilder, c: &EncoderConfig) -> Result<Self> {
        let h = c.hidden_size;
        let att = vb.pp("attention");
        let names = LayerNames::of(c.architecture());
        Ok(Self {
            query: linear(att.pp(names.query), h, h)?,
            key: linear(att.pp(names.key), h, h)?,
            value: linear(att.pp(names.value), h, h)?,
            attn_out: linear(att.pp(names.attn_out), h, h)?,
            attn_norm: LayerNorm::load(att.pp(names.attn_norm), h, c.layer_norm_eps)?,
            intermediate: linear(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: linear(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            out_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    /// `x`: [batch, seq, hidden]; `bias`: additive attention bias broadcastable to
    /// [batch, heads, seq, seq] (the padding mask, plus MPNet's relative-position bias).
    fn forward(&self, x: &Tensor, bias: &Tensor, p: Ops) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = match p {
            Ops::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
            Ops::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        let x = self.attn_norm.forward(&(self.attn_out.forward(&ctx)? + x)?, p)?;
        let inner = self.intermediate.forward(&x)?.gelu_erf()?;
        self.out_norm.forward(&(self.output.forward(&inner)? + x)?, p)
    }
}

/// A BERT or MPNet encoder: embeddings and `num_hidden_layers` transformer layers (no pooler).
/// A clone shares the weights (candle tensors are reference-counted; training's updates are
/// seen by every clone).
#[derive(Clone)]
pub struct Encoder {
    word: Embedding,
    position: Embedding,
    /// BERT's token-type embedding (MPNet has none).
    token_type: Option<Embedding>,
    /// MPNet's `[buckets, heads]` relative-position bias, shared by all layers.
    relative_bias: Option<Tensor>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    config: EncoderConfig,
    device: Device,
}

impl Encoder {
    /// Loads from a var builder whose root holds `embeddings.*` and `encoder.layer.N.*`
    /// (a `bert.` or `mpnet.` prefix, as in task checkpoints, is detected and skipped).
    pub fn load(vb: VarBuilder, config: &EncoderConfig) -> Result<Self> {
        let vb = unprefixed(vb, config.architecture());
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        let (token_type, relative_bias) = match config.architecture() {
            Architecture::Bert => (
                Some(Embedding::new(e.pp("token_type_embeddings").get((config.type_vocab_size, h), "weight")?, h)),
                None,
            ),
            Architecture::MPNet => (
                None,
                Some(
                    vb.pp("encoder.relative_attention_bias")
                        .get((config.relative_attention_num_buckets, config.num_attention_heads), "weight")?,
                ),
            ),
        };
        Ok(Self {
            word: Embedding::new(e.pp("word_embeddings").get((config.vocab_size, h), "weight")?, h),
            position: Embedding::new(
                e.pp("position_embeddings").get((config.max_position_embeddings, h), "weight")?,
                h,
            ),
            token_type,
            relative_bias,
            emb_norm: LayerNorm::load(e.pp("LayerNorm"), h, config.layer_norm_eps)?,
            layers,
            config: config.clone(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Embedding output for `input_ids` [batch, seq] (u32). Token types are all zero.
    pub fn embed(&self, input_ids: &Tensor, p: Ops) -> Result<Tensor> {
        let (_, t) = input_ids.dims2()?;
        let offset = self.config.position_offset() as u32;
        let positions = Tensor::arange(offset, offset + t as u32, &self.device)?;
        let mut x = self.word.forward(input_ids)?.broadcast_add(&self.position.forward(&positions)?)?;
        if let Some(token_type) = &self.token_type {
            let types = Tensor::zeros(t, DType::U32, &self.device)?;
            x = x.broadcast_add(&token_type.forward(&types)?)?;
        }
        self.emb_norm.forward(&x, p)
    }

    /// Additive attention bias [batch, 1, 1, seq] from a 0/1 mask [batch, seq] (f32).
    pub fn attention_bias(mask: &Tensor) -> Result<Tensor> {
        let (b, t) = mask.dims2()?;
        ((mask.ones_like()? - mask)? * -10_000.0)?.reshape((b, 1, 1, t))
    }

    /// MPNet's relative-position bias [1, heads, seq, seq] for `t` tokens (None for BERT).
    fn position_bias(&self, t: usize) -> Result<Option<Tensor>> {
        let Some(table) = &self.relative_bias else { return Ok(None) };
        let buckets = self.config.relative_attention_num_buckets;
        let idx: Vec<u32> =
            (0..t).flat_map(|q| (0..t).map(move |k| relative_bucket(k as i64 - q as i64, buckets) as u32)).collect();
        let idx = Tensor::from_vec(idx, t * t, &self.device)?;
        let heads = table.dim(1)?;
        let bias = table.index_select(&idx, 0)?.reshape((t, t, heads))?.permute((2, 0, 1))?;
        Ok(Some(bias.unsqueeze(0)?.contiguous()?))
    }

    /// Runs layers `range` over hidden states `x` [batch, seq, hidden]; `bias` is
    /// [`Self::attention_bias`] of the padding mask.
    pub fn layers(&self, x: &Tensor, bias: &Tensor, range: std::ops::Range<usize>, p: Ops) -> Result<Tensor> {
        let bias = match self.position_bias(x.dim(1)?)? {
            Some(relative) => bias.broadcast_add(&relative)?,
            None => bias.clone(),
        };
        let mut x = x.clone();
        for layer in &self.layers[range] {
            x = layer.forward(&x, &bias, p)?;
        }
        Ok(x)
    }

    /// Last hidden states [batch, seq, hidden] for `input_ids` [batch, seq] (u32) and a 0/1
    /// `mask` [batch, seq] (f32).
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor, p: Ops) -> Result<Tensor> {
        let bias = Self::attention_bias(mask)?;
        let x = self.embed(input_ids, p)?;
        self.layers(&x, &bias, 0..self.layers.len(), p)
    }
}

/// The var builder below a task checkpoint's `bert.` or `mpnet.` prefix, when there is one.
pub(crate) fn unprefixed(vb: VarBuilder, arch: Architecture) -> VarBuilder {
    if vb.contains_tensor("embeddings.word_embeddings.weight") {
        return vb;
    }
    match arch {
        Architecture::Bert => vb.pp("bert"),
        Architecture::MPNet => vb.pp("mpnet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_are_exact_near_and_logarithmic_far() {
        // Keys after the query (positive relative position) use the lower half.
        assert_eq!(relative_bucket(0, 32), 0);
        assert_eq!(relative_bucket(-1, 32), 1);
        assert_eq!(relative_bucket(-7, 32), 7);
        assert_eq!(relative_bucket(1, 32), 17);
        assert_eq!(relative_bucket(7, 32), 23);
        // Beyond max_exact (8) the buckets grow logarithmically and saturate at 15 / 31.
        assert_eq!(relative_bucket(-8, 32), 8);
        assert_eq!(relative_bucket(-127, 32), 15);
        assert_eq!(relative_bucket(-500, 32), 15);
        assert_eq!(relative_bucket(500, 32), 31);
        let mut last = 0;
        for n in 0..600 {
            let b = relative_bucket(-n, 32);
            assert!(b >= last && b < 16, "distance {n}: bucket {b}");
            last = b;
        }
    }

    #[test]
    fn framing_and_positions_follow_the_family() {
        let mut c: EncoderConfig = serde_json::from_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "max_position_embeddings": 514, "model_type": "mpnet"}"#,
        )
        .unwrap();
        assert_eq!(c.architecture(), Architecture::MPNet);
        assert_eq!((c.max_positions(), c.framing()), (512, ("<s>", "</s>")));
        c.model_type = Some("bert".into());
        assert_eq!((c.max_positions(), c.framing()), (514, ("[CLS]", "[SEP]")));
        c.model_type = Some("roberta".into());
        assert!(c.validate().unwrap_err().contains("roberta"));
    }
}
