//! The 144 RPIs of a key: AES-128 over `"EN-RPI" || 0^6 || ENIN_j` for consecutive intervals.
//!
//! With AES-NI one block costs 10 `aesenc` at one per cycle, ≈ 0.6 µs a key on these 2.3 GHz
//! machines — more than the whole GAEN budget. Where the CPU has VAES with AVX-512 (these
//! machines do), one instruction runs a round on four blocks, so a key's 144 blocks take 36
//! vectors × 10 rounds; twelve vectors are kept in flight to cover the instruction latency.
//!
//! Elsewhere — x86-64 without VAES/AVX-512 (or with `BLUEZONED_FORCE_PORTABLE=1`, see
//! [`super::cpu`]) and every aarch64 machine, such as a Raspberry Pi 4 (NEON, no ARMv8 crypto
//! extensions) — `aes_bitslice` runs: a bitsliced AES-128 on eight blocks at once in eight
//! 128-bit registers (SSE2 or NEON, both baseline; one round logic generic over the two), its
//! key schedule computed once per key for the 18 batches of eight. It is constant-time like the
//! `aes` crate's software backend it replaces there (the floor it has to beat), and checked
//! against that crate by its tests. Other architectures keep the `aes` crate.
//!
//! These functions only ever see RPIKs derived from published diagnosis keys (the case lists),
//! never the device's own keys; being constant-time is not needed for them, but kept.

use crate::gaen::{Enin, TEK_ROLLING_PERIOD};

pub const MAX_RPIS: usize = TEK_ROLLING_PERIOD as usize;

/// Fills `out[..count]` with the RPIs for intervals `first, first+1, ...`; entries past `count`
/// are unspecified. `count` must be at most 144. Only used for the RPIKs of published
/// diagnosis keys (see the module doc).
pub fn rpi_blocks(rpik: &[u8; 16], first: Enin, count: usize, out: &mut [[u8; 16]; MAX_RPIS]) {
    let count = count.min(MAX_RPIS);
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::vaes512() {
            // SAFETY: the CPU has the features `vaes::encrypt` is compiled for (checked above).
            unsafe { vaes::encrypt(rpik, first.0, count, out) };
            return;
        }
        if super::cpu::aes_ni() {
            // AES-NI without VAES (most x86 CPUs before Ice Lake, AMD Zen 2/3): the `aes`
            // crate's hardware backend beats the bitsliced code several times over.
            aes_crate_blocks(rpik, first, count, out);
            return;
        }
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    super::aes_bitslice::rpi_blocks::<super::aes_bitslice::Native>(rpik, first, count, out);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    aes_crate_blocks(rpik, first, count, out);
}

/// The `aes` crate: AES-NI on x86-64 CPUs without VAES, and architectures without a bitsliced
/// implementation here.
#[cfg(not(target_arch = "aarch64"))]
fn aes_crate_blocks(rpik: &[u8; 16], first: Enin, count: usize, out: &mut [[u8; 16]; MAX_RPIS]) {
    use aes::cipher::{BlockEncrypt, KeyInit};
    let cipher = aes::Aes128Enc::new(rpik.into());
    // On the stack, not a `Vec` a key: this runs for every published key on that tier.
    let mut blocks = [aes::Block::default(); MAX_RPIS];
    for (j, b) in blocks[..count].iter_mut().enumerate() {
        *b = crate::gaen::padded_data(Enin(first.0.wrapping_add(j as u32))).into();
    }
    cipher.encrypt_blocks(&mut blocks[..count]);
    for (o, b) in out.iter_mut().zip(&blocks[..count]) {
        *o = (*b).into();
    }
}

/// [`rpi_blocks`] for up to four keys at once (`keys.len()` of them): their AES key schedules
/// are expanded together, four keys in one vector register, which hides the latency of the
/// sequential expansion steps.
pub fn rpi_blocks4(
    keys: &[[u8; 16]],
    first: &[Enin],
    count: &[usize],
    out: &mut [[[u8; 16]; MAX_RPIS]; 4],
) {
    let n = keys.len().min(4).min(first.len()).min(count.len());
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::vaes512() {
            let mut k = [[0u8; 16]; 4];
            k[..n].copy_from_slice(&keys[..n]);
            let mut f = [0u32; 4];
            let mut c = [0usize; 4];
            for i in 0..n {
                f[i] = first[i].0;
                c[i] = count[i].min(MAX_RPIS);
            }
            // SAFETY: the CPU has the features `vaes::encrypt4` is compiled for (checked above).
            unsafe { vaes::encrypt4(&k, n, &f, &c, out) };
            return;
        }
    }
    for i in 0..n {
        rpi_blocks(&keys[i], first[i], count[i], &mut out[i]);
    }
}

#[cfg(target_arch = "x86_64")]
mod vaes {
    use core::arch::x86_64::*;

