//! Which CPU code paths the fast encoder runs: the best this CPU can run, or the one forced by
//! an environment variable, so that every path can be tested on one machine.
//!
//! - `STANCE_KERNEL=avx512|avx2|baseline` forces the elementwise kernels (GELU, softmax, layer
//!   norm; [`super::fast`]): compiled for AVX-512F+AVX2+FMA, for AVX2+FMA, or for the baseline
//!   x86-64 (SSE2) target.
//! - `STANCE_GEMM=avx512|gemm` forces the fp32 dense layers' matrix multiply
//!   ([`super::sgemm`]): our AVX-512 kernel, or the `gemm` crate (candle's kernels, which pick
//!   their own instructions).
//! - `STANCE_BF16=amx|avx512|portable` and `STANCE_INT8=amx|avx512|portable` force the bf16
//!   and int8 dense layers ([`super::bf16`], [`super::int8`]): Intel AMX tiles
//!   ([`super::amx`]), AVX-512's dot-product instructions (BF16's `vdpbf16ps`, VNNI's
//!   `vpdpbusd`), or the portable fallback that computes the same rounded products without
//!   either.
//!
//! Unset, empty or `auto` means the best path the CPU runs. Both are read once per process. A
//! forced path the CPU cannot run is an error (the encoder does not load), never a silent
//! fallback to another path.

use std::sync::OnceLock;

/// The features of the given list (string literals) this CPU lacks; all of them off x86-64.
/// One list, so a kernel's check cannot miss a feature it is compiled with.
macro_rules! missing_features {
    ($($feat:tt),+) => {{
        #[cfg(target_arch = "x86_64")]
        {
            let mut missing: Vec<&'static str> = Vec::new();
            $(
                if !std::arch::is_x86_feature_detected!($feat) {
                    missing.push($feat);
                }
            )+
            missing
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            vec![$($feat),+]
        }
    }};
}
pub(crate) use missing_features;

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

/// How the bf16 or int8 dense layers multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dot {
    /// AMX tiles (`tdpbf16ps`, `tdpbusd`): Intel Sapphire Rapids and later.
    Amx,
    /// AVX-512's dot-product instructions (`vdpbf16ps`, `vpdpbusd`).
    Avx512,
    /// The same rounded operands without either: the fallback on other CPUs.
    Portable,
}

/// The paths one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paths {
    pub simd: Simd,
    pub gemm: Gemm,
    pub bf16: Dot,
    pub int8: Dot,
}

pub const KERNEL_VAR: &str = "STANCE_KERNEL";
pub const GEMM_VAR: &str = "STANCE_GEMM";
pub const BF16_VAR: &str = "STANCE_BF16";
pub const INT8_VAR: &str = "STANCE_INT8";

/// The bf16 or int8 dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowPrecision {
    Bf16,
    Int8,
}

impl LowPrecision {
    /// The CPU features (and, for AMX, the kernel's permission) `dot` needs here.
    pub fn features(self, dot: Dot) -> &'static [&'static str] {
        match (self, dot) {
            (_, Dot::Portable) => &[],
            (LowPrecision::Bf16, Dot::Avx512) => super::bf16::FEATURES,
            (LowPrecision::Int8, Dot::Avx512) => super::int8::FEATURES,
            (LowPrecision::Bf16, Dot::Amx) => super::bf16::AMX_FEATURES,
            (LowPrecision::Int8, Dot::Amx) => super::int8::AMX_FEATURES,
        }
    }

    /// The features of [`Self::features`] this CPU lacks.
    pub(crate) fn missing(self, dot: Dot) -> Vec<&'static str> {
        match (self, dot) {
            (_, Dot::Portable) => Vec::new(),
            (LowPrecision::Bf16, Dot::Avx512) => super::bf16::missing(),
            (LowPrecision::Int8, Dot::Avx512) => super::int8::missing(),
            (LowPrecision::Bf16, Dot::Amx) => super::bf16::amx_missing(),
            (LowPrecision::Int8, Dot::Amx) => super::int8::amx_missing(),
        }
    }
}

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
            let forced =
                Forced { kernel: var(KERNEL_VAR), gemm: var(GEMM_VAR), bf16: var(BF16_VAR), int8: var(INT8_VAR) };
            resolve(&forced, &Cpu { simd: &Simd::missing, gemm: &Gemm::missing, low: &LowPrecision::missing })
        })
        .clone()
}

/// A variable's value, unless it asks for the automatic choice (unset, empty or `auto`).
fn forced(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("auto"))
}

/// The variables' values (unset: `None`).
#[derive(Default)]
struct Forced {
    kernel: Option<String>,
    gemm: Option<String>,
    bf16: Option<String>,
    int8: Option<String>,
}

/// A CPU, described by the features each path lacks on it.
struct Cpu<'a> {
    simd: &'a dyn Fn(Simd) -> Vec<&'static str>,
    gemm: &'a dyn Fn(Gemm) -> Vec<&'static str>,
    low: &'a dyn Fn(LowPrecision, Dot) -> Vec<&'static str>,
}

