//! Bluezone sub-key chains, sixteen at a time: `subkey(i+1) = SHA256(subkey(i))`.
//!
//! A chain is dependent within a day but the chains of different (entry, day) pairs are not, so
//! sixteen of them run in lockstep. With AVX-512 each 32-bit word of the SHA-256 state and
//! message is one zmm register holding that word for all sixteen lanes: a round is the scalar
//! round with every operation sixteen wide (`vprord` for the rotations, `vpternlogd` for Ch, Maj
//! and the three-way XORs), and a step's digest *is* the next step's message words 0..7, so the
//! words never leave the registers between steps and need no transpose
//! (`shared/reviews/sha256-limit.md`: ≈ 20 ns a compression against ≈ 37 ns for SHA-NI).
//! Elsewhere the lanes go through [`compress_lanes`] (SHA-NI pairs, or the portable code).

use super::sha256x::{compress_lanes, pad32, IV};

/// Chains run together.
pub const LANES: usize = 16;

/// The 12 ID bytes of a sub-key (bytes 0,4,8,12,16,18,...,30), from its state words.
#[inline(always)]
pub fn id_of(s: &[u32; 8]) -> [u8; 12] {
    [
        (s[0] >> 24) as u8,
        (s[1] >> 24) as u8,
        (s[2] >> 24) as u8,
        (s[3] >> 24) as u8,
        (s[4] >> 24) as u8,
        (s[4] >> 8) as u8,
        (s[5] >> 24) as u8,
        (s[5] >> 8) as u8,
        (s[6] >> 24) as u8,
        (s[6] >> 8) as u8,
        (s[7] >> 24) as u8,
        (s[7] >> 8) as u8,
    ]
}