    use super::MAX_RPIS;

    /// Four keys: the schedules are expanded side by side in the four 128-bit lanes of one
    /// register (`aesenclast` of the rotated last word broadcast in a lane is SubWord(RotWord)
    /// in every word: the standard AES-NI expansion trick), then each key's round keys are
    /// broadcast and its blocks run as in [`encrypt`].
    #[target_feature(enable = "aes,sse2,vaes,avx512f,avx512bw")]
    pub unsafe fn encrypt4(
        keys: &[[u8; 16]; 4],
        n: usize,
        first: &[u32; 4],
        count: &[usize; 4],
        out: &mut [[[u8; 16]; MAX_RPIS]; 4],
    ) {
        let rot = _mm512_broadcast_i32x4(_mm_setr_epi8(
            13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15, 12,
        ));
        macro_rules! next {
            ($k:expr, $rcon:expr) => {{
                let t = _mm512_aesenclast_epi128(
                    _mm512_shuffle_epi8($k, rot),
                    _mm512_set1_epi32($rcon),
                );
                let mut x = $k;
                x = _mm512_xor_si512(x, _mm512_bslli_epi128::<4>(x));
                x = _mm512_xor_si512(x, _mm512_bslli_epi128::<4>(x));
                x = _mm512_xor_si512(x, _mm512_bslli_epi128::<4>(x));
                _mm512_xor_si512(x, t)
            }};
        }
        let k0 = _mm512_loadu_si512(keys.as_ptr() as *const _);
        let k1 = next!(k0, 0x01);
        let k2 = next!(k1, 0x02);
        let k3 = next!(k2, 0x04);
        let k4 = next!(k3, 0x08);
        let k5 = next!(k4, 0x10);
        let k6 = next!(k5, 0x20);
        let k7 = next!(k6, 0x40);
        let k8 = next!(k7, 0x80);
        let k9 = next!(k8, 0x1b);
        let k10 = next!(k9, 0x36);
        let all = [k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10];
        macro_rules! lane {
            ($imm:literal) => {
                [
                    _mm512_shuffle_i32x4::<$imm>(all[0], all[0]),
                    _mm512_shuffle_i32x4::<$imm>(all[1], all[1]),
                    _mm512_shuffle_i32x4::<$imm>(all[2], all[2]),
                    _mm512_shuffle_i32x4::<$imm>(all[3], all[3]),
                    _mm512_shuffle_i32x4::<$imm>(all[4], all[4]),
                    _mm512_shuffle_i32x4::<$imm>(all[5], all[5]),
                    _mm512_shuffle_i32x4::<$imm>(all[6], all[6]),
                    _mm512_shuffle_i32x4::<$imm>(all[7], all[7]),
                    _mm512_shuffle_i32x4::<$imm>(all[8], all[8]),
                    _mm512_shuffle_i32x4::<$imm>(all[9], all[9]),
                    _mm512_shuffle_i32x4::<$imm>(all[10], all[10]),
                ]
            };
        }
        for (i, o) in out.iter_mut().enumerate().take(n.min(4)) {
            let rk = match i {
                0 => lane!(0x00),
                1 => lane!(0x55),
                2 => lane!(0xAA),
                _ => lane!(0xFF),
            };
            blocks(&rk, first[i], count[i], o);
        }
    }

