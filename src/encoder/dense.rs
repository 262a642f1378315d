//! The encoder's dense layers, `dst[m, n] += a[m, k] · Wᵀ` with the weight `W` (`[n, k]`), in
//! the number format of a [`Precision`]: fp32 ([`super::sgemm`] or the `gemm` crate), bf16
//! ([`super::bf16`]) or int8 ([`super::int8`]). Attention, layer norms and GELU stay fp32 in
//! every precision; the dense layers are ~95% of the FLOPs.
//!
//! Every kernel writes its product into `dst` by accumulation, so biases and residuals written
//! there first cost no extra pass. The packed kernels share one tiling ([`for_each_tile`]):
//! 32-column weight panels split evenly over rayon's threads, rows in blocks that stay in L2,
//! tiles of up to 12 rows.

use rayon::prelude::*;

use super::cpu::{Gemm, Paths};
use super::{bf16, int8, sgemm};

/// The number format of the dense layers' weights and inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Single precision throughout: the reference.
    #[default]
    Fp32,
    /// Weights and inputs rounded to bfloat16, products summed in fp32.
    Bf16,
    /// Weights as int8 with one scale per output channel, inputs as uint8 with a scale and an
    /// offset per row (both set when the row is seen), products summed exactly in int32; the
    /// FFN's output layer, whose inputs have a few channels 8 bits serve badly, sums those in
    /// fp32 given calibrated ranges, and runs bf16 without them ([`super::FastEncoder`]).
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Int8];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A precision name that is not one of [`Precision::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a precision; use fp32, bf16 or int8")]
pub struct UnknownPrecision(pub String);

impl std::str::FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPrecision(s.to_string()))
    }
}

/// Columns per weight panel in every packed kernel.
pub(crate) const NR: usize = 32;
/// Rows per tile.
pub(crate) const MR: usize = 12;
/// Rows per block for the 12-row tiles, sized so a block of the input stays in L2 while the
/// panels stream past it.
pub(crate) const MB: usize = 96;

/// A dense layer's weight `[n, k]`, prepared for one precision and CPU path.
pub enum Dense {
    /// fp32, packed for [`sgemm`]'s AVX-512 kernel.
    Packed(sgemm::PackedWeight),
    /// fp32, row-major, for the `gemm` crate.
    Plain {
        w: Vec<f32>,
        n: usize,
        k: usize,
    },
    Bf16(bf16::Bf16Weight),
    Int8(int8::Int8Weight),
}

impl Dense {
    /// `w` prepared for `precision` on `paths`. Panics when a path needs a CPU feature this
    /// CPU lacks ([`super::cpu::paths`] never chooses such a path).
    pub fn new(w: Vec<f32>, n: usize, k: usize, precision: Precision, paths: Paths) -> Self {
        match precision {
            Precision::Fp32 => Self::fp32(w, n, k, paths.gemm),
            Precision::Bf16 => Dense::Bf16(bf16::Bf16Weight::new(&w, n, k, paths.bf16, paths.gemm)),
            Precision::Int8 => Dense::Int8(int8::Int8Weight::new(&w, n, k, paths.int8)),
        }
    }

    /// As [`Dense::new`], for a layer whose input channel `j` runs at about `smooth[j]`: int8
    /// quantises `a[·, j] / smooth[j]` against `W[·, j] · smooth[j]` (the same product); the
    /// other precisions ignore it.
    pub fn smoothed(w: Vec<f32>, n: usize, k: usize, precision: Precision, paths: Paths, smooth: &[f32]) -> Self {
        Self::split(w, n, k, precision, paths, smooth, &[])
    }

    /// As [`Dense::smoothed`], with int8 summing the input channels `outliers` in fp32 beside
    /// its 8-bit product, which leaves them out (so their large values do not take a row's
    /// range); the other precisions ignore both.
    pub fn split(
        w: Vec<f32>,
        n: usize,
        k: usize,
        precision: Precision,
        paths: Paths,
        smooth: &[f32],
        outliers: &[usize],
    ) -> Self {
        match precision {
            Precision::Int8 => Dense::Int8(int8::Int8Weight::split(&w, n, k, paths.int8, smooth, outliers)),
            _ => Self::new(w, n, k, precision, paths),
        }
    }

    /// An fp32 weight for the matrix multiply `path`.
    pub(crate) fn fp32(w: Vec<f32>, n: usize, k: usize, path: Gemm) -> Self {
        match path {
            Gemm::Avx512 => {
                let missing = sgemm::missing();
                assert!(missing.is_empty(), "the AVX-512 GEMM needs {}, which this CPU lacks", missing.join(", "));
                match sgemm::PackedWeight::new(&w, n, k) {
                    Some(p) => Dense::Packed(p),
                    // A shape the kernel does not cover.
                    None => Dense::Plain { w, n, k },
                }
            }
            Gemm::Crate => Dense::Plain { w, n, k },
        }
    }

    /// The fp32 path this layer runs, `None` for bf16 and int8.
    #[cfg(test)]
    pub(crate) fn fp32_path(&self) -> Option<Gemm> {
        match self {
            Dense::Packed(_) => Some(Gemm::Avx512),
            Dense::Plain { .. } => Some(Gemm::Crate),
            Dense::Bf16(_) | Dense::Int8(_) => None,
        }
    }

    /// `dst[m, n] += a[m, k] · Wᵀ`.
    pub fn acc(&self, dst: &mut [f32], a: &[f32], m: usize) {
        match self {
            Dense::Packed(p) => sgemm::gemm_acc(dst, a, m, p),
            Dense::Plain { w, n, k } => crate_gemm_acc(dst, a, w, m, *n, *k),
            Dense::Bf16(w) => w.acc(dst, a, m),
            Dense::Int8(w) => w.acc(dst, a, m),
        }
    }

    /// Bytes the weight holds in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Dense::Packed(p) => p.bytes(),
            Dense::Plain { w, .. } => std::mem::size_of_val(w.as_slice()),
            Dense::Bf16(w) => w.bytes(),
            Dense::Int8(w) => w.bytes(),
        }
    }
}

/// `dst[m, n] += a[m, k] · w[n, k]ᵀ` (row-major everywhere) on the `gemm` crate.
pub(crate) fn crate_gemm_acc(dst: &mut [f32], a: &[f32], w: &[f32], m: usize, n: usize, k: usize) {
    assert_eq!(dst.len(), m * n);
    assert_eq!(a.len(), m * k);
    assert_eq!(w.len(), n * k);
    if m == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // SAFETY: the slices have the asserted sizes and the strides describe them exactly: dst is
    // m×n with row stride n, a is m×k with row stride k, and w read as the k×n matrix Wᵀ has
    // row stride 1 and column stride k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
        );
    }
}

/// Runs `tile(r, rows, p)` for every tile of an `m`-row product over `panels` weight panels:
/// rows `r..r + rows` (1..=`mr` of them, `r` a multiple of `mr`) against panel `p`, in blocks
/// of `mb` rows (a multiple of `mr`), so each panel is read once per block. Panels are split
/// evenly over rayon's threads, so each thread writes its own columns of the output; a product
/// of fewer
/// than `2^18` multiply-adds (`work`) stays on the calling thread, where waking the pool costs
/// more than it saves.
pub(crate) fn for_each_tile(
    m: usize,
    (mr, mb): (usize, usize),
    panels: usize,
    work: usize,
    tile: impl Fn(usize, usize, usize) + Sync,
) {
    if m == 0 || panels == 0 {
        return;
    }
    debug_assert!(mb.is_multiple_of(mr), "tiles must not straddle row blocks");
    let threads = rayon::current_num_threads().clamp(1, panels);
    let per = panels.div_ceil(threads);
    let run = |t: usize| {
        let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
        for m0 in (0..m).step_by(mb) {
            let m1 = (m0 + mb).min(m);
            for p in p0..p1 {
                let mut r = m0;
                while r < m1 {
                    let rows = (m1 - r).min(mr);
                    tile(r, rows, p);
                    r += rows;
                }
            }
        }
    };
    if threads == 1 || work < 1 << 18 {
        (0..threads).for_each(run);
    } else {
        (0..threads).into_par_iter().for_each(run);
    }
}

/// Calls `$kernel::<R>($args)` for `R` = `$rows` (1..=12): the tile kernels are generic over
/// their row count so that the accumulators live in registers.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident($($arg:expr),*)) => {
        match $rows {
            12 => $kernel::<12>($($arg),*),
            11 => $kernel::<11>($($arg),*),
            10 => $kernel::<10>($($arg),*),
            9 => $kernel::<9>($($arg),*),
            8 => $kernel::<8>($($arg),*),
            7 => $kernel::<7>($($arg),*),
            6 => $kernel::<6>($($arg),*),
            5 => $kernel::<5>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            3 => $kernel::<3>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            1 => $kernel::<1>($($arg),*),
            _ => unreachable!("a tile has 1..=12 rows"),
        }
    };
}
pub(crate) use by_rows;

/// A pointer into an output buffer that several threads write, each to its own disjoint part
/// (the callers' SAFETY comments say which).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: the pointer is only dereferenced by code that writes disjoint parts of a buffer that
// outlives the parallel section (each use says which part); sending or sharing the address
// itself is harmless.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedMut {}
impl SharedMut {
    /// A method, so closures capture the whole `Send + Sync` wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic test data in [-0.5, 0.5).
    pub(crate) fn data(len: usize, mul: usize, modulus: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * mul) % modulus) as f32 / modulus as f32 - 0.5).collect()
    }

    /// `init + a · wᵀ` in f64.
    pub(crate) fn naive(init: &[f32], a: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(m * n);
        for r in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k).map(|x| a[r * k + x] as f64 * w[c * k + x] as f64).sum();
                out.push(init[r * n + c] as f64 + dot);
            }
        }
        out
    }

    /// The tile sizes every kernel is checked on: tile and block remainders.
    pub(crate) const ROWS: [usize; 8] = [1, 5, 12, 13, 95, 96, 97, 200];

    #[test]
    fn tiles_cover_every_row_and_panel_once() {
        for (m, panels) in [(1, 1), (13, 3), (200, 5), (97, 24)] {
            let seen = std::sync::Mutex::new(vec![0u32; m * panels]);
            for_each_tile(m, (MR, MB), panels, usize::MAX, |r, rows, p| {
                assert!((1..=MR).contains(&rows) && r % MR == 0);
                let mut s = seen.lock().unwrap();
                for i in r..r + rows {
                    s[i * panels + p] += 1;
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "m={m} panels={panels}");
        }
    }

    #[test]
    fn precisions_parse_and_print() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string().to_uppercase().parse::<Precision>(), Ok(p));
        }
        let e = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("\"fp16\"") && e.contains("fp32, bf16 or int8"), "{e}");
    }
}
