//! The encoder's dense layers, `dst[m, n] += a[m, k] · Wᵀ` with the weight `W` (`[n, k]`): an
//! AVX-512 kernel of our own, with `W` packed once at load time into 32-column panels, or the
//! `gemm` crate (candle's kernels) with `W` as it is.
//!
//! The dense layers are ~95% of the encoder's FLOPs. The `gemm` crate, as built here (without
//! its `x86-v4` feature), runs AVX2+FMA kernels even on AVX-512 CPUs, so the dense layers get a
//! kernel of their own: 12×32 tiles held in
//! 24 zmm accumulators, B panels contiguous per k, A broadcast from its rows. Rows are blocked
//! so a block of A stays in L2 while the panels stream past it, and the panels are split evenly
//! over rayon's threads. [`super::cpu`] chooses between the two ([`Gemm`]); shapes the kernel
//! does not cover (`n` not a multiple of 32) use the `gemm` crate either way.

use rayon::prelude::*;

use super::cpu::Gemm;

/// Columns per panel (two zmm registers).
const NR: usize = 32;
/// Rows per tile.
const MR: usize = 12;
/// Rows per block (a multiple of MR), sized so a block of A stays in L2.
const MB: usize = 96;

/// `W` (`[n, k]`, row-major) as `n / 32` panels of `[k][32]`.
pub struct PackedWeight {
    n: usize,
    k: usize,
    panels: Vec<f32>,
}

impl PackedWeight {
    /// Packs `w`; `None` when this kernel cannot be used (the CPU lacks a feature of
    /// [`FEATURES`], or `n` is not a multiple of 32), in which case the caller keeps the plain
    /// layout. A `PackedWeight` exists only where the kernel can run: [`gemm_acc`] relies on it.
    pub fn new(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !missing().is_empty() || !n.is_multiple_of(NR) || k == 0 {
            return None;
        }
        assert_eq!(w.len(), n * k);
        let mut panels = vec![0f32; n * k];
        for p in 0..n / NR {
            for kk in 0..k {
                for c in 0..NR {
                    panels[(p * k + kk) * NR + c] = w[(p * NR + c) * k + kk];
                }
            }
        }
        Some(Self { n, k, panels })
    }
}

/// The features the kernel is compiled with (its `#[target_feature]`).
pub(crate) const FEATURES: &[&str] = &["avx512f"];

/// The features of [`FEATURES`] this CPU lacks (all of them off x86-64).
pub(crate) fn missing() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Vec::new()
        } else {
            vec!["avx512f"]
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        FEATURES.to_vec()
    }
}

/// A dense layer's weight `[n, k]`: packed for the AVX-512 kernel, or plain row-major for the
/// `gemm` crate.
pub(crate) enum Dense {
    Packed(PackedWeight),
    Plain { w: Vec<f32>, n: usize, k: usize },
}

impl Dense {
    /// `w` for the matrix multiply `path`. Panics when `path` is [`Gemm::Avx512`] and this CPU
    /// cannot run it ([`super::cpu::paths`] never chooses it there).
    pub(crate) fn new(w: Vec<f32>, n: usize, k: usize, path: Gemm) -> Self {
        match path {
            Gemm::Avx512 => {
                let missing = missing();
                assert!(missing.is_empty(), "the AVX-512 GEMM needs {}, which this CPU lacks", missing.join(", "));
                match PackedWeight::new(&w, n, k) {
                    Some(p) => Dense::Packed(p),
                    // A shape the kernel does not cover.
                    None => Dense::Plain { w, n, k },
                }
            }
            Gemm::Crate => Dense::Plain { w, n, k },
        }
    }

    /// The path this layer runs.
    #[cfg(test)]
    pub(crate) fn path(&self) -> Gemm {
        match self {
            Dense::Packed(_) => Gemm::Avx512,
            Dense::Plain { .. } => Gemm::Crate,
        }
    }

    /// `dst[m, n] += a[m, k] · Wᵀ`.
    pub(crate) fn acc(&self, dst: &mut [f32], a: &[f32], m: usize) {
        match self {
            Dense::Packed(p) => gemm_acc(dst, a, m, p),
            Dense::Plain { w, n, k } => crate_gemm_acc(dst, a, w, m, *n, *k),
        }
    }
}

