//! SHA-256 compression of several independent messages at once.
//!
//! Bluezone's sub-key chain is a sequence of dependent one-block hashes, so a single chain is
//! bound by the latency of the SHA-NI round instructions (measured ≈ 63 ns/hash with `sha2` on
//! these machines). Running N independent chains in lockstep keeps the SHA units busy with
//! independent work: the round instructions of different lanes overlap in the out-of-order core.
//! The same lanes carry the HKDF of N GAEN keys.
//!
//! Everything works on message *words* (big-endian decoded), which is the form the chains need:
//! the digest of one step, as words, is the first half of the next step's message.
//! Without SHA-NI (or off x86-64, or with `BLUEZONED_FORCE_PORTABLE=1`) the lanes run four at a
//! time through portable code shaped for the compiler's SIMD (see `portable`): `sha2`'s own
//! `compress256` would pick SHA-NI by itself, so it could not stand for the portable path.

/// SHA-256 initial state.
pub const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 round constants.
pub(crate) const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Compresses one 64-byte block (as 16 big-endian words) into each lane's state.
#[inline]
pub fn compress_lanes<const N: usize>(states: &mut [[u32; 8]; N], msgs: &[[u32; 16]; N]) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::sha_ni() {
            // SAFETY: the CPU supports the features `ni::compress` is compiled for (checked above).
            unsafe { ni::compress(states, msgs) };
            return;
        }
    }
    portable(states, msgs)
}

/// The portable path: lanes four at a time, each SHA-256 word a `[u32; 4]` of the four lanes'
/// values, so that every operation of a round is the same on four independent lanes and the
/// compiler can keep them in one SIMD register (SSE2 on any x86-64, NEON on ARM) instead of
/// running four dependent scalar chains one after another.
fn portable<const N: usize>(states: &mut [[u32; 8]; N], msgs: &[[u32; 16]; N]) {
    let mut l = 0;
    while l < N {
        let n = (N - l).min(4);
        let mut st = [[0u32; 4]; 8];
        let mut w = [[0u32; 4]; 16];
        for j in 0..n {
            for i in 0..8 {
                st[i][j] = states[l + j][i];
            }
            for i in 0..16 {
                w[i][j] = msgs[l + j][i];
            }
        }
        compress4(&mut st, &w);
        for j in 0..n {
            for i in 0..8 {
                states[l + j][i] = st[i][j];
            }
        }
        l += 4;
    }
}

type V4 = [u32; 4];

// Every helper spells its four lanes out: `array::map` with a closure went through a
// `try_map` that LLVM did not inline, which made the portable path several times slower than
// `sha2`'s own software backend (seen in callgrind).

#[inline(always)]
fn add(a: V4, b: V4) -> V4 {
    [
        a[0].wrapping_add(b[0]),
        a[1].wrapping_add(b[1]),
        a[2].wrapping_add(b[2]),
        a[3].wrapping_add(b[3]),
    ]
}

#[inline(always)]
fn add_k(a: V4, k: u32) -> V4 {
    add(a, [k; 4])
}

#[inline(always)]
fn rot3(v: u32, r0: u32, r1: u32, r2: u32) -> u32 {
    v.rotate_right(r0) ^ v.rotate_right(r1) ^ v.rotate_right(r2)
}

#[inline(always)]
fn big_sigma(x: V4, r0: u32, r1: u32, r2: u32) -> V4 {
    [
        rot3(x[0], r0, r1, r2),
        rot3(x[1], r0, r1, r2),
        rot3(x[2], r0, r1, r2),
        rot3(x[3], r0, r1, r2),
    ]
}

#[inline(always)]
fn rot2_shr(v: u32, r0: u32, r1: u32, s: u32) -> u32 {
    v.rotate_right(r0) ^ v.rotate_right(r1) ^ (v >> s)
}

