//! An AVX-512 matrix multiply for the encoder's dense layers: `dst[m, n] += a[m, k] · Wᵀ` with
//! the weight `W` (`[n, k]`) packed once at load time into 32-column panels.
//!
//! The `gemm` crate that candle uses runs its AVX2 kernels on this machine; the encoder's dense
//! layers are ~95% of its FLOPs, so they get a kernel of their own: 12×32 tiles held in 24
//! zmm accumulators, B panels contiguous per k, A broadcast from its rows. Rows are blocked so
//! a block of A stays in L2 while the panels stream past it, and the two halves of the panels
//! go to two threads (rayon). Shapes it does not cover, or CPUs without AVX-512, use `gemm`.

use rayon::prelude::*;

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
    /// Packs `w`; `None` when this kernel cannot be used (no AVX-512, or `n` not a multiple of
    /// 32), in which case the caller keeps the plain layout.
    pub fn new(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !available() || !n.is_multiple_of(NR) || k == 0 {
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

pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A pointer into an output buffer that several threads write, each to its own disjoint part
/// (the callers' SAFETY comments say which).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    /// A method, so closures capture the whole `Send + Sync` wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst[m, n] += a[m, k] · Wᵀ` (row-major `dst` and `a`).
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
                    // rows r..r+rows hold k floats each; the panel holds k*NR floats.
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

#[cfg(target_arch = "x86_64")]
unsafe fn tile(dst: *mut f32, ldd: usize, a: *const f32, lda: usize, b: *const f32, rows: usize) {
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

/// One `R`×32 tile: accumulators loaded from `dst`, `k` = `lda` steps of 2 FMAs per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(dst: *mut f32, ldd: usize, a: *const f32, lda: usize, b: *const f32) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    for i in 0..R {
        acc0[i] = _mm512_loadu_ps(dst.add(i * ldd));
        acc1[i] = _mm512_loadu_ps(dst.add(i * ldd + 16));
    }
    let k = lda;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_on_every_remainder() {
        if !available() {
            println!("skipping: no AVX-512 on this CPU (the gemm crate path is used)");
            return;
        }
        let (n, k) = (64, 40);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 23) as f32 / 23.0 - 0.5).collect();
        let packed = PackedWeight::new(&w, n, k).unwrap();
        for m in [1, 5, 12, 13, 95, 96, 97, 200] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 104729) % 31) as f32 / 31.0 - 0.5).collect();
            let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
            let mut got = init.clone();
            gemm_acc(&mut got, &a, m, &packed);
            for r in 0..m {
                for c in 0..n {
                    let want: f32 = init[r * n + c] + (0..k).map(|x| a[r * k + x] * w[c * k + x]).sum::<f32>();
                    assert!((got[r * n + c] - want).abs() < 1e-4, "m={m} ({r},{c}): {} vs {want}", got[r * n + c]);
                }
            }
        }
        assert!(PackedWeight::new(&w[..48 * k], 48, k).is_none(), "n must be a multiple of 32");
    }
}