/// `dst[m, n] += a[m, k] · w[n, k]ᵀ` (row-major everywhere) on the `gemm` crate.
fn crate_gemm_acc(dst: &mut [f32], a: &[f32], w: &[f32], m: usize, n: usize, k: usize) {
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

/// `dst[m, n] += a[m, k] · Wᵀ` (row-major `dst` and `a`) on the AVX-512 kernel.
pub fn gemm_acc(dst: &mut [f32], a: &[f32], m: usize, w: &PackedWeight) {
    let (n, k) = (w.n, w.k);
    assert_eq!(dst.len(), m * n);
    assert_eq!(a.len(), m * k);
    if m == 0 {
        return;
    }
    let panels = n / NR;
    let threads = rayon::current_num_threads().clamp(1, panels);
    let per = panels.div_ceil(threads);
    let out = SharedMut(dst.as_mut_ptr());
    let run = |t: usize| {
        let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
        for m0 in (0..m).step_by(MB) {
            let m1 = (m0 + MB).min(m);
            for p in p0..p1 {
                let panel = &w.panels[p * k * NR..(p + 1) * k * NR];
                let mut r = m0;
                while r < m1 {
                    let rows = (m1 - r).min(MR);
                    // SAFETY: rows r..r+rows and columns p*NR..p*NR+NR of dst are inside it and
                    // written by this thread only (panels are split between threads); `a`
                    // rows r..r+rows hold k floats each; the panel holds k*NR floats; `w`
                    // exists, so the CPU has the kernel's features (`PackedWeight::new`).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        tile(out.get().add(r * n + p * NR), n, a.as_ptr().add(r * k), k, panel.as_ptr(), rows);
                    }
                    r += rows;
                }
            }
        }
    };
    if threads == 1 || m * n * k < 1 << 18 {
        (0..threads).for_each(run);
    } else {
        (0..threads).into_par_iter().for_each(run);
    }
}

/// One tile of `rows` (1..=12) rows: `dst[rows, 32] += a[rows, lda] · b`.
///
/// # Safety
/// The CPU has the features of [`FEATURES`]; `dst` points at `rows` rows of 32 writable floats
/// `ldd` apart that no one else accesses meanwhile; `a` at `rows` rows of `lda` floats, `lda`
/// apart; `b` at `lda * 32` floats (a panel).
#[cfg(target_arch = "x86_64")]
unsafe fn tile(dst: *mut f32, ldd: usize, a: *const f32, lda: usize, b: *const f32, rows: usize) {
    // SAFETY: in every arm the caller's contract is the kernel's, with R = rows.
    unsafe {
        match rows {
            12 => kernel::<12>(dst, ldd, a, lda, b),
            11 => kernel::<11>(dst, ldd, a, lda, b),
            10 => kernel::<10>(dst, ldd, a, lda, b),
            9 => kernel::<9>(dst, ldd, a, lda, b),
            8 => kernel::<8>(dst, ldd, a, lda, b),
            7 => kernel::<7>(dst, ldd, a, lda, b),
            6 => kernel::<6>(dst, ldd, a, lda, b),
            5 => kernel::<5>(dst, ldd, a, lda, b),
            4 => kernel::<4>(dst, ldd, a, lda, b),
            3 => kernel::<3>(dst, ldd, a, lda, b),
            2 => kernel::<2>(dst, ldd, a, lda, b),
            1 => kernel::<1>(dst, ldd, a, lda, b),
            _ => unreachable!("a tile has 1..=12 rows"),
        }
    }
}

/// One `R`×32 tile: accumulators loaded from `dst`, `k` = `lda` steps of 2 FMAs per row.
///
/// # Safety
/// As for [`tile`], with `rows` = `R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(dst: *mut f32, ldd: usize, a: *const f32, lda: usize, b: *const f32) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let k = lda;
    // SAFETY: every load and store stays inside the rows the caller vouches for: dst rows
    // i < R, floats 0..32 of each; a rows i < R, floats kk < lda; b floats kk*32..kk*32+32 for
    // kk < lda.
    unsafe {
        for i in 0..R {
            acc0[i] = _mm512_loadu_ps(dst.add(i * ldd));
            acc1[i] = _mm512_loadu_ps(dst.add(i * ldd + 16));
        }
        for kk in 0..k {
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            for i in 0..R {
                let x = _mm512_set1_ps(*a.add(i * lda + kk));
                acc0[i] = _mm512_fmadd_ps(x, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(x, b1, acc1[i]);
            }
        }
        for i in 0..R {
            _mm512_storeu_ps(dst.add(i * ldd), acc0[i]);
            _mm512_storeu_ps(dst.add(i * ldd + 16), acc1[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dense product on the path of this process ([`super::super::cpu::paths`]: the best
    /// the CPU runs, or the one forced with `STANCE_GEMM`), on every tile and block remainder.
    #[test]
    fn dense_matches_a_naive_product_on_every_remainder() {
        let path = super::super::cpu::paths().unwrap_or_else(|e| panic!("{e}")).gemm;
        let (n, k) = (64, 40);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 23) as f32 / 23.0 - 0.5).collect();
        let dense = Dense::new(w.clone(), n, k, path);
        assert_eq!(dense.path(), path, "a 64-row weight runs on the path asked for");
        println!("GEMM path: {path:?}");
        for m in [1, 5, 12, 13, 95, 96, 97, 200] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 104729) % 31) as f32 / 31.0 - 0.5).collect();
            let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
            let mut got = init.clone();
            dense.acc(&mut got, &a, m);
            for r in 0..m {
                for c in 0..n {
                    let want: f32 = init[r * n + c] + (0..k).map(|x| a[r * k + x] * w[c * k + x]).sum::<f32>();
                    assert!((got[r * n + c] - want).abs() < 1e-4, "m={m} ({r},{c}): {} vs {want}", got[r * n + c]);
                }
            }
        }
        assert!(PackedWeight::new(&w[..48 * k], 48, k).is_none(), "n must be a multiple of 32");
        assert_eq!(Dense::new(w[..48 * k].to_vec(), 48, k, path).path(), Gemm::Crate);
    }
}
