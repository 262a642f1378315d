//! bf16 dense layers: the weight rounded to bfloat16 once at load, each input rounded when it
//! arrives (round to nearest even), products summed in fp32.
//!
//! - [`Dot::Amx`]: AMX tiles' `tdpbf16ps` on 32×32 blocks ([`super::amx`]).
//! - [`Dot::Avx512`]: AVX-512 BF16's `vdpbf16ps`, two multiply-adds per lane where an fp32 FMA
//!   does one, on 12×32 tiles like the fp32 kernel's. Whether that is faster than fp32 depends
//!   on the core: Intel's Sapphire Rapids issues it at half the FMA rate, so it is not.
//! - [`Dot::Portable`]: the same rounded weight and inputs on the fp32 path, for CPUs without
//!   BF16.
//!
//! Both packed kernels read the weight as 32-column panels of bf16 pairs (`k` and `k + 1` of
//! one column in one 32-bit lane), half the bytes of fp32. Every product of two bf16 values is
//! exact in fp32, so all paths sum the same products and differ only in the order of the fp32
//! sums.

use rayon::prelude::*;

use super::cpu::{Dot, Gemm};
use super::dense::{by_rows, for_each_tile, Dense, SharedMut, MB, MR, NR};

/// The features the AVX-512 kernel is compiled with.
pub(crate) const FEATURES: &[&str] = &["avx512f", "avx512bf16"];
/// What the AMX kernel needs: the AVX-512 kernel's features (for the input's conversion and
/// the shapes it leaves to the AVX-512 kernel) and AMX's.
pub(crate) const AMX_FEATURES: &[&str] = &["avx512f", "avx512bf16", "amx-tile", "amx-bf16"];

/// The features of [`AMX_FEATURES`] this process lacks (AMX counts as lacking where the CPU or
/// the kernel does not offer it).
pub(crate) fn amx_missing() -> Vec<&'static str> {
    let mut m = missing();
    if !super::amx::bf16_usable() {
        m.extend(["amx-tile", "amx-bf16"]);
    }
    m
}

/// The features of [`FEATURES`] this CPU lacks (all of them off x86-64).
pub(crate) fn missing() -> Vec<&'static str> {
    super::cpu::missing_features!("avx512f", "avx512bf16")
}

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits. Branch-free, so the
/// loops over it vectorise.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    // A NaN stays a NaN: keep a mantissa bit that survives the truncation.
    let nan = ((b >> 16) | 0x40) as u16;
    if x.is_nan() {
        nan
    } else {
        rounded
    }
}

/// `row` as bf16 pairs (`k` and `k + 1` in one 32-bit lane, the low half first), zero-padded
/// to an even length.
#[inline(always)]
fn pack_pairs(row: &[f32], out: &mut [u32]) {
    let mut pairs = row.chunks_exact(2);
    for (o, p) in out.iter_mut().zip(&mut pairs) {
        *o = to_bf16(p[0]) as u32 | (to_bf16(p[1]) as u32) << 16;
    }
    if let [last] = pairs.remainder() {
        out[row.len() / 2] = to_bf16(*last) as u32;
    }
}

/// [`pack_pairs`] compiled for AVX-512, where the native kernel runs.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_pairs_avx512(row: &[f32], out: &mut [u32]) {
    pack_pairs(row, out)
}

/// The fp32 value of a bfloat16.
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Below this many values, rounding the input stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

pub struct Bf16Weight {
    n: usize,
    k: usize,
    form: Form,
}

enum Form {
    /// `n / 32` panels of `[k.div_ceil(2)][32]` pairs, zero-padded to an even `k`, for AMX
    /// (`amx`) or the AVX-512 kernel.
    Panels { panels: Vec<u32>, amx: bool },
    /// The rounded weight as fp32 on the fp32 path.
    Portable(Box<Dense>),
}

