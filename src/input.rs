//! What a caller sends: one article (text, optional mentions, actors and sentence spans) and
//! its metadata, the limits every article is held to, and the checks that turn a bad field into
//! a message that says what and where.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::mentions::lexicon::ActorDef;

/// A mention found by the caller's own recogniser: byte offsets into the article text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplicitMention {
    pub start: usize,
    pub end: usize,
    pub actor: String,
}

/// A sentence span given by the caller: byte offsets into the article text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpanInput {
    pub start: usize,
    pub end: usize,
}

/// One article to score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArticleInput {
    /// The caller's name for the article, echoed in the result (required in JSONL input).
    #[serde(default)]
    pub id: String,
    pub text: String,
    /// Mentions to score instead of those the lexicon finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Vec<ExplicitMention>>,
    /// Actor definitions replacing the default lexicon for this article (`Some([])`: no actors,
    /// sentiment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actors: Option<Vec<ActorDef>>,
    /// Sentence spans to use instead of the built-in splitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentences: Option<Vec<SpanInput>>,
}

/// What the caller says about an article besides its text: `source`, `published` (an ISO
/// date, `YYYY-MM-DD`, optionally followed by a time), `url`, `title` and any keys of its own,
/// all strings. Never scored; echoed in the result (JSON, gRPC, batch output) for reports.
pub type Meta = BTreeMap<String, String>;

/// A record of the JSON faces (JSONL input, HTTP): the article and its `meta`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArticleRecord {
    #[serde(flatten)]
    pub article: ArticleInput,
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
}

/// The most keys one article's `meta` may have, and the most bytes of keys and values
/// together: metadata is copied into the result, so it is bounded like the text.
pub const MAX_META_KEYS: usize = 64;
pub const MAX_META_BYTES: usize = 16 << 10;

/// Checks an article's metadata: bounded, keys non-empty, `published` an ISO date.
pub fn validate_meta(meta: &Meta) -> Result<(), InputError> {
    let bad = |key: &str, reason: String| InputError::Meta { key: key.to_string(), reason };
    if meta.len() > MAX_META_KEYS {
        return Err(bad("*", format!("{} keys, above the limit of {MAX_META_KEYS}", meta.len())));
    }
    let bytes: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_META_BYTES {
        return Err(bad("*", format!("{bytes} bytes of keys and values, above the limit of {MAX_META_BYTES}")));
    }
    if let Some(k) = meta.keys().find(|k| k.trim().is_empty()) {
        return Err(bad(k, "a key is empty; name each field".into()));
    }
    if let Some(p) = meta.get("published") {
        if iso_date(p).is_none() {
            return Err(bad(
                "published",
                format!("{p:?} is not an ISO date; give YYYY-MM-DD, optionally with a time (2020-11-10T08:00:00Z)"),
            ));
        }
    }
    Ok(())
}

/// The (year, month, day) of an ISO date `YYYY-MM-DD`, alone or followed by `T` or a space and
/// a time (not checked further).
pub fn iso_date(s: &str) -> Option<(i32, u32, u32)> {
    let s = s.trim();
    let (date, rest) = (s.get(..10)?, &s[10..]);
    if !(rest.is_empty() || rest.starts_with(['T', 't', ' '])) {
        return None;
    }
    let b = date.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || !date.bytes().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit()) {
        return None;
    }
    let (y, m, d): (i32, u32, u32) = (date[..4].parse().ok()?, date[5..7].parse().ok()?, date[8..].parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    ((1..=12).contains(&m) && d >= 1 && d <= days[m as usize - 1]).then_some((y, m, d))
}

/// Input limits, checked before the work they bound. Together they bound one article's cost:
/// at most `max_windows` encoder windows (each at most the model's window plus its target
/// markers), and result text no larger than a few times the article (mentions lie inside
/// sentences and together cover at most [`MAX_MENTION_COVER`] times the text).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_article_bytes: usize,
    pub max_sentences: usize,
    pub max_mentions: usize,
    /// Encoder windows per article (plain and target-marked together).
    pub max_windows: usize,
    /// Aliases and exclude phrases of an article's own actor definitions, together (each at
    /// most [`crate::mentions::lexicon::MAX_PHRASE_BYTES`]): bounds the matcher built for it.
    pub max_actor_phrases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_article_bytes: 1 << 20,
            max_sentences: 5_000,
            max_mentions: 20_000,
            max_windows: 2_048,
            max_actor_phrases: 2_000,
        }
    }
}

