//! The CLI's pieces: reading inputs, rendering tables, evaluation reports.

pub mod eval;
pub mod input;
pub mod table;
