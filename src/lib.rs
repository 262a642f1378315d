//! stance: how news articles portray named actors.
//!
//! The data's way through the crate, one module per stage:
//! [`input`] (what a caller sends, and its limits) → [`sentences`] → [`mentions`] → [`tokens`]
//! ([`prepare`] strings these into encoder windows) → [`batches`] → [`backend`] (an
//! [`encoder`] with its pooling and [`heads`]) → [`aggregates`] → [`scores`] (the JSON shape).
//! [`pipeline`] is the engine, the only place that scores; [`model`] loads model folders;
//! [`training`] fits and evaluates the heads; [`server`], [`client`] and [`wire`] are the gRPC
//! faces.

pub mod aggregates;
pub mod backend;
pub mod batches;
pub mod client;
pub mod encoder;
pub mod error;
pub mod heads;
pub mod input;
pub mod mentions;
pub mod model;
pub mod pipeline;
pub mod prepare;
pub mod scores;
pub mod sentences;
pub mod server;
pub mod tokens;
pub mod training;
pub mod wire;

pub use error::{EngineError, InputError};
pub use input::{ArticleInput, ExplicitMention, Limits};
pub use pipeline::Engine;
pub use scores::ArticleScore;

/// The bundled default model folder, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "models/minilm-l6-stance";