/// For each lane `l < first.len()` (at most [`LANES`]): `subkey(0)` is the hash of the block
/// `first[l]` (message words), and `ids[l]` is cleared and filled with the IDs of
/// `subkey(0..steps)`.
pub fn subkey_ids(first: &[[u32; 16]], steps: usize, ids: &mut [Vec<[u8; 12]>; LANES]) {
    let n = first.len().min(LANES);
    for v in ids.iter_mut() {
        v.clear();
    }
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512() {
        let mut words = [[0u32; LANES]; 16];
        for (l, m) in first.iter().take(n).enumerate() {
            for (w, &x) in m.iter().enumerate() {
                words[w][l] = x;
            }
        }
        for v in ids.iter_mut().take(n) {
            v.resize(steps, [0; 12]);
        }
        // SAFETY: the CPU has AVX-512F (checked by `cpu::avx512`).
        unsafe { avx512::chains(&words, steps, n, ids) };
        return;
    }
    let mut msgs = [[0u32; 16]; LANES];
    msgs[..n].copy_from_slice(&first[..n]);
    for _ in 0..steps {
        let mut states = [IV; LANES];
        compress_lanes(&mut states, &msgs);
        for l in 0..n {
            ids[l].push(id_of(&states[l]));
            msgs[l] = pad32(&states[l]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use super::LANES;
    use crate::matching::sha256x::IV;
    use crate::matching::sha256x16::compress;

    /// Sixteen chains; `words[w][l]` is message word `w` of lane `l`'s first block. Writes
    /// `ids[l][step]` for `l < n`, `step < steps` (each `ids[l]` already `steps` long).
    ///
    /// Everything is AVX-512 in one function, which LLVM ends with `vzeroupper`: the SHA-NI and
    /// `sha2` code that runs next (daily keys, HKDF) is legacy SSE, and a dirty upper state costs
    /// ≈ 500 cycles per switch on these machines (`shared/reviews/sha256-limit.md`).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains(
        words: &[[u32; LANES]; 16],
        steps: usize,
        n: usize,
        ids: &mut [Vec<[u8; 12]>; LANES],
    ) {
        let mut w = [_mm512_setzero_si512(); 16];
        for (v, src) in w.iter_mut().zip(words.iter()) {
            *v = _mm512_loadu_si512(src.as_ptr() as *const _);
        }
        let iv = IV.map(|x| _mm512_set1_epi32(x as i32));
        // Bytes 0,4,8,12 and 16,18,...,30 of the digest as three little-endian words per lane.
        let m8 = _mm512_set1_epi32(0xff00);
        let m16 = _mm512_set1_epi32(0xff_0000);
        let m24 = _mm512_set1_epi32(0xff00_0000u32 as i32);
        let mut out = [[0u32; LANES]; 3];
        for step in 0..steps {
            let s = compress(&iv, &w);
            let id0 = _mm512_or_si512(
                _mm512_or_si512(
                    _mm512_srli_epi32::<24>(s[0]),
                    _mm512_and_si512(_mm512_srli_epi32::<16>(s[1]), m8),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi32::<8>(s[2]), m16),
                    _mm512_and_si512(s[3], m24),
                ),
            );
            let pair = |a: __m512i, b: __m512i| {
                // (a >> 24) | (a & 0xff00) | ((b >> 8) & 0xff0000) | ((b << 16) & 0xff000000)
                _mm512_or_si512(
                    _mm512_or_si512(_mm512_srli_epi32::<24>(a), _mm512_and_si512(a, m8)),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi32::<8>(b), m16),
                        _mm512_and_si512(_mm512_slli_epi32::<16>(b), m24),
                    ),
                )
            };
            let id1 = pair(s[4], s[5]);
            let id2 = pair(s[6], s[7]);
            _mm512_storeu_si512(out[0].as_mut_ptr() as *mut _, id0);
            _mm512_storeu_si512(out[1].as_mut_ptr() as *mut _, id1);
            _mm512_storeu_si512(out[2].as_mut_ptr() as *mut _, id2);
            for (l, v) in ids.iter_mut().take(n).enumerate() {
                let id = &mut v[step];
                id[..4].copy_from_slice(&out[0][l].to_le_bytes());
                id[4..8].copy_from_slice(&out[1][l].to_le_bytes());
                id[8..].copy_from_slice(&out[2][l].to_le_bytes());
            }
            // The digest, padded, is the next block: words 0..7 the digest, then the padding
            // of a 32-byte message.
            w[..8].copy_from_slice(&s);
            w[8] = _mm512_set1_epi32(0x8000_0000u32 as i32);
            for x in &mut w[9..15] {
                *x = _mm512_setzero_si512();
            }
            w[15] = _mm512_set1_epi32(256);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bluezone::first_subkey;
    use sha2::{Digest, Sha256};

    /// Every lane, for lane counts 1..=16, against the plain definition with `sha2`.
    #[test]
    fn chains_equal_repeated_sha256() {
        for n in [1usize, 3, 15, 16] {
            let keys: Vec<crate::DailyKey> = (0..n)
                .map(|l| {
                    crate::DailyKey::from_bytes([(l as u8).wrapping_mul(17).wrapping_add(1); 32])
                })
                .collect();
            let first: Vec<[u32; 16]> = keys
                .iter()
                .map(|k| crate::matching::bluezone::subkey0_block(k.as_bytes()))
                .collect();
            let mut ids: [Vec<[u8; 12]>; LANES] = Default::default();
            subkey_ids(&first, 100, &mut ids);
            for (l, k) in keys.iter().enumerate() {
                assert_eq!(ids[l].len(), 100);
                let mut sk = first_subkey(k);
                for (s, id) in ids[l].iter().enumerate() {
                    let want: Vec<u8> = crate::bluezone::ID_BYTE_POSITIONS
                        .iter()
                        .map(|&p| sk[p])
                        .collect();
                    assert_eq!(&id[..], &want[..], "n {n} lane {l} step {s}");
                    sk = Sha256::digest(sk).into();
                }
            }
            for v in &ids[n..] {
                assert!(v.is_empty());
            }
        }
    }
}