/// One path: the forced one if `value` forces one (it must be known and runnable), else the
/// first of `choices` (best first) that runs; the last choice needs nothing.
fn choose<T: Copy>(
    var: &'static str,
    value: Option<&str>,
    choices: &[(&str, T)],
    missing: impl Fn(T) -> Vec<&'static str>,
    expected: &'static str,
) -> Result<T, PathError> {
    match forced(value) {
        None => {
            Ok(choices.iter().map(|&(_, c)| c).find(|&c| missing(c).is_empty()).unwrap_or(choices[choices.len() - 1].1))
        }
        Some(v) => {
            let Some(&(_, c)) = choices.iter().find(|(name, _)| name.eq_ignore_ascii_case(v)) else {
                return Err(PathError::Unknown { var, value: v.to_string(), expected });
            };
            let missing = missing(c);
            if !missing.is_empty() {
                return Err(PathError::Unsupported { var, value: v.to_string(), missing });
            }
            Ok(c)
        }
    }
}

/// The paths for the given variable values on `cpu`.
fn resolve(f: &Forced, cpu: &Cpu) -> Result<Paths, PathError> {
    let simd = choose(
        KERNEL_VAR,
        f.kernel.as_deref(),
        &[("avx512", Simd::Avx512), ("avx2", Simd::Avx2), ("baseline", Simd::Baseline)],
        cpu.simd,
        "auto, avx512, avx2, baseline",
    )?;
    let gemm = choose(
        GEMM_VAR,
        f.gemm.as_deref(),
        &[("avx512", Gemm::Avx512), ("gemm", Gemm::Crate)],
        cpu.gemm,
        "auto, avx512, gemm",
    )?;
    let dot = |var, value: &Option<String>, low| {
        let choices = [("amx", Dot::Amx), ("avx512", Dot::Avx512), ("portable", Dot::Portable)];
        choose(var, value.as_deref(), &choices, |d| (cpu.low)(low, d), "auto, amx, avx512, portable")
    };
    let bf16 = dot(BF16_VAR, &f.bf16, LowPrecision::Bf16)?;
    let int8 = dot(INT8_VAR, &f.int8, LowPrecision::Int8)?;
    Ok(Paths { simd, gemm, bf16, int8 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU with AVX2 and FMA but no AVX-512.
    fn avx2_simd(s: Simd) -> Vec<&'static str> {
        s.features().iter().copied().filter(|&f| f.starts_with("avx512")).collect()
    }
    fn avx2_gemm(g: Gemm) -> Vec<&'static str> {
        g.features().to_vec()
    }
    fn avx2_low(l: LowPrecision, d: Dot) -> Vec<&'static str> {
        l.features(d).to_vec()
    }
    /// AVX-512 with VNNI and BF16 but no AMX (AMD Zen 4).
    fn zen4_low(l: LowPrecision, d: Dot) -> Vec<&'static str> {
        if d == Dot::Amx {
            l.features(d).iter().copied().filter(|f| f.starts_with("amx")).collect()
        } else {
            Vec::new()
        }
    }
    fn none<T>(_: T) -> Vec<&'static str> {
        Vec::new()
    }
    fn none2<T, U>(_: T, _: U) -> Vec<&'static str> {
        Vec::new()
    }
    const FULL: Cpu = Cpu { simd: &none, gemm: &none, low: &none2 };
    const AVX2: Cpu = Cpu { simd: &avx2_simd, gemm: &avx2_gemm, low: &avx2_low };

    fn vars(kernel: Option<&str>, gemm: Option<&str>, bf16: Option<&str>, int8: Option<&str>) -> Forced {
        let s = |v: Option<&str>| v.map(str::to_string);
        Forced { kernel: s(kernel), gemm: s(gemm), bf16: s(bf16), int8: s(int8) }
    }

    #[test]
    fn auto_picks_the_best_the_cpu_runs() {
        for unset in [None, Some(""), Some("auto"), Some(" AUTO ")] {
            let f = vars(unset, unset, unset, unset);
            let p = resolve(&f, &FULL).unwrap();
            assert_eq!(
                p,
                Paths { simd: Simd::Avx512, gemm: Gemm::Avx512, bf16: Dot::Amx, int8: Dot::Amx },
                "{unset:?}"
            );
            let p = resolve(&f, &AVX2).unwrap();
            assert_eq!(
                p,
                Paths { simd: Simd::Avx2, gemm: Gemm::Crate, bf16: Dot::Portable, int8: Dot::Portable },
                "{unset:?}"
            );
        }
        let bare = |s: Simd| s.features().to_vec();
        let p = resolve(&Forced::default(), &Cpu { simd: &bare, gemm: &avx2_gemm, low: &avx2_low }).unwrap();
        assert_eq!(p.simd, Simd::Baseline);
        let p = resolve(&Forced::default(), &Cpu { simd: &none, gemm: &none, low: &zen4_low }).unwrap();
        assert_eq!((p.bf16, p.int8), (Dot::Avx512, Dot::Avx512));
        // VNNI without BF16 (Ice Lake): int8 on AVX-512, bf16 portable.
        let no_bf16 = |l: LowPrecision, d: Dot| {
            if l == LowPrecision::Bf16 || d == Dot::Amx {
                l.features(d).to_vec()
            } else {
                Vec::new()
            }
        };
        let p = resolve(&Forced::default(), &Cpu { simd: &none, gemm: &none, low: &no_bf16 }).unwrap();
        assert_eq!((p.bf16, p.int8), (Dot::Portable, Dot::Avx512));
    }

    #[test]
    fn forced_paths_are_used_or_refused() {
        let p = resolve(&vars(Some("avx2"), Some("gemm"), Some("portable"), Some("Portable")), &FULL).unwrap();
        assert_eq!(p, Paths { simd: Simd::Avx2, gemm: Gemm::Crate, bf16: Dot::Portable, int8: Dot::Portable });
        let p = resolve(&vars(Some("baseline"), Some("avx512"), Some("avx512"), Some("amx")), &FULL).unwrap();
        assert_eq!(p, Paths { simd: Simd::Baseline, gemm: Gemm::Avx512, bf16: Dot::Avx512, int8: Dot::Amx });

        let e = resolve(&vars(Some("avx512"), None, None, None), &AVX2).unwrap_err();
        assert_eq!(e, PathError::Unsupported { var: KERNEL_VAR, value: "avx512".into(), missing: vec!["avx512f"] });
        let msg = resolve(&vars(None, Some("avx512"), None, None), &AVX2).unwrap_err().to_string();
        assert!(msg.contains("STANCE_GEMM=avx512") && msg.contains("lacks avx512f"), "{msg}");
        let msg = resolve(&vars(None, None, None, Some("avx512")), &AVX2).unwrap_err().to_string();
        assert!(msg.contains("STANCE_INT8=avx512") && msg.contains("avx512vnni"), "{msg}");
        let msg = resolve(&vars(None, None, Some("avx512"), None), &AVX2).unwrap_err().to_string();
        assert!(msg.contains("STANCE_BF16=avx512") && msg.contains("avx512bf16"), "{msg}");
        let msg = resolve(&vars(None, None, None, Some("amx")), &Cpu { simd: &none, gemm: &none, low: &zen4_low })
            .unwrap_err()
            .to_string();
        assert!(msg.contains("STANCE_INT8=amx") && msg.contains("amx-int8"), "{msg}");

        let msg = resolve(&vars(Some("sse9"), None, None, None), &FULL).unwrap_err().to_string();
        assert!(msg.contains("STANCE_KERNEL=\"sse9\"") && msg.contains("avx512, avx2, baseline"), "{msg}");
        assert!(matches!(resolve(&vars(None, Some("blas"), None, None), &FULL), Err(PathError::Unknown { .. })));
        let msg = resolve(&vars(None, None, Some("native"), None), &FULL).unwrap_err().to_string();
        assert!(msg.contains("amx, avx512, portable"), "{msg}");
    }

    #[test]
    fn every_feature_a_path_is_compiled_with_is_checked() {
        // The AVX-512 elementwise kernels are compiled with AVX2 and FMA as well; a CPU that
        // lacks any one of them must not get that path.
        assert_eq!(Simd::Avx512.features(), ["avx512f", "avx2", "fma"]);
        assert_eq!(Simd::Avx2.features(), ["avx2", "fma"]);
        assert_eq!(Gemm::Avx512.features(), ["avx512f"]);
        assert_eq!(LowPrecision::Bf16.features(Dot::Avx512), ["avx512f", "avx512bf16"]);
        assert_eq!(LowPrecision::Int8.features(Dot::Avx512), ["avx512f", "avx512bw", "avx512vnni"]);
        for f in Simd::Avx512.features() {
            let lacks_f = |s: Simd| s.features().iter().copied().filter(|x| x == f).collect::<Vec<_>>();
            let p = resolve(&Forced::default(), &Cpu { simd: &lacks_f, gemm: &none, low: &none2 }).unwrap();
            assert_ne!(p.simd, Simd::Avx512, "a CPU without {f}");
        }
        for dot in [Dot::Amx, Dot::Avx512] {
            for f in LowPrecision::Int8.features(dot) {
                let lacks_f =
                    |l: LowPrecision, d: Dot| l.features(d).iter().copied().filter(|x| x == f).collect::<Vec<_>>();
                let p = resolve(&Forced::default(), &Cpu { simd: &none, gemm: &none, low: &lacks_f }).unwrap();
                assert_ne!(p.int8, dot, "a CPU without {f}");
            }
        }
    }

    #[test]
    fn this_process_paths_are_runnable() {
        // Under a forced path the CPU cannot run this fails, as it should: a forced path is
        // never replaced by another.
        let p = paths().unwrap_or_else(|e| panic!("{e}"));
        assert!(p.simd.missing().is_empty() && p.gemm.missing().is_empty(), "{p:?}");
        for (dot, low) in [(p.bf16, LowPrecision::Bf16), (p.int8, LowPrecision::Int8)] {
            assert!(low.missing(dot).is_empty(), "{p:?}");
        }
        println!("paths: {p:?}");
    }
}
