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

use serde::{Deserialize, Serialize};

use crate::batches::Batch;

/// Shapes of the scoring heads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadsConfig {
    /// Hidden size of the encoder output the heads read.
    pub input: usize,
    /// Hidden width of each head's two-layer MLP.
    pub hidden: usize,
}

/// `Linear → GELU → Linear(3)`.
#[derive(Clone)]
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

/// The target (stance) and sentence (sentiment) heads. A clone shares the weights.
#[derive(Clone)]
pub struct Heads {
    pub target: Mlp,
    pub sentence: Mlp,
}

/// Dropout applied to pooled features during training.
pub type Dropout<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

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
    pub fn forward(&self, hidden: &Tensor, batch: &Batch, dropout: Option<Dropout>) -> Result<BatchLogits> {
        let (rows, seq, h) = hidden.dims3()?;
        let flat = hidden.reshape((rows * seq, h))?;
        let sent = batch.sentence_pool.matmul(&flat)?;
        let mention = if batch.target_index.is_empty() { None } else { Some(batch.target_pool.matmul(&flat)?) };
        self.classify(&sent, mention.as_ref(), &batch.target_rows, dropout)
    }

    /// Applies both heads to pooled vectors: `sentence` `[rows, h]`, `mention` `[targets, h]`
    /// (`None` when there is no target) and each target's row.
    pub fn classify(
        &self,
        sentence: &Tensor,
        mention: Option<&Tensor>,
        target_rows: &Tensor,
        dropout: Option<Dropout>,
    ) -> Result<BatchLogits> {
        let drop = |x: Tensor| match dropout {
            Some(f) => f(&x),
            None => Ok(x),
        };
        let logits = self.sentence.forward(&drop(sentence.clone())?)?;
        let target = match mention {
            None => Tensor::zeros((0, 3), sentence.dtype(), sentence.device())?,
            Some(mention) => {
                let context = sentence.index_select(target_rows, 0)?;
                self.target.forward(&drop(Tensor::cat(&[mention, &context], D::Minus1)?)?)?
            }
        };
        Ok(BatchLogits { sentence: logits, target })
    }
}