#[inline(always)]
fn small_sigma(x: V4, r0: u32, r1: u32, s: u32) -> V4 {
    [
        rot2_shr(x[0], r0, r1, s),
        rot2_shr(x[1], r0, r1, s),
        rot2_shr(x[2], r0, r1, s),
        rot2_shr(x[3], r0, r1, s),
    ]
}

#[inline(always)]
fn ch(e: V4, f: V4, g: V4) -> V4 {
    // (e & f) ^ (!e & g), as g ^ (e & (f ^ g)): one operation fewer.
    [
        g[0] ^ (e[0] & (f[0] ^ g[0])),
        g[1] ^ (e[1] & (f[1] ^ g[1])),
        g[2] ^ (e[2] & (f[2] ^ g[2])),
        g[3] ^ (e[3] & (f[3] ^ g[3])),
    ]
}

#[inline(always)]
fn maj(a: V4, b: V4, c: V4) -> V4 {
    // (a & b) ^ (a & c) ^ (b & c), as (a & b) | (c & (a | b)).
    [
        (a[0] & b[0]) | (c[0] & (a[0] | b[0])),
        (a[1] & b[1]) | (c[1] & (a[1] | b[1])),
        (a[2] & b[2]) | (c[2] & (a[2] | b[2])),
        (a[3] & b[3]) | (c[3] & (a[3] | b[3])),
    ]
}

/// One compression of four lanes. On x86-64 the lanes are the four words of an SSE2 register
/// (part of the baseline, so no detection): LLVM does not vectorise the generic code below on
/// its own, and four scalar chains ran no faster than `sha2`'s software backend. Elsewhere the
/// generic code (NEON where the compiler vectorises it).
#[inline]
fn compress4(state: &mut [V4; 8], msg: &[V4; 16]) {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::compress4(state, msg)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        compress4_generic(state, msg)
    }
}

