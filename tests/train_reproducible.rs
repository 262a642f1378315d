//! `stance train` twice with the same seed gives byte-identical weights, and the result loads
//! and scores. Needs ../shared/data (NewsMTSC, VADER): ignored by default, and fails without it.

use std::path::PathBuf;
use std::process::Command;

fn train(out: &std::path::Path, seed: &str, extra: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_stance"))
        .current_dir(&root)
        .args([
            "train",
            "--limit",
            "24",
            "--epochs",
            "1",
            "--sentence-epochs",
            "2",
            "--batch-size",
            "8",
            "--seed",
            seed,
            "--out",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn needs_shared_data() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/newsmtsc/train.jsonl");
    assert!(data.is_file(), "{} not found; this test needs ../shared/data beside the repository", data.display());
}

/// The trained folder is a complete model: it loads and scores the fixture article.
fn scores(model: &std::path::Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_stance"))
        .args(["score", "--format", "json", "--model"])
        .arg(model)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/article.txt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
#[ignore = "needs ../shared"]
fn same_seed_same_weights() {
    needs_shared_data();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    train(&a, "7", &[]);
    train(&b, "7", &[]);
    train(&c, "8", &[]);
    let weights = |p: &PathBuf| std::fs::read(p.join("stance.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "same seed, different weights");
    assert!(weights(&a) != weights(&c), "a different seed should change the weights");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["training"]["config"]["seed"], 7);
    assert!(manifest["training"]["epochs"][0]["rw_dev_f1_macro"].is_number());
    scores(&a);
}

/// Continuing from a trained part with fewer trainable layers keeps the layers it froze as they
/// were fine-tuned (the new heads were trained on top of them), not as the base had them.
#[test]
#[ignore = "needs ../shared"]
fn continuing_with_fewer_layers_keeps_the_earlier_fine_tuning() {
    needs_shared_data();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    train(&first, "7", &[]);
    train(&second, "7", &["--base", first.to_str().unwrap(), "--init-trained", "--train-layers", "1"]);
    let names = |p: &PathBuf| -> Vec<String> {
        let bytes = std::fs::read(p.join("stance.safetensors")).unwrap();
        safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect()
    };
    let delta = "encoder.layer.0.intermediate.dense.weight.delta_i8";
    assert!(names(&first).iter().any(|n| n == delta), "the first run trains every layer");
    assert!(names(&second).iter().any(|n| n == delta), "layer 0, frozen in the second run, was dropped");
    scores(&second);
}

/// Training refuses settings it cannot honour before it reads any data: a NewsMTSC share outside
/// (0, 1], and `--init-trained` on a folder without a trained part.
#[cfg(unix)]
#[test]
fn bad_training_settings_are_refused_up_front() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stance"))
            .current_dir(&root)
            .args(["train", "--data", "/no/such/data", "--out"])
            .arg(dir.path().join("out"))
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--newsmtsc-fraction", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--newsmtsc-fraction must be within (0, 1], got 0"));
    // A bare base encoder: the small model's files without its trained part.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let src = root.join(stance::SMALL_MODEL_DIR);
    for f in ["config.json", "tokenizer.json", "encoder.safetensors", "manifest.json"] {
        std::os::unix::fs::symlink(src.join(f), bare.join(f)).unwrap();
    }
    let o = run(&["--base", bare.to_str().unwrap(), "--init-trained"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--init-trained:") && err.contains("has no stance.safetensors"), "{err}");
    // A trained folder, but with another target input than asked for.
    let o = run(&["--base", stance::SMALL_MODEL_DIR, "--init-trained", "--train-layers", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("pass the same --markers"), "{err}");
}
