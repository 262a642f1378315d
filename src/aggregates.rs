//! Sentence scores → article scores.
//!
//! An actor's article score is the mean of its sentence probabilities: `p̄ = Σ pᵢ / n` over the
//! sentences that mention it; `score = p̄(positive) − p̄(negative)` (the mean of the sentence
//! scores) and `label = argmax p̄`, so score and label always agree, and confident neutral
//! sentences pull the score toward 0, as they should for a mostly factual article. Chosen on
//! conflict-stance dev's article labels with the default model (README, Output: the plain mean
//! led a confidence-weighted one there for both MPNet versions, by one article of 91).
//! The article's sentiment is the same mean over all its sentences.
//!
//! A sentence that repeats an earlier one of the article (the same words, ignoring case,
//! punctuation and spacing: scraped pages repeat blocks, teasers and captions) counts once;
//! every copy is still scored and returned.

use std::collections::BTreeMap;

use crate::scores::{ActorAggregate, ArticleSentiment, Evidence, Label, Polarity, SentenceScore};

/// The mean of `items`' probabilities; `None` when empty.
pub fn mean(items: impl IntoIterator<Item = Polarity>) -> Option<Polarity> {
    let mut acc = [0f64; 3];
    let mut n = 0usize;
    for p in items {
        for (a, v) in acc.iter_mut().zip(p.probs()) {
            *a += v as f64;
        }
        n += 1;
    }
    (n > 0).then(|| Polarity::from_probs(acc.map(|a| (a / n as f64) as f32)))
}

/// The sentences that count in aggregates: each distinct sentence once, at its first place.
fn counted(sentences: &[SentenceScore]) -> impl Iterator<Item = &SentenceScore> {
    let mut seen = std::collections::HashSet::new();
    sentences.iter().filter(move |s| {
        let key: String = s
            .text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        // A segment without words (a lone symbol) is never a repeat.
        key.is_empty() || seen.insert(key)
    })
}

/// Per-actor aggregates, most mentioned first (ties by name).
pub fn actors(sentences: &[SentenceScore]) -> Vec<ActorAggregate> {
    let mut by_actor: BTreeMap<&str, Vec<(usize, &crate::scores::SentenceActor)>> = BTreeMap::new();
    for s in counted(sentences) {
        for a in &s.actors {
            by_actor.entry(a.actor.as_str()).or_default().push((s.index, a));
        }
    }
    let mut out: Vec<ActorAggregate> = by_actor
        .into_iter()
        .filter_map(|(name, hits)| {
            let avg = mean(hits.iter().map(|(_, a)| a.polarity))?;
            let count = |l: Label| hits.iter().filter(|(_, a)| a.polarity.label == l).count();
            let by_score = |(_, a): &&(usize, &crate::scores::SentenceActor)| a.polarity.score;
            let most_negative = hits.iter().min_by(|a, b| by_score(a).total_cmp(&by_score(b)))?.0;
            // max_by keeps the last of equals; take the first sentence among equals instead.
            let most_positive = hits.iter().rev().max_by(|a, b| by_score(a).total_cmp(&by_score(b)))?.0;
            Some(ActorAggregate {
                actor: name.to_string(),
                mentions: hits.iter().map(|(_, a)| a.mentions.len()).sum(),
                sentences: hits.len(),
                score: avg.score,
                label: avg.label,
                negative: count(Label::Negative),
                neutral: count(Label::Neutral),
                positive: count(Label::Positive),
                evidence: Evidence { most_negative, most_positive },
            })
        })
        .collect();
    out.sort_by(|a, b| b.mentions.cmp(&a.mentions).then_with(|| a.actor.cmp(&b.actor)));
    out
}