/// [`compress4`] in plain Rust; rounds unrolled by eight so the state never rotates through
/// memory.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn compress4_generic(state: &mut [V4; 8], msg: &[V4; 16]) {
    let mut w = *msg;
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    macro_rules! round {
        ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $t:expr) => {{
            let t = $t;
            if t >= 16 {
                let s0 = small_sigma(w[(t - 15) & 15], 7, 18, 3);
                let s1 = small_sigma(w[(t - 2) & 15], 17, 19, 10);
                w[t & 15] = add(add(w[t & 15], s0), add(s1, w[(t - 7) & 15]));
            }
            let kw = add_k(w[t & 15], K[t]);
            let t1 = add(add($h, big_sigma($e, 6, 11, 25)), add(ch($e, $f, $g), kw));
            $d = add($d, t1);
            $h = add(t1, add(big_sigma($a, 2, 13, 22), maj($a, $b, $c)));
        }};
    }
    for base in (0..64).step_by(8) {
        round!(a, b, c, d, e, f, g, h, base);
        round!(h, a, b, c, d, e, f, g, base + 1);
        round!(g, h, a, b, c, d, e, f, base + 2);
        round!(f, g, h, a, b, c, d, e, base + 3);
        round!(e, f, g, h, a, b, c, d, base + 4);
        round!(d, e, f, g, h, a, b, c, base + 5);
        round!(c, d, e, f, g, h, a, b, base + 6);
        round!(b, c, d, e, f, g, h, a, base + 7);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = add(*s, v);
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    use super::{K, V4};

    #[inline(always)]
    fn ror<const R: i32, const L: i32>(x: __m128i) -> __m128i {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_or_si128(_mm_srli_epi32::<R>(x), _mm_slli_epi32::<L>(x)) }
    }

    /// The four lanes' words in one SSE2 register each, the same rounds as the generic code.
    #[inline]
    pub(super) fn compress4(state: &mut [V4; 8], msg: &[V4; 16]) {
        // SAFETY: SSE2 is part of the x86-64 baseline; loads and stores are unaligned ones of
        // 16-byte arrays.
        unsafe {
            let ld = |v: &V4| _mm_loadu_si128(v.as_ptr() as *const __m128i);
            let mut w: [__m128i; 16] = core::array::from_fn(|i| ld(&msg[i]));
            let st: [__m128i; 8] = core::array::from_fn(|i| ld(&state[i]));
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = st;
            macro_rules! add {
                ($x:expr, $y:expr) => {
                    _mm_add_epi32($x, $y)
                };
            }
            macro_rules! xor {
                ($x:expr, $y:expr) => {
                    _mm_xor_si128($x, $y)
                };
            }
            macro_rules! round {
                ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $t:expr) => {{
                    let t = $t;
                    if t >= 16 {
                        let x = w[(t - 15) & 15];
                        let s0 = xor!(
                            xor!(ror::<7, 25>(x), ror::<18, 14>(x)),
                            _mm_srli_epi32::<3>(x)
                        );
                        let y = w[(t - 2) & 15];
                        let s1 = xor!(
                            xor!(ror::<17, 15>(y), ror::<19, 13>(y)),
                            _mm_srli_epi32::<10>(y)
                        );
                        w[t & 15] = add!(add!(w[t & 15], s0), add!(s1, w[(t - 7) & 15]));
                    }
                    let kw = add!(w[t & 15], _mm_set1_epi32(K[t] as i32));
                    let s1 = xor!(xor!(ror::<6, 26>($e), ror::<11, 21>($e)), ror::<25, 7>($e));
                    let ch = xor!($g, _mm_and_si128($e, xor!($f, $g)));
                    let t1 = add!(add!($h, s1), add!(ch, kw));
                    let s0 = xor!(xor!(ror::<2, 30>($a), ror::<13, 19>($a)), ror::<22, 10>($a));
                    let maj = _mm_or_si128(
                        _mm_and_si128($a, $b),
                        _mm_and_si128($c, _mm_or_si128($a, $b)),
                    );
                    $d = add!($d, t1);
                    $h = add!(t1, add!(s0, maj));
                }};
            }
            macro_rules! eight {
                ($t:expr) => {
                    round!(a, b, c, d, e, f, g, h, $t);
                    round!(h, a, b, c, d, e, f, g, $t + 1);
                    round!(g, h, a, b, c, d, e, f, $t + 2);
                    round!(f, g, h, a, b, c, d, e, $t + 3);
                    round!(e, f, g, h, a, b, c, d, $t + 4);
                    round!(d, e, f, g, h, a, b, c, $t + 5);
                    round!(c, d, e, f, g, h, a, b, $t + 6);
                    round!(b, c, d, e, f, g, h, a, $t + 7);
                };
            }
            eight!(0);
            eight!(8);
            eight!(16);
            eight!(24);
            eight!(32);
            eight!(40);
            eight!(48);
            eight!(56);
            for (s, (v, o)) in state
                .iter_mut()
                .zip([a, b, c, d, e, f, g, h].into_iter().zip(st))
            {
                _mm_storeu_si128(s.as_mut_ptr() as *mut __m128i, add!(v, o));
            }
        }
    }
}

/// Message words of a 32-byte message (`digest` as state words) padded to one block.
#[inline(always)]
pub fn pad32(digest: &[u32; 8]) -> [u32; 16] {
    let mut m = [0u32; 16];
    m[..8].copy_from_slice(digest);
    m[8] = 0x8000_0000;
    m[15] = 256;
    m
}

/// Big-endian bytes of a block → words.
#[inline(always)]
pub fn words(block: &[u8; 64]) -> [u32; 16] {
    let mut m = [0u32; 16];
    for (w, c) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    m
}