/// Whether `text` has nothing to read: only whitespace and control characters (NUL bytes
/// included).
pub(crate) fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c.is_control())
}

/// How many times the article's length the explicit mentions may cover together: each is
/// copied into the result, so this bounds the result by the request.
pub const MAX_MENTION_COVER: usize = 4;

/// Checks the caller's mentions against the text and the sentences (`(start, end)`, in order):
/// each a valid span with an actor name, inside one sentence; together they cover at most
/// [`MAX_MENTION_COVER`] times the article's length (they may overlap: two targets named by one
/// span, or a name inside a span that is a whole sentence, as NewsMTSC has; but each is copied
/// into the result, so a thousand copies of a long span are refused). Returns them sorted by
/// position.
pub(crate) fn validate_mentions(
    text: &str,
    explicit: Vec<ExplicitMention>,
    sentences: &[(usize, usize)],
) -> Result<Vec<(usize, usize, String)>, InputError> {
    let mut covered = 0usize;
    let mut checked = explicit
        .into_iter()
        .enumerate()
        .map(|(index, m)| {
            let bad = |reason: String| InputError::Mention { index, reason };
            if m.actor.trim().is_empty() {
                return Err(bad("actor name is empty".into()));
            }
            check_span(text, m.start, m.end).map_err(bad)?;
            let i = sentences.partition_point(|s| s.1 <= m.start);
            match sentences.get(i) {
                Some(&(a, b)) if a <= m.start && m.end <= b => {}
                Some(&(a, b)) if a <= m.start => {
                    return Err(bad(format!(
                        "bytes {}..{} cross the end of sentence {i} ({a}..{b}); a mention must lie inside one sentence",
                        m.start, m.end
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "bytes {}..{} are in no sentence; a mention must lie inside one of the article's sentences",
                        m.start, m.end
                    )))
                }
            }
            covered += m.end - m.start;
            if covered > MAX_MENTION_COVER * text.len() {
                return Err(bad(format!(
                    "the mentions up to this one cover {covered} bytes, more than {MAX_MENTION_COVER} times the text ({} bytes); mentions are names, not passages",
                    text.len()
                )));
            }
            Ok(m)
        })
        .collect::<Result<Vec<_>, _>>()?;
    checked.sort_by_key(|m| (m.start, m.end));
    Ok(checked.into_iter().map(|m| (m.start, m.end, m.actor)).collect())
}

/// Checks the caller's sentence spans: a non-empty list of valid spans, in order, not
/// overlapping.
pub(crate) fn validate_sentences(text: &str, spans: &[SpanInput]) -> Result<Vec<(usize, usize)>, InputError> {
    if spans.is_empty() {
        return Err(InputError::Sentence {
            index: 0,
            reason: "the sentence list is empty; omit it to use the built-in splitter".into(),
        });
    }
    let mut prev_end = 0;
    spans
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let bad = |reason: String| InputError::Sentence { index, reason };
            check_span(text, s.start, s.end).map_err(bad)?;
            if s.start < prev_end {
                return Err(bad(format!("starts at {} before the previous sentence ends ({prev_end}); sentences must be in order and not overlap", s.start)));
            }
            prev_end = s.end;
            Ok((s.start, s.end))
        })
        .collect()
}

