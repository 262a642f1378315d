//! stance: how news articles portray named actors.
//!
//! The data's way through the crate, one module per stage:
//! [`input`] (what a caller sends, and its limits) → [`sentences`] → [`mentions`] → [`tokens`]
//! ([`prepare`] strings these into encoder windows) → [`batches`] → [`backend`] (an
//! [`encoder`] with its pooling and [`heads`]) → [`aggregates`] → [`scores`] (the JSON shape).
//! [`pipeline`] is the engine, the only place that scores; [`model`] loads model folders;
//! [`training`] fits and evaluates the heads; [`server`], [`client`] and [`wire`] are the gRPC
//! faces.

pub(crate) mod aggregates;
pub(crate) mod backend;
pub mod batches;
pub mod client;
pub mod encoder;
mod error;
pub(crate) mod heads;
pub mod input;
pub mod mentions;
pub mod model;
pub mod pipeline;
pub(crate) mod prepare;
pub mod scores;
pub mod sentences;
pub mod server;
pub mod tokens;
pub mod training;
pub mod wire;

pub use error::{EngineError, InputError};
pub use input::{ArticleInput, ArticleRecord, ExplicitMention, Limits, Meta};
pub use pipeline::Engine;
pub use scores::ArticleScore;

/// The default model folder, relative to the repository root: MPNet, the best on every dev set
/// (README, Models). Its base weights are fetched once (`models/all-mpnet-base-v2/fetch.sh`).
pub const DEFAULT_MODEL_DIR: &str = "models/mpnet-base-stance";

/// The small model, committed whole: about 8× cheaper than the default, for who needs speed
/// (`--model models/minilm-l6-stance`) and for the tests, which must run on a fresh clone.
pub const SMALL_MODEL_DIR: &str = "models/minilm-l6-stance";
