//! The bf16 and int8 encoders against fp32 on the small bundled model: hidden states close to
//! fp32's, and the same labels end to end. CI runs this under every forced bf16 and int8 path
//! (`STANCE_BF16`, `STANCE_INT8`: native and portable), so the fallbacks are held to the same
//! bounds as the kernels a CPU runs by default.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use stance::encoder::{EncoderConfig, FastEncoder, Precision};
use stance::input::{ArticleInput, Limits};
use stance::mentions::lexicon::Lexicon;
use stance::model::{load_config, merged_tensors, EncoderChoice, ModelFiles, StanceModel};
use stance::pipeline::Engine;
use stance::tokens::SentenceTokenizer;

const ARTICLE: &str = "Azerbaijan won the war decisively, while Armenia suffered a humiliating defeat. \
Russia brokered a ceasefire that Moscow's peacekeepers were sent to enforce. \
Turkey's drones gave Baku a decisive edge, and Ankara celebrated the victory. \
Armenian refugees fled their homes as Azerbaijani troops advanced on the town. \
The Kremlin was accused of abandoning its ally, Yerevan, in its hour of need. \
Erdoğan praised Aliyev and promised more military cooperation with Azerbaijan.";

fn files() -> ModelFiles {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(stance::SMALL_MODEL_DIR);
    ModelFiles::from_dir(&dir).expect("bundled model folder")
}

/// Per-token cosine similarity of two packed `[tokens, h]` state buffers: (mean, min).
fn cosines(a: &[f32], b: &[f32], h: usize) -> (f64, f64) {
    let mut all = Vec::new();
    for (x, y) in a.chunks(h).zip(b.chunks(h)) {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
        all.push(dot / (nx * ny));
    }
    (all.iter().sum::<f64>() / all.len() as f64, all.iter().cloned().fold(f64::INFINITY, f64::min))
}

/// The small model's config and tensors, and the fixture article's sentences as encoder ids.
fn encoder_inputs() -> (EncoderConfig, VarBuilder<'static>, Vec<Vec<u32>>) {
    let files = files();
    let dev = Device::Cpu;
    let cfg = load_config(&files.config).unwrap();
    let vb = VarBuilder::from_tensors(merged_tensors(&files, &dev).unwrap(), DType::F32, &dev);
    let tok = SentenceTokenizer::from_file(&files.tokenizer, 128, cfg.framing()).unwrap();
    let ids: Vec<Vec<u32>> = stance::sentences::split(ARTICLE)
        .iter()
        .map(|s| tok.window_ids(&tok.tokenize(&ARTICLE[s.start..s.end]).unwrap(), 0))
        .collect();
    (cfg, vb, ids)
}

#[test]
fn lower_precisions_keep_the_hidden_states_of_fp32() {
    let (cfg, vb, ids) = encoder_inputs();
    let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let fp32 = FastEncoder::load(vb.clone(), &cfg, Precision::Fp32).unwrap().forward(&seqs).unwrap();
    // Bounds with margin over what each precision gives on this model (printed below).
    for (precision, mean_min, min_min) in [(Precision::Bf16, 0.999, 0.995), (Precision::Int8, 0.99, 0.97)] {
        let enc = FastEncoder::load(vb.clone(), &cfg, precision).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(enc.precision(), precision);
        let got = enc.forward(&seqs).unwrap();
        assert_eq!(got.len(), fp32.len());
        let (mean, min) = cosines(&got, &fp32, cfg.hidden_size);
        println!("{precision} ({:?}): cosine to fp32 mean {mean:.5}, min {min:.5}", enc.paths());
        assert!(mean >= mean_min && min >= min_min, "{precision}: mean {mean}, min {min}");
    }
}

#[test]
fn lower_precisions_give_fp32_labels_end_to_end() {
    let files = files();
    let score = |p: Precision| {
        let model = StanceModel::load_with(&files, EncoderChoice::Fast(Some(p))).unwrap();
        let engine = Engine::new(model, Lexicon::default_actors(), Limits::default()).unwrap();
        engine.score(ArticleInput { id: "a".into(), text: ARTICLE.into(), ..Default::default() }).unwrap()
    };
    let fp32 = score(Precision::Fp32);
    assert_eq!(fp32.model.precision, Precision::Fp32);
    let pairs: usize = fp32.sentences.iter().map(|s| s.actors.len()).sum();
    assert!(pairs >= 10, "the fixture mentions actors in most sentences ({pairs} pairs)");
    for p in [Precision::Bf16, Precision::Int8] {
        let got = score(p);
        assert_eq!(got.model.precision, p, "the result says which precision produced it");
        for (a, b) in got.sentences.iter().zip(&fp32.sentences) {
            assert_eq!(a.sentiment.label, b.sentiment.label, "{p}: sentence {}", a.index);
            assert_eq!(a.actors.len(), b.actors.len());
            for (x, y) in a.actors.iter().zip(&b.actors) {
                assert_eq!((&x.actor, x.polarity.label), (&y.actor, y.polarity.label), "{p}: sentence {}", a.index);
                let d =
                    x.polarity.probs().iter().zip(y.polarity.probs()).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
                assert!(d < 0.05, "{p}: sentence {} {}: probabilities {d} off fp32's", a.index, x.actor);
            }
        }
    }
}

/// Calibrated int8 (SmoothQuant from ranges observed with fp32): ranges observed on the first
/// three sentences, hidden states checked on the other three, so the ranges are not fitted to
/// the checked states; the calibrated encoder is at least as close to fp32 as the bound above.
#[test]
fn calibrated_int8_keeps_the_hidden_states_of_fp32() {
    let (cfg, vb, ids) = encoder_inputs();
    let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let (observed, checked) = seqs.split_at(3);
    let fp32 = FastEncoder::load(vb.clone(), &cfg, Precision::Fp32).unwrap();
    let mut ranges = None;
    fp32.activation_ranges(observed, &mut ranges).unwrap();
    let ranges = ranges.unwrap();
    assert_eq!(ranges.qkv_input.len(), cfg.num_hidden_layers);
    assert!(ranges
        .qkv_input
        .iter()
        .chain(&ranges.ffn_input)
        .all(|r| r.len() == cfg.hidden_size && r.iter().any(|&v| v > 0.0)));
    let outputs = ranges.ffn_output_input.as_ref().expect("the FFN output layer's ranges");
    assert_eq!(outputs.len(), cfg.num_hidden_layers);
    assert!(outputs.iter().all(|r| r.len() == cfg.intermediate_size && r.iter().any(|&v| v > 0.0)));
    let want = fp32.forward(checked).unwrap();
    let enc = FastEncoder::load_calibrated(vb.clone(), &cfg, Precision::Int8, Some(&ranges)).unwrap();
    let (mean, min) = cosines(&enc.forward(checked).unwrap(), &want, cfg.hidden_size);
    println!("calibrated int8 ({:?}): cosine to fp32 mean {mean:.5}, min {min:.5}", enc.paths());
    assert!(mean >= 0.99 && min >= 0.97, "calibrated int8: mean {mean}, min {min}");
    // Ranges for another depth are refused, not misapplied.
    let mut short = ranges.clone();
    short.qkv_input.pop();
    assert!(FastEncoder::load_calibrated(vb, &cfg, Precision::Int8, Some(&short)).is_err());
}