/// A non-empty byte span inside `text`, on character boundaries.
pub(crate) fn check_span(text: &str, start: usize, end: usize) -> Result<(), String> {
    if start >= end {
        return Err(format!("start {start} is not before end {end}"));
    }
    if end > text.len() {
        return Err(format!("end {end} is beyond the end of the text ({} bytes)", text.len()));
    }
    for o in [start, end] {
        if !text.is_char_boundary(o) {
            return Err(format!("byte offset {o} is inside a UTF-8 character; offsets are UTF-8 byte offsets"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mention(start: usize, end: usize) -> ExplicitMention {
        ExplicitMention { start, end, actor: "Russia".into() }
    }

    #[test]
    fn spans_are_checked() {
        let text = "Türkiye said";
        assert!(check_span(text, 0, 8).is_ok());
        assert!(check_span(text, 0, 2).unwrap_err().contains("inside a UTF-8 character"));
        assert!(check_span(text, 3, 3).unwrap_err().contains("not before"));
        assert!(check_span(text, 0, 99).unwrap_err().contains("beyond the end"));
        let err = validate_mentions(text, vec![ExplicitMention { start: 0, end: 8, actor: " ".into() }], &[(0, 13)])
            .unwrap_err();
        assert!(err.to_string().contains("mention 0"), "{err}");
        let err =
            validate_sentences(text, &[SpanInput { start: 0, end: 8 }, SpanInput { start: 4, end: 13 }]).unwrap_err();
        assert!(err.to_string().contains("sentence 1"), "{err}");
    }

    #[test]
    fn mentions_lie_inside_one_sentence_and_cover_at_most_the_text() {
        let text = "Russia said. Turkey agreed.";
        let sentences = [(0, 12), (13, 27)];
        let ok = validate_mentions(text, vec![mention(13, 19), mention(0, 6)], &sentences).unwrap();
        assert_eq!(ok.iter().map(|m| (m.0, m.1)).collect::<Vec<_>>(), vec![(0, 6), (13, 19)]);
        // Outside the given sentences (the case of a caller who sent only the first one).
        let err = validate_mentions(text, vec![mention(0, 6), mention(13, 19)], &[(0, 6)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mention 1: bytes 13..19 are in no sentence; a mention must lie inside one of the article's sentences"
        );
        let err = validate_mentions(text, vec![mention(7, 15)], &sentences).unwrap_err();
        assert!(err.to_string().contains("cross the end of sentence 0 (0..12)"), "{err}");
        // One span naming two targets is fine; the same long span over and over is not.
        assert!(validate_mentions(text, vec![mention(0, 6), mention(0, 6)], &sentences).is_ok());
        // A span over a whole sentence with a name inside it (NewsMTSC train has one).
        assert!(validate_mentions(text, vec![mention(0, 12), mention(0, 6)], &sentences).is_ok());
        let many: Vec<ExplicitMention> = (0..10).map(|_| mention(0, 12)).collect();
        let err = validate_mentions(text, many, &sentences).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "mention 9: the mentions up to this one cover 120 bytes, more than 4 times the text (27 bytes)"
            ),
            "{err}"
        );
    }

    #[test]
    fn meta_is_bounded_and_published_is_a_date() {
        let meta = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Meta>();
        assert!(validate_meta(&Meta::new()).is_ok());
        assert!(validate_meta(&meta(&[("source", "Wire"), ("published", "2020-11-10T08:00:00Z"), ("x", "")])).is_ok());
        let err = validate_meta(&meta(&[("published", "10/11/2020")])).unwrap_err().to_string();
        assert!(err.starts_with("meta.published: \"10/11/2020\" is not an ISO date"), "{err}");
        assert!(validate_meta(&meta(&[(" ", "x")])).unwrap_err().to_string().contains("a key is empty"));
        let long = "x".repeat(MAX_META_BYTES);
        assert!(validate_meta(&meta(&[("title", &long)]))
            .unwrap_err()
            .to_string()
            .contains("bytes of keys and values"));
        for (s, want) in [
            ("2024-02-29", Some((2024, 2, 29))),
            ("2020-11-10 08:00", Some((2020, 11, 10))),
            ("2023-02-29", None),
            ("2020-13-01", None),
            ("2020-1-01", None),
            ("2020-11-10x", None),
            ("+020-11-10", None),
            ("", None),
        ] {
            assert_eq!(iso_date(s), want, "{s}");
        }
    }

    #[test]
    fn a_record_is_an_article_and_its_meta() {
        let r: ArticleRecord =
            serde_json::from_str(r#"{"id":"a","text":"Hi.","meta":{"source":"Wire"},"other":1}"#).unwrap();
        assert_eq!((r.article.id.as_str(), r.article.text.as_str()), ("a", "Hi."));
        assert_eq!(r.meta["source"], "Wire");
        let e = serde_json::from_str::<ArticleRecord>(r#"{"text":"Hi.","meta":{"n":3}}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
    }

    #[test]
    fn control_characters_are_blank() {
        assert!(is_blank("\0\0\0"));
        assert!(is_blank(" \t\n\u{7}"));
        assert!(!is_blank("\0a"));
    }
}
