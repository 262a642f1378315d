//! Our encoder against candle-transformers' reference `BertModel` on the bundled base weights,
//! with both op sets (fused and differentiable), and padded batches against single sentences.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use stance::batches::{Batch, WindowInput};
use stance::encoder::{Encoder, Ops, Precision};
use stance::model::{load_config, ModelFiles};
use stance::tokens::SentenceTokenizer;

const SENTENCES: [&str; 3] = [
    "Russia, which enjoys a military base inside Armenia, could have intervened in the conflict.",
    "Erdoğan’s Türkiye backed Baku.",
    "Azeri President Ilham Aliyev is declaring to the world that he will transform Nagorno-Karabakh into a ‘paradise’, while Armenian refugees wait at the border.",
];

fn base() -> ModelFiles {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(stance::SMALL_MODEL_DIR);
    ModelFiles::from_dir(&dir).expect("bundled model folder")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn encoder_matches_reference_bert() {
    let files = base();
    let dev = Device::Cpu;
    // SAFETY: the bundled weights file is mapped read-only and nothing writes it during the test.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&files.encoder], DType::F32, &dev).unwrap() };
    let ref_cfg: Config = serde_json::from_str(&std::fs::read_to_string(&files.config).unwrap()).unwrap();
    let reference = BertModel::load(vb.clone(), &ref_cfg).unwrap();
    let ours = Encoder::load(vb, &load_config(&files.config).unwrap()).unwrap();
    let tok = SentenceTokenizer::from_file(&files.tokenizer, 128, ("[CLS]", "[SEP]")).unwrap();

    let windows: Vec<WindowInput> = SENTENCES
        .iter()
        .map(|s| {
            let t = tok.tokenize(s).unwrap();
            WindowInput { ids: tok.window_ids(&t, 0), targets: vec![] }
        })
        .collect();
    let refs: Vec<&WindowInput> = windows.iter().collect();
    let batch = Batch::build(&refs, &dev).unwrap();
    let types = batch.ids.zeros_like().unwrap();
    let mask_u32 = batch.mask.to_dtype(DType::U32).unwrap();
    let expected = reference.forward(&batch.ids, &types, Some(&mask_u32)).unwrap();
    for p in [Ops::Fused, Ops::Differentiable] {
        let got = ours.forward(&batch.ids, &batch.mask, p).unwrap();
        for (row, w) in windows.iter().enumerate() {
            let n = w.ids.len();
            let d = max_abs_diff(
                &got.get(row).unwrap().narrow(0, 0, n).unwrap(),
                &expected.get(row).unwrap().narrow(0, 0, n).unwrap(),
            );
            assert!(d < 1e-4, "{p:?}, sentence {row}: max abs difference {d}");
        }
    }

    // A sentence alone gives the same states as inside a padded batch.
    for (row, w) in windows.iter().enumerate() {
        let single = Batch::build(&[w], &dev).unwrap();
        let alone = ours.forward(&single.ids, &single.mask, Ops::Fused).unwrap();
        let padded = ours.forward(&batch.ids, &batch.mask, Ops::Fused).unwrap();
        let n = w.ids.len();
        let d = max_abs_diff(&alone.get(0).unwrap(), &padded.get(row).unwrap().narrow(0, 0, n).unwrap());
        assert!(d < 1e-4, "sentence {row}: padding changed the states by {d}");
    }
}

#[test]
fn fast_encoder_matches_the_reference_on_packed_sequences() {
    use stance::encoder::FastEncoder;
    let files = base();
    let dev = Device::Cpu;
    // SAFETY: the bundled weights file is mapped read-only and nothing writes it during the test.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&files.encoder], DType::F32, &dev).unwrap() };
    let cfg = load_config(&files.config).unwrap();
    let reference = Encoder::load(vb.clone(), &cfg).unwrap();
    let fast = FastEncoder::load(vb, &cfg, Precision::Fp32).unwrap_or_else(|e| panic!("{e}"));
    // CI runs this test under every forced path (STANCE_KERNEL, STANCE_GEMM; README, Speed).
    println!("fast encoder paths: {:?}", fast.paths());
    let tok = SentenceTokenizer::from_file(&files.tokenizer, 128, ("[CLS]", "[SEP]")).unwrap();
    let ids: Vec<Vec<u32>> = SENTENCES
        .iter()
        .map(|s| {
            let t = tok.tokenize(s).unwrap();
            tok.window_ids(&t, 0)
        })
        .collect();
    let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let packed = fast.forward(&seqs).unwrap();
    let h = cfg.hidden_size;
    let mut offset = 0;
    for seq in &ids {
        let input = Tensor::new(seq.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
        let mask = Tensor::ones((1, seq.len()), DType::F32, &dev).unwrap();
        let expected = reference.forward(&input, &mask, Ops::Fused).unwrap().get(0).unwrap();
        let got = Tensor::from_slice(&packed[offset * h..(offset + seq.len()) * h], (seq.len(), h), &dev).unwrap();
        let d = max_abs_diff(&got, &expected);
        assert!(d < 1e-4, "max abs difference {d}");
        offset += seq.len();
    }
    assert_eq!(offset * h, packed.len());
}
