//! int8 dense layers, quantised the way dynamic quantisation does it, with finer scales:
//!
//! - the weight: int8 in −127..=127 with one scale per output channel (row of `W`), set once at
//!   load;
//! - each input row: uint8 with its own scale and offset (its min and max over `k`), set when
//!   the row arrives, so a row of small values keeps its resolution;
//! - products summed exactly in int32, then `dst += s_w · (s_a · Σ q_a·q_w + min_a · Σ q_w)`,
//!   which is `Σ a·w` up to the rounding of `a` and `w`.
//!
//! Three kernels, one set of quantised values:
//! - [`Dot::Amx`]: AMX tiles' `tdpbusd` on 32×32 blocks ([`super::amx`]);
//! - [`Dot::Avx512`]: AVX-512 VNNI's `vpdpbusd`, four u8×s8 multiply-adds per 32-bit lane per
//!   instruction, on 12×32 tiles like the fp32 kernel's;
//! - [`Dot::Portable`]: plain integer loops, for CPUs with neither.
//!
//! Both packed kernels read the weight as 32-column panels of 4-byte groups (a quarter of
//! fp32's bytes). The integer sums are exact on all three and the dequantisation is the same
//! expression, so the paths agree to the last bit.

use rayon::prelude::*;

use super::cpu::Dot;
use super::dense::{by_rows, for_each_tile, SharedMut, MB, MR, NR};

/// The features the AVX-512 kernel is compiled with.
pub(crate) const FEATURES: &[&str] = &["avx512f", "avx512bw", "avx512vnni"];
/// What the AMX kernel needs: the AVX-512 kernel's features (its quantisation and shapes it
/// leaves to the AVX-512 kernel) and AMX's.
pub(crate) const AMX_FEATURES: &[&str] = &["avx512f", "avx512bw", "avx512vnni", "amx-tile", "amx-int8"];

/// The features of [`AMX_FEATURES`] this process lacks (AMX counts as lacking where the CPU or
/// the kernel does not offer it).
pub(crate) fn amx_missing() -> Vec<&'static str> {
    let mut m = missing();
    if !super::amx::int8_usable() {
        m.extend(["amx-tile", "amx-int8"]);
    }
    m
}

/// The features of [`FEATURES`] this CPU lacks (all of them off x86-64).
pub(crate) fn missing() -> Vec<&'static str> {
    super::cpu::missing_features!("avx512f", "avx512bw", "avx512vnni")
}

/// Below this many values, quantising the input stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

pub struct Int8Weight {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4 (the padding is zero).
    kq: usize,
    /// Per output channel: the weight's scale, and the sum of its quantised values.
    scale: Vec<f32>,
    colsum: Vec<f32>,
    form: Form,
    /// Per input channel, what inputs are multiplied by before quantising (`split`; zero
    /// for an outlier channel, which the 8-bit product leaves out).
    inv_smooth: Option<Vec<f32>>,
    outliers: Option<Outliers>,
}

/// Input channels whose rare large values would take a row's 8-bit range from the rest (the
/// "massive activations" of some channels of GELU's output): their part of the product is
/// summed in fp32 beside the 8-bit one, whose weight is zero there (LLM.int8's decomposition,
/// Dettmers et al. 2022, with the channels chosen once, at calibration).
struct Outliers {
    channels: Vec<usize>,
    /// `[channels][n]`: those columns of the weight, each one contiguous run.
    columns: Vec<f32>,
}

enum Form {
    /// `n / 32` panels of `[kq / 4][32][4]`, for AMX (`amx`) or the AVX-512 kernel.
    Panels { panels: Vec<i8>, amx: bool },
    /// `[n][kq]`, row-major.
    Portable { rows: Vec<i8> },
}

/// One input's rows quantised: `a[r][j] ≈ scale[r] · q[r][j] + min[r]`.
struct Rows {
    q: Vec<u8>,
    scale: Vec<f32>,
    min: Vec<f32>,
}

/// The smallest and largest value of `row`, in 16 lanes so that it vectorises.
#[inline(always)]
fn row_range(row: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; 16], [f32::NEG_INFINITY; 16]);
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    (lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)), hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)))
}

