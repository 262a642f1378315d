//! Each shipped model scores on the dev sets what its manifest records (`stance eval --record`
//! wrote it): a change to the pipeline that moves a quality number shows here. Needs
//! ../shared/data (and, for the default model, its fetched base weights).

mod common;

use common::{root, stance};

/// The manifest records fp32's scores (a lower precision records only its gate), so this
/// scores in fp32 whatever precision the model serves at by default.
fn scores_what_its_manifest_records(model_dir: &str) {
    let data = root().join("../shared/data/conflict-stance/dev.jsonl");
    assert!(data.is_file(), "{} not found; this test needs ../shared/data beside the repository", data.display());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(model_dir).join("manifest.json")).unwrap()).unwrap();
    let out = stance()
        .args(["eval", "--test", "false", "--precision", "fp32", "--model", model_dir])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for (row, key) in [
        ("newsmtsc rw_dev", "newsmtsc_rw_dev"),
        ("newsmtsc mt_dev", "newsmtsc_mt_dev"),
        ("conflict dev explicit", "conflict_dev_explicit"),
        ("conflict dev end to end", "conflict_dev_end_to_end"),
    ] {
        let line = stdout.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row:?} row in\n{stdout}"));
        let f1: f64 = line[row.len()..].split_whitespace().nth(1).unwrap().parse().unwrap();
        let recorded = manifest["scores"][key]["f1_macro"].as_f64().unwrap_or_else(|| panic!("manifest has no {key}"));
        assert!((f1 - recorded).abs() < 5e-4, "{model_dir} {row}: eval gives {f1}, the manifest records {recorded}");
    }
    let sign = manifest["scores"]["conflict_dev_articles"]["sign_agreement"].as_f64().unwrap();
    let line = stdout.lines().find(|l| l.starts_with("conflict dev articles")).unwrap();
    assert!(line.contains(&format!("sign agreement {:.1}%", 100.0 * sign)), "{model_dir}: {line} vs recorded {sign}");
}

#[test]
#[ignore = "needs ../shared and models/mpnet-base-stance's base (bash models/all-mpnet-base-v2/fetch.sh models/mpnet-base-stance)"]
fn the_default_model_scores_what_its_manifest_records() {
    scores_what_its_manifest_records(stance::DEFAULT_MODEL_DIR);
}

#[test]
#[ignore = "needs ../shared"]
fn the_small_model_scores_what_its_manifest_records() {
    scores_what_its_manifest_records(stance::SMALL_MODEL_DIR);
}
