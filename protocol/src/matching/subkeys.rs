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

use super::index::FilterKey;
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

/// States kept from the chains, up to [`KEPT`] a lane: lane `l`'s state (its sub-key, as
/// SHA-256 state words) after step `at[k][l]` (0-based) goes to `states[k][l]`; where `at` is
/// not below the steps run, `states` keeps what it held. `pad32` of a state is the block that
/// continues its chain.
#[derive(Clone)]
pub struct Kept {
    pub at: [[u32; LANES]; KEPT],
    pub states: [[[u32; 8]; LANES]; KEPT],
}

/// States a lane can keep (one for each slot layout an F0 entry is matched under).
pub const KEPT: usize = 2;

impl Kept {
    /// Keeps nothing.
    pub fn none() -> Kept {
        Kept {
            at: [[u32::MAX; LANES]; KEPT],
            states: [[[0; 8]; LANES]; KEPT],
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.states);
    }
}

/// For each lane `l < first.len()` (at most [`LANES`]): `subkey(0)` is the hash of the block
/// `first[l]` (message words), and `ids[l]` is cleared and filled with the IDs of
/// `subkey(0..steps)`; `kept` as [`Kept`] says.
pub fn subkey_ids(
    first: &[[u32; 16]],
    steps: usize,
    ids: &mut [Vec<[u8; 12]>; LANES],
    kept: &mut Kept,
) {
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
        let mut states = transpose_kept(kept);
        // SAFETY: the CPU has AVX-512F (checked by `cpu::avx512`).
        unsafe { avx512::chains(&words, steps, n, ids, (&kept.at, &mut states)) };
        untranspose_kept(&states, n, kept);
        return;
    }
    let mut msgs = [[0u32; 16]; LANES];
    msgs[..n].copy_from_slice(&first[..n]);
    for step in 0..steps {
        let mut states = [IV; LANES];
        compress_lanes(&mut states, &msgs);
        for l in 0..n {
            ids[l].push(id_of(&states[l]));
            msgs[l] = pad32(&states[l]);
            for k in 0..KEPT {
                if kept.at[k][l] as usize == step {
                    kept.states[k][l] = states[l];
                }
            }
        }
    }
}

/// `kept`'s states word-major (`[k][w][l]`), as the AVX-512 kernels hold them.
#[cfg(target_arch = "x86_64")]
type KeptWords = [[[u32; LANES]; 8]; KEPT];

#[cfg(target_arch = "x86_64")]
fn transpose_kept(kept: &Kept) -> KeptWords {
    std::array::from_fn(|k| std::array::from_fn(|w| std::array::from_fn(|l| kept.states[k][l][w])))
}

/// Back from [`transpose_kept`]'s form, for the first `n` lanes.
#[cfg(target_arch = "x86_64")]
fn untranspose_kept(states: &KeptWords, n: usize, kept: &mut Kept) {
    for (k, lanes) in kept.states.iter_mut().enumerate() {
        for (l, e) in lanes.iter_mut().enumerate().take(n) {
            for (w, x) in e.iter_mut().enumerate() {
                *x = states[k][w][l];
            }
        }
    }
}

/// Per step of sixteen chains: each lane's ID as three little-endian words (`words[w][lane]`,
/// the ID's bytes `4w..4w+4`), and the lanes whose ID passed the index's filter.
#[derive(Clone, Copy, Default)]
pub struct ProbedStep {
    pub words: [[u32; LANES]; 3],
    pub pass: u16,
}

impl ProbedStep {
    /// Lane `l`'s ID bytes.
    #[inline]
    pub fn id(&self, l: usize) -> [u8; 12] {
        let mut id = [0u8; 12];
        for (c, w) in id.chunks_exact_mut(4).zip(self.words.iter()) {
            c.copy_from_slice(&w[l].to_le_bytes());
        }
        id
    }
}

