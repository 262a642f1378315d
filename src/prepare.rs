//! An article on its way to the encoder: validated, split into sentences (the caller's or
//! the built-in splitter's), its actor mentions found (the caller's, a request lexicon's or the
//! engine's), and cut into encoder windows, with the bookkeeping that brings the windows'
//! scores back to sentences and actors.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::batches::WindowInput;
use crate::error::InputError;
use crate::input::{is_blank, validate_mentions, validate_sentences, ArticleInput, Limits};
use crate::mentions::lexicon::Lexicon;
use crate::mentions::matcher::ActorMatcher;
use crate::scores::SentenceKind;
use crate::sentences::{self, SegmentKind};
use crate::tokens::{self, SentenceTokenizer};

/// An actor in one sentence, with where its mentions went among the windows.
#[derive(Debug, Clone)]
pub struct PreparedActor {
    pub name: String,
    /// Byte spans in the article text.
    pub mentions: Vec<(usize, usize)>,
    /// `(window, target in that window, number of mentions placed there)`.
    pub refs: Vec<(usize, usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct PreparedSentence {
    pub start: usize,
    pub end: usize,
    pub kind: SentenceKind,
    /// Indices into [`Prepared::windows`] of the sentence's plain windows (its sentiment), with
    /// each window's content length. Target-marker windows follow them; actors' `refs` say
    /// which.
    pub windows: Range<usize>,
    pub window_lengths: Vec<usize>,
    pub actors: Vec<PreparedActor>,
}

/// An article ready for the encoder.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub text: String,
    pub sentences: Vec<PreparedSentence>,
    pub windows: Vec<WindowInput>,
}

/// Validates an article, splits it, finds mentions (with `matcher`, unless the input brings its
/// own mentions or actors) and cuts encoder windows.
pub fn prepare(
    tok: &SentenceTokenizer,
    matcher: &ActorMatcher,
    limits: &Limits,
    input: ArticleInput,
) -> Result<Prepared, InputError> {
    let ArticleInput { id, text, mentions, actors, sentences } = input;
    if text.len() > limits.max_article_bytes {
        return Err(InputError::TooLarge { bytes: text.len(), max: limits.max_article_bytes });
    }
    if is_blank(&text) {
        return Err(InputError::EmptyText);
    }
    let segments: Vec<(usize, usize, SentenceKind)> = match sentences {
        Some(spans) => {
            validate_sentences(&text, &spans)?.into_iter().map(|(a, b)| (a, b, SentenceKind::Sentence)).collect()
        }
        None => sentences::split(&text)
            .into_iter()
            .map(|s| {
                let kind = match s.kind {
                    SegmentKind::Sentence => SentenceKind::Sentence,
                    SegmentKind::Heading => SentenceKind::Heading,
                    SegmentKind::Media => SentenceKind::Media,
                };
                (s.start, s.end, kind)
            })
            .collect(),
    };
    if segments.is_empty() {
        return Err(InputError::EmptyText);
    }
    if segments.len() > limits.max_sentences {
        return Err(InputError::TooManySentences { count: segments.len(), max: limits.max_sentences });
    }
    let spans: Vec<(usize, usize)> = segments.iter().map(|s| (s.0, s.1)).collect();
    let found: Vec<(usize, usize, String)> = match (mentions, actors) {
        (Some(explicit), _) => validate_mentions(&text, explicit, &spans)?,
        (None, Some(defs)) if defs.is_empty() => Vec::new(),
        (None, Some(defs)) => {
            let phrases: usize = defs.iter().map(|d| d.phrase_count()).sum();
            if phrases > limits.max_actor_phrases {
                return Err(InputError::TooManyActorPhrases { count: phrases, max: limits.max_actor_phrases });
            }
            let lexicon = Lexicon::from_defs(defs).map_err(InputError::Actors)?;
            let matcher = ActorMatcher::new(&lexicon).map_err(InputError::Actors)?;
            matcher.find(&text).into_iter().map(|m| (m.start, m.end, matcher.actor_name(m.actor).to_string())).collect()
        }
        (None, None) => {
            matcher.find(&text).into_iter().map(|m| (m.start, m.end, matcher.actor_name(m.actor).to_string())).collect()
        }
    };
    if found.len() > limits.max_mentions {
        return Err(InputError::TooManyMentions { count: found.len(), max: limits.max_mentions });
    }
    // Each mention belongs to the sentence that holds it whole (explicit mentions were checked
    // to lie inside one); a lexicon match outside every sentence, or across a sentence's end
    // (the caller's spans need not cover the text, nor end at word boundaries), is in no
    // sentence to score.
    let mut per_sentence: Vec<Vec<(usize, usize, String)>> = vec![Vec::new(); segments.len()];
    for m in found {
        let i = segments.partition_point(|s| s.1 <= m.0);
        if segments.get(i).is_some_and(|s| s.0 <= m.0 && m.1 <= s.1) {
            per_sentence[i].push(m);
        }
    }
    let mut windows = Vec::new();
    // Windows are counted as they are cut, so an article over the limit stops early.
    let mut counted = 0usize;
    let mut count = |n: usize| {
        counted += n;
        if counted > limits.max_windows {
            Err(InputError::TooManyWindows { max: limits.max_windows })
        } else {
            Ok(())
        }
    };
    let mut prepared = Vec::with_capacity(segments.len());
    for ((start, end, kind), mentions) in segments.into_iter().zip(per_sentence) {
        let sentence = &text[start..end];
        let t = tok.tokenize(sentence).map_err(|e| InputError::Tokenize(e.to_string()))?;
        count(t.windows.len())?;
        let first = windows.len();
        let mut local: Vec<WindowInput> =
            (0..t.windows.len()).map(|w| WindowInput { ids: tok.window_ids(&t, w), targets: Vec::new() }).collect();
        let mut by_actor: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (a, b, name) in mentions {
            by_actor.entry(name).or_default().push((a, b));
        }
        let mut actors = Vec::with_capacity(by_actor.len());
        // Target-marker models: one extra window per (window, actor), after the plain ones.
        let mut marked: Vec<WindowInput> = Vec::new();
        // Actors in order of first mention.
        let mut ordered: Vec<(String, Vec<(usize, usize)>)> = by_actor.into_iter().collect();
        ordered.sort_by_key(|(_, spans)| spans.iter().map(|s| s.0).min());
        for (name, spans) in ordered {
            let mut per_window: BTreeMap<usize, Vec<Range<usize>>> = BTreeMap::new();
            for &(a, b) in &spans {
                let rel_a = a.saturating_sub(start).min(end - start);
                let rel_b = b.saturating_sub(start).min(end - start).max(rel_a);
                let pieces = t.pieces_for_span(rel_a, rel_b);
                let (w, positions) = t.place(&pieces);
                per_window.entry(w).or_default().push(positions);
            }
            let mut refs = Vec::with_capacity(per_window.len());
            for (w, positions) in per_window {
                let n = positions.len();
                match tok.markers() {
                    None => {
                        local[w].targets.push(positions);
                        refs.push((first + w, local[w].targets.len() - 1, n));
                    }
                    Some(markers) => {
                        count(1)?;
                        let (ids, positions) = tokens::mark(&local[w].ids, &positions, markers);
                        marked.push(WindowInput { ids, targets: vec![positions] });
                        refs.push((first + local.len() + marked.len() - 1, 0, n));
                    }
                }
            }
            actors.push(PreparedActor { name, mentions: spans, refs });
        }
        let window_lengths = t.windows.iter().map(|r| r.len()).collect();
        windows.extend(local);
        let plain = first..windows.len();
        windows.extend(marked);
        prepared.push(PreparedSentence { start, end, kind, windows: plain, window_lengths, actors });
    }
    Ok(Prepared { id, text, sentences: prepared, windows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ExplicitMention;

    fn bundled_tokenizer() -> SentenceTokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::SMALL_MODEL_DIR).join("tokenizer.json");
        SentenceTokenizer::from_file(&path, 128, ("[CLS]", "[SEP]")).unwrap()
    }

    #[test]
    fn marker_models_get_one_marked_window_per_actor() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::SMALL_MODEL_DIR).join("tokenizer.json");
        let tok = bundled_tokenizer().with_markers(&path, "<", ">").unwrap();
        let (open, close) = tok.markers().unwrap();
        let lexicon = Lexicon::default_actors();
        let matcher = ActorMatcher::new(&lexicon).unwrap();
        let text = "Azerbaijan won decisively, while Armenia and Yerevan's allies lost. Nothing else.";
        let input = ArticleInput { id: "m".into(), text: text.into(), ..Default::default() };
        let p = prepare(&tok, &matcher, &Limits::default(), input).unwrap();
        let s = &p.sentences[0];
        assert_eq!(s.windows, 0..1, "the sentiment pass is the plain window");
        assert!(p.windows[0].targets.is_empty());
        assert_eq!(s.actors.len(), 2);
        // Sentence 0: plain window 0, then Azerbaijan's (1) and Armenia's (2); sentence 1: 3.
        assert_eq!(p.windows.len(), 4);
        assert_eq!(p.sentences[1].windows, 3..4);
        let plain = &p.windows[0].ids;
        for (a, (want_window, marked_mentions)) in s.actors.iter().zip([(1, 1), (2, 2)]) {
            assert_eq!(a.refs, vec![(want_window, 0, marked_mentions)], "{}", a.name);
            let w = &p.windows[want_window];
            assert_eq!(w.targets.len(), 1);
            assert_eq!(w.targets[0].len(), marked_mentions);
            assert_eq!(w.ids.len(), plain.len() + 2 * marked_mentions);
            for r in &w.targets[0] {
                assert_eq!((w.ids[r.start], w.ids[r.end - 1]), (open, close));
            }
            // Without the markers, the window is the plain one.
            let stripped: Vec<u32> = w.ids.iter().copied().filter(|&i| i != open && i != close).collect();
            assert_eq!(&stripped, plain);
        }
        // A pooled model marks nothing and scores the actors in the plain window.
        let input = ArticleInput { id: "m".into(), text: text.into(), ..Default::default() };
        let p = prepare(&bundled_tokenizer(), &matcher, &Limits::default(), input).unwrap();
        assert_eq!(p.windows.len(), 2);
        assert_eq!(p.windows[0].targets.len(), 2);
    }

    #[test]
    fn lexicon_mentions_outside_the_given_sentences_are_not_scored() {
        let lexicon = Lexicon::default_actors();
        let matcher = ActorMatcher::new(&lexicon).unwrap();
        let text = "Russia said. Turkey agreed.";
        let input = ArticleInput {
            id: "s".into(),
            text: text.into(),
            sentences: Some(vec![crate::input::SpanInput { start: 0, end: 6 }]),
            ..Default::default()
        };
        let p = prepare(&bundled_tokenizer(), &matcher, &Limits::default(), input).unwrap();
        assert_eq!(p.sentences.len(), 1);
        let names: Vec<&str> = p.sentences[0].actors.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Russia"]);
        // A given sentence that ends inside a name: the name is not in it (found by
        // tests/properties.rs).
        let input = ArticleInput {
            id: "s".into(),
            text: "Türkiye said so.".into(),
            sentences: Some(vec![crate::input::SpanInput { start: 0, end: 1 }]),
            ..Default::default()
        };
        let p = prepare(&bundled_tokenizer(), &matcher, &Limits::default(), input).unwrap();
        assert!(p.sentences[0].actors.is_empty(), "{:?}", p.sentences[0].actors);
    }

    #[test]
    fn a_request_lexicon_is_bounded() {
        let matcher = ActorMatcher::new(&Lexicon::default_actors()).unwrap();
        let aliases: Vec<String> = (0..30).map(|i| format!("name{i}")).collect();
        let defs = vec![crate::mentions::lexicon::ActorDef {
            name: "Many".into(),
            aliases,
            case_sensitive: vec![],
            exclude: vec![],
        }];
        let limits = Limits { max_actor_phrases: 20, ..Limits::default() };
        let input = ArticleInput {
            id: "l".into(),
            text: "name3 spoke.".into(),
            actors: Some(defs.clone()),
            ..Default::default()
        };
        let err = prepare(&bundled_tokenizer(), &matcher, &limits, input.clone()).unwrap_err();
        assert!(matches!(err, InputError::TooManyActorPhrases { count: 30, max: 20 }), "{err:?}");
        let p = prepare(&bundled_tokenizer(), &matcher, &Limits::default(), input).unwrap();
        assert_eq!(p.sentences[0].actors[0].name, "Many");
    }

    #[test]
    fn the_window_limit_stops_an_article_early() {
        let lexicon = Lexicon::default_actors();
        let matcher = ActorMatcher::new(&lexicon).unwrap();
        // One "sentence" of 3,000 words: dozens of windows of a 128-token model.
        let text = "word ".repeat(3_000);
        let limits = Limits { max_windows: 10, ..Limits::default() };
        let input = ArticleInput { id: "w".into(), text: text.clone(), ..Default::default() };
        let err = prepare(&bundled_tokenizer(), &matcher, &limits, input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the article needs more than 10 encoder windows, above the limit; split the article or raise the limit (--max-windows)"
        );
        let input = ArticleInput { id: "w".into(), text, ..Default::default() };
        assert!(prepare(&bundled_tokenizer(), &matcher, &Limits::default(), input).is_ok());
        // NUL bytes are no text.
        let input = ArticleInput { id: "z".into(), text: "\0\0\0".into(), ..Default::default() };
        assert!(matches!(prepare(&bundled_tokenizer(), &matcher, &limits, input), Err(InputError::EmptyText)));
        // Explicit mentions are checked against the sentences.
        let input = ArticleInput {
            id: "x".into(),
            text: "Russia said. Turkey agreed.".into(),
            sentences: Some(vec![crate::input::SpanInput { start: 0, end: 6 }]),
            mentions: Some(vec![ExplicitMention { start: 13, end: 19, actor: "Turkey".into() }]),
            ..Default::default()
        };
        let err = prepare(&bundled_tokenizer(), &matcher, &limits, input).unwrap_err();
        assert!(err.to_string().contains("in no sentence"), "{err}");
    }
}
