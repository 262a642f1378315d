//! Which CPU code paths the fast encoder runs: the best this CPU can run, or the one forced by
//! an environment variable, so that every path can be tested on one machine.
//!
//! - `STANCE_KERNEL=avx512|avx2|baseline` forces the elementwise kernels (GELU, softmax, layer
//!   norm; [`super::fast`]): compiled for AVX-512F+AVX2+FMA, for AVX2+FMA, or for the baseline
//!   x86-64 (SSE2) target.
//! - `STANCE_GEMM=avx512|gemm` forces the dense layers' matrix multiply ([`super::sgemm`]): our
//!   AVX-512 kernel, or the `gemm` crate (candle's kernels, which pick their own instructions).
//!
//! Unset, empty or `auto` means the best path the CPU runs. Both are read once per process. A
//! forced path the CPU cannot run is an error (the encoder does not load), never a silent
//! fallback to another path.

use std::sync::OnceLock;

/// The elementwise kernels' instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    Avx512,
    Avx2,
    Baseline,
}

/// The dense layers' matrix multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gemm {
    /// [`super::sgemm`]'s AVX-512 kernel (weights packed at load). Shapes it does not cover
    /// (a weight whose row count is not a multiple of 32) still use the `gemm` crate; the
    /// bundled model has none.
    Avx512,
    /// The `gemm` crate.
    Crate,
}

/// The paths one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paths {
    pub simd: Simd,
    pub gemm: Gemm,
}

pub const KERNEL_VAR: &str = "STANCE_KERNEL";
pub const GEMM_VAR: &str = "STANCE_GEMM";

/// A forced path that is unknown or that this CPU cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{var}={value:?} is not a known path; use one of {expected} (or unset it)")]
    Unknown { var: &'static str, value: String, expected: &'static str },
    #[error("{var}={value} forces a path this CPU cannot run: it lacks {}; unset {var} or choose another path", .missing.join(", "))]
    Unsupported { var: &'static str, value: String, missing: Vec<&'static str> },
}

impl Simd {
    /// The CPU features the path's code is compiled with (and so needs at run time).
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Simd::Avx512 => super::fast::AVX512_FEATURES,
            Simd::Avx2 => super::fast::AVX2_FEATURES,
            Simd::Baseline => &[],
        }
    }

    /// The features of [`Self::features`] this CPU lacks.
    pub(crate) fn missing(self) -> Vec<&'static str> {
        match self {
            Simd::Avx512 => super::fast::avx512_missing(),
            Simd::Avx2 => super::fast::avx2_missing(),
            Simd::Baseline => Vec::new(),
        }
    }
}

impl Gemm {
    /// The CPU features the path's own code needs at run time (the `gemm` crate checks its own).
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Gemm::Avx512 => super::sgemm::FEATURES,
            Gemm::Crate => &[],
        }
    }

    /// The features of [`Self::features`] this CPU lacks.
    pub(crate) fn missing(self) -> Vec<&'static str> {
        match self {
            Gemm::Avx512 => super::sgemm::missing(),
            Gemm::Crate => Vec::new(),
        }
    }
}

/// The paths of this process: read from the environment and checked against the CPU on the
/// first call, the same answer afterwards.
pub fn paths() -> Result<Paths, PathError> {
    static PATHS: OnceLock<Result<Paths, PathError>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            let var = |name| std::env::var(name).ok();
            resolve(var(KERNEL_VAR).as_deref(), var(GEMM_VAR).as_deref(), Simd::missing, Gemm::missing)
        })
        .clone()
}

/// A variable's value, unless it asks for the automatic choice (unset, empty or `auto`).
fn forced(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("auto"))
}