    macro_rules! expand_round {
        ($prev:expr, $rcon:literal) => {{
            let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>($prev));
            let mut x = $prev;
            x = _mm_xor_si128(x, _mm_slli_si128::<4>(x));
            x = _mm_xor_si128(x, _mm_slli_si128::<4>(x));
            x = _mm_xor_si128(x, _mm_slli_si128::<4>(x));
            _mm_xor_si128(x, t)
        }};
    }

    #[target_feature(enable = "aes,sse2,vaes,avx512f")]
    pub unsafe fn encrypt(
        key: &[u8; 16],
        first: u32,
        count: usize,
        out: &mut [[u8; 16]; MAX_RPIS],
    ) {
        let k0 = _mm_loadu_si128(key.as_ptr() as *const __m128i);
        let k1 = expand_round!(k0, 0x01);
        let k2 = expand_round!(k1, 0x02);
        let k3 = expand_round!(k2, 0x04);
        let k4 = expand_round!(k3, 0x08);
        let k5 = expand_round!(k4, 0x10);
        let k6 = expand_round!(k5, 0x20);
        let k7 = expand_round!(k6, 0x40);
        let k8 = expand_round!(k7, 0x80);
        let k9 = expand_round!(k8, 0x1b);
        let k10 = expand_round!(k9, 0x36);
        // Written out: `array::map` with a closure is not inlined into this target-feature
        // function and cost a call per round key (seen in perf).
        let rk = [
            _mm512_broadcast_i32x4(k0),
            _mm512_broadcast_i32x4(k1),
            _mm512_broadcast_i32x4(k2),
            _mm512_broadcast_i32x4(k3),
            _mm512_broadcast_i32x4(k4),
            _mm512_broadcast_i32x4(k5),
            _mm512_broadcast_i32x4(k6),
            _mm512_broadcast_i32x4(k7),
            _mm512_broadcast_i32x4(k8),
            _mm512_broadcast_i32x4(k9),
            _mm512_broadcast_i32x4(k10),
        ];

        blocks(&rk, first, count, out);
    }

    /// Encrypts the padded data of `count` intervals from `first` under round keys broadcast
    /// to all four lanes: four consecutive blocks a vector, twelve vectors in flight.
    #[target_feature(enable = "aes,sse2,vaes,avx512f")]
    unsafe fn blocks(rk: &[__m512i; 11], first: u32, count: usize, out: &mut [[u8; 16]; MAX_RPIS]) {
        // "EN-RPI" || 0^6 as little-endian dwords, then the ENIN.
        let p0 = u32::from_le_bytes(*b"EN-R") as i32;
        let p1 = u32::from_le_bytes(*b"PI\0\0") as i32;
        let e = first as i32;
        let mut plain = _mm512_setr_epi32(
            p0,
            p1,
            0,
            e,
            p0,
            p1,
            0,
            e.wrapping_add(1),
            p0,
            p1,
            0,
            e.wrapping_add(2),
            p0,
            p1,
            0,
            e.wrapping_add(3),
        );
        let step = _mm512_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4);
        const IN_FLIGHT: usize = 12;
        let vectors = count.min(MAX_RPIS).div_ceil(4);
        let dst = out.as_mut_ptr() as *mut __m512i;
        // Full groups with constant bounds, so the twelve vectors live in registers through all
        // rounds (a variable bound kept them on the stack); then the remainder.
        let full = vectors / IN_FLIGHT;
        for grp in 0..full {
            let mut x = [_mm512_setzero_si512(); IN_FLIGHT];
            for xi in x.iter_mut() {
                *xi = _mm512_xor_si512(plain, rk[0]);
                plain = _mm512_add_epi32(plain, step);
            }
            for r in &rk[1..10] {
                for xi in x.iter_mut() {
                    *xi = _mm512_aesenc_epi128(*xi, *r);
                }
            }
            for (i, xi) in x.iter().enumerate() {
                // 36 vectors × 64 bytes = the 144 × 16 bytes of `out`; `grp * 12 + i < 36`.
                _mm512_storeu_si512(
                    dst.add(grp * IN_FLIGHT + i),
                    _mm512_aesenclast_epi128(*xi, rk[10]),
                );
            }
        }
        for v in full * IN_FLIGHT..vectors {
            let mut xi = _mm512_xor_si512(plain, rk[0]);
            plain = _mm512_add_epi32(plain, step);
            for r in &rk[1..10] {
                xi = _mm512_aesenc_epi128(xi, *r);
            }
            // `v < vectors ≤ 36`.
            _mm512_storeu_si512(dst.add(v), _mm512_aesenclast_epi128(xi, rk[10]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaen::{rpis, Rpik};
    use crate::Tek;

    #[test]
    fn four_at_once_equal_the_reference_schedule() {
        let counts = [144usize, 5, 114, 1];
        let teks: Vec<Tek> = (0..4u8)
            .map(|t| Tek::from_bytes([t * 31 + 7; 16]))
            .collect();
        let rpiks: Vec<Rpik> = teks.iter().map(Rpik::derive).collect();
        let keys: Vec<[u8; 16]> = rpiks.iter().map(|r| *r.as_bytes()).collect();
        let firsts: Vec<Enin> = (0..4u32).map(|i| Enin(2_649_000 + 144 * i + i)).collect();
        for n in 1..=4 {
            let mut out = [[[0u8; 16]; MAX_RPIS]; 4];
            rpi_blocks4(&keys[..n], &firsts[..n], &counts[..n], &mut out);
            for k in 0..n {
                let expected = rpis(&rpiks[k], firsts[k], counts[k] as u32);
                for j in 0..counts[k] {
                    assert_eq!(out[k][j], expected[j].0, "n {n} key {k} block {j}");
                }
            }
        }
    }

    #[test]
    fn equals_the_reference_schedule() {
        for (t, count) in [(1u8, 144usize), (2, 1), (3, 5), (4, 114), (5, 48)] {
            let rpik = Rpik::derive(&Tek::from_bytes([t; 16]));
            let first = Enin(2_649_866 + t as u32);
            let mut out = [[0u8; 16]; MAX_RPIS];
            rpi_blocks(rpik.as_bytes(), first, count, &mut out);
            let expected = rpis(&rpik, first, count as u32);
            for j in 0..count {
                assert_eq!(out[j], expected[j].0, "key {t} block {j}");
            }
        }
    }
}
