//! SHA-256 of sixteen independent messages in the sixteen 32-bit lanes of zmm registers
//! (AVX-512F), each state and message word one register holding it for all lanes: no transpose
//! inside the kernel, rotations with `vprord`, Ch/Maj/three-way XOR with `vpternlogd`. Callers
//! keep their words lane-wise (`[word][lane]`) so the chains of [`subkeys`](super::subkeys) and
//! the HKDF of [`gaen`](super::gaen) pass digests on to the next block without leaving registers.

use core::arch::x86_64::*;

use super::sha256x::K;

/// Lane-wise words: `[word][lane]`.
pub type Words16<const W: usize> = [[u32; 16]; W];

/// Compresses `msgs` into `states` for all sixteen lanes.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn compress16(states: &mut Words16<8>, msgs: &Words16<16>) {
    let mut iv = [_mm512_setzero_si512(); 8];
    for (v, s) in iv.iter_mut().zip(states.iter()) {
        *v = _mm512_loadu_si512(s.as_ptr() as *const _);
    }
    let mut m = [_mm512_setzero_si512(); 16];
    for (v, s) in m.iter_mut().zip(msgs.iter()) {
        *v = _mm512_loadu_si512(s.as_ptr() as *const _);
    }
    let out = compress(&iv, &m);
    for (s, v) in states.iter_mut().zip(out) {
        _mm512_storeu_si512(s.as_mut_ptr() as *mut _, v);
    }
}

/// One compression of sixteen lanes, fully unrolled: the state words start at `iv` and the
/// message is `msg`; returns `iv + rounds(msg)`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn compress(iv: &[__m512i; 8], msg: &[__m512i; 16]) -> [__m512i; 8] {
    compress16_body!(iv, msg)
}

/// The body of [`compress`] as a macro, for kernels that must have it inline: LLVM kept
/// `compress` out of line (a target-feature function cannot be `inline(always)`), and passing
/// 24 zmm registers through memory at every step of a chain cost about 15 %.
/// `$iv: &[__m512i; 8]`, `$msg: &[__m512i; 16]`; evaluates to the new state.
macro_rules! compress16_body {
    ($iv:expr, $msg:expr) => {{
    let iv: &[__m512i; 8] = $iv;
    let mut w: [__m512i; 16] = *$msg;
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *iv;
    macro_rules! add {
        ($x:expr, $y:expr) => {
            _mm512_add_epi32($x, $y)
        };
    }
    macro_rules! xor3 {
        ($x:expr, $y:expr, $z:expr) => {
            _mm512_ternarylogic_epi32::<0x96>($x, $y, $z)
        };
    }
    macro_rules! round {
        ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $t:expr) => {{
            if $t >= 16 {
                let w2 = w[($t - 2) & 15];
                let w15 = w[($t - 15) & 15];
                let s1 = xor3!(
                    _mm512_ror_epi32::<17>(w2),
                    _mm512_ror_epi32::<19>(w2),
                    _mm512_srli_epi32::<10>(w2)
                );
                let s0 = xor3!(
                    _mm512_ror_epi32::<7>(w15),
                    _mm512_ror_epi32::<18>(w15),
                    _mm512_srli_epi32::<3>(w15)
                );
                w[$t & 15] = add!(add!(w[$t & 15], s0), add!(s1, w[($t - 7) & 15]));
            }
            let kw = add!(w[$t & 15], _mm512_set1_epi32(K[$t] as i32));
            let s1 = xor3!(
                _mm512_ror_epi32::<6>($e),
                _mm512_ror_epi32::<11>($e),
                _mm512_ror_epi32::<25>($e)
            );
            let ch = _mm512_ternarylogic_epi32::<0xCA>($e, $f, $g);
            let t1 = add!(add!($h, s1), add!(ch, kw));
            let s0 = xor3!(
                _mm512_ror_epi32::<2>($a),
                _mm512_ror_epi32::<13>($a),
                _mm512_ror_epi32::<22>($a)
            );
            let maj = _mm512_ternarylogic_epi32::<0xE8>($a, $b, $c);
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
    [
        add!(a, iv[0]),
        add!(b, iv[1]),
        add!(c, iv[2]),
        add!(d, iv[3]),
        add!(e, iv[4]),
        add!(f, iv[5]),
        add!(g, iv[6]),
        add!(h, iv[7]),
    ]
    }};
}
pub(crate) use compress16_body;
