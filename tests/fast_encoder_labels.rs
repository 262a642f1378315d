//! The fast serving encoder gives the trained heads the same labels as the reference encoder
//! on NewsMTSC dev (rw and mt) and VADER dev. Needs ../shared/data: ignored by default, and
//! fails without it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn eval(predictions: &Path, reference: bool) -> Vec<serde_json::Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stance"));
    cmd.current_dir(&root)
        .args(["eval", "--test", "false", "--predictions"])
        .arg(predictions)
        .env("STANCE_MODEL", root.join(stance::SMALL_MODEL_DIR));
    if reference {
        cmd.arg("--reference-encoder");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(predictions).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
#[ignore = "needs ../shared"]
fn fast_and_reference_encoders_agree_on_dev_labels() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/newsmtsc/rw_dev.jsonl");
    assert!(data.is_file(), "{} not found; this test needs ../shared/data beside the repository", data.display());
    let dir = tempfile::tempdir().unwrap();
    let fast = eval(&dir.path().join("fast.jsonl"), false);
    let reference = eval(&dir.path().join("reference.jsonl"), true);
    assert_eq!(fast.len(), reference.len());
    assert!(fast.len() > 1000, "{} predictions", fast.len());
    // Labels must be equal; probabilities (also in the lines) may differ in the last bits.
    let key = |v: &serde_json::Value| (v["set"].clone(), v["id"].clone(), v["target"].clone(), v["predicted"].clone());
    let differ: Vec<_> = fast.iter().zip(&reference).filter(|(a, b)| key(a) != key(b)).collect();
    assert!(differ.is_empty(), "{} of {} labels differ, e.g. {:?}", differ.len(), fast.len(), differ.first());
}
