//! A model folder's trained part (`stance.safetensors`): what training changed, stored apart
//! from the base encoder, which is never modified.
//!
//! Each tensor is stored one of two ways:
//! - under the base's own name, in any float dtype: it replaces the base tensor (the heads,
//!   biases and LayerNorms, and every tensor of folders written before 0.4);
//! - as a delta of a fine-tuned matrix: `NAME.delta_i8` (I8, the base matrix's shape) and
//!   `NAME.delta_scale` (F32, one per row): `NAME = base + delta_i8 * delta_scale` per row.
//!
//! Why deltas: fine-tuning moves a matrix little, so its difference from the base quantises to
//! int8 with a per-row scale at half the bytes of f16 weights. That keeps what a retrain adds
//! to the repository small, and reading the folder needs the exact base encoder its manifest
//! names (the fetch scripts check it by sha256).

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView, View};
use safetensors::SafeTensors;

use super::ModelError;

const DELTA: &str = ".delta_i8";
const SCALE: &str = ".delta_scale";

/// Applies the trained part at `path` to the base tensors: replaced tensors are inserted,
/// deltas are added to their base matrices (all f32).
pub fn apply(path: &Path, tensors: &mut HashMap<String, Tensor>, device: &Device) -> Result<(), ModelError> {
    let invalid =
        |reason: String| ModelError::Invalid { path: path.to_path_buf(), what: "stance weights file", reason };
    let bytes =
        std::fs::read(path).map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
    for (name, view) in file.tensors() {
        if let Some(target) = name.strip_suffix(SCALE) {
            // Read with its delta.
            if file.tensor(&format!("{target}{DELTA}")).is_err() {
                return Err(invalid(format!("tensor {name} is a scale without its {DELTA} delta")));
            }
        } else if let Some(target) = name.strip_suffix(DELTA) {
            let scale_name = format!("{target}{SCALE}");
            let scale = file
                .tensor(&scale_name)
                .map_err(|_| invalid(format!("tensor {name} has no {scale_name} beside it")))?;
            if view.dtype() != Dtype::I8 || scale.dtype() != Dtype::F32 {
                return Err(invalid(format!(
                    "delta {name} is {:?} with {:?} scales; expected I8 with F32 scales",
                    view.dtype(),
                    scale.dtype()
                )));
            }
            let base = tensors.get(target).ok_or_else(|| {
                invalid(format!("{name} is a delta of {target}, which the base encoder lacks; is this the base the model was trained on?"))
            })?;
            let shape = view.shape();
            let &[rows, cols] = shape else {
                return Err(invalid(format!("delta {name} has shape {shape:?}; deltas are matrices")));
            };
            let scale: Vec<f32> =
                scale.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if base.dims() != [rows, cols] || scale.len() != rows {
                return Err(invalid(format!(
                    "delta {name} has shape {shape:?} with {} scales, but the base {target} has shape {:?}",
                    scale.len(),
                    base.dims()
                )));
            }
            let mut w = base
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| invalid(format!("base tensor {target}: {e}")))?;
            for ((row, q), s) in w.chunks_exact_mut(cols).zip(view.data().chunks_exact(cols)).zip(&scale) {
                for (w, &q) in row.iter_mut().zip(q) {
                    *w += f32::from(q as i8) * s;
                }
            }
            let t = Tensor::from_vec(w, (rows, cols), device).map_err(|e| invalid(format!("tensor {target}: {e}")))?;
            tensors.insert(target.to_string(), t);
        } else {
            if !matches!(view.dtype(), Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F64) {
                return Err(invalid(format!("tensor {name} has dtype {:?}; expected a float tensor", view.dtype())));
            }
            let t = view
                .load(device)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| invalid(format!("tensor {name}: {e}")))?;
            if let Some(base) = tensors.get(&name) {
                if base.dims() != t.dims() {
                    return Err(invalid(format!(
                        "tensor {name} has shape {:?} but the base encoder's has {:?}",
                        t.dims(),
                        base.dims()
                    )));
                }
            }
            tensors.insert(name, t);
        }
    }
    Ok(())
}