/// The article's sentiment over all sentences (neutral 0 for an article with none).
pub fn article_sentiment(sentences: &[SentenceScore]) -> ArticleSentiment {
    match mean(counted(sentences).map(|s| s.sentiment)) {
        Some(p) => ArticleSentiment { label: p.label, score: p.score },
        None => ArticleSentiment { label: Label::Neutral, score: 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scores::{SentenceActor, SentenceKind};

    fn pol(p: [f32; 3]) -> Polarity {
        Polarity::from_probs(p)
    }

    fn sentence(index: usize, actors: Vec<(&str, [f32; 3])>) -> SentenceScore {
        SentenceScore {
            index,
            start: 0,
            end: 0,
            char_start: 0,
            char_end: 0,
            kind: SentenceKind::Sentence,
            text: format!("Sentence number {index}."),
            windows: 1,
            sentiment: pol([0.2, 0.6, 0.2]),
            actors: actors
                .into_iter()
                .map(|(a, p)| SentenceActor { actor: a.into(), mentions: vec![], polarity: pol(p) })
                .collect(),
        }
    }

    #[test]
    fn the_mean_counts_every_sentence_alike() {
        let m = mean([pol([0.9, 0.05, 0.05]), pol([0.3, 0.3, 0.4])]).unwrap();
        assert!((m.negative - 0.6).abs() < 1e-6);
        assert!((m.positive - 0.225).abs() < 1e-6);
        // The score is the mean of the sentence scores: (−0.85 + 0.1) / 2.
        assert!((m.score - (-0.375)).abs() < 1e-6, "{}", m.score);
        assert_eq!(m.label, Label::Negative);
        // A hesitant sentence counts as much as a confident one (a weighted mean would not).
        let m = mean([pol([0.1, 0.1, 0.8]), pol([0.45, 0.45, 0.1]), pol([0.45, 0.45, 0.1])]).unwrap();
        assert!((m.score - (0.7 - 0.35 - 0.35) / 3.0).abs() < 1e-6, "{}", m.score);
        assert!(mean([]).is_none());
    }

    #[test]
    fn actors_aggregate_counts_and_evidence() {
        let s = vec![
            sentence(0, vec![("Russia", [0.1, 0.2, 0.7]), ("Turkey", [0.2, 0.6, 0.2])]),
            sentence(1, vec![("Russia", [0.8, 0.1, 0.1])]),
            sentence(2, vec![("Russia", [0.2, 0.7, 0.1])]),
        ];
        let a = actors(&s);
        assert_eq!(a[0].actor, "Russia");
        assert_eq!((a[0].sentences, a[0].negative, a[0].neutral, a[0].positive), (3, 1, 1, 1));
        assert_eq!(a[0].evidence, Evidence { most_negative: 1, most_positive: 0 });
        assert_eq!(a[1].actor, "Turkey");
        assert_eq!(a[1].evidence, Evidence { most_negative: 0, most_positive: 0 });
        assert_eq!(a[1].label, Label::Neutral);
    }

    #[test]
    fn a_repeated_sentence_counts_once() {
        let mut s = vec![
            sentence(0, vec![("Russia", [0.8, 0.1, 0.1])]),
            sentence(1, vec![("Russia", [0.1, 0.1, 0.8])]),
            sentence(2, vec![("Russia", [0.1, 0.1, 0.8])]),
            sentence(3, vec![("Russia", [0.1, 0.1, 0.8])]),
        ];
        // Sentences 2 and 3 repeat 1 up to case, punctuation and spacing.
        s[1].text = "Share: Moscow wins!".into();
        s[2].text = "share  moscow WINS".into();
        s[3].text = "Share — Moscow wins.".into();
        let a = &actors(&s)[0];
        assert_eq!((a.sentences, a.negative, a.positive), (2, 1, 1));
        assert!(a.score.abs() < 1e-6, "one negative and one positive sentence: {}", a.score);
        s[3].text = "Share: Moscow wins again.".into();
        assert_eq!(actors(&s)[0].sentences, 3);
        // Symbols alone are never repeats.
        s[2].text = "*".into();
        s[3].text = "*".into();
        assert_eq!(actors(&s)[0].sentences, 4);
    }

    #[test]
    fn ties_go_to_neutral() {
        assert_eq!(pol([0.4, 0.4, 0.2]).label, Label::Neutral);
        assert_eq!(pol([0.4, 0.2, 0.4]).label, Label::Negative);
        assert_eq!(article_sentiment(&[]).label, Label::Neutral);
    }
}
