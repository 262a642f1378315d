//! The fp32 dense-layer kernel: AVX-512, with `W` packed once at load time into 32-column
//! panels.
//!
//! The `gemm` crate, as built here (without its `x86-v4` feature), runs AVX2+FMA kernels even on
//! AVX-512 CPUs, so the fp32 dense layers get a kernel of their own: 12×32 tiles held in 24 zmm
//! accumulators, B panels contiguous per k, A broadcast from its rows, tiled as
//! [`super::dense::for_each_tile`] says. [`super::cpu`] chooses between it and the crate
//! ([`Gemm`]); shapes the kernel does not cover (`n` not a multiple of 32) use the crate.

use super::dense::{by_rows, for_each_tile, SharedMut, MB, MR, NR};

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

    /// Bytes the panels hold.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.panels.as_slice())
    }
}

/// The features the kernel is compiled with (its `#[target_feature]`).
pub(crate) const FEATURES: &[&str] = &["avx512f"];

/// The features of [`FEATURES`] this CPU lacks (all of them off x86-64).
pub(crate) fn missing() -> Vec<&'static str> {
    super::cpu::missing_features!("avx512f")
}

/// `dst[m, n] += a[m, k] · Wᵀ` (row-major `dst` and `a`) on the AVX-512 kernel.
pub fn gemm_acc(dst: &mut [f32], a: &[f32], m: usize, w: &PackedWeight) {
    let (n, k) = (w.n, w.k);
    assert_eq!(dst.len(), m * n);
    assert_eq!(a.len(), m * k);
    let out = SharedMut(dst.as_mut_ptr());
    for_each_tile(m, (MR, MB), n / NR, m * n * k, |r, rows, p| {
        let panel = &w.panels[p * k * NR..(p + 1) * k * NR];
        // SAFETY: rows r..r+rows and columns p*NR..p*NR+NR of dst are inside it and written by
        // this tile only (`for_each_tile` visits each once, panels split between threads); `a`
        // rows r..r+rows hold k floats each; the panel holds k*NR floats; `w` exists, so the
        // CPU has the kernel's features (`PackedWeight::new`).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            let (d, a) = (out.get().add(r * n + p * NR), a.as_ptr().add(r * k));
            by_rows!(rows, kernel(d, n, a, k, panel.as_ptr()))
        }
    });
}

/// One `R`×32 tile: accumulators loaded from `dst`, `k` = `lda` steps of 2 FMAs per row.
///
/// # Safety
/// The CPU has the features of [`FEATURES`]; `dst` points at `R` rows of 32 writable floats
/// `ldd` apart that no one else accesses meanwhile; `a` at `R` rows of `lda` floats, `lda`
/// apart; `b` at `lda * 32` floats (a panel).
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
    use super::super::cpu::Gemm;
    use super::super::dense::tests::{data, naive, ROWS};
    use super::super::dense::{Dense, Precision};

    /// The fp32 dense product on the path of this process ([`super::super::cpu::paths`]: the
    /// best the CPU runs, or the one forced with `STANCE_GEMM`), on every tile and block
    /// remainder.
    #[test]
    fn dense_matches_a_naive_product_on_every_remainder() {
        let paths = super::super::cpu::paths().unwrap_or_else(|e| panic!("{e}"));
        let (n, k) = (64, 40);
        let w = data(n * k, 7919, 23);
        let dense = Dense::new(w.clone(), n, k, Precision::Fp32, paths);
        assert_eq!(dense.fp32_path(), Some(paths.gemm), "a 64-row weight runs on the path asked for");
        println!("GEMM path: {:?}", paths.gemm);
        for m in ROWS {
            let a = data(m * k, 104729, 31);
            let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
            let mut got = init.clone();
            dense.acc(&mut got, &a, m);
            for (i, want) in naive(&init, &a, &w, m, n, k).into_iter().enumerate() {
                assert!((got[i] as f64 - want).abs() < 1e-4, "m={m} [{i}]: {} vs {want}", got[i]);
            }
        }
        assert!(super::PackedWeight::new(&w[..48 * k], 48, k).is_none(), "n must be a multiple of 32");
        assert_eq!(Dense::fp32(w[..48 * k].to_vec(), 48, k, paths.gemm).fp32_path(), Some(Gemm::Crate));
    }
}
