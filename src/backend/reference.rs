//! The reference backend: the candle-op encoder on padded batches of similar length, pooling
//! as matrices (`Batch`), so that training differentiates through exactly this computation.

use super::{distribute, rows, Backend, WindowLogits};
use crate::batches::{self, Batch, BatchLimits, WindowInput};
use crate::encoder::{Encoder, Ops, Precision};
use crate::heads::Heads;

/// Windows per padded batch at most: the pooling matrices grow with rows².
pub const MAX_ROWS: usize = 64;

pub struct ReferenceBackend {
    encoder: Encoder,
    heads: Heads,
}

impl ReferenceBackend {
    pub fn new(encoder: Encoder, heads: Heads) -> Self {
        Self { encoder, heads }
    }
}

impl Backend for ReferenceBackend {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn precision(&self) -> Precision {
        Precision::Fp32
    }

    fn is_padded(&self) -> bool {
        true
    }

    fn score(&self, windows: &[&WindowInput], max_batch_tokens: usize) -> candle_core::Result<Vec<WindowLogits>> {
        let lengths: Vec<usize> = windows.iter().map(|w| w.ids.len()).collect();
        let mut out: Vec<Option<WindowLogits>> = vec![None; windows.len()];
        let limits = BatchLimits { max_tokens: max_batch_tokens, max_rows: MAX_ROWS };
        for group in batches::plan(&lengths, limits) {
            let members: Vec<&WindowInput> = group.iter().map(|&i| windows[i]).collect();
            let batch = Batch::build(&members, self.encoder.device())?;
            let hidden = self.encoder.forward(&batch.ids, &batch.mask, Ops::Fused)?;
            let logits = self.heads.forward(&hidden, &batch, None)?;
            let owners: Vec<usize> = batch.target_index.iter().map(|&(row, _)| row).collect();
            let per_row = distribute(rows(&logits.sentence)?, rows(&logits.target)?, &owners);
            for (&i, s) in group.iter().zip(per_row) {
                out[i] = Some(s);
            }
        }
        Ok(out.into_iter().map(|s| s.expect("every window is in one batch")).collect())
    }
}