/// The paths for the given variable values on a CPU described by `simd_missing` and
/// `gemm_missing` (the features each path lacks there).
fn resolve(
    kernel: Option<&str>,
    gemm: Option<&str>,
    simd_missing: impl Fn(Simd) -> Vec<&'static str>,
    gemm_missing: impl Fn(Gemm) -> Vec<&'static str>,
) -> Result<Paths, PathError> {
    let simd = match forced(kernel) {
        None => [Simd::Avx512, Simd::Avx2].into_iter().find(|&s| simd_missing(s).is_empty()).unwrap_or(Simd::Baseline),
        Some(v) => {
            let s = match v.to_ascii_lowercase().as_str() {
                "avx512" => Simd::Avx512,
                "avx2" => Simd::Avx2,
                "baseline" => Simd::Baseline,
                _ => {
                    return Err(PathError::Unknown {
                        var: KERNEL_VAR,
                        value: v.to_string(),
                        expected: "auto, avx512, avx2, baseline",
                    })
                }
            };
            let missing = simd_missing(s);
            if !missing.is_empty() {
                return Err(PathError::Unsupported { var: KERNEL_VAR, value: v.to_string(), missing });
            }
            s
        }
    };
    let gemm = match forced(gemm) {
        None => {
            if gemm_missing(Gemm::Avx512).is_empty() {
                Gemm::Avx512
            } else {
                Gemm::Crate
            }
        }
        Some(v) => {
            let g = match v.to_ascii_lowercase().as_str() {
                "avx512" => Gemm::Avx512,
                "gemm" => Gemm::Crate,
                _ => {
                    return Err(PathError::Unknown {
                        var: GEMM_VAR,
                        value: v.to_string(),
                        expected: "auto, avx512, gemm",
                    })
                }
            };
            let missing = gemm_missing(g);
            if !missing.is_empty() {
                return Err(PathError::Unsupported { var: GEMM_VAR, value: v.to_string(), missing });
            }
            g
        }
    };
    Ok(Paths { simd, gemm })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU with AVX2 and FMA but no AVX-512.
    fn avx2_cpu(s: Simd) -> Vec<&'static str> {
        s.features().iter().copied().filter(|&f| f.starts_with("avx512")).collect()
    }
    fn avx2_cpu_gemm(g: Gemm) -> Vec<&'static str> {
        g.features().to_vec()
    }
    fn full_cpu<T>(_: T) -> Vec<&'static str> {
        Vec::new()
    }

    #[test]
    fn auto_picks_the_best_the_cpu_runs() {
        for unset in [None, Some(""), Some("auto"), Some(" AUTO ")] {
            let p = resolve(unset, unset, full_cpu, full_cpu).unwrap();
            assert_eq!(p, Paths { simd: Simd::Avx512, gemm: Gemm::Avx512 }, "{unset:?}");
            let p = resolve(unset, unset, avx2_cpu, avx2_cpu_gemm).unwrap();
            assert_eq!(p, Paths { simd: Simd::Avx2, gemm: Gemm::Crate }, "{unset:?}");
        }
        let bare = |s: Simd| s.features().to_vec();
        assert_eq!(resolve(None, None, bare, avx2_cpu_gemm).unwrap().simd, Simd::Baseline);
    }

    #[test]
    fn forced_paths_are_used_or_refused() {
        let p = resolve(Some("avx2"), Some("gemm"), full_cpu, full_cpu).unwrap();
        assert_eq!(p, Paths { simd: Simd::Avx2, gemm: Gemm::Crate });
        let p = resolve(Some("baseline"), Some("avx512"), full_cpu, full_cpu).unwrap();
        assert_eq!(p, Paths { simd: Simd::Baseline, gemm: Gemm::Avx512 });

        let e = resolve(Some("avx512"), None, avx2_cpu, avx2_cpu_gemm).unwrap_err();
        assert_eq!(e, PathError::Unsupported { var: KERNEL_VAR, value: "avx512".into(), missing: vec!["avx512f"] });
        let msg = resolve(None, Some("avx512"), avx2_cpu, avx2_cpu_gemm).unwrap_err().to_string();
        assert!(msg.contains("STANCE_GEMM=avx512") && msg.contains("lacks avx512f"), "{msg}");

        let msg = resolve(Some("sse9"), None, full_cpu, full_cpu).unwrap_err().to_string();
        assert!(msg.contains("STANCE_KERNEL=\"sse9\"") && msg.contains("avx512, avx2, baseline"), "{msg}");
        assert!(matches!(resolve(None, Some("blas"), full_cpu, full_cpu), Err(PathError::Unknown { .. })));
    }

    #[test]
    fn every_feature_a_path_is_compiled_with_is_checked() {
        // The AVX-512 elementwise kernels are compiled with AVX2 and FMA as well; a CPU that
        // lacks any one of them must not get that path.
        assert_eq!(Simd::Avx512.features(), ["avx512f", "avx2", "fma"]);
        assert_eq!(Simd::Avx2.features(), ["avx2", "fma"]);
        assert_eq!(Gemm::Avx512.features(), ["avx512f"]);
        for f in Simd::Avx512.features() {
            let lacks_f = |s: Simd| s.features().iter().copied().filter(|x| x == f).collect::<Vec<_>>();
            let p = resolve(None, None, lacks_f, full_cpu).unwrap();
            assert_ne!(p.simd, Simd::Avx512, "a CPU without {f}");
        }
    }

    #[test]
    fn this_process_paths_are_runnable() {
        // Under a forced path the CPU cannot run this fails, as it should: a forced path is
        // never replaced by another.
        let p = paths().unwrap_or_else(|e| panic!("{e}"));
        assert!(p.simd.missing().is_empty() && p.gemm.missing().is_empty(), "{p:?}");
        println!("paths: {p:?}");
    }
}
