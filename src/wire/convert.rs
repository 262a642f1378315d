//! Library types ↔ `stance.v1` messages. The conversions are lossless both ways: an article
//! scored through the service and converted back serialises to the same JSON as one scored
//! in-process.

use super::pb;
use crate::encoder::Precision;
use crate::input::{ArticleInput, ExplicitMention, SpanInput};
use crate::mentions::lexicon::ActorDef;
use crate::scores::{
    ActorAggregate, ArticleScore, ArticleSentiment, Evidence, Label, MentionSpan, ModelRef, Polarity, SentenceActor,
    SentenceKind, SentenceScore,
};

/// Why a message could not be turned into a library value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn usize_of(v: u64, what: &str) -> Result<usize, WireError> {
    usize::try_from(v).map_err(|_| WireError(format!("{what} {v} is out of range")))
}

// ---- requests ----

impl From<ActorDef> for pb::ActorDef {
    fn from(d: ActorDef) -> Self {
        pb::ActorDef { name: d.name, aliases: d.aliases, case_sensitive: d.case_sensitive, exclude: d.exclude }
    }
}

impl From<pb::ActorDef> for ActorDef {
    fn from(d: pb::ActorDef) -> Self {
        ActorDef { name: d.name, aliases: d.aliases, case_sensitive: d.case_sensitive, exclude: d.exclude }
    }
}

impl From<ArticleInput> for pb::Article {
    fn from(a: ArticleInput) -> Self {
        pb::Article {
            id: a.id,
            text: a.text,
            mentions: a.mentions.map(|ms| pb::MentionSet {
                mentions: ms
                    .into_iter()
                    .map(|m| pb::ExplicitMention { start: m.start as u64, end: m.end as u64, actor: m.actor })
                    .collect(),
            }),
            actors: a.actors.map(|defs| pb::ActorSet { actors: defs.into_iter().map(Into::into).collect() }),
            sentences: a.sentences.map(|spans| pb::SpanSet {
                spans: spans.into_iter().map(|s| pb::Span { start: s.start as u64, end: s.end as u64 }).collect(),
            }),
            // Metadata travels beside the article (ArticleRecord); the server reads it there.
            meta: Default::default(),
        }
    }
}

impl TryFrom<pb::Article> for ArticleInput {
    type Error = WireError;

    fn try_from(a: pb::Article) -> Result<Self, WireError> {
        let mentions = match a.mentions {
            None => None,
            Some(set) => Some(
                set.mentions
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| {
                        Ok(ExplicitMention {
                            start: usize_of(m.start, &format!("mention {i}: start"))?,
                            end: usize_of(m.end, &format!("mention {i}: end"))?,
                            actor: m.actor,
                        })
                    })
                    .collect::<Result<Vec<_>, WireError>>()?,
            ),
        };
        let sentences = match a.sentences {
            None => None,
            Some(set) => Some(
                set.spans
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        Ok(SpanInput {
                            start: usize_of(s.start, &format!("sentence {i}: start"))?,
                            end: usize_of(s.end, &format!("sentence {i}: end"))?,
                        })
                    })
                    .collect::<Result<Vec<_>, WireError>>()?,
            ),
        };
        Ok(ArticleInput {
            id: a.id,
            text: a.text,
            mentions,
            actors: a.actors.map(|set| set.actors.into_iter().map(Into::into).collect()),
            sentences,
        })
    }
}

// ---- results: library → wire ----

fn label(l: Label) -> i32 {
    (match l {
        Label::Negative => pb::Label::Negative,
        Label::Neutral => pb::Label::Neutral,
        Label::Positive => pb::Label::Positive,
    }) as i32
}

fn polarity(p: Polarity) -> pb::Polarity {
    pb::Polarity {
        label: label(p.label),
        score: p.score,
        negative: p.negative,
        neutral: p.neutral,
        positive: p.positive,
    }
}

fn span(m: MentionSpan) -> pb::MentionSpan {
    pb::MentionSpan {
        start: m.start as u64,
        end: m.end as u64,
        char_start: m.char_start as u64,
        char_end: m.char_end as u64,
        text: m.text,
    }
}

impl From<ArticleScore> for pb::ArticleScore {
    fn from(a: ArticleScore) -> Self {
        pb::ArticleScore {
            id: a.id,
            meta: a.meta.into_iter().collect(),
            model: Some(pb::ModelRef {
                name: a.model.name,
                version: a.model.version,
                precision: a.model.precision.to_string(),
            }),
            sentences: a
                .sentences
                .into_iter()
                .map(|s| pb::SentenceScore {
                    index: s.index as u64,
                    start: s.start as u64,
                    end: s.end as u64,
                    char_start: s.char_start as u64,
                    char_end: s.char_end as u64,
                    kind: (match s.kind {
                        SentenceKind::Sentence => pb::SentenceKind::Sentence,
                        SentenceKind::Heading => pb::SentenceKind::Heading,
                        SentenceKind::Media => pb::SentenceKind::Media,
                    }) as i32,
                    text: s.text,
                    windows: s.windows as u64,
                    sentiment: Some(polarity(s.sentiment)),
                    actors: s
                        .actors
                        .into_iter()
                        .map(|x| pb::SentenceActor {
                            actor: x.actor,
                            mentions: x.mentions.into_iter().map(span).collect(),
                            polarity: Some(polarity(x.polarity)),
                        })
                        .collect(),
                })
                .collect(),
            actors: a
                .actors
                .into_iter()
                .map(|x| pb::ActorAggregate {
                    actor: x.actor,
                    mentions: x.mentions as u64,
                    sentences: x.sentences as u64,
                    score: x.score,
                    label: label(x.label),
                    negative: x.negative as u64,
                    neutral: x.neutral as u64,
                    positive: x.positive as u64,
                    evidence: Some(pb::Evidence {
                        most_negative: x.evidence.most_negative as u64,
                        most_positive: x.evidence.most_positive as u64,
                    }),
                })
                .collect(),
            sentiment: Some(pb::ArticleSentiment { label: label(a.sentiment.label), score: a.sentiment.score }),
        }
    }
}

