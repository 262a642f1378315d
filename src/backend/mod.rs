//! Backends: an encoder with its own batching, pooling and heads, behind one contract.
//!
//! A backend takes encoder windows (of any articles, in any number) and returns each window's
//! logits: its sentence's and those of the actors it scores. How it batches (packed or
//! padded), pools mention states and runs the heads is its own business; the engine applies
//! the model's calibration to the logits, so both backends are calibrated alike. The fast
//! backend serves; the reference backend is built on candle ops and is what training
//! differentiates through. `tests/backend_contract.rs` holds the two to the same labels and
//! probabilities on the bundled model.

mod fast;
pub mod reference;

pub use fast::FastBackend;
pub use reference::ReferenceBackend;

use crate::batches::WindowInput;
use crate::encoder::Precision;

/// Logits (negative, neutral, positive) for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowLogits {
    pub sentence: [f32; 3],
    /// One per entry of the window's `targets`, in order.
    pub targets: Vec<[f32; 3]>,
}

/// The contract every backend keeps.
pub trait Backend: Send + Sync {
    /// A short name, for logs and errors.
    fn name(&self) -> &'static str;

    /// The number format of the encoder's dense layers.
    fn precision(&self) -> Precision;

    /// Whether a batch is padded to its longest window (so it costs rows × longest tokens)
    /// rather than packed (the sum of the windows' lengths).
    fn is_padded(&self) -> bool;

    /// What a batch of `windows` costs, in tokens, as this backend computes it.
    fn batch_tokens(&self, windows: &[&WindowInput]) -> usize {
        if self.is_padded() {
            windows.len() * windows.iter().map(|w| w.ids.len()).max().unwrap_or(0)
        } else {
            windows.iter().map(|w| w.ids.len()).sum()
        }
    }

    /// Logits for every window, in order. `windows` is cut into batches of at most
    /// `max_batch_tokens` tokens as [`Backend::batch_tokens`] counts them (a window larger than
    /// that goes alone).
    fn score(&self, windows: &[&WindowInput], max_batch_tokens: usize) -> candle_core::Result<Vec<WindowLogits>>;
}

/// Splits `logits` (`[targets, 3]` rows, in window order) among the windows that own them.
fn distribute(sentence: Vec<[f32; 3]>, targets: Vec<[f32; 3]>, owners: &[usize]) -> Vec<WindowLogits> {
    let mut out: Vec<WindowLogits> =
        sentence.into_iter().map(|s| WindowLogits { sentence: s, targets: Vec::new() }).collect();
    for (&row, t) in owners.iter().zip(targets) {
        out[row].targets.push(t);
    }
    out
}

/// `[n, 3]` logits as rows.
fn rows(t: &candle_core::Tensor) -> candle_core::Result<Vec<[f32; 3]>> {
    if t.dim(0)? == 0 {
        return Ok(Vec::new());
    }
    Ok(t.to_vec2::<f32>()?.into_iter().map(|r| [r[0], r[1], r[2]]).collect())
}
