//! What scoring an article produces. These types are the JSON output (`--format json`, batch
//! jobs) field for field; the gRPC messages mirror them.

use serde::{Deserialize, Serialize};

/// Negative/neutral/positive probabilities with their label and signed score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Polarity {
    /// The most probable class: `negative`, `neutral` or `positive`.
    pub label: Label,
    /// P(positive) − P(negative), in [−1, 1].
    pub score: f32,
    pub negative: f32,
    pub neutral: f32,
    pub positive: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Negative,
    Neutral,
    Positive,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Negative, Label::Neutral, Label::Positive];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Negative => "negative",
            Label::Neutral => "neutral",
            Label::Positive => "positive",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl Polarity {
    /// From probabilities in the order negative, neutral, positive. Ties go to neutral, then
    /// to the lower index.
    pub fn from_probs(p: [f32; 3]) -> Self {
        let label = if p[1] >= p[0] && p[1] >= p[2] {
            Label::Neutral
        } else if p[0] >= p[2] {
            Label::Negative
        } else {
            Label::Positive
        };
        Self { label, score: p[2] - p[0], negative: p[0], neutral: p[1], positive: p[2] }
    }

    pub fn probs(&self) -> [f32; 3] {
        [self.negative, self.neutral, self.positive]
    }

    /// The probability of the label: how sure the head is.
    pub fn confidence(&self) -> f32 {
        self.probs()[self.label.index()]
    }
}

/// The model that produced a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    /// The number format of the encoder's dense layers (results before it was recorded were
    /// fp32).
    #[serde(default)]
    pub precision: crate::encoder::Precision,
}

/// One mention of an actor, as offsets into the article text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MentionSpan {
    /// UTF-8 byte offsets.
    pub start: usize,
    pub end: usize,
    /// Unicode scalar offsets.
    pub char_start: usize,
    pub char_end: usize,
    pub text: String,
}

/// Stance toward one actor in one sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceActor {
    pub actor: String,
    pub mentions: Vec<MentionSpan>,
    #[serde(flatten)]
    pub polarity: Polarity,
}

/// What a segment of the article is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentenceKind {
    Sentence,
    Heading,
    Media,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceScore {
    pub index: usize,
    /// UTF-8 byte offsets into the article text.
    pub start: usize,
    pub end: usize,
    /// Unicode scalar offsets into the article text.
    pub char_start: usize,
    pub char_end: usize,
    pub kind: SentenceKind,
    pub text: String,
    /// Encoder windows this sentence needed (more than 1 for sentences longer than the model's
    /// window).
    pub windows: usize,
    pub sentiment: Polarity,
    pub actors: Vec<SentenceActor>,
}

/// Sentence indices that support an actor's aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The sentence with the lowest stance score toward the actor.
    pub most_negative: usize,
    /// The sentence with the highest stance score toward the actor.
    pub most_positive: usize,
}

/// One actor over the whole article.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorAggregate {
    pub actor: String,
    /// Mentions in the article.
    pub mentions: usize,
    /// Sentences that mention the actor.
    pub sentences: usize,
    /// Confidence-weighted mean of P(positive) − P(negative) (see README).
    pub score: f32,
    pub label: Label,
    /// Sentences labelled negative/neutral/positive toward the actor.
    pub negative: usize,
    pub neutral: usize,
    pub positive: usize,
    pub evidence: Evidence,
}

/// The article's overall sentiment, aggregated like an actor's over all sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleSentiment {
    pub label: Label,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleScore {
    pub id: String,
    /// The article's metadata as the caller sent it (absent when there was none).
    #[serde(default, skip_serializing_if = "crate::input::Meta::is_empty")]
    pub meta: crate::input::Meta,
    pub model: ModelRef,
    pub sentences: Vec<SentenceScore>,
    pub actors: Vec<ActorAggregate>,
    pub sentiment: ArticleSentiment,
}
