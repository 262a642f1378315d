//! Every record of every shared data set (NewsMTSC, conflict-stance, both as training and as
//! evaluation read them) passes the pipeline's input checks: a stricter check once stopped
//! `stance train` at NewsMTSC train line 418, which no small fixture has. Needs ../shared/data:
//! ignored by default, and fails without it.

use std::path::PathBuf;

use stance::encoder::Precision;
use stance::input::Limits;
use stance::mentions::lexicon::Lexicon;
use stance::mentions::matcher::ActorMatcher;
use stance::model::{EncoderChoice, ModelFiles, StanceModel};
use stance::training::data::{self, DataDir, Example};
use stance::Engine;

#[test]
#[ignore = "needs ../shared"]
fn every_shared_record_prepares() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = DataDir(root.join("../shared/data"));
    assert!(dir.0.is_dir(), "{} not found; this test needs ../shared/data beside the repository", dir.0.display());
    let files = ModelFiles::from_dir(&root.join(stance::SMALL_MODEL_DIR)).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(
        StanceModel::load_with(&files, EncoderChoice::Fast(Some(Precision::Fp32))).unwrap(),
        Lexicon::default_actors(),
        Limits::default(),
    )
    .unwrap();

    let mut sets: Vec<(String, Vec<Example>)> = Vec::new();
    for name in ["train", "rw_dev", "mt_dev", "rw_test", "mt_test"] {
        sets.push((format!("newsmtsc {name}"), data::newsmtsc(&dir.newsmtsc(name)).unwrap()));
    }
    let lexicon = Lexicon::from_toml_file(&dir.conflict_actors()).unwrap();
    let matcher = ActorMatcher::new(&lexicon).unwrap();
    for name in ["train", "dev"] {
        let articles = data::conflict_stance(&dir.conflict(name)).unwrap();
        let explicit = articles.iter().flat_map(|a| a.sentence_examples(None)).collect();
        let lexical = articles.iter().flat_map(|a| a.sentence_examples(Some(&matcher))).collect();
        sets.push((format!("conflict-stance {name} (record mentions)"), explicit));
        sets.push((format!("conflict-stance {name} (lexicon mentions)"), lexical));
        for a in &articles {
            engine.prepare(a.end_to_end_input()).unwrap_or_else(|e| panic!("conflict-stance {name} end to end: {e}"));
        }
    }
    for (set, examples) in &sets {
        assert!(examples.len() > 100, "{set}: {} examples", examples.len());
        for ex in examples {
            engine.prepare(ex.input.clone()).unwrap_or_else(|e| panic!("{set}: {}: {e}", ex.input.id));
        }
    }
}
