//! `stance eval`: NewsMTSC F1-macro on dev (and test) and VADER held-out macro-F1.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use stance::mentions::lexicon::Lexicon;
use stance::model::{Manifest, ModelFiles, StanceModel};
use stance::pipeline::{Engine, Limits};
use stance::training::data::{self, DataDir, Split};
use stance::training::eval::evaluate;

pub fn run(files: Result<ModelFiles>, data_dir: &Path, test: bool, record: bool) -> Result<()> {
    let files = files?;
    let model = StanceModel::load(&files).context("loading the model")?;
    let engine = Engine::new(model, Lexicon::default_actors(), Limits::default())?;
    let data = DataDir(data_dir.to_path_buf());
    let mut sets = vec!["rw_dev", "mt_dev"];
    if test {
        sets.extend(["rw_test", "mt_test"]);
    }
    let mut scores = serde_json::Map::new();
    println!("{:<22} {:>7} {:>9} {:>9}", "set", "items", "F1-macro", "accuracy");
    for set in sets {
        let examples = data::newsmtsc(&data.newsmtsc(set))?;
        let started = std::time::Instant::now();
        let (c, _) = evaluate(&engine, &examples)?;
        println!("{:<22} {:>7} {:>9.4} {:>9.4}", format!("newsmtsc {set}"), c.total(), c.f1_macro(), c.accuracy());
        scores.insert(
            format!("newsmtsc_{set}"),
            json!({"f1_macro": c.f1_macro(), "accuracy": c.accuracy(), "items": c.total(), "confusion": c.m, "seconds": started.elapsed().as_secs_f32()}),
        );
    }
    let vader_split = if test { Split::Test } else { Split::Dev };
    let split_name = if test { "test" } else { "dev" };
    for (name, path) in [("nyt", data.vader_nyt()), ("tweets", data.vader_tweets())] {
        let examples = data::vader(&path, vader_split)?;
        let (_, c) = evaluate(&engine, &examples)?;
        println!("{:<22} {:>7} {:>9.4} {:>9.4}", format!("vader {name} {split_name}"), c.total(), c.f1_macro(), c.accuracy());
        scores.insert(
            format!("vader_{name}_{split_name}"),
            json!({"f1_macro": c.f1_macro(), "accuracy": c.accuracy(), "items": c.total(), "confusion": c.m}),
        );
    }
    if record {
        let path = files.manifest.clone().context("the model has no manifest.json to record into")?;
        let mut manifest = Manifest::load(&path)?;
        manifest.scores = serde_json::Value::Object(scores);
        manifest.save(&path).with_context(|| format!("writing {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}
