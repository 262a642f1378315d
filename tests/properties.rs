//! Property tests of the stages a request goes through before the encoder: the sentence
//! splitter, the lexicon with request-defined actors, and validation plus preparation with
//! arbitrary explicit mentions and sentence spans. Whatever the input, they answer (a result or
//! a clear error) and never panic; results keep their invariants. Seeds are fixed
//! (proptest's default deterministic runner with a set case count), so runs are repeatable.

use std::path::PathBuf;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use stance::encoder::Precision;
use stance::input::{ArticleInput, ExplicitMention, Limits, SpanInput};
use stance::mentions::lexicon::{ActorDef, Lexicon};
use stance::model::{EncoderChoice, ModelFiles, StanceModel};
use stance::Engine;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = ModelFiles::from_dir(&root.join(stance::SMALL_MODEL_DIR)).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(
        StanceModel::load_with(&files, EncoderChoice::Fast(Some(Precision::Fp32))).unwrap(),
        Lexicon::default_actors(),
        Limits::default(),
    )
    .unwrap()
});

/// Text that looks like news some of the time and like noise the rest: actor names, sentence
/// punctuation, newlines, quotes, combining marks, CJK, control characters and emoji.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Russia".to_string()),
        Just("Türkiye".to_string()),
        Just("Azerbaijan's".to_string()),
        Just("Armenia".to_string()),
        Just(". ".to_string()),
        Just("\n\n".to_string()),
        Just("\"".to_string()),
        Just("e\u{301}".to_string()),
        Just("Mr. ".to_string()),
        "[a-z]{1,8} ",
        "\\PC{0,6}",
        "[\u{0}-\u{1f}]{1,3}",
        "[\u{4e00}-\u{4e20}]{1,5}",
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config { cases, failure_persistence: None, ..Config::default() },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

#[test]
fn the_splitter_gives_ordered_trimmed_spans_on_char_boundaries() {
    runner(2000)
        .run(&text(), |t| {
            let mut prev = 0;
            for s in stance::sentences::split(&t) {
                prop_assert!(prev <= s.start && s.start < s.end && s.end <= t.len(), "{s:?} in {t:?}");
                prop_assert!(t.is_char_boundary(s.start) && t.is_char_boundary(s.end));
                prop_assert!(!s.text(&t).trim().is_empty());
                prev = s.end;
            }
            Ok(())
        })
        .unwrap();
}

fn mention(len: usize) -> impl Strategy<Value = ExplicitMention> {
    (0..len + 3, 0..len + 3, prop_oneof![Just("Russia".to_string()), "\\PC{0,4}"])
        .prop_map(|(a, b, actor)| ExplicitMention { start: a.min(b), end: a.max(b), actor })
}

fn article() -> impl Strategy<Value = ArticleInput> {
    text()
        .prop_flat_map(|t| {
            let n = t.len();
            let spans = proptest::collection::vec((0..n + 2, 0..n + 2), 0..4).prop_map(|v| {
                v.into_iter().map(|(a, b)| SpanInput { start: a.min(b), end: a.max(b) }).collect::<Vec<_>>()
            });
            let actor = (
                "\\PC{0,12}",
                proptest::collection::vec("\\PC{0,10}", 0..3),
                proptest::collection::vec("\\PC{0,10}", 0..2),
            )
                .prop_map(|(name, aliases, exclude)| ActorDef {
                    name,
                    aliases,
                    case_sensitive: vec![],
                    exclude,
                });
            (
                Just(t),
                proptest::option::of(proptest::collection::vec(mention(n), 0..6)),
                proptest::option::of(spans),
                proptest::option::of(proptest::collection::vec(actor, 0..3)),
            )
        })
        .prop_map(|(text, mentions, sentences, actors)| ArticleInput {
            id: "p".into(),
            text,
            mentions,
            sentences,
            actors,
        })
}

#[test]
fn preparation_answers_every_input_and_keeps_offsets_inside_the_text() {
    let engine = &*ENGINE;
    runner(1500)
        .run(&article(), |a| {
            let text = a.text.clone();
            // Ok or a clear error; a panic fails the property.
            if let Ok(p) = engine.prepare(a) {
                for s in &p.sentences {
                    prop_assert!(s.start <= s.end && s.end <= text.len() && text.is_char_boundary(s.start));
                    for actor in &s.actors {
                        for m in &actor.mentions {
                            prop_assert!(
                                s.start <= m.0 && m.0 < m.1 && m.1 <= s.end,
                                "mention {m:?} outside its sentence"
                            );
                            prop_assert!(text.is_char_boundary(m.0) && text.is_char_boundary(m.1));
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