/// The AVX-512 form of [`subkey_ids`] followed by the index's first probe: the chains of
/// `first` (at most [`LANES`]) for `steps` steps, each step's sixteen IDs checked against the
/// filter (`filter`, `key`: [`IdTable::filter`](super::index::IdTable::filter)) in the same
/// registers, the filter words read with scalar loads. `out` is cleared and gets one entry a step;
/// lanes past `first.len()` are never marked; `kept` as [`subkey_ids`]. `None` (nothing
/// done) without AVX-512.
pub fn subkey_ids_filtered(
    first: &[[u32; 16]],
    steps: usize,
    filter: &[u64],
    key: FilterKey,
    out: &mut Vec<ProbedStep>,
    kept: &mut Kept,
) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512() && key.words == filter.len() && !filter.is_empty() {
        let n = first.len().min(LANES);
        let mut words = [[0u32; LANES]; 16];
        for (l, m) in first.iter().take(n).enumerate() {
            for (w, &x) in m.iter().enumerate() {
                words[w][l] = x;
            }
        }
        out.clear();
        out.resize(steps, ProbedStep::default());
        let valid = if n == LANES {
            u16::MAX
        } else {
            (1u16 << n) - 1
        };
        let mut states = transpose_kept(kept);
        let k = (&kept.at, &mut states);
        // SAFETY: the CPU has AVX-512F and DQ (`cpu::avx512`); `key.words == filter.len()`,
        // so every filter word index (`< key.words`) is inside `filter`.
        unsafe { avx512::chains_filtered(&words, steps, filter, key, valid, out, k) };
        untranspose_kept(&states, n, kept);
        return Some(());
    }
    let _ = (first, steps, filter, key, out, kept);
    None
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use super::{KeptWords, ProbedStep, KEPT, LANES};
    use crate::matching::index::FilterKey;
    use crate::matching::sha256x::IV;
    use crate::matching::sha256x::K;
    use crate::matching::sha256x16::{compress, compress16_body};

    /// Stores the lanes of state `s` whose `at` is `step` into `kept` (word-major). A macro,
    /// so that it is compiled inside each kernel's target features.
    macro_rules! keep {
        ($step:expr, $at:expr, $s:expr, $kept:expr) => {{
            let step = _mm512_set1_epi32($step as i32);
            for (at, kept) in $at.iter().zip($kept.iter_mut()) {
                let m = _mm512_cmpeq_epi32_mask(step, *at);
                if m != 0 {
                    for (dst, v) in kept.iter_mut().zip($s.iter()) {
                        _mm512_mask_storeu_epi32(dst.as_mut_ptr() as *mut _, m, *v);
                    }
                }
            }
        }};
    }

    /// Sixteen chains; `words[w][l]` is message word `w` of lane `l`'s first block. Writes
    /// `ids[l][step]` for `l < n`, `step < steps` (each `ids[l]` already `steps` long), and
    /// lane `l`'s state words after step `at[k][l]` to `kept[k][w][l]` ([`super::Kept`]).
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
        (at, kept): (&[[u32; LANES]; KEPT], &mut KeptWords),
    ) {
        let at = at.map(|a| _mm512_loadu_si512(a.as_ptr() as *const _));
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
            keep!(step, at, s, kept);
        }
    }

    /// [`chains`] with the filter probe in place of the scatter: per step the three ID
    /// vectors are stored as they are, and the filter hash
    /// ([`filter_hash`](crate::matching::index::filter_hash) and
    /// [`filter_slot`](crate::matching::index::filter_slot), the same arithmetic on even and
    /// odd lanes as 64-bit halves) selects sixteen filter words, read with scalar loads. Ends with
    /// `vzeroupper` like [`chains`], and keeps states like it.
    ///
    /// # Safety
    /// AVX-512F and DQ; `key.words == filter.len()`; `out.len() == steps`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn chains_filtered(
        words: &[[u32; LANES]; 16],
        steps: usize,
        filter: &[u64],
        key: FilterKey,
        valid: u16,
        out: &mut [ProbedStep],
        (at, kept): (&[[u32; LANES]; KEPT], &mut KeptWords),
    ) {
        let at = at.map(|a| _mm512_loadu_si512(a.as_ptr() as *const _));
        let mut w = [_mm512_setzero_si512(); 16];
        for (v, src) in w.iter_mut().zip(words.iter()) {
            *v = _mm512_loadu_si512(src.as_ptr() as *const _);
        }
        let iv = IV.map(|x| _mm512_set1_epi32(x as i32));
        let m8 = _mm512_set1_epi32(0xff00);
        let m16 = _mm512_set1_epi32(0xff_0000);
        let m24 = _mm512_set1_epi32(0xff00_0000u32 as i32);
        let k0 = _mm512_set1_epi32(key.k[0] as i32);
        let k1 = _mm512_set1_epi32(key.k[1] as i32);
        let k2 = _mm512_set1_epi32(key.k[2] as i32);
        // The fourth word of a 12-byte ID is 0, so `w3 ^ k3` is `k3` in every lane.
        let k3 = _mm512_set1_epi64(key.k[3] as i64);
        let fmul = _mm512_set1_epi64(0xD6E8_FEB8_6659_FD93u64 as i64);
        let nwords = _mm512_set1_epi64(key.words as i64);
        let one = _mm512_set1_epi64(1);
        let six = _mm512_set1_epi64(63);
        let base = filter.as_ptr();
        // Lanes 2i (even) and 2i+1 (odd) as the low and high halves of 64-bit lane i: the
        // filter hash and word index of one half.
        let slot = |x0: __m512i, x1: __m512i, x2: __m512i| -> (__m512i, __m512i) {
            let a = _mm512_mul_epu32(x0, x1);
            let b = _mm512_mul_epu32(x2, k3);
            let h = _mm512_add_epi64(a, b);
            let h = _mm512_mullo_epi64(_mm512_xor_si512(h, _mm512_srli_epi64::<32>(h)), fmul);
            let idx = _mm512_srli_epi64::<32>(_mm512_mul_epu32(_mm512_srli_epi64::<32>(h), nwords));
            (h, idx)
        };
        // Whether each lane's filter word holds all its bits. The words are read with scalar
        // loads, not `vpgatherqq`: with the Gather Data Sampling mitigation a gather costs far
        // more than eight loads, and it was the hot spot of this loop in perf.
        let test = |h: __m512i, idx: __m512i| -> u8 {
            let mut i = [0u64; 8];
            _mm512_storeu_si512(i.as_mut_ptr() as *mut _, idx);
            let words = i.map(|x| *base.add(x as usize));
            let f = _mm512_loadu_si512(words.as_ptr() as *const _);
            let bit = |c: __m512i| _mm512_sllv_epi64(one, _mm512_and_si512(c, six));
            let m = _mm512_or_si512(
                _mm512_or_si512(bit(h), bit(_mm512_srli_epi64::<6>(h))),
                _mm512_or_si512(
                    _mm512_or_si512(
                        bit(_mm512_srli_epi64::<12>(h)),
                        bit(_mm512_srli_epi64::<18>(h)),
                    ),
                    _mm512_or_si512(
                        bit(_mm512_srli_epi64::<24>(h)),
                        bit(_mm512_srli_epi64::<30>(h)),
                    ),
                ),
            );
            let missing = _mm512_andnot_si512(f, m);
            _mm512_testn_epi64_mask(missing, missing)
        };
        // Interleave: bit i of `even` is lane 2i, bit i of `odd` lane 2i+1.
        let spread = |m: u8| {
            let mut x = m as u16;
            x = (x | (x << 4)) & 0x0F0F;
            x = (x | (x << 2)) & 0x3333;
            (x | (x << 1)) & 0x5555
        };
        const _: () = assert!(crate::matching::index::FILTER_K == 6);
        let prefetch = |idx: __m512i| {
            let mut i = [0u64; 8];
            _mm512_storeu_si512(i.as_mut_ptr() as *mut _, idx);
            for x in i {
                _mm_prefetch::<_MM_HINT_T0>(base.add(x as usize) as *const i8);
            }
        };
        // Software pipeline: a step's filter words are prefetched when its IDs are known and
        // tested two steps (two compressions, ~3,400 instructions) later, so a word that is not
        // in cache (a 1M-ID filter is 2 MB) does not stall the chains.
        // Two steps back: one step's compression was not always enough to cover a miss.
        const DEPTH: usize = 2;
        type Pending = Option<(usize, [(__m512i, __m512i); 2])>;
        let mut pending: [Pending; DEPTH] = [None; DEPTH];
        for step in 0..steps {
            let s = compress16_body!(&iv, &w);
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
            let o = &mut out[step];
            _mm512_storeu_si512(o.words[0].as_mut_ptr() as *mut _, id0);
            _mm512_storeu_si512(o.words[1].as_mut_ptr() as *mut _, id1);
            _mm512_storeu_si512(o.words[2].as_mut_ptr() as *mut _, id2);
            let (x0, x1, x2) = (
                _mm512_xor_si512(id0, k0),
                _mm512_xor_si512(id1, k1),
                _mm512_xor_si512(id2, k2),
            );
            let even = slot(x0, x1, x2);
            let odd = slot(
                _mm512_srli_epi64::<32>(x0),
                _mm512_srli_epi64::<32>(x1),
                _mm512_srli_epi64::<32>(x2),
            );
            prefetch(even.1);
            prefetch(odd.1);
            if let Some((p, [e, o])) = pending[step % DEPTH].replace((step, [even, odd])) {
                out[p].pass = (spread(test(e.0, e.1)) | (spread(test(o.0, o.1)) << 1)) & valid;
            }
            keep!(step, at, s, kept);
            w[..8].copy_from_slice(&s);
            w[8] = _mm512_set1_epi32(0x8000_0000u32 as i32);
            for x in &mut w[9..15] {
                *x = _mm512_setzero_si512();
            }
            w[15] = _mm512_set1_epi32(256);
        }
        for (p, [e, o]) in pending.into_iter().flatten() {
            out[p].pass = (spread(test(e.0, e.1)) | (spread(test(o.0, o.1)) << 1)) & valid;
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
        // Under Miri (`.ci/miri`) a few steps per lane: the lanes' layout is what it checks.
        let steps = if cfg!(miri) { 3 } else { 100 };
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
            // Lane l keeps its state after step 7 * l (past the end for the last lanes).
            let mut kept = Kept::none();
            kept.at[0] = std::array::from_fn(|l| 7 * l as u32);
            kept.at[1] = std::array::from_fn(|l| 3 * l as u32 + 1);
            kept.states[0][15] = [5; 8];
            subkey_ids(&first, steps, &mut ids, &mut kept);
            for (l, k) in keys.iter().enumerate() {
                assert_eq!(ids[l].len(), steps);
                let mut sk = first_subkey(k);
                for (s, id) in ids[l].iter().enumerate() {
                    let want: Vec<u8> = crate::bluezone::ID_BYTE_POSITIONS
                        .iter()
                        .map(|&p| sk[p])
                        .collect();
                    assert_eq!(&id[..], &want[..], "n {n} lane {l} step {s}");
                    for (k, at) in [(0, 7 * l), (1, 3 * l + 1)] {
                        if s == at {
                            // The kept state is that step's sub-key: the chain goes on from it.
                            let got = crate::matching::sha256x::digest_bytes(&kept.states[k][l]);
                            assert_eq!(got, sk, "n {n} lane {l} kept {k}");
                        }
                    }
                    sk = Sha256::digest(sk).into();
                }
            }
            if n == 16 && steps <= 7 * 15 {
                assert_eq!(
                    kept.states[0][15], [5; 8],
                    "a state kept past the steps is left as it was"
                );
            }
            for v in &ids[n..] {
                assert!(v.is_empty());
            }
        }
    }

    /// The AVX-512 chains with the filter probe give the same IDs as [`subkey_ids`], and mark
    /// exactly the lanes the scalar filter check passes (every ID that is in the index among
    /// them), for full and partial groups.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn filtered_chains_agree_with_the_scalar_filter() {
        use crate::matching::index::{filter_hash, filter_slot};
        use crate::matching::ObservationIndex;
        use crate::{PeerId, RollingId, Sighting};
        for n in [16usize, 5] {
            let first: Vec<[u32; 16]> = (0..n as u32)
                .map(|l| std::array::from_fn(|w| l.wrapping_mul(0x9E37_79B9) ^ (w as u32 * 77)))
                .collect();
            let mut ids: [Vec<[u8; 12]>; LANES] = Default::default();
            let mut kept = Kept::none();
            kept.at[0] = std::array::from_fn(|l| (l as u32 * 3) % 41);
            kept.at[1] = std::array::from_fn(|l| (l as u32 * 5 + 2) % 41);
            subkey_ids(&first, 40, &mut ids, &mut kept);
            // Every third derived ID is in the index, with 3000 others.
            let sightings: Vec<Sighting> = (0..3000u32)
                .map(|i| {
                    let mut id = [0u8; 12];
                    id[..4].copy_from_slice(&i.wrapping_mul(0x2545_F491).to_le_bytes());
                    id[8..].copy_from_slice(&i.to_le_bytes());
                    id
                })
                .chain(ids.iter().flatten().step_by(3).copied())
                .map(|id| Sighting {
                    peer: PeerId::Bluezone(RollingId(id)),
                    time: 1000,
                    rssi: -60,
                    tx_power: None,
                    aem: None,
                })
                .collect();
            let index = ObservationIndex::build(&sightings, 5);
            let (filter, key) = index.bluezone.filter();
            let mut out = Vec::new();
            let mut filtered_kept = Kept::none();
            filtered_kept.at = kept.at;
            let f = subkey_ids_filtered(&first, 40, filter, key, &mut out, &mut filtered_kept);
            if f.is_none() {
                return; // no AVX-512 here (or the portable paths forced)
            }
            for k in 0..KEPT {
                assert_eq!(
                    filtered_kept.states[k][..n],
                    kept.states[k][..n],
                    "kept {k}"
                );
            }
            assert_eq!(out.len(), 40);
            let mut passed = 0;
            for (step, p) in out.iter().enumerate() {
                for l in 0..LANES {
                    let bit = p.pass >> l & 1 == 1;
                    if l >= n {
                        assert!(!bit, "lane {l} of {n} marked");
                        continue;
                    }
                    let id = ids[l][step];
                    assert_eq!(p.id(l), id, "n {n} step {step} lane {l}");
                    let mut w = [0u32; 4];
                    for (x, c) in w.iter_mut().zip(id.chunks_exact(4)) {
                        *x = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                    let (i, m) = filter_slot(filter_hash(w, &key), key.words);
                    assert_eq!(bit, filter[i] & m == m, "n {n} step {step} lane {l}");
                    if index.bluezone.find(&id).is_some() {
                        assert!(bit, "a seen ID must pass the filter");
                        passed += 1;
                    }
                }
            }
            assert!(passed >= n * 40 / 3, "{passed}");
        }
    }
}