/// Quantises one row into `q` and returns its `(scale, min)`. Exact IEEE operations only (no
/// fused multiply-add), so every compilation of it gives the same bytes.
#[inline(always)]
fn quantise_row(row: &[f32], q: &mut [u8]) -> (f32, f32) {
    let (lo, hi) = row_range(row);
    let range = hi - lo;
    // A constant row is its offset exactly; a scale of 1 keeps the arithmetic finite.
    let scale = if range > 0.0 && range.is_finite() { range / 255.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (o, &v) in q.iter_mut().zip(row) {
        // `as u8` saturates, so values pushed past 0..=255 by rounding clamp.
        *o = ((v - lo) * inv).round_ties_even() as u8;
    }
    (scale, lo)
}

/// [`quantise_row`] in AVX-512 intrinsics, where the packed kernels run (the compiler does not
/// vectorise the saturating conversion to `u8`). The same bytes: `vcvtps2dq` rounds to
/// nearest even (the default rounding mode), negatives and NaNs (converted to `i32::MIN`)
/// become 0 and values past 255 saturate, as `as u8` does.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512BW; `q` holds at least `row.len()` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantise_row_avx512(row: &[f32], q: &mut [u8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let n = row.len();
    let body = n - n % 16;
    let (lo, hi) = {
        let (mut lo, mut hi) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
        for i in (0..body).step_by(16) {
            // SAFETY: i + 16 <= body <= row.len(): 16 floats inside `row`.
            let v = unsafe { _mm512_loadu_ps(row.as_ptr().add(i)) };
            lo = _mm512_min_ps(v, lo);
            hi = _mm512_max_ps(v, hi);
        }
        let (mut l, mut h) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        for &v in &row[body..] {
            l = if v < l { v } else { l };
            h = if v > h { v } else { h };
        }
        (l, h)
    };
    let range = hi - lo;
    let scale = if range > 0.0 && range.is_finite() { range / 255.0 } else { 1.0 };
    let inv = 1.0 / scale;
    let (vlo, vinv, zero) = (_mm512_set1_ps(lo), _mm512_set1_ps(inv), _mm512_setzero_si512());
    for i in (0..body).step_by(16) {
        // SAFETY: 16 floats of `row` and 16 bytes of `q` at i < body ≤ q.len().
        unsafe {
            let v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row.as_ptr().add(i)), vlo), vinv);
            let x = _mm512_max_epi32(_mm512_cvtps_epi32(v), zero);
            _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), _mm512_cvtusepi32_epi8(x));
        }
    }
    for (o, &v) in q[body..n].iter_mut().zip(&row[body..]) {
        *o = ((v - lo) * inv).round_ties_even() as u8;
    }
    (scale, lo)
}

/// Quantises `a`'s `m` rows, each multiplied channel by channel by `inv_smooth` first if
/// given (in a row-sized scratch buffer, so the input is read once); the buffer holds
/// `padded` ≥ `m` rows (the rest zero), for kernels that read whole blocks.
fn quantise_rows(
    a: &[f32],
    (m, k, kq, padded): (usize, usize, usize, usize),
    inv_smooth: Option<&[f32]>,
    dot: Dot,
) -> Rows {
    let mut q = vec![0u8; padded * kq];
    let one = |scratch: &mut Vec<f32>, (row, q): (&[f32], &mut [u8])| {
        let row = match inv_smooth {
            Some(inv) => {
                scratch.clear();
                scratch.extend(row.iter().zip(inv).map(|(v, s)| v * s));
                &scratch[..]
            }
            None => row,
        };
        match dot {
            // SAFETY: `Dot::Amx` and `Dot::Avx512` reach here only from a packed weight, which
            // exists only where the CPU has FEATURES (AVX-512F and BW among them).
            #[cfg(target_arch = "x86_64")]
            Dot::Amx | Dot::Avx512 => unsafe { quantise_row_avx512(row, q) },
            _ => quantise_row(row, q),
        }
    };
    let params: Vec<(f32, f32)> = if m * k >= PAR_MIN {
        a.par_chunks(k).zip(q[..m * kq].par_chunks_mut(kq)).map_init(Vec::new, one).collect()
    } else {
        let mut scratch = Vec::new();
        a.chunks(k).zip(q.chunks_mut(kq)).map(|x| one(&mut scratch, x)).collect()
    };
    let (scale, min) = params.into_iter().unzip();
    Rows { q, scale, min }
}