/// Digest bytes of a final state.
#[inline(always)]
pub fn digest_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (c, w) in out.chunks_exact_mut(4).zip(state.iter()) {
        c.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::*;

    use super::K;

    /// Two lanes, fully unrolled: each lane keeps its state and five message registers in
    /// XMM registers (two lanes fit the 16 registers; four would spill, measured slower), and
    /// the round instructions of the two lanes alternate so each hides the other's latency.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress2(s0: &mut [u32; 8], s1: &mut [u32; 8], m0: &[u32; 16], m1: &[u32; 16]) {
        macro_rules! load_state {
            ($s:expr) => {{
                let p = $s.as_ptr() as *const __m128i;
                let dcba = _mm_loadu_si128(p);
                let efgh = _mm_loadu_si128(p.add(1));
                let cdab = _mm_shuffle_epi32(dcba, 0xB1);
                let efgh = _mm_shuffle_epi32(efgh, 0x1B);
                (
                    _mm_alignr_epi8(cdab, efgh, 8),
                    _mm_blend_epi16(efgh, cdab, 0xF0),
                )
            }};
        }
        macro_rules! store_state {
            ($s:expr, $abef:expr, $cdgh:expr) => {{
                let feba = _mm_shuffle_epi32($abef, 0x1B);
                let dchg = _mm_shuffle_epi32($cdgh, 0xB1);
                let p = $s.as_mut_ptr() as *mut __m128i;
                _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
                _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
            }};
        }
        macro_rules! schedule {
            ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {{
                let t1 = _mm_sha256msg1_epu32($v0, $v1);
                let t2 = _mm_alignr_epi8($v3, $v2, 4);
                _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), $v3)
            }};
        }
        macro_rules! rounds4 {
            ($abef:ident, $cdgh:ident, $w:expr, $k:expr) => {{
                let t1 = _mm_add_epi32($w, $k);
                $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, t1);
                $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(t1, 0x0E));
            }};
        }
        let kp = K.as_ptr() as *const __m128i;
        let (mut a0, mut c0) = load_state!(s0);
        let (mut a1, mut c1) = load_state!(s1);
        let (sa0, sc0, sa1, sc1) = (a0, c0, a1, c1);
        let p0 = m0.as_ptr() as *const __m128i;
        let p1 = m1.as_ptr() as *const __m128i;
        let mut w0 = [
            _mm_loadu_si128(p0),
            _mm_loadu_si128(p0.add(1)),
            _mm_loadu_si128(p0.add(2)),
            _mm_loadu_si128(p0.add(3)),
        ];
        let mut w1 = [
            _mm_loadu_si128(p1),
            _mm_loadu_si128(p1.add(1)),
            _mm_loadu_si128(p1.add(2)),
            _mm_loadu_si128(p1.add(3)),
        ];
        macro_rules! group {
            ($i:literal, $j:literal, $j1:literal, $j2:literal, $j3:literal) => {{
                let k = _mm_loadu_si128(kp.add($i));
                if $i >= 4 {
                    w0[$j] = schedule!(w0[$j], w0[$j1], w0[$j2], w0[$j3]);
                    w1[$j] = schedule!(w1[$j], w1[$j1], w1[$j2], w1[$j3]);
                }
                rounds4!(a0, c0, w0[$j], k);
                rounds4!(a1, c1, w1[$j], k);
            }};
        }
        group!(0, 0, 1, 2, 3);
        group!(1, 1, 2, 3, 0);
        group!(2, 2, 3, 0, 1);
        group!(3, 3, 0, 1, 2);
        group!(4, 0, 1, 2, 3);
        group!(5, 1, 2, 3, 0);
        group!(6, 2, 3, 0, 1);
        group!(7, 3, 0, 1, 2);
        group!(8, 0, 1, 2, 3);
        group!(9, 1, 2, 3, 0);
        group!(10, 2, 3, 0, 1);
        group!(11, 3, 0, 1, 2);
        group!(12, 0, 1, 2, 3);
        group!(13, 1, 2, 3, 0);
        group!(14, 2, 3, 0, 1);
        group!(15, 3, 0, 1, 2);
        store_state!(s0, _mm_add_epi32(a0, sa0), _mm_add_epi32(c0, sc0));
        store_state!(s1, _mm_add_epi32(a1, sa1), _mm_add_epi32(c1, sc1));
    }

    /// Lanes in pairs (an odd last lane is paired with a scratch copy of itself).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn compress<const N: usize>(states: &mut [[u32; 8]; N], msgs: &[[u32; 16]; N]) {
        let mut l = 0;
        while l + 1 < N {
            let (a, b) = states.split_at_mut(l + 1);
            compress2(&mut a[l], &mut b[0], &msgs[l], &msgs[l + 1]);
            l += 2;
        }
        if l < N {
            let mut scratch = states[l];
            let (s, m) = (&mut states[l], &msgs[l]);
            compress2(s, &mut scratch, m, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn lanes_match_sha2() {
        let mut digests = [[0u32; 8]; 3];
        let mut expected = [[0u8; 32]; 3];
        for (l, e) in expected.iter_mut().enumerate() {
            *e = Sha256::digest([l as u8; 32]).into();
        }
        let mut msgs = [[0u32; 16]; 3];
        for (l, m) in msgs.iter_mut().enumerate() {
            let mut block = [0u8; 64];
            block[..32].fill(l as u8);
            block[32] = 0x80;
            block[62] = 1; // 256 bits
            *m = words(&block);
        }
        digests.fill(IV);
        compress_lanes(&mut digests, &msgs);
        for l in 0..3 {
            assert_eq!(digest_bytes(&digests[l]), expected[l]);
        }
        // A chain of 100 hashes-of-hashes agrees with sha2 on every lane.
        let mut refs = [Sha256::digest([7u8; 32]), Sha256::digest([9u8; 32])];
        let mut cur = [words_of(&refs[0]), words_of(&refs[1])];
        for _ in 0..100 {
            let mut states = [IV; 2];
            compress_lanes(&mut states, &[pad32(&cur[0]), pad32(&cur[1])]);
            for l in 0..2 {
                refs[l] = Sha256::digest(refs[l]);
                assert_eq!(digest_bytes(&states[l])[..], refs[l][..]);
            }
            cur = states;
        }
        let mut p = [IV; 1];
        portable(&mut p, &[pad32(&cur[0])]);
        assert_eq!(digest_bytes(&p[0])[..], Sha256::digest(refs[0])[..]);
    }

    /// The generic four-lane code (what ARM runs) and the SSE2 one (x86-64) both agree with
    /// `sha2` on a chain of 50 hashes-of-hashes in each of four lanes.
    #[test]
    fn four_lane_kernels_match_sha2() {
        type Kernel = fn(&mut [V4; 8], &[V4; 16]);
        let kernels: [Kernel; 2] = [compress4, compress4_generic];
        for kernel in kernels {
            let mut refs: [[u8; 32]; 4] = std::array::from_fn(|l| [l as u8 * 3 + 1; 32]);
            for _ in 0..50 {
                let mut st = [[0u32; 4]; 8];
                let mut w = [[0u32; 4]; 16];
                for l in 0..4 {
                    let m = pad32(&words_of(&refs[l]));
                    for i in 0..8 {
                        st[i][l] = IV[i];
                    }
                    for i in 0..16 {
                        w[i][l] = m[i];
                    }
                }
                kernel(&mut st, &w);
                for (l, r) in refs.iter_mut().enumerate() {
                    *r = Sha256::digest(*r).into();
                    let got: [u32; 8] = std::array::from_fn(|i| st[i][l]);
                    assert_eq!(digest_bytes(&got), *r, "lane {l}");
                }
            }
        }
    }

    fn words_of(d: &[u8]) -> [u32; 8] {
        let mut w = [0u32; 8];
        for (x, c) in w.iter_mut().zip(d.chunks_exact(4)) {
            *x = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    }
}
