//! Property tests of the stages a request goes through before the encoder: the sentence
//! splitter, the lexicon with request-defined actors, and validation plus preparation with
//! arbitrary explicit mentions and sentence spans. Whatever the input, they answer (a result or
//! a clear error) and never panic; results keep their invariants. Seeds are fixed
//! (proptest's default deterministic runner with a set case count), so runs are repeatable.
//!
//! Time-boxed fuzzing (`scripts/fuzz.sh SECONDS`): with `STANCE_FUZZ_SECONDS` set, each
//! property runs round after round, each round with the next seed after `STANCE_FUZZ_SEED`
//! (default: the clock), until the time is spent, and prints how many cases it ran. A failure
//! names its seed, so `STANCE_FUZZ_SEED=<seed> STANCE_FUZZ_SECONDS=1` replays it.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestRng, TestRunner};

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

fn runner(cases: u32, seed: [u8; 32]) -> TestRunner {
    TestRunner::new_with_rng(
        Config { cases, failure_persistence: None, ..Config::default() },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    )
}

/// The fuzzing budget and first seed, when `STANCE_FUZZ_SECONDS` asks for a fuzz run.
fn fuzz_budget() -> Option<(Duration, u64)> {
    let secs: f64 =
        std::env::var("STANCE_FUZZ_SECONDS").ok()?.parse().expect("STANCE_FUZZ_SECONDS: a number of seconds");
    let seed = match std::env::var("STANCE_FUZZ_SEED") {
        Ok(s) => s.parse().expect("STANCE_FUZZ_SEED: an unsigned integer"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1),
    };
    Some((Duration::from_secs_f64(secs), seed))
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes
}

/// Runs `test` on `cases` inputs from `strategy` with the fixed seed, or, in a fuzz run
/// ([`fuzz_budget`]), round after round of fresh seeds until the budget is spent.
fn check<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S::Value: std::fmt::Debug,
{
    let Some((budget, first)) = fuzz_budget() else {
        runner(cases, [7; 32]).run(&strategy, &test).unwrap();
        return;
    };
    let start = Instant::now();
    let mut seed = first;
    // At least one round, however small the budget (a replay asks for one).
    loop {
        if let Err(e) = runner(cases, seed_bytes(seed)).run(&strategy, &test) {
            panic!("{name}: seed {seed} (replay: STANCE_FUZZ_SEED={seed} STANCE_FUZZ_SECONDS=1): {e}");
        }
        seed += 1;
        if start.elapsed() >= budget {
            break;
        }
    }
    let rounds = seed - first;
    println!(
        "fuzz {name}: {} cases in {:.1} s, seeds {first}..={}, 0 failures",
        rounds * u64::from(cases),
        start.elapsed().as_secs_f64(),
        seed - 1
    );
}

#[test]
fn the_splitter_gives_ordered_trimmed_spans_on_char_boundaries() {
    check("splitter", 2000, text(), |t| {
        let mut prev = 0;
        for s in stance::sentences::split(&t) {
            prop_assert!(prev <= s.start && s.start < s.end && s.end <= t.len(), "{s:?} in {t:?}");
            prop_assert!(t.is_char_boundary(s.start) && t.is_char_boundary(s.end));
            prop_assert!(!s.text(&t).trim().is_empty());
            prev = s.end;
        }
        Ok(())
    });
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
    check("preparation", 1500, article(), |a| {
        let text = a.text.clone();
        // Ok or a clear error; a panic fails the property.
        if let Ok(p) = engine.prepare(a) {
            for s in &p.sentences {
                prop_assert!(s.start <= s.end && s.end <= text.len() && text.is_char_boundary(s.start));
                for actor in &s.actors {
                    for m in &actor.mentions {
                        prop_assert!(s.start <= m.0 && m.0 < m.1 && m.1 <= s.end, "mention {m:?} outside its sentence");
                        prop_assert!(text.is_char_boundary(m.0) && text.is_char_boundary(m.1));
                    }
                }
            }
        }
        Ok(())
    });
}