impl Bf16Weight {
    /// `w` (`[n, k]`, row-major) rounded to bf16 for `dot`; `gemm` is the fp32 path the
    /// portable form runs on. A shape the packed kernels do not cover (`n` not a multiple of
    /// 32) gets the portable form, one AMX does not (`k` not a multiple of 32) the AVX-512
    /// kernel. Panics when the CPU lacks what `dot` needs.
    pub(crate) fn new(w: &[f32], n: usize, k: usize, dot: Dot, gemm: Gemm) -> Self {
        assert_eq!(w.len(), n * k);
        if dot != Dot::Portable && n.is_multiple_of(NR) && k > 0 {
            let pairs = k.div_ceil(2);
            let amx = dot == Dot::Amx && pairs.is_multiple_of(16);
            let missing = if amx { amx_missing() } else { missing() };
            assert!(missing.is_empty(), "the bf16 kernel needs {}, which this CPU lacks", missing.join(", "));
            let mut panels = vec![0u32; n * pairs];
            let mut row_pairs = vec![0u32; pairs];
            for c in 0..n {
                pack_pairs(&w[c * k..(c + 1) * k], &mut row_pairs);
                let (p, col) = (c / NR, c % NR);
                for (kp, &v) in row_pairs.iter().enumerate() {
                    panels[(p * pairs + kp) * NR + col] = v;
                }
            }
            return Self { n, k, form: Form::Panels { panels, amx } };
        }
        let rounded = w.iter().map(|&v| from_bf16(to_bf16(v))).collect();
        Self { n, k, form: Form::Portable(Box::new(Dense::fp32(rounded, n, k, gemm))) }
    }

    pub(crate) fn bytes(&self) -> usize {
        match &self.form {
            Form::Panels { panels, .. } => std::mem::size_of_val(panels.as_slice()),
            Form::Portable(d) => d.bytes(),
        }
    }

    /// `dst[m, n] += bf16(a)[m, k] · bf16(W)ᵀ`.
    pub(crate) fn acc(&self, dst: &mut [f32], a: &[f32], m: usize) {
        let (n, k) = (self.n, self.k);
        assert_eq!(dst.len(), m * n);
        assert_eq!(a.len(), m * k);
        match &self.form {
            Form::Portable(inner) => {
                let mut rounded = a.to_vec();
                let round = |v: &mut f32| *v = from_bf16(to_bf16(*v));
                if rounded.len() >= PAR_MIN {
                    rounded.par_iter_mut().for_each(round);
                } else {
                    rounded.iter_mut().for_each(round);
                }
                inner.acc(dst, &rounded, m);
            }
            &Form::Panels { ref panels, amx } => {
                let pairs = k.div_ceil(2);
                // AMX reads whole 32-row blocks: the rows past m are zero.
                let padded = if amx { m.next_multiple_of(super::amx::ROWS) } else { m };
                let mut ap = vec![0u32; padded * pairs];
                let pack = |(row, out): (&[f32], &mut [u32])| {
                    // SAFETY: the packed form exists only where the CPU has FEATURES
                    // (AVX-512F among them).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        pack_pairs_avx512(row, out)
                    }
                };
                if ap.len() >= PAR_MIN {
                    a.par_chunks(k).zip(ap.par_chunks_mut(pairs)).for_each(pack);
                } else {
                    a.chunks(k).zip(ap.chunks_mut(pairs)).for_each(pack);
                }
                let out = SharedMut(dst.as_mut_ptr());
                if amx {
                    for_each_tile(m, (super::amx::ROWS, super::amx::BLOCK), n / NR, m * n * k, |r, rows, p| {
                        let panel = &panels[p * pairs * NR..(p + 1) * pairs * NR];
                        let mut sums = [0f32; 1024];
                        // SAFETY: the AMX form exists only where AMX runs (`new`); `ap` holds
                        // `padded` rows, a multiple of 32, so rows r..r+32 (r a multiple of 32)
                        // are readable, pairs (a multiple of 16) pairs each; the panel holds
                        // `pairs` rows of 128 bytes. The loop writes rows r..r+rows and columns
                        // p*NR..p*NR+NR of dst, this tile's alone.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            let a = ap.as_ptr().add(r * pairs).cast();
                            super::amx::bf16_block(a, pairs * 4, panel.as_ptr().cast(), pairs / 16, &mut sums);
                            for i in 0..rows {
                                let d = std::slice::from_raw_parts_mut(out.get().add((r + i) * n + p * NR), NR);
                                for (o, s) in d.iter_mut().zip(&sums[i * NR..(i + 1) * NR]) {
                                    *o += s;
                                }
                            }
                        }
                    });
                    return;
                }
                for_each_tile(m, (MR, MB), n / NR, m * n * k, |r, rows, p| {
                    let panel = &panels[p * pairs * NR..(p + 1) * pairs * NR];
                    // SAFETY: rows r..r+rows and columns p*NR..p*NR+NR of dst are inside it and
                    // written by this tile only (`for_each_tile` visits each once, panels
                    // split between threads); `ap` rows r..r+rows hold `pairs` pairs each; the
                    // panel holds pairs*NR; the packed form exists only where the CPU has
                    // FEATURES (`new`).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let (d, a) = (out.get().add(r * n + p * NR), ap.as_ptr().add(r * pairs));
                        by_rows!(rows, kernel(d, n, a, pairs, panel.as_ptr()))
                    }
                });
            }
        }
    }

    /// The kernel that runs this weight.
    #[cfg(test)]
    fn kernel(&self) -> Dot {
        match self.form {
            Form::Panels { amx: true, .. } => Dot::Amx,
            Form::Panels { amx: false, .. } => Dot::Avx512,
            Form::Portable(_) => Dot::Portable,
        }
    }
}

