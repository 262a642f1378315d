//! `stance eval`: NewsMTSC F1-macro on dev (and test), conflict-stance dev (explicit and end to
//! end, with article labels), VADER held-out macro-F1, calibration error; `--calibrate` fits
//! the heads' temperatures on the dev sets. Under `--precision bf16|int8` it also scores the
//! dev pair sets in fp32 and reports the precision's accuracy gate.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use stance::encoder::{Precision, OUTLIER_RATIO};
use stance::input::Limits;
use stance::mentions::lexicon::Lexicon;
use stance::model::{Calibration, EncoderChoice, Manifest, ModelFiles, StanceModel};
use stance::pipeline::Engine;
use stance::scores::Label;
use stance::training::data::{self, DataDir, Split};
use stance::training::eval::{
    evaluate, evaluate_end_to_end, PrecisionGate, Prediction, GATE_AGREEMENT, GATE_F1_POINTS,
};
use stance::training::int8_ranges;
use stance::training::metrics::{at_temperature, ece, fit_temperature, Confusion};

pub struct EvalOptions {
    pub data: PathBuf,
    pub test: bool,
    pub record: bool,
    pub calibrate: bool,
    pub encoder: EncoderChoice,
    pub predictions: Option<PathBuf>,
    /// Observe int8's activation ranges on this many training sentences per set first.
    pub fit_int8_ranges: Option<usize>,
}

/// Calibration bins (the and the literature's usual 10).
const BINS: usize = 10;

type Items = Vec<([f32; 3], Label)>;

