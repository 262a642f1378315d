//! The transformer encoder: a BERT forward pass written against candle's tensor ops.
//!
//! One implementation serves inference and training. Inference uses candle's fused layer-norm
//! and softmax kernels; training (`Precision::Differentiable`) uses compositions of basic ops,
//! because the fused kernels have no backward pass. Both compute the same function (the parity
//! test in `tests/` holds them, and candle-transformers' `BertModel`, to each other).

pub mod cpu;
pub mod fast;
pub mod sgemm;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

/// The subset of a Hugging Face BERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
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

impl BertConfig {
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
            if t != "bert" {
                return Err(format!("model_type {t:?} is not supported (bert only)"));
            }
        }
        Ok(())
    }
}

pub use fast::FastEncoder;

/// Which kernels the forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
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

    fn forward(&self, x: &Tensor, p: Precision) -> Result<Tensor> {
        match p {
            Precision::Fused => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32),
            Precision::Differentiable => {
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
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let att = vb.pp("attention");
        Ok(Self {
            query: linear(att.pp("self").pp("query"), h, h)?,
            key: linear(att.pp("self").pp("key"), h, h)?,
            value: linear(att.pp("self").pp("value"), h, h)?,
            attn_out: linear(att.pp("output").pp("dense"), h, h)?,
            attn_norm: LayerNorm::load(att.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: linear(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: linear(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            out_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    /// `x`: [batch, seq, hidden]; `bias`: [batch, 1, 1, seq] additive attention mask.
    fn forward(&self, x: &Tensor, bias: &Tensor, p: Precision) -> Result<Tensor> {
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
            Precision::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
            Precision::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        let x = self.attn_norm.forward(&(self.attn_out.forward(&ctx)? + x)?, p)?;
        let inner = self.intermediate.forward(&x)?.gelu_erf()?;
        self.out_norm.forward(&(self.output.forward(&inner)? + x)?, p)
    }
}

/// A BERT encoder: embeddings and `num_hidden_layers` transformer layers (no pooler). A clone
/// shares the weights (candle tensors are reference-counted; training's updates are seen by
/// every clone).
#[derive(Clone)]
pub struct Encoder {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    config: BertConfig,
    device: Device,
}

impl Encoder {
    /// Loads from a var builder whose root holds `embeddings.*` and `encoder.layer.N.*`
    /// (a `bert.` prefix, as in task checkpoints, is detected and skipped).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") { vb } else { vb.pp("bert") };
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: Embedding::new(e.pp("word_embeddings").get((config.vocab_size, h), "weight")?, h),
            position: Embedding::new(
                e.pp("position_embeddings").get((config.max_position_embeddings, h), "weight")?,
                h,
            ),
            token_type: Embedding::new(e.pp("token_type_embeddings").get((config.type_vocab_size, h), "weight")?, h),
            emb_norm: LayerNorm::load(e.pp("LayerNorm"), h, config.layer_norm_eps)?,
            layers,
            config: config.clone(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Embedding output for `input_ids` [batch, seq] (u32). Token types are all zero.
    pub fn embed(&self, input_ids: &Tensor, p: Precision) -> Result<Tensor> {
        let (_, t) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, &self.device)?;
        let types = Tensor::zeros(t, DType::U32, &self.device)?;
        let x = self
            .word
            .forward(input_ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .broadcast_add(&self.token_type.forward(&types)?)?;
        self.emb_norm.forward(&x, p)
    }

    /// Additive attention bias [batch, 1, 1, seq] from a 0/1 mask [batch, seq] (f32).
    pub fn attention_bias(mask: &Tensor) -> Result<Tensor> {
        let (b, t) = mask.dims2()?;
        ((mask.ones_like()? - mask)? * -10_000.0)?.reshape((b, 1, 1, t))
    }

    /// Runs layers `range` over hidden states `x` [batch, seq, hidden].
    pub fn layers(&self, x: &Tensor, bias: &Tensor, range: std::ops::Range<usize>, p: Precision) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers[range] {
            x = layer.forward(&x, bias, p)?;
        }
        Ok(x)
    }

    /// Last hidden states [batch, seq, hidden] for `input_ids` [batch, seq] (u32) and a 0/1
    /// `mask` [batch, seq] (f32).
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor, p: Precision) -> Result<Tensor> {
        let bias = Self::attention_bias(mask)?;
        let x = self.embed(input_ids, p)?;
        self.layers(&x, &bias, 0..self.layers.len(), p)
    }
}