/// One `R`×32 tile: `dst[R, 32] += a[R, 2·pairs] · b`, two bf16 multiply-adds per lane and
/// instruction.
///
/// # Safety
/// The CPU has [`FEATURES`]; `dst` points at `R` rows of 32 writable floats `ldd` apart that no
/// one else accesses meanwhile; `a` at `R` rows of `pairs` bf16 pairs, `pairs` apart; `b` at a
/// panel of `pairs * 32` pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const R: usize>(dst: *mut f32, ldd: usize, a: *const u32, pairs: usize, b: *const u32) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    // SAFETY: every load and store stays inside what the caller vouches for: dst rows i < R,
    // floats 0..32 of each; a rows i < R, pairs kp < pairs; b pairs kp*32..kp*32+32. The
    // transmutes reinterpret 512 bits as 32 bf16 values, which any bit pattern is.
    unsafe {
        for i in 0..R {
            acc0[i] = _mm512_loadu_ps(dst.add(i * ldd));
            acc1[i] = _mm512_loadu_ps(dst.add(i * ldd + 16));
        }
        for kp in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(kp * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(kp * NR + 16).cast()));
            for i in 0..R {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i * pairs + kp) as i32));
                acc0[i] = _mm512_dpbf16_ps(acc0[i], x, b0);
                acc1[i] = _mm512_dpbf16_ps(acc1[i], x, b1);
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
    use super::super::dense::tests::{data, naive, ROWS};
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even, 1 + 2^-6.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// The path of this process (`STANCE_BF16`, or the best the CPU runs) against the product
    /// of the rounded operands in f64, on every tile remainder and an odd `k`.
    #[test]
    fn bf16_matches_the_product_of_rounded_operands() {
        let paths = super::super::cpu::paths().unwrap_or_else(|e| panic!("{e}"));
        println!("bf16 path: {:?}", paths.bf16);
        for (n, k) in [(64, 40), (32, 37), (48, 16), (64, 96)] {
            let w = data(n * k, 7919, 23);
            let dense = Bf16Weight::new(&w, n, k, paths.bf16, paths.gemm);
            let want = match paths.bf16 {
                _ if n % 32 != 0 => Dot::Portable,
                Dot::Amx if !k.div_ceil(2).is_multiple_of(16) => Dot::Avx512,
                d => d,
            };
            assert_eq!(dense.kernel(), want, "n={n} k={k}");
            let round = |v: &[f32]| v.iter().map(|&x| from_bf16(to_bf16(x))).collect::<Vec<_>>();
            for m in ROWS {
                let a = data(m * k, 104729, 31);
                let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
                let mut got = init.clone();
                dense.acc(&mut got, &a, m);
                let want = naive(&init, &round(&a), &round(&w), m, n, k);
                for (i, want) in want.into_iter().enumerate() {
                    assert!((got[i] as f64 - want).abs() < 1e-4, "n={n} k={k} m={m} [{i}]: {} vs {want}", got[i]);
                }
            }
        }
    }
}