pub fn run(files: Result<ModelFiles>, o: &EvalOptions) -> Result<()> {
    let (test, record) = (o.test, o.record);
    let mut files = files?;
    let mut int8_ranges = None;
    if let Some(per_set) = o.fit_int8_ranges {
        if o.encoder != EncoderChoice::Fast(Some(Precision::Int8)) {
            anyhow::bail!("--fit-int8-ranges calibrates int8: add --precision int8");
        }
        let dir = files
            .manifest
            .as_ref()
            .and_then(|m| m.parent())
            .context("--fit-int8-ranges writes into a local model folder with a manifest.json")?
            .to_path_buf();
        let data = DataDir(o.data.clone());
        let (ranges, windows) = int8_ranges::fit(&files, &data, per_set).context("observing int8 activation ranges")?;
        let path = int8_ranges::save(&ranges, &dir).with_context(|| format!("writing into {}", dir.display()))?;
        println!("int8 activation ranges from {windows} training windows written to {}", path.display());
        files.int8_ranges = Some(path);
        int8_ranges = Some(
            json!({"sentences_per_set": per_set, "windows": windows, "data": "NewsMTSC train + conflict-stance train, first sentences in file order", "smoothing": "SmoothQuant, alpha 0.5", "ffn_output_outliers": format!("GELU channels past {OUTLIER_RATIO}x the median range summed in fp32")}),
        );
    }
    let mut model = StanceModel::load_with(&files, o.encoder).context("loading the model")?;
    let precision = model.backend.precision();
    if o.calibrate && precision != Precision::Fp32 {
        anyhow::bail!("--calibrate fits the temperatures on fp32 scores; drop --precision {precision} (or use fp32)");
    }
    let recorded = model.manifest.calibration;
    if o.calibrate {
        // Fit from the uncalibrated probabilities.
        model.manifest.calibration = Calibration::default();
    }
    let engine = Engine::new(model, Lexicon::default_actors(), Limits::default())?;
    let data = DataDir(o.data.clone());
    let mut predictions = match &o.predictions {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut scores = serde_json::Map::new();
    // Dev items per head, for the temperature fit.
    let mut target_dev: Vec<(String, Items)> = Vec::new();
    let mut sentence_dev: Vec<(String, Items)> = Vec::new();
    // Dev pair sets with their examples, macro-F1 and predictions, for the precision gate.
    let mut gate_sets: Vec<(String, Vec<data::Example>, f64, Vec<Prediction>)> = Vec::new();
    println!("encoder: {} ({precision})", engine_name(&o.encoder));
    println!(
        "{:<28} {:>6} {:>8} {:>8} {:>20} {:>6}",
        "set", "items", "F1-macro", "accuracy", "F1 neg / neu / pos", "ECE"
    );
    let row = |name: &str, c: &Confusion, items: Option<&Items>| {
        let e = items.map(|i| format!("{:.3}", ece(i, BINS))).unwrap_or_else(|| "-".into());
        println!(
            "{:<28} {:>6} {:>8.4} {:>8.4} {:>20} {:>6}",
            name,
            c.total(),
            c.f1_macro(),
            c.accuracy(),
            format!("{:.3} / {:.3} / {:.3}", c.f1(0), c.f1(1), c.f1(2)),
            e
        );
    };
    let record_set = |c: &Confusion, items: Option<&Items>| {
        json!({
            "f1_macro": c.f1_macro(), "accuracy": c.accuracy(), "items": c.total(),
            "f1": [c.f1(0), c.f1(1), c.f1(2)], "confusion": c.m,
            "ece": items.map(|i| ece(i, BINS)),
        })
    };

    // NewsMTSC.
    let mut sets = vec!["rw_dev", "mt_dev"];
    if test {
        sets.extend(["rw_test", "mt_test"]);
    }
    for set in sets {
        let examples = data::newsmtsc(&data.newsmtsc(set))?;
        let started = std::time::Instant::now();
        let (c, _, preds) = evaluate(&engine, &examples)?;
        write_predictions(predictions.as_mut(), set, &preds)?;
        let items: Items = preds.iter().map(Prediction::item).collect();
        row(&format!("newsmtsc {set}"), &c, Some(&items));
        let mut r = record_set(&c, Some(&items));
        r["seconds"] = json!(started.elapsed().as_secs_f32());
        scores.insert(format!("newsmtsc_{set}"), r);
        if set.ends_with("_dev") {
            target_dev.push((format!("newsmtsc_{set}"), items));
            gate_sets.push((format!("newsmtsc_{set}"), examples, c.f1_macro(), preds));
        }
    }

    // conflict-stance dev: explicit (the records' sentences and mentions) and end to end (the
    // text alone, the data set's lexicon).
    let articles = data::conflict_stance(&data.conflict("dev"))?;
    let examples: Vec<_> = articles.iter().flat_map(|a| a.sentence_examples(None)).collect();
    let (c, _, preds) = evaluate(&engine, &examples)?;
    write_predictions(predictions.as_mut(), "conflict_dev_explicit", &preds)?;
    let items: Items = preds.iter().map(Prediction::item).collect();
    row("conflict dev explicit", &c, Some(&items));
    scores.insert("conflict_dev_explicit".into(), record_set(&c, Some(&items)));
    target_dev.push(("conflict_dev_explicit".into(), items));
    gate_sets.push(("conflict_dev_explicit".into(), examples, c.f1_macro(), preds));
    let lexicon = Lexicon::from_toml_file(&data.conflict_actors())?;
    let started = std::time::Instant::now();
    let e2e = evaluate_end_to_end(&engine, &articles, &lexicon)?;
    row("conflict dev end to end", &e2e.pairs, None);
    let (sign, agree, nonzero) = e2e.sign_agreement();
    let spearman = e2e.spearman();
    println!(
        "{:<28} {:>6} sign agreement {:.1}% ({agree}/{nonzero} non-zero), Spearman {}; pairs found {}/{}",
        "conflict dev articles",
        e2e.articles.len(),
        100.0 * sign,
        spearman.map(|s| format!("{s:.3}")).unwrap_or_else(|| "-".into()),
        e2e.found,
        e2e.pairs.total()
    );
    let mut r = record_set(&e2e.pairs, None);
    r["pairs_found"] = json!(e2e.found);
    r["seconds"] = json!(started.elapsed().as_secs_f32());
    scores.insert("conflict_dev_end_to_end".into(), r);
    scores.insert(
        "conflict_dev_articles".into(),
        json!({"labels": e2e.articles.len(), "sign_agreement": sign, "agree": agree, "nonzero": nonzero, "spearman": spearman}),
    );

    // VADER (held-out test by default; dev as well when calibrating).
    let mut vader_splits = vec![if test { (Split::Test, "test") } else { (Split::Dev, "dev") }];
    if o.calibrate && test {
        vader_splits.push((Split::Dev, "dev"));
    }
    for (split, split_name) in vader_splits {
        for (name, path) in [("nyt", data.vader_nyt()), ("tweets", data.vader_tweets())] {
            let examples = data::vader(&path, split)?;
            let (_, c, preds) = evaluate(&engine, &examples)?;
            let set = format!("vader_{name}_{split_name}");
            write_predictions(predictions.as_mut(), &set, &preds)?;
            let items: Items = preds.iter().map(Prediction::item).collect();
            row(&format!("vader {name} {split_name}"), &c, Some(&items));
            scores.insert(set.clone(), record_set(&c, Some(&items)));
            if split == Split::Dev {
                sentence_dev.push((set, items));
            }
        }
    }

    let gate = if precision == Precision::Fp32 {
        None
    } else {
        let fp32 = StanceModel::load_with(&files, EncoderChoice::Fast(Some(Precision::Fp32)))
            .context("loading the model in fp32 for the precision gate")?;
        let fp32 = Engine::new(fp32, Lexicon::default_actors(), Limits::default())?;
        let mut theirs = Vec::new();
        for (name, examples, _, _) in &gate_sets {
            let (c, _, preds) = evaluate(&fp32, examples)?;
            theirs.push((name.clone(), c.f1_macro(), preds));
        }
        let ours: Vec<_> = gate_sets.into_iter().map(|(n, _, f1, p)| (n, f1, p)).collect();
        let gate = PrecisionGate::new(&ours, &theirs);
        println!("precision gate ({precision} against fp32: macro-F1 within {GATE_F1_POINTS} points on each dev set, labels agreeing on >= {:.0}% of dev pairs):", 100.0 * GATE_AGREEMENT);
        for (set, f32_, f) in &gate.sets {
            println!("  {set:<26} fp32 {f32_:.4}  {precision} {f:.4}  ({:+.2} points)", 100.0 * (f - f32_));
        }
        println!(
            "  label agreement {:.2}% ({}/{} pairs): {}",
            100.0 * gate.agreement(),
            gate.agree,
            gate.pairs,
            if gate.passed { "PASSED" } else { "FAILED" }
        );
        Some(gate)
    };
    if let (true, Some(gate)) = (record, &gate) {
        // A lower precision records its gate, not its scores: the manifest's scores stay fp32's.
        let path = files.manifest.clone().context("the model has no manifest.json to record into")?;
        let mut manifest = Manifest::load(&path)?;
        let mut gates = manifest.scores.get("precision_gates").cloned().unwrap_or_else(|| json!({}));
        gates[precision.as_str()] = json!({
            "sets": gate.sets.iter().map(|(s, a, b)| json!({"set": s, "fp32_f1_macro": a, "f1_macro": b})).collect::<Vec<_>>(),
            "agree": gate.agree, "pairs": gate.pairs, "agreement": gate.agreement(), "passed": gate.passed,
            "machine": machine(),
        });
        if precision == Precision::Int8 {
            gates[precision.as_str()]["int8_ranges"] = match (&int8_ranges, &files.int8_ranges) {
                (Some(fit), _) => fit.clone(),
                (None, Some(_)) => json!("the folder's int8_ranges.safetensors"),
                (None, None) => json!(null),
            };
        }
        if !manifest.scores.is_object() {
            manifest.scores = json!({});
        }
        manifest.scores["precision_gates"] = gates;
        // The model serves by default at the fastest precision whose gate passed: int8, then
        // bf16 (the fastest order on every CPU measured; `auto` still keeps fp32 on a CPU
        // that would only emulate it).
        let passed = |p: Precision| manifest.scores["precision_gates"][p.as_str()]["passed"].as_bool() == Some(true);
        manifest.precision = [Precision::Int8, Precision::Bf16].into_iter().find(|&p| passed(p));
        manifest.save(&path).with_context(|| format!("writing {}", path.display()))?;
        println!("recorded the {precision} gate in {}", path.display());
        return Ok(());
    }
    let mut calibration = recorded;
    if o.calibrate {
        let fit = |sets: &[(String, Items)]| -> f64 {
            let all: Items = sets.iter().flat_map(|(_, i)| i.iter().copied()).collect();
            fit_temperature(&all)
        };
        let t_target = fit(&target_dev);
        let t_sentence = fit(&sentence_dev);
        let mut report = serde_json::Map::new();
        println!("calibration (temperature fitted on the dev sets below, {BINS}-bin ECE before -> after):");
        for (head, t, sets) in [("target", t_target, &target_dev), ("sentence", t_sentence, &sentence_dev)] {
            println!("  {head} head: T = {t:.2}");
            for (set, items) in sets.iter() {
                let after: Items = items.iter().map(|(p, g)| (at_temperature(*p, t), *g)).collect();
                let (b, a) = (ece(items, BINS), ece(&after, BINS));
                println!("    {set:<26} ECE {b:.4} -> {a:.4}");
                report.insert(format!("{set}_ece"), json!({"before": b, "after": a}));
            }
            report.insert(format!("{head}_temperature"), json!(t));
        }
        report.insert(
            "fitted_on".into(),
            json!({
                "target": target_dev.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
                "sentence": sentence_dev.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
            }),
        );
        scores.insert("calibration".into(), serde_json::Value::Object(report));
        calibration = Calibration { target_temperature: t_target as f32, sentence_temperature: t_sentence as f32 };
    }
    if record || o.calibrate {
        let path = files.manifest.clone().context("the model has no manifest.json to record into")?;
        let mut manifest = Manifest::load(&path)?;
        manifest.calibration = calibration;
        // Recording scores again keeps the record of how the temperatures were fitted.
        if let (false, Some(fit)) = (o.calibrate, manifest.scores.get("calibration")) {
            scores.insert("calibration".into(), fit.clone());
        }
        // ... and of the lower precisions' gates.
        if let Some(gates) = manifest.scores.get("precision_gates") {
            scores.insert("precision_gates".into(), gates.clone());
        }
        manifest.scores = serde_json::Value::Object(scores);
        manifest.save(&path).with_context(|| format!("writing {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

fn write_predictions(out: Option<&mut impl Write>, set: &str, preds: &[Prediction]) -> Result<()> {
    if let Some(out) = out {
        for p in preds {
            let line = json!({"set": set, "id": p.id, "target": p.target, "gold": p.gold.as_str(), "predicted": p.predicted.as_str(), "probs": p.probs});
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(())
}

fn engine_name(e: &EncoderChoice) -> &'static str {
    match e {
        EncoderChoice::Fast(_) => "fast",
        EncoderChoice::Reference => "reference",
    }
}

/// The CPU this ran on, for the record.
fn machine() -> String {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{cpu}, {threads} threads")
}