// ---- results: wire → library ----

fn label_of(v: i32, what: &str) -> Result<Label, WireError> {
    match pb::Label::try_from(v) {
        Ok(pb::Label::Negative) => Ok(Label::Negative),
        Ok(pb::Label::Neutral) => Ok(Label::Neutral),
        Ok(pb::Label::Positive) => Ok(Label::Positive),
        _ => Err(WireError(format!("{what}: invalid label {v}"))),
    }
}

/// A result's precision; an empty one comes from a server that predates the field (fp32).
fn precision_of(p: &str) -> Result<Precision, WireError> {
    if p.is_empty() {
        return Ok(Precision::Fp32);
    }
    p.parse().map_err(|e| WireError(format!("model precision: {e}")))
}

fn polarity_of(p: Option<pb::Polarity>, what: &str) -> Result<Polarity, WireError> {
    let p = p.ok_or_else(|| WireError(format!("{what}: missing polarity")))?;
    Ok(Polarity {
        label: label_of(p.label, what)?,
        score: p.score,
        negative: p.negative,
        neutral: p.neutral,
        positive: p.positive,
    })
}

fn span_of(m: pb::MentionSpan) -> Result<MentionSpan, WireError> {
    Ok(MentionSpan {
        start: usize_of(m.start, "mention start")?,
        end: usize_of(m.end, "mention end")?,
        char_start: usize_of(m.char_start, "mention char_start")?,
        char_end: usize_of(m.char_end, "mention char_end")?,
        text: m.text,
    })
}

impl TryFrom<pb::ArticleScore> for ArticleScore {
    type Error = WireError;

    fn try_from(a: pb::ArticleScore) -> Result<Self, WireError> {
        let model = a.model.ok_or_else(|| WireError("missing model".into()))?;
        let sentences = a
            .sentences
            .into_iter()
            .map(|s| {
                let what = format!("sentence {}", s.index);
                Ok(SentenceScore {
                    index: usize_of(s.index, "sentence index")?,
                    start: usize_of(s.start, "sentence start")?,
                    end: usize_of(s.end, "sentence end")?,
                    char_start: usize_of(s.char_start, "sentence char_start")?,
                    char_end: usize_of(s.char_end, "sentence char_end")?,
                    kind: match pb::SentenceKind::try_from(s.kind) {
                        Ok(pb::SentenceKind::Sentence) => SentenceKind::Sentence,
                        Ok(pb::SentenceKind::Heading) => SentenceKind::Heading,
                        Ok(pb::SentenceKind::Media) => SentenceKind::Media,
                        _ => return Err(WireError(format!("{what}: invalid kind {}", s.kind))),
                    },
                    text: s.text,
                    windows: usize_of(s.windows, "sentence windows")?,
                    sentiment: polarity_of(s.sentiment, &what)?,
                    actors: s
                        .actors
                        .into_iter()
                        .map(|x| {
                            Ok(SentenceActor {
                                polarity: polarity_of(x.polarity, &format!("{what}, actor {}", x.actor))?,
                                actor: x.actor,
                                mentions: x.mentions.into_iter().map(span_of).collect::<Result<_, _>>()?,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        let actors = a
            .actors
            .into_iter()
            .map(|x| {
                let e = x.evidence.ok_or_else(|| WireError(format!("actor {}: missing evidence", x.actor)))?;
                Ok(ActorAggregate {
                    label: label_of(x.label, &format!("actor {}", x.actor))?,
                    actor: x.actor,
                    mentions: usize_of(x.mentions, "actor mentions")?,
                    sentences: usize_of(x.sentences, "actor sentences")?,
                    score: x.score,
                    negative: usize_of(x.negative, "actor negative")?,
                    neutral: usize_of(x.neutral, "actor neutral")?,
                    positive: usize_of(x.positive, "actor positive")?,
                    evidence: Evidence {
                        most_negative: usize_of(e.most_negative, "evidence")?,
                        most_positive: usize_of(e.most_positive, "evidence")?,
                    },
                })
            })
            .collect::<Result<_, WireError>>()?;
        let s = a.sentiment.ok_or_else(|| WireError("missing article sentiment".into()))?;
        Ok(ArticleScore {
            id: a.id,
            meta: a.meta.into_iter().collect(),
            model: ModelRef { name: model.name, version: model.version, precision: precision_of(&model.precision)? },
            sentences,
            actors,
            sentiment: ArticleSentiment { label: label_of(s.label, "article sentiment")?, score: s.score },
        })
    }
}