impl Int8Weight {
    /// `w` (`[n, k]`, row-major) quantised per output channel for `dot`. A shape the packed
    /// kernels do not cover (`n` not a multiple of 32) gets the portable form, one AMX does not
    /// (`k` not a multiple of 64) the AVX-512 kernel. Panics when the CPU lacks what `dot`
    /// needs.
    pub(crate) fn new(w: &[f32], n: usize, k: usize, dot: Dot) -> Self {
        Self::build(w, n, k, dot, None)
    }

    /// As [`Self::new`] for inputs whose channel `j` runs at about `smooth[j]`: the weight's
    /// column `j` is multiplied by it and each input divided by it before quantising.
    /// The input channels `outliers` (none, or a few) are summed in fp32 ([`Outliers`]).
    pub(crate) fn split(w: &[f32], n: usize, k: usize, dot: Dot, smooth: &[f32], outliers: &[usize]) -> Self {
        assert_eq!(smooth.len(), k);
        assert_eq!(w.len(), n * k);
        let mut inv: Vec<f32> = smooth.iter().map(|s| 1.0 / s).collect();
        let mut scaled: Vec<f32> = w.chunks(k).flat_map(|row| row.iter().zip(smooth).map(|(v, s)| v * s)).collect();
        let outliers = (!outliers.is_empty()).then(|| {
            let mut columns = Vec::with_capacity(outliers.len() * n);
            for &j in outliers {
                assert!(j < k, "outlier channel {j} of {k}");
                columns.extend((0..n).map(|c| w[c * k + j]));
                inv[j] = 0.0;
                for c in 0..n {
                    scaled[c * k + j] = 0.0;
                }
            }
            Outliers { channels: outliers.to_vec(), columns }
        });
        let mut built = Self::build(&scaled, n, k, dot, Some(inv));
        built.outliers = outliers;
        built
    }

