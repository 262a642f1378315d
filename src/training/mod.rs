//! Fitting and evaluating the heads (and the fine-tuned encoder layers) with candle.

pub mod data;
pub mod eval;
pub mod int8_ranges;
pub mod metrics;
pub mod train;
