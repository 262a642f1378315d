//! The scoring heads: encoder states → negative/neutral/positive.
//!
//! - The target head reads, for one actor in one sentence, the mean of the contextual states of
//!   the actor's mention pieces and the sentence vector (mean of all states).
//! - The sentence head reads the sentence vector alone.
//!
//! Both are two-layer MLPs (GELU). Their inputs come from one encoder pass per sentence window,
//! whatever the number of actors.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::batches::Batch;
use crate::model::manifest::HeadsConfig;

/// `Linear → GELU → Linear(3)`.
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn load(vb: VarBuilder, input: usize, hidden: usize) -> Result<Self> {
        let get = |name: &str, shape: (usize, usize)| -> Result<Linear> {
            let vb = vb.pp(name);
            Ok(Linear::new(vb.get(shape, "weight")?, Some(vb.get(shape.0, "bias")?)))
        };
        Ok(Self { fc1: get("fc1", (hidden, input))?, fc2: get("fc2", (3, hidden))? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

/// The target (stance) and sentence (sentiment) heads.
pub struct Heads {
    pub target: Mlp,
    pub sentence: Mlp,
}

/// Logits for one batch.
pub struct BatchLogits {
    /// `[rows, 3]`.
    pub sentence: Tensor,
    /// `[targets, 3]`.
    pub target: Tensor,
}

impl Heads {
    /// Loads `target.fc{1,2}` and `sentence.fc{1,2}` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &HeadsConfig) -> Result<Self> {
        Ok(Self {
            target: Mlp::load(vb.pp("target"), 2 * cfg.input, cfg.hidden)?,
            sentence: Mlp::load(vb.pp("sentence"), cfg.input, cfg.hidden)?,
        })
    }

    /// Pools the encoder output `hidden` `[rows, seq, h]` as the batch says and applies both
    /// heads. `dropout` (training only) is applied to the pooled features.
    pub fn forward(&self, hidden: &Tensor, batch: &Batch, dropout: Option<&dyn Fn(&Tensor) -> Result<Tensor>>) -> Result<BatchLogits> {
        let (rows, seq, h) = hidden.dims3()?;
        let flat = hidden.reshape((rows * seq, h))?;
        let sent = batch.sentence_pool.matmul(&flat)?;
        let drop = |x: Tensor| match dropout {
            Some(f) => f(&x),
            None => Ok(x),
        };
        let sentence = self.sentence.forward(&drop(sent.clone())?)?;
        let target = if batch.target_index.is_empty() {
            Tensor::zeros((0, 3), hidden.dtype(), hidden.device())?
        } else {
            let mention = batch.target_pool.matmul(&flat)?;
            let context = sent.index_select(&batch.target_rows, 0)?;
            self.target.forward(&drop(Tensor::cat(&[mention, context], D::Minus1)?)?)?
        };
        Ok(BatchLogits { sentence, target })
    }
}
