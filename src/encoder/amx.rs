//! Intel AMX (Advanced Matrix Extensions) tiles for the int8 and bf16 dense layers.
//!
//! One `tdpbusd` (int8) or `tdpbf16ps` (bf16) multiplies a 16×64-byte tile of inputs by a
//! 16×64-byte tile of weights into 16×16 32-bit sums: 16,384 or 8,192 multiply-adds per
//! instruction, several times what AVX-512 does per cycle on the same core. The weights are
//! the AVX-512 kernels' panels unchanged (a tile of them is 16 rows of one panel, read at the
//! panel's 128-byte row stride), so a weight is packed once whichever kernel runs it.
//!
//! A block is 32 rows × one 32-column panel: four accumulator tiles (tmm0–3), two input tiles
//! (tmm4–5) and two weight tiles (tmm6–7), all 16 rows × 64 bytes, so one tile configuration
//! serves both kernels; each thread loads it once. Linux keeps the tile state off until a
//! process asks for it (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`usable`] does once. The
//! instructions are inline assembly: Rust has no stable AMX intrinsics.

/// Rows per block (two tiles of 16).
pub(crate) const ROWS: usize = 32;
/// Rows per row block of a product: the inputs of 256 rows (192 KB at k = 768 in int8, 768 KB
/// at k = 3072) stay in L2 while each weight panel streams past them once.
pub(crate) const BLOCK: usize = 256;

/// The CPU and kernel support AMX with `extra` (the `amx-int8` or `amx-bf16` CPUID bit), and
/// this process may use it. The first call asks Linux for the tile state.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn usable(extra_bit: u32) -> bool {
    use std::sync::OnceLock;
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU with AVX-512 and reads nothing else.
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    // AMX-TILE is EDX bit 24.
    if leaf7.edx & (1 << 24) == 0 || leaf7.edx & (1 << extra_bit) == 0 {
        return false;
    }
    *PERMITTED.get_or_init(|| {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes which state the kernel saves
        // for this process; it reads and writes no memory of ours.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    })
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn usable(_extra_bit: u32) -> bool {
    false
}

/// Whether the int8 tiles run here (AMX-TILE, AMX-INT8, and the kernel's permission).
pub(crate) fn int8_usable() -> bool {
    usable(25)
}

/// Whether the bf16 tiles run here (AMX-TILE, AMX-BF16, and the kernel's permission).
pub(crate) fn bf16_usable() -> bool {
    usable(22)
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;
    use std::cell::Cell;

    /// The tile configuration (`ldtilecfg`'s 64-byte operand): palette 1, tiles 0–7 of 16
    /// rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    static CONFIG: Config = {
        let mut c = Config { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        let mut t = 0;
        while t < 8 {
            c.colsb[t] = 64;
            c.rows[t] = 16;
            t += 1;
        }
        c
    };

    thread_local! {
        static CONFIGURED: Cell<bool> = const { Cell::new(false) };
    }

    /// Loads [`CONFIG`] on this thread, once.
    ///
    /// # Safety
    /// AMX is usable in this process ([`super::usable`]).
    unsafe fn configure() {
        if !CONFIGURED.get() {
            // SAFETY: CONFIG is a valid palette-1 configuration, 64-byte aligned; the caller
            // vouches for AMX.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
            CONFIGURED.set(true);
        }
    }

    /// One block's 32×32 sums, `c[32][32]` (row-major), over `steps` tile steps. Step `s`
    /// reads input bytes `s*64..s*64+64` of rows 0..32 (`lda` bytes apart) and weight panel
    /// rows `s*16..s*16+16` (128 bytes apart).
    macro_rules! block {
        ($name:ident, $op:literal, $acc:ty) => {
            /// # Safety
            /// AMX with this kernel's instruction is usable in this process; `a` points at 32
            /// readable rows of `steps * 64` bytes, `lda` bytes apart; `panel` at `steps * 16`
            /// readable rows of 128 bytes.
            pub(crate) unsafe fn $name(a: *const u8, lda: usize, panel: *const u8, steps: usize, c: &mut [$acc; 1024]) {
                // SAFETY: the caller vouches for AMX and for every byte the tile loads read
                // (rows of 64 bytes at the strides given); the stores write `c`'s 32 rows of
                // 128 bytes, tile by tile.
                unsafe {
                    configure();
                    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                    for s in 0..steps {
                        let (a0, b0) = (a.add(s * 64), panel.add(s * 16 * 128));
                        asm!(
                            "tileloadd tmm4, [{a0} + {lda}*1]",
                            "tileloadd tmm5, [{a1} + {lda}*1]",
                            "tileloadd tmm6, [{b0} + {ldb}*1]",
                            "tileloadd tmm7, [{b1} + {ldb}*1]",
                            concat!($op, " tmm0, tmm4, tmm6"),
                            concat!($op, " tmm1, tmm4, tmm7"),
                            concat!($op, " tmm2, tmm5, tmm6"),
                            concat!($op, " tmm3, tmm5, tmm7"),
                            a0 = in(reg) a0,
                            a1 = in(reg) a0.add(16 * lda),
                            b0 = in(reg) b0,
                            b1 = in(reg) b0.add(64),
                            lda = in(reg) lda,
                            ldb = in(reg) 128usize,
                            options(nostack, readonly),
                        );
                    }
                    let p = c.as_mut_ptr().cast::<u8>();
                    asm!(
                        "tilestored [{c0} + {ldc}*1], tmm0",
                        "tilestored [{c1} + {ldc}*1], tmm1",
                        "tilestored [{c2} + {ldc}*1], tmm2",
                        "tilestored [{c3} + {ldc}*1], tmm3",
                        c0 = in(reg) p,
                        c1 = in(reg) p.add(64),
                        c2 = in(reg) p.add(16 * 128),
                        c3 = in(reg) p.add(16 * 128 + 64),
                        ldc = in(reg) 128usize,
                        options(nostack),
                    );
                }
            }
        };
    }

    block!(int8_block, "tdpbusd", i32);
    block!(bf16_block, "tdpbf16ps", f32);
}

#[cfg(target_arch = "x86_64")]
pub(crate) use tiles::{bf16_block, int8_block};
