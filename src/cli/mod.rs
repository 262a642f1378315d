//! The CLI's pieces: reading inputs, rendering tables, evaluation reports.

pub mod batch;
pub mod eval;
pub mod health;
pub mod input;
pub mod remote;
pub mod report;
pub mod score;
pub mod serve;
pub mod shard;
pub mod table;
