//! MPNet against PyTorch (`transformers`' `MPNetModel`): the reference encoder in both
//! precisions, padded, and the fast encoder, on the outputs that
//! `tests/fixtures/mpnet/make_fixtures.py` recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use stance::batches::{Batch, WindowInput};
use stance::encoder::{relative_bucket, Encoder, FastEncoder, Ops, Precision};
use stance::model::{load_config, ModelFiles};
use stance::tokens::SentenceTokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mpnet")
}

/// Token ids and PyTorch's `last_hidden_state` of one sequence.
type Recorded = (Vec<u32>, Tensor);

/// Every tensor of an expected-output file, and its sequences.
fn expected(path: &Path) -> (HashMap<String, Tensor>, Vec<Recorded>) {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut seqs = Vec::new();
    while let (Some(ids), Some(h)) = (t.get(&format!("ids.{}", seqs.len())), t.get(&format!("hidden.{}", seqs.len()))) {
        let ids: Vec<u32> = ids.to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
        seqs.push((ids, h.to_dtype(DType::F32).unwrap()));
    }
    assert!(!seqs.is_empty(), "{} holds no sequences", path.display());
    (t, seqs)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Holds both encoders of the model in `weights` to PyTorch's states, within `tol`.
fn check(config: &Path, weights: &Path, seqs: &[Recorded], tol: f32) {
    let dev = Device::Cpu;
    let cfg = load_config(config).unwrap();
    // SAFETY: the weights file is mapped read-only and nothing writes it during the test.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &dev).unwrap() };
    let reference = Encoder::load(vb.clone(), &cfg).unwrap();
    let fast = FastEncoder::load(vb, &cfg, Precision::Fp32).unwrap_or_else(|e| panic!("{e}"));
    println!("fast encoder paths: {:?}", fast.paths());

    // One sequence at a time, both precisions of the reference.
    for (i, (ids, want)) in seqs.iter().enumerate() {
        let input = Tensor::new(ids.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
        let mask = Tensor::ones((1, ids.len()), DType::F32, &dev).unwrap();
        for p in [Ops::Fused, Ops::Differentiable] {
            let got = reference.forward(&input, &mask, p).unwrap().get(0).unwrap();
            let d = max_abs_diff(&got, want);
            assert!(d < tol, "reference {p:?}, sequence {i} ({} tokens): max abs difference {d}", ids.len());
        }
    }
    // All together in one padded batch.
    let windows: Vec<WindowInput> =
        seqs.iter().map(|(ids, _)| WindowInput { ids: ids.clone(), targets: vec![] }).collect();
    let refs: Vec<&WindowInput> = windows.iter().collect();
    let batch = Batch::build(&refs, &dev).unwrap();
    let padded = reference.forward(&batch.ids, &batch.mask, Ops::Fused).unwrap();
    for (i, (ids, want)) in seqs.iter().enumerate() {
        let got = padded.get(i).unwrap().narrow(0, 0, ids.len()).unwrap();
        let d = max_abs_diff(&got, want);
        assert!(d < tol, "reference padded, sequence {i}: max abs difference {d}");
    }
    // Packed through the fast encoder.
    let ids: Vec<&[u32]> = seqs.iter().map(|(ids, _)| ids.as_slice()).collect();
    let packed = fast.forward(&ids).unwrap();
    let h = cfg.hidden_size;
    let mut offset = 0;
    for (i, (ids, want)) in seqs.iter().enumerate() {
        let got = Tensor::from_slice(&packed[offset * h..(offset + ids.len()) * h], (ids.len(), h), &dev).unwrap();
        let d = max_abs_diff(&got, want);
        assert!(d < tol, "fast, sequence {i}: max abs difference {d}");
        offset += ids.len();
    }
}

#[test]
fn tiny_random_mpnet_matches_pytorch() {
    let dir = fixtures().join("tiny");
    let (tensors, seqs) = expected(&dir.join("expected.safetensors"));
    assert!(seqs.iter().any(|(ids, _)| ids.len() > 128), "a sequence must reach past the bias's 128-token range");
    check(&dir.join("config.json"), &dir.join("model.safetensors"), &seqs, 1e-4);

    let rel = tensors["buckets.relative"].to_vec1::<i64>().unwrap();
    let bucket = tensors["buckets.bucket"].to_vec1::<i64>().unwrap();
    for (r, b) in rel.iter().zip(&bucket) {
        assert_eq!(relative_bucket(*r, 32) as i64, *b, "relative position {r}");
    }
}

#[test]
#[ignore = "needs models/all-mpnet-base-v2 (bash models/all-mpnet-base-v2/fetch.sh)"]
fn all_mpnet_base_v2_matches_pytorch() {
    let files = ModelFiles::from_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-mpnet-base-v2"))
        .expect("run models/all-mpnet-base-v2/fetch.sh first");
    let (_, seqs) = expected(&fixtures().join("real.safetensors"));
    // Our tokenizer frames and splits the sentences as transformers does.
    let cfg = load_config(&files.config).unwrap();
    let tok = SentenceTokenizer::from_file(&files.tokenizer, 512, cfg.framing()).unwrap();
    let sentences = [
        "Russia, which keeps a base inside Armenia, could have intervened in the conflict.",
        "Ukraine's counter-offensive routed the exhausted < Russian > units.",
    ];
    for ((ids, _), s) in seqs.iter().zip(sentences) {
        let t = tok.tokenize(s).unwrap();
        assert_eq!(&tok.window_ids(&t, 0), ids, "{s}");
    }
    check(&files.config, &files.encoder, &seqs, 2e-4);
}
