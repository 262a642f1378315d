//! stance: how news articles portray named actors.
//!
//! The data's way through the crate, one module per stage:
//! text → [`sentences`] → [`mentions`] → [`tokens`] → [`batches`] → [`backend`] (an
//! [`encoder`] with its pooling and [`heads`]) → [`aggregates`] → [`scores`] (the JSON shape).
//! [`pipeline`] strings the stages together and is the only place that scores; [`model`] loads
//! model folders; [`training`] fits and evaluates the heads.

pub mod aggregates;
pub mod backend;
pub mod batches;
pub mod client;
pub mod encoder;
pub mod error;
pub mod heads;
pub mod mentions;
pub mod model;
pub mod pipeline;
pub mod scores;
pub mod sentences;
pub mod server;
pub mod tokens;
pub mod training;
pub mod wire;

pub use error::{EngineError, InputError};
pub use pipeline::{ArticleInput, Engine, ExplicitMention, Limits};
pub use scores::ArticleScore;

/// The bundled default model folder, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "models/minilm-l6-stance";
