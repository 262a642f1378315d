//! Errors of the library. Each message says what was wrong, where, and what to do.

use crate::mentions::lexicon::LexiconError;

/// A problem with what the caller sent: reported back (CLI: to stderr; gRPC: INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the text is empty (or only whitespace and control characters); send the article's text")]
    EmptyText,
    #[error("the text is {bytes} bytes, above the limit of {max} bytes; split the article or raise the limit (--max-article-bytes)")]
    TooLarge { bytes: usize, max: usize },
    #[error("the article has {count} sentences, above the limit of {max}; split the article or raise the limit (--max-sentences)")]
    TooManySentences { count: usize, max: usize },
    #[error("the article has {count} mentions, above the limit of {max}")]
    TooManyMentions { count: usize, max: usize },
    #[error("the article needs more than {max} encoder windows, above the limit; split the article or raise the limit (--max-windows)")]
    TooManyWindows { max: usize },
    #[error("the article's actor definitions have {count} aliases and exclude phrases, above the limit of {max}; send fewer, or load them on the server as its lexicon (--actors)")]
    TooManyActorPhrases { count: usize, max: usize },
    #[error("mention {index}: {reason}")]
    Mention { index: usize, reason: String },
    #[error("sentence {index}: {reason}")]
    Sentence { index: usize, reason: String },
    #[error("meta.{key}: {reason}")]
    Meta { key: String, reason: String },
    #[error("actor definitions: {0}")]
    Actors(LexiconError),
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
}

/// Scoring failed: bad input, or the computation itself.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("model computation failed: {0}")]
    Compute(String),
}
