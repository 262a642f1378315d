//! `stance eval` on the real binary, over a small data folder of our own
//! (tests/fixtures/eval-data: NewsMTSC-, conflict-stance- and VADER-format files), so it needs
//! no external data: the conflict-stance rows (explicit, end to end, articles) and
//! `--calibrate` writing temperatures into the model's manifest.

mod common;

use std::path::Path;

use common::{root, stance};

/// A model folder whose big files are links to the bundled model's and whose manifest is a
/// copy, so that `--calibrate` can write it.
fn model_copy(dir: &Path) -> std::path::PathBuf {
    let src = root().join(stance::SMALL_MODEL_DIR);
    let dst = dir.join("model");
    std::fs::create_dir(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "encoder.safetensors", "stance.safetensors"] {
        std::os::unix::fs::symlink(src.join(f), dst.join(f)).unwrap();
    }
    std::fs::copy(src.join("manifest.json"), dst.join("manifest.json")).unwrap();
    dst
}

fn eval(model: &Path, extra: &[&str]) -> String {
    let out = stance()
        .args(["eval", "--test", "false", "--data", "tests/fixtures/eval-data", "--model"])
        .arg(model)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "stance eval failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn row<'a>(stdout: &'a str, name: &str) -> Vec<&'a str> {
    let line = stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name:?} row in\n{stdout}"));
    line[name.len()..].split_whitespace().collect()
}

#[test]
fn eval_reports_conflict_stance_and_calibrates() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let stdout = eval(&model, &[]);
    // 8 labelled pairs in the fixture's two articles.
    assert_eq!(row(&stdout, "conflict dev explicit")[0], "8", "{stdout}");
    assert_eq!(row(&stdout, "conflict dev end to end")[0], "8", "{stdout}");
    let articles = row(&stdout, "conflict dev articles").join(" ");
    // 5 article labels, 4 of them non-zero; the lexicon finds every labelled pair.
    assert!(articles.starts_with("5 sign agreement"), "{articles}");
    assert!(articles.contains("/4 non-zero"), "{articles}");
    assert!(articles.contains("pairs found 8/8"), "{articles}");
    for set in ["newsmtsc rw_dev", "newsmtsc mt_dev", "vader nyt dev", "vader tweets dev"] {
        let r = row(&stdout, set);
        let f1: f64 = r[1].parse().unwrap();
        assert!((0.0..=1.0).contains(&f1), "{set}: {r:?}");
    }
    assert_eq!(row(&stdout, "newsmtsc mt_dev")[0], "2");

    // --calibrate fits both temperatures and records them; the model still loads and scores.
    let before = std::fs::read_to_string(model.join("manifest.json")).unwrap();
    let stdout = eval(&model, &["--calibrate"]);
    assert!(stdout.contains("target head: T = "), "{stdout}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    assert_ne!(before, manifest.to_string());
    for head in ["target_temperature", "sentence_temperature"] {
        let t = manifest["calibration"][head].as_f64().unwrap();
        assert!((0.25..=4.0).contains(&t), "{head} = {t}");
        assert_eq!(manifest["scores"]["calibration"][head].as_f64().unwrap() as f32, t as f32);
    }
    let ece = &manifest["scores"]["calibration"]["conflict_dev_explicit_ece"];
    for k in ["before", "after"] {
        assert!((0.0..=1.0).contains(&ece[k].as_f64().unwrap()), "{ece}");
    }
    // --record afterwards records the calibrated scores and keeps the calibration record.
    eval(&model, &["--record"]);
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(recorded["calibration"], manifest["calibration"]);
    assert_eq!(recorded["scores"]["calibration"], manifest["scores"]["calibration"]);
    assert!(recorded["scores"]["conflict_dev_articles"]["nonzero"].as_u64() == Some(4), "{}", recorded["scores"]);
    let out = stance()
        .args(["score", "--format", "json", "--model"])
        .arg(&model)
        .arg("tests/fixtures/article.txt")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn eval_names_a_missing_data_folder() {
    let out = stance().args(["eval", "--test", "false", "--data", "tests/fixtures/no-such-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-data") && err.contains("--data"), "{err}");
}