    fn build(w: &[f32], n: usize, k: usize, dot: Dot, inv_smooth: Option<Vec<f32>>) -> Self {
        assert_eq!(w.len(), n * k);
        let kq = k.div_ceil(4) * 4;
        let mut rows = vec![0i8; n * kq];
        let (mut scale, mut colsum) = (vec![0f32; n], vec![0f32; n]);
        for c in 0..n {
            let row = &w[c * k..(c + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 && max.is_finite() { max / 127.0 } else { 1.0 };
            let mut sum = 0i32;
            for (o, &v) in rows[c * kq..c * kq + k].iter_mut().zip(row) {
                *o = (v / s).round().clamp(-127.0, 127.0) as i8;
                sum += *o as i32;
            }
            (scale[c], colsum[c]) = (s, sum as f32);
        }
        let form = if dot != Dot::Portable && n.is_multiple_of(NR) && k > 0 {
            let amx = dot == Dot::Amx && kq.is_multiple_of(64);
            let missing = if amx { amx_missing() } else { missing() };
            assert!(missing.is_empty(), "the int8 kernel needs {}, which this CPU lacks", missing.join(", "));
            let mut panels = vec![0i8; n * kq];
            for p in 0..n / NR {
                for g in 0..kq / 4 {
                    for c in 0..NR {
                        for j in 0..4 {
                            panels[((p * (kq / 4) + g) * NR + c) * 4 + j] = rows[(p * NR + c) * kq + g * 4 + j];
                        }
                    }
                }
            }
            Form::Panels { panels, amx }
        } else {
            Form::Portable { rows }
        };
        Self { n, k, kq, scale, colsum, form, inv_smooth, outliers: None }
    }

    pub(crate) fn bytes(&self) -> usize {
        let data = match &self.form {
            Form::Panels { panels, .. } => panels.len(),
            Form::Portable { rows } => rows.len(),
        };
        let outliers = self.outliers.as_ref().map_or(0, |o| 4 * o.columns.len());
        data + 4 * (self.scale.len() + self.colsum.len()) + outliers
    }

    /// `dst[m, n] += a[m, k]` (the outlier channels alone) `· Wᵀ`, in fp32: a handful of
    /// channels, so one run of `n` multiply-adds per row and channel (which vectorises).
    fn acc_outliers(&self, dst: &mut [f32], a: &[f32], m: usize) {
        let Some(o) = &self.outliers else { return };
        let (n, k) = (self.n, self.k);
        let one = |(row, out): (&[f32], &mut [f32])| {
            for (&j, col) in o.channels.iter().zip(o.columns.chunks_exact(n)) {
                let x = row[j];
                if x != 0.0 {
                    for (d, w) in out.iter_mut().zip(col) {
                        *d += x * w;
                    }
                }
            }
        };
        if m * n * o.channels.len() >= 1 << 18 {
            a.par_chunks(k).zip(dst.par_chunks_mut(n)).for_each(one);
        } else {
            a.chunks(k).zip(dst.chunks_mut(n)).for_each(one);
        }
    }

    /// `dst[m, n] += a[m, k] · Wᵀ`, both quantised.
    pub(crate) fn acc(&self, dst: &mut [f32], a: &[f32], m: usize) {
        let (n, k, kq) = (self.n, self.k, self.kq);
        assert_eq!(dst.len(), m * n);
        assert_eq!(a.len(), m * k);
        if m == 0 {
            return;
        }
        let (dot, padded) = match self.form {
            Form::Panels { amx: true, .. } => (Dot::Amx, m.next_multiple_of(super::amx::ROWS)),
            Form::Panels { amx: false, .. } => (Dot::Avx512, m),
            Form::Portable { .. } => (Dot::Portable, m),
        };
        let rows = quantise_rows(a, (m, k, kq, padded), self.inv_smooth.as_deref(), dot);
        self.acc_outliers(dst, a, m);
        match &self.form {
            Form::Portable { rows: w } => {
                let one = |(r, out): (usize, &mut [f32])| {
                    let qa = &rows.q[r * kq..(r + 1) * kq];
                    for (c, o) in out.iter_mut().enumerate() {
                        let qw = &w[c * kq..(c + 1) * kq];
                        let dot: i32 = qa.iter().zip(qw).map(|(&x, &y)| x as i32 * y as i32).sum();
                        *o = dequantise(dot, rows.scale[r], rows.min[r], self.scale[c], self.colsum[c], *o);
                    }
                };
                if m * n * k >= 1 << 18 {
                    dst.par_chunks_mut(n).enumerate().for_each(one);
                } else {
                    dst.chunks_mut(n).enumerate().for_each(one);
                }
            }
            Form::Panels { panels, amx: true } => {
                let out = SharedMut(dst.as_mut_ptr());
                for_each_tile(m, (super::amx::ROWS, super::amx::BLOCK), n / NR, m * n * k, |r, count, p| {
                    let panel = &panels[p * kq * NR..(p + 1) * kq * NR];
                    let mut sums = [0i32; 1024];
                    // SAFETY: the AMX form exists only where AMX runs (`new`); the quantised
                    // buffer holds `padded` rows, a multiple of 32, so rows r..r+32 (r a
                    // multiple of 32) are readable, kq (a multiple of 64) bytes each; the
                    // panel holds kq/4 rows of 128 bytes. The epilogue writes rows r..r+count
                    // and columns p*NR..p*NR+NR of dst, this tile's alone.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        super::amx::int8_block(
                            rows.q.as_ptr().add(r * kq),
                            kq,
                            panel.as_ptr().cast(),
                            kq / 64,
                            &mut sums,
                        );
                        let d = out.get().add(r * n + p * NR);
                        let channels = (&self.scale[p * NR..(p + 1) * NR], &self.colsum[p * NR..(p + 1) * NR]);
                        dequantise_block(
                            &sums,
                            count,
                            d,
                            n,
                            (&rows.scale[r..r + count], &rows.min[r..r + count]),
                            channels,
                        );
                    }
                });
            }
            Form::Panels { panels, amx: false } => {
                let out = SharedMut(dst.as_mut_ptr());
                for_each_tile(m, (MR, MB), n / NR, m * n * k, |r, count, p| {
                    let panel = &panels[p * kq * NR..(p + 1) * kq * NR];
                    // SAFETY: rows r..r+count and columns p*NR..p*NR+NR of dst are inside it
                    // and written by this tile only (`for_each_tile` visits each once, panels
                    // split between threads); the quantised rows r..r+count hold kq bytes
                    // each and their parameters `count` floats; the panel holds kq*NR bytes;
                    // the channel parameters from p*NR hold NR floats; the packed form exists
                    // only where the CPU has FEATURES (`new`).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let tile = Tile {
                            dst: out.get().add(r * n + p * NR),
                            ldd: n,
                            a: rows.q.as_ptr().add(r * kq),
                            kq,
                            b: panel.as_ptr(),
                            row_scale: rows.scale.as_ptr().add(r),
                            row_min: rows.min.as_ptr().add(r),
                            scale: self.scale.as_ptr().add(p * NR),
                            colsum: self.colsum.as_ptr().add(p * NR),
                        };
                        by_rows!(count, kernel(&tile))
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
            Form::Portable { .. } => Dot::Portable,
        }
    }
}

/// `dst + s_w · (s_a · dot + min_a · Σq_w)`, in the order (and with the fused multiply-adds) of
/// the native kernel's epilogue.
#[inline]
fn dequantise(dot: i32, row_scale: f32, row_min: f32, scale: f32, colsum: f32, dst: f32) -> f32 {
    (dot as f32).mul_add(row_scale, row_min * colsum).mul_add(scale, dst)
}

/// Dequantises an AMX block's int32 sums (`sums[32][32]`) into `rows` rows of `dst` (`ldd`
/// apart), with the rows' `(scale, min)` and the channels' `(scale, colsum)`.
///
/// # Safety
/// The CPU has AVX-512F; `dst` points at `rows` rows of 32 writable floats `ldd` apart that no
/// one else accesses meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn dequantise_block(
    sums: &[i32; 1024],
    rows: usize,
    dst: *mut f32,
    ldd: usize,
    (row_scale, row_min): (&[f32], &[f32]),
    (scale, colsum): (&[f32], &[f32]),
) {
    use std::arch::x86_64::*;
    // SAFETY: the channel slices hold NR = 32 floats, `sums` 32 rows of 32; dst rows i < rows,
    // 32 floats each, as the caller vouches. The arithmetic is `dequantise`'s, fused alike.
    unsafe {
        let (s0, s1) = (_mm512_loadu_ps(scale.as_ptr()), _mm512_loadu_ps(scale.as_ptr().add(16)));
        let (c0, c1) = (_mm512_loadu_ps(colsum.as_ptr()), _mm512_loadu_ps(colsum.as_ptr().add(16)));
        for i in 0..rows {
            let (rs, rm) = (_mm512_set1_ps(row_scale[i]), _mm512_set1_ps(row_min[i]));
            let d = dst.add(i * ldd);
            let a0 = _mm512_cvtepi32_ps(_mm512_loadu_si512(sums.as_ptr().add(i * NR).cast()));
            let a1 = _mm512_cvtepi32_ps(_mm512_loadu_si512(sums.as_ptr().add(i * NR + 16).cast()));
            let v0 = _mm512_fmadd_ps(a0, rs, _mm512_mul_ps(rm, c0));
            let v1 = _mm512_fmadd_ps(a1, rs, _mm512_mul_ps(rm, c1));
            _mm512_storeu_ps(d, _mm512_fmadd_ps(v0, s0, _mm512_loadu_ps(d)));
            _mm512_storeu_ps(d.add(16), _mm512_fmadd_ps(v1, s1, _mm512_loadu_ps(d.add(16))));
        }
    }
}

/// What one AVX-512 tile reads and writes.
#[cfg(target_arch = "x86_64")]
struct Tile {
    dst: *mut f32,
    ldd: usize,
    a: *const u8,
    kq: usize,
    b: *const i8,
    row_scale: *const f32,
    row_min: *const f32,
    scale: *const f32,
    colsum: *const f32,
}

/// One `R`×32 tile: int32 sums of `a[R, kq] · b`, four u8×s8 products per lane and
/// instruction, then dequantised into `dst`.
///
/// # Safety
/// The CPU has [`FEATURES`]; `t.dst` points at `R` rows of 32 writable floats `t.ldd` apart
/// that no one else accesses meanwhile; `t.a` at `R` rows of `t.kq` bytes, `t.kq` apart; `t.b`
/// at a panel of `t.kq * 32` bytes; `t.row_scale` and `t.row_min` at `R` floats; `t.scale` and
/// `t.colsum` at 32 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_si512(); R];
    let mut acc1 = [_mm512_setzero_si512(); R];
    // SAFETY: every load and store stays inside what the caller vouches for: a rows i < R,
    // bytes g*4..g*4+4 for g < kq/4 (read unaligned); b bytes g*128..g*128+128; the per-row
    // and per-channel parameters; dst rows i < R, floats 0..32 of each.
    unsafe {
        for g in 0..t.kq / 4 {
            let b0 = _mm512_loadu_si512(t.b.add(g * 4 * NR).cast());
            let b1 = _mm512_loadu_si512(t.b.add(g * 4 * NR + 64).cast());
            for i in 0..R {
                let x = _mm512_set1_epi32(t.a.add(i * t.kq + g * 4).cast::<i32>().read_unaligned());
                acc0[i] = _mm512_dpbusd_epi32(acc0[i], x, b0);
                acc1[i] = _mm512_dpbusd_epi32(acc1[i], x, b1);
            }
        }
        let (s0, s1) = (_mm512_loadu_ps(t.scale), _mm512_loadu_ps(t.scale.add(16)));
        let (c0, c1) = (_mm512_loadu_ps(t.colsum), _mm512_loadu_ps(t.colsum.add(16)));
        for i in 0..R {
            let rs = _mm512_set1_ps(*t.row_scale.add(i));
            let rm = _mm512_set1_ps(*t.row_min.add(i));
            let d = t.dst.add(i * t.ldd);
            let v0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc0[i]), rs, _mm512_mul_ps(rm, c0));
            let v1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc1[i]), rs, _mm512_mul_ps(rm, c1));
            _mm512_storeu_ps(d, _mm512_fmadd_ps(v0, s0, _mm512_loadu_ps(d)));
            _mm512_storeu_ps(d.add(16), _mm512_fmadd_ps(v1, s1, _mm512_loadu_ps(d.add(16))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::dense::tests::{data, naive, ROWS};
    use super::*;

    /// The path of this process (`STANCE_INT8`, or the best the CPU runs) against the
    /// quantisation's own arithmetic in f64 (tight) and against the unquantised product (within
    /// the quantisation error), on every tile remainder and a `k` that is not a multiple of 4.
    #[test]
    fn int8_matches_its_quantised_arithmetic() {
        let paths = super::super::cpu::paths().unwrap_or_else(|e| panic!("{e}"));
        println!("int8 path: {:?}", paths.int8);
        for (n, k) in [(64, 40), (32, 37), (48, 16), (64, 128)] {
            let w = data(n * k, 7919, 23);
            let dense = Int8Weight::new(&w, n, k, paths.int8);
            let want = match paths.int8 {
                _ if n % 32 != 0 => Dot::Portable,
                Dot::Amx if !dense.kq.is_multiple_of(64) => Dot::Avx512,
                d => d,
            };
            assert_eq!(dense.kernel(), want, "n={n} k={k}");
            for m in ROWS {
                let a = data(m * k, 104729, 31);
                let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
                let mut got = init.clone();
                dense.acc(&mut got, &a, m);
                let rows = quantise_rows(&a, (m, k, dense.kq, m), None, Dot::Portable);
                let exact = naive(&init, &a, &w, m, n, k);
                for r in 0..m {
                    for c in 0..n {
                        let i = r * n + c;
                        let (sa, ma, sw) = (rows.scale[r] as f64, rows.min[r] as f64, dense.scale[c] as f64);
                        let qa = |j: usize| sa * rows.q[r * dense.kq + j] as f64 + ma;
                        let qw = |j: usize| sw * (w[c * k + j] as f64 / sw).round();
                        let want = init[i] as f64 + (0..k).map(|j| qa(j) * qw(j)).sum::<f64>();
                        assert!(
                            (got[i] as f64 - want).abs() < 1e-4,
                            "n={n} k={k} m={m} ({r},{c}): {} vs {want}",
                            got[i]
                        );
                        // Inputs in [-0.5, 0.5) round by at most 1/510, weights by 1/254.
                        let bound = k as f64 * (0.5 / 510.0 + 0.5 / 254.0 + 1.0 / (510.0 * 254.0));
                        assert!((got[i] as f64 - exact[i]).abs() < bound, "({r},{c}) off the exact product");
                    }
                }
            }
        }
    }

    /// Every quantisation this CPU runs gives the bytes and parameters of the definition
    /// (min/max per row, 255 steps, ties to even), tails included.
    #[test]
    fn every_quantisation_gives_the_defined_bytes() {
        let mut dots = vec![Dot::Portable];
        if missing().is_empty() {
            dots.push(Dot::Avx512);
        }
        for k in [1, 15, 16, 37, 768] {
            let mut a = data(7 * k, 104729, 97);
            a[3] = -3.25;
            a[k.min(5)] = 1e-3;
            for &dot in &dots {
                let got = quantise_rows(&a, (7, k, k, 7), None, dot);
                for (r, row) in a.chunks(k).enumerate() {
                    let lo = row.iter().cloned().fold(f32::INFINITY, f32::min);
                    let hi = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                    assert_eq!((got.scale[r], got.min[r]), (scale, lo), "{dot:?} k={k} row {r}");
                    for (j, &v) in row.iter().enumerate() {
                        let want = ((v - lo) * (1.0 / scale)).round_ties_even() as u8;
                        assert_eq!(got.q[r * k + j], want, "{dot:?} k={k} ({r},{j})");
                    }
                }
            }
        }
    }

    /// A smoothed weight computes the same product (within its quantisation error), on the
    /// path of this process, with channel scales far apart.
    #[test]
    fn smoothing_keeps_the_product() {
        let paths = super::super::cpu::paths().unwrap_or_else(|e| panic!("{e}"));
        let (n, k, m) = (64, 128, 40);
        let smooth: Vec<f32> = (0..k).map(|j| if j % 7 == 0 { 20.0 } else { 0.5 }).collect();
        let w = data(n * k, 7919, 23);
        let a: Vec<f32> = data(m * k, 104729, 31).iter().enumerate().map(|(i, v)| v * smooth[i % k]).collect();
        let dense = Int8Weight::split(&w, n, k, paths.int8, &smooth, &[]);
        let mut got = vec![0f32; m * n];
        dense.acc(&mut got, &a, m);
        let exact = naive(&vec![0f32; m * n], &a, &w, m, n, k);
        for (g, e) in got.iter().zip(&exact) {
            // Smoothed inputs lie in [-0.5, 0.5) and smoothed weights in [-10, 10].
            assert!((*g as f64 - e).abs() < k as f64 * (10.0 / 510.0 + 0.5 * 10.0 / 254.0), "{g} vs {e}");
        }
    }

    /// Outlier channels far past the rest: left in, they take each row's 8-bit range and the
    /// product is off by far more than the rest's quantisation error; split off, it is back
    /// within it, on the path of this process and the portable form, every tile remainder.
    #[test]
    fn split_outlier_channels_keep_the_rest_resolved() {
        let paths = super::super::cpu::paths().unwrap_or_else(|e| panic!("{e}"));
        let (n, k) = (64, 96);
        let outliers = [5, 40, 41, 95];
        let w = data(n * k, 7919, 23);
        let ones = vec![1.0; k];
        for dot in [paths.int8, Dot::Portable] {
            let split = Int8Weight::split(&w, n, k, dot, &ones, &outliers);
            let whole = Int8Weight::split(&w, n, k, dot, &ones, &[]);
            assert_eq!(split.kernel(), whole.kernel());
            assert!(split.bytes() > whole.bytes(), "the fp32 columns are counted");
            for m in ROWS {
                let mut a = data(m * k, 104729, 31);
                for r in 0..m {
                    for (i, &j) in outliers.iter().enumerate() {
                        a[r * k + j] = if (r + i) % 3 == 0 { -300.0 } else { 500.0 + r as f32 };
                    }
                }
                let init: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
                let exact = naive(&init, &a, &w, m, n, k);
                let (mut got, mut coarse) = (init.clone(), init.clone());
                split.acc(&mut got, &a, m);
                whole.acc(&mut coarse, &a, m);
                // The rest lie in [-0.5, 0.5): rounded by at most 1/510, weights by 1/254.
                let bound = k as f64 * (0.5 / 510.0 + 0.5 / 254.0 + 1.0 / (510.0 * 254.0)) + 1e-3;
                let worst = |v: &[f32]| v.iter().zip(&exact).map(|(g, e)| (*g as f64 - e).abs()).fold(0.0, f64::max);
                assert!(worst(&got) < bound, "{dot:?} m={m}: split off by {} (bound {bound})", worst(&got));
                assert!(worst(&coarse) > 4.0 * bound, "{dot:?} m={m}: the test's outliers do not matter");
            }
        }
    }

    #[test]
    fn constant_and_zero_rows_quantise_exactly() {
        let rows = quantise_rows(&[0.25; 8], (1, 8, 8, 1), None, Dot::Portable);
        assert_eq!((rows.scale[0], rows.min[0]), (1.0, 0.25));
        assert!(rows.q.iter().all(|&q| q == 0));
        let w = Int8Weight::new(&[0.0; 32 * 4], 32, 4, Dot::Portable);
        let mut dst = vec![1.0; 32];
        w.acc(&mut dst, &[0.5, -0.5, 2.0, 3.0], 1);
        assert!(dst.iter().all(|&v| v == 1.0), "{dst:?}");
    }
}
