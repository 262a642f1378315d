//! The serving backend: the packed fast encoder (no padding), mention states pooled row by
//! row, the heads on the pooled vectors.

use candle_core::{Device, Tensor};

use super::{distribute, rows, Backend, WindowLogits};
use crate::batches::{self, WindowInput};
use crate::encoder::{FastEncoder, Precision};
use crate::heads::Heads;

pub struct FastBackend {
    encoder: FastEncoder,
    heads: Heads,
}

impl FastBackend {
    pub fn new(encoder: FastEncoder, heads: Heads) -> Self {
        Self { encoder, heads }
    }
}

impl Backend for FastBackend {
    fn name(&self) -> &'static str {
        "fast"
    }

    fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    fn is_padded(&self) -> bool {
        false
    }

    fn score(&self, windows: &[&WindowInput], max_batch_tokens: usize) -> candle_core::Result<Vec<WindowLogits>> {
        let mut out = Vec::with_capacity(windows.len());
        let device = Device::Cpu;
        let h = self.encoder.hidden_size();
        for group in batches::pack(windows, max_batch_tokens) {
            let seqs: Vec<&[u32]> = group.iter().map(|w| w.ids.as_slice()).collect();
            let hidden = self.encoder.forward(&seqs)?;
            let mut sentence = Vec::with_capacity(group.len() * h);
            let mut mention = Vec::new();
            let mut owners = Vec::new();
            let mut offset = 0;
            for (r, w) in group.iter().enumerate() {
                let n = w.ids.len();
                let states = &hidden[offset * h..(offset + n) * h];
                sentence.extend(batches::mean_rows(states, h, 0..n));
                for spans in &w.targets {
                    mention.extend(batches::mean_rows(states, h, batches::unique_positions(spans, n)));
                    owners.push(r);
                }
                offset += n;
            }
            let sentence = Tensor::from_vec(sentence, (group.len(), h), &device)?;
            let n_targets = owners.len();
            let mention = if n_targets == 0 { None } else { Some(Tensor::from_vec(mention, (n_targets, h), &device)?) };
            let target_rows: Vec<u32> = owners.iter().map(|&r| r as u32).collect();
            let target_rows = Tensor::from_vec(target_rows, n_targets, &device)?;
            let logits = self.heads.classify(&sentence, mention.as_ref(), &target_rows, None)?;
            out.extend(distribute(rows(&logits.sentence)?, rows(&logits.target)?, &owners));
        }
        Ok(out)
    }
}
