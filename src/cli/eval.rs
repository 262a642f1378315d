//! `stance eval`: NewsMTSC F1-macro on dev (and test) and VADER held-out macro-F1.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use stance::mentions::lexicon::Lexicon;
use stance::model::{Manifest, ModelFiles, StanceModel};
use stance::pipeline::{Engine, Limits};
use stance::training::data::{self, DataDir, Split};
use stance::training::eval::{evaluate, Prediction};

pub struct EvalOptions {
    pub data: PathBuf,
    pub test: bool,
    pub record: bool,
    pub reference_encoder: bool,
    pub predictions: Option<PathBuf>,
}

pub fn run(files: Result<ModelFiles>, o: &EvalOptions) -> Result<()> {
    let (test, record) = (o.test, o.record);
    let files = files?;
    let model = StanceModel::load_with(&files, !o.reference_encoder).context("loading the model")?;
    let engine = Engine::new(model, Lexicon::default_actors(), Limits::default())?;
    let data = DataDir(o.data.clone());
    let mut predictions = match &o.predictions {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut sets = vec!["rw_dev", "mt_dev"];
    if test {
        sets.extend(["rw_test", "mt_test"]);
    }
    let mut scores = serde_json::Map::new();
    println!("{:<22} {:>7} {:>9} {:>9}", "set", "items", "F1-macro", "accuracy");
    for set in sets {
        let examples = data::newsmtsc(&data.newsmtsc(set))?;
        let started = std::time::Instant::now();
        let (c, _, preds) = evaluate(&engine, &examples)?;
        write_predictions(predictions.as_mut(), set, &preds)?;
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
        let (_, c, preds) = evaluate(&engine, &examples)?;
        write_predictions(predictions.as_mut(), &format!("vader_{name}_{split_name}"), &preds)?;
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

fn write_predictions(out: Option<&mut impl Write>, set: &str, preds: &[Prediction]) -> Result<()> {
    if let Some(out) = out {
        for p in preds {
            let line = json!({"set": set, "id": p.id, "target": p.target, "gold": p.gold.as_str(), "predicted": p.predicted.as_str()});
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(())
}