/// Writes `trained` as a trained part against `base`: a 2-D tensor the base also has becomes
/// an int8 delta with one scale per row (absolute maximum / 127), anything else is stored whole
/// in f16.
pub fn write(
    path: &Path,
    base: &HashMap<String, Tensor>,
    trained: &HashMap<String, Tensor>,
) -> candle_core::Result<()> {
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut names: Vec<&String> = trained.keys().collect();
    names.sort();
    for name in names {
        let t = trained[name].to_dtype(DType::F32)?;
        match base.get(name.as_str()) {
            Some(b) if t.rank() == 2 && b.dims() == t.dims() => {
                let (rows, cols) = t.dims2()?;
                let delta = (t - b.to_dtype(DType::F32)?)?.flatten_all()?.to_vec1::<f32>()?;
                let (q, scale) = quantise_rows(&delta, cols);
                out.push((format!("{name}{DELTA}"), Dtype::I8, vec![rows, cols], q.iter().map(|&q| q as u8).collect()));
                out.push((
                    format!("{name}{SCALE}"),
                    Dtype::F32,
                    vec![rows],
                    scale.iter().flat_map(|s| s.to_le_bytes()).collect(),
                ));
            }
            _ => {
                let h = t.to_dtype(DType::F16)?;
                out.push((name.clone(), Dtype::F16, t.dims().to_vec(), View::data(&h).into_owned()));
            }
        }
    }
    let views = out
        .iter()
        .map(|(name, dtype, shape, bytes)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(candle_core::Error::wrap)?;
    // Serialised in memory and written plainly, so the file gets the usual permissions (the
    // crate's own file writer leaves it readable by its owner only).
    let bytes = safetensors::serialize(views, None).map_err(candle_core::Error::wrap)?;
    std::fs::write(path, bytes).map_err(candle_core::Error::wrap)
}

/// Symmetric int8 per row of `cols` values: (values, one scale per row).
fn quantise_rows(values: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / cols.max(1));
    for row in values.chunks_exact(cols) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        scales.push(scale);
        q.extend(row.iter().map(|&v| if scale > 0.0 { (v / scale).round().clamp(-127.0, 127.0) as i8 } else { 0 }));
    }
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn deltas_round_trip_within_half_a_step_and_the_rest_in_f16() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stance.safetensors");
        let base_w: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let base =
            HashMap::from([("layer.w".to_string(), t(&base_w, &[3, 4])), ("layer.b".to_string(), t(&[0.5; 4], &[4]))]);
        let delta: Vec<f32> = (0..12).map(|i| (i as f32 * 1.3).cos() * 1e-3 * (1 + i / 4) as f32).collect();
        let trained_w: Vec<f32> = base_w.iter().zip(&delta).map(|(b, d)| b + d).collect();
        let trained = HashMap::from([
            ("layer.w".to_string(), t(&trained_w, &[3, 4])),
            ("layer.b".to_string(), t(&[0.25, -1.0, 2.0, 0.125], &[4])),
            ("heads.x".to_string(), t(&[1.5, -0.75], &[1, 2])),
        ]);
        write(&path, &base, &trained).unwrap();

        #[cfg(unix)]
        {
            // The same permissions as any file written there (not owner-only).
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::write(&plain, b"x").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&path), mode(&plain));
        }
        let stored = SafeTensors::deserialize(&std::fs::read(&path).unwrap()).unwrap().names().len();
        assert_eq!(stored, 4, "the matrix as delta + scale, the bias and the head whole");
        let mut loaded = base.clone();
        apply(&path, &mut loaded, &Device::Cpu).unwrap();
        let got = values(&loaded["layer.w"]);
        for (row, (g, w)) in got.chunks(4).zip(trained_w.chunks(4)).enumerate() {
            let step = delta[row * 4..row * 4 + 4].iter().fold(0f32, |m, d| m.max(d.abs())) / 127.0;
            for (g, w) in g.iter().zip(w) {
                assert!((g - w).abs() <= step / 2.0 + 1e-7, "row {row}: {g} vs {w} (step {step})");
            }
        }
        assert_eq!(values(&loaded["layer.b"]), [0.25, -1.0, 2.0, 0.125]);
        assert_eq!(values(&loaded["heads.x"]), [1.5, -0.75]);
    }

    #[test]
    fn an_unchanged_row_stays_exact() {
        let (q, s) = quantise_rows(&[0.0, 0.0, 1.0, -0.5], 2);
        assert_eq!((q, s), (vec![0, 0, 127, -64], vec![0.0, 1.0 / 127.0]));
    }

    #[test]
    fn a_delta_needs_its_scale_and_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stance.safetensors");
        let base = HashMap::from([("m".to_string(), t(&[1.0, 2.0], &[1, 2]))]);
        write(&path, &base, &HashMap::from([("m".to_string(), t(&[1.5, 2.0], &[1, 2]))])).unwrap();

        let err = apply(&path, &mut HashMap::new(), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("m.delta_i8 is a delta of m, which the base encoder lacks"), "{err}");
        let wrong = HashMap::from([("m".to_string(), t(&[1.0, 2.0, 3.0], &[1, 3]))]);
        let err = apply(&path, &mut wrong.clone(), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("has shape [1, 2] with 1 scales, but the base m has shape [1, 3]"), "{err}");

        let q = [1u8, 2];
        let lone = [("m.delta_i8", TensorView::new(Dtype::I8, vec![1, 2], &q).unwrap())];
        safetensors::serialize_to_file(lone, None, &path).unwrap();
        let err = apply(&path, &mut base.clone(), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("tensor m.delta_i8 has no m.delta_scale beside it"), "{err}");

        let s = 0.5f32.to_le_bytes();
        let lone = [("m.delta_scale", TensorView::new(Dtype::F32, vec![1], &s).unwrap())];
        safetensors::serialize_to_file(lone, None, &path).unwrap();
        let err = apply(&path, &mut base.clone(), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("tensor m.delta_scale is a scale without its .delta_i8 delta"), "{err}");
    }
}
