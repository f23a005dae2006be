//! Bitsliced AES-128 encryption, eight blocks at once in eight 128-bit SIMD registers: the
//! RPIs of the portable path (x86-64 without VAES, ARM gateways without the crypto extensions).
//!
//! **Layout.** Register `i` (a "plane") holds bit `i` of every state byte of the eight blocks:
//! its byte `k` is state byte `k` (AES order, `k = 4·column + row`) and bit `b` of that byte
//! belongs to block `b`. A 32-bit lane is thus one column, so the row rotations of MixColumns
//! are byte rotations inside 32-bit lanes (shifts) and column rotations are lane shuffles
//! (`pshufd` / `ext`). Packing eight blocks into planes is an 8×8 bit transpose in every byte
//! position (three levels of swap-moves); the same transpose unpacks them.
//!
//! **Rounds.** SubBytes is the Boyar–Peralta circuit (113 gates, 32 of them ANDs) on the
//! eight planes; its affine constant 0x63 is folded into round keys 1–10 (MixColumns maps a
//! state of equal bytes to itself). ShiftRows is never applied (fixslicing): after round `i`
//! the registers hold `SR^-i` of the true state, so round `i`'s MixColumns is conjugated by
//! `SR^i` — its "next row" rotation becomes "next row and `i` columns on", still one
//! lane shuffle plus an in-lane byte rotation — and round key `i` is stored as `SR^-i(K_i)`.
//! As `SR^4` is the identity the pattern repeats every four rounds; after round 10 one
//! `SR^2` (rows 1 and 3 swap halves) restores the true state.
//!
//! **Key schedule.** Once per key, on the key broadcast to all eight blocks in plane form, with
//! the same S-box circuit; all 144 blocks of a key (18 batches of 8) share it.
//!
//! No data-dependent branch or memory index anywhere (the keys here are published diagnosis
//! keys, but the code is constant-time all the same).
//!
//! The round logic is written once, generic over [`V128`], the handful of 128-bit operations
//! it needs, implemented with SSE2 (x86-64 baseline) and NEON (aarch64 baseline).

use crate::gaen::{padded_data, Enin};

use super::rpi_aes::MAX_RPIS;

/// The 128-bit operations the cipher is written in. "Lane" means 32-bit lane.
pub trait V128: Copy {
    fn zero() -> Self;
    /// Every 32-bit lane set to `w`.
    fn splat32(w: u32) -> Self;
    fn load(b: &[u8; 16]) -> Self;
    fn store(self, b: &mut [u8; 16]);
    fn xor(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    /// Each 64-bit half shifted right by `N` bits.
    fn shr64<const N: i32>(self) -> Self;
    /// Each 64-bit half shifted left by `N` bits.
    fn shl64<const N: i32>(self) -> Self;
    /// Lane `c` takes lane `c + 1 (mod 4)`.
    fn lanes1(self) -> Self;
    /// Lane `c` takes lane `c + 2 (mod 4)`.
    fn lanes2(self) -> Self;
    /// Lane `c` takes lane `c + 3 (mod 4)`.
    fn lanes3(self) -> Self;
    /// Every lane takes lane 3.
    fn bcast_lane3(self) -> Self;
    /// Lane `c` takes lane `c - 1`; lane 0 becomes zero.
    fn lanes_up1(self) -> Self;
    /// Lane `c` takes lane `c - 2`; lanes 0 and 1 become zero.
    fn lanes_up2(self) -> Self;
    /// Byte `r` of every lane takes byte `r + 1 (mod 4)` of the same lane.
    fn rows1(self) -> Self;
    /// Byte `r` of every lane takes byte `r + 2 (mod 4)` of the same lane.
    fn rows2(self) -> Self;
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    /// SSE2 is part of the x86-64 baseline: these intrinsics are always available.
    #[derive(Clone, Copy)]
    pub struct Sse2(__m128i);

    /// `Sse2(unsafe { op })`: the intrinsics are `unsafe` only for the SSE2 target feature.
    macro_rules! sse2 {
        ($e:expr) => {
            // SAFETY: SSE2 is part of the x86-64 baseline.
            Sse2(unsafe { $e })
        };
    }

    impl super::V128 for Sse2 {
        #[inline(always)]
        fn zero() -> Self {
            sse2!(_mm_setzero_si128())
        }
        #[inline(always)]
        fn splat32(w: u32) -> Self {
            sse2!(_mm_set1_epi32(w as i32))
        }
        #[inline(always)]
        fn load(b: &[u8; 16]) -> Self {
            // SAFETY: `b` is 16 readable bytes; the load is unaligned.
            Sse2(unsafe { _mm_loadu_si128(b.as_ptr() as *const __m128i) })
        }
        #[inline(always)]
        fn store(self, b: &mut [u8; 16]) {
            // SAFETY: `b` is 16 writable bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(b.as_mut_ptr() as *mut __m128i, self.0) }
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            sse2!(_mm_xor_si128(self.0, o.0))
        }
        #[inline(always)]
        fn and(self, o: Self) -> Self {
            sse2!(_mm_and_si128(self.0, o.0))
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            sse2!(_mm_or_si128(self.0, o.0))
        }
        #[inline(always)]
        fn shr64<const N: i32>(self) -> Self {
            sse2!(_mm_srli_epi64::<N>(self.0))
        }
        #[inline(always)]
        fn shl64<const N: i32>(self) -> Self {
            sse2!(_mm_slli_epi64::<N>(self.0))
        }
        #[inline(always)]
        fn lanes1(self) -> Self {
            sse2!(_mm_shuffle_epi32::<0x39>(self.0))
        }
        #[inline(always)]
        fn lanes2(self) -> Self {
            sse2!(_mm_shuffle_epi32::<0x4e>(self.0))
        }
        #[inline(always)]
        fn lanes3(self) -> Self {
            sse2!(_mm_shuffle_epi32::<0x93>(self.0))
        }
        #[inline(always)]
        fn bcast_lane3(self) -> Self {
            sse2!(_mm_shuffle_epi32::<0xff>(self.0))
        }
        #[inline(always)]
        fn lanes_up1(self) -> Self {
            sse2!(_mm_slli_si128::<4>(self.0))
        }
        #[inline(always)]
        fn lanes_up2(self) -> Self {
            sse2!(_mm_slli_si128::<8>(self.0))
        }
        #[inline(always)]
        fn rows1(self) -> Self {
            sse2!(_mm_or_si128(
                _mm_srli_epi32::<8>(self.0),
                _mm_slli_epi32::<24>(self.0),
            ))
        }
        #[inline(always)]
        fn rows2(self) -> Self {
            sse2!(_mm_shufflehi_epi16::<0xb1>(_mm_shufflelo_epi16::<0xb1>(
                self.0,
            )))
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use core::arch::aarch64::*;

    /// NEON (Advanced SIMD) is part of the aarch64 baseline: always available.
    #[derive(Clone, Copy)]
    pub struct Neon(uint32x4_t);

    /// `Neon(unsafe { op })`: the intrinsics are `unsafe` only for the NEON target feature.
    macro_rules! neon {
        ($e:expr) => {
            // SAFETY: NEON is part of the aarch64 baseline.
            Neon(unsafe { $e })
        };
    }

    impl super::V128 for Neon {
        #[inline(always)]
        fn zero() -> Self {
            neon!(vdupq_n_u32(0))
        }
        #[inline(always)]
        fn splat32(w: u32) -> Self {
            neon!(vdupq_n_u32(w))
        }
        #[inline(always)]
        fn load(b: &[u8; 16]) -> Self {
            // SAFETY: `b` is 16 readable bytes; `vld1q_u8` has no alignment requirement.
            Neon(unsafe { vreinterpretq_u32_u8(vld1q_u8(b.as_ptr())) })
        }
        #[inline(always)]
        fn store(self, b: &mut [u8; 16]) {
            // SAFETY: `b` is 16 writable bytes; `vst1q_u8` has no alignment requirement.
            unsafe { vst1q_u8(b.as_mut_ptr(), vreinterpretq_u8_u32(self.0)) }
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            neon!(veorq_u32(self.0, o.0))
        }
        #[inline(always)]
        fn and(self, o: Self) -> Self {
            neon!(vandq_u32(self.0, o.0))
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            neon!(vorrq_u32(self.0, o.0))
        }
        #[inline(always)]
        fn shr64<const N: i32>(self) -> Self {
            neon!(vreinterpretq_u32_u64(vshrq_n_u64::<N>(
                vreinterpretq_u64_u32(self.0),
            )))
        }
        #[inline(always)]
        fn shl64<const N: i32>(self) -> Self {
            neon!(vreinterpretq_u32_u64(vshlq_n_u64::<N>(
                vreinterpretq_u64_u32(self.0),
            )))
        }
        #[inline(always)]
        fn lanes1(self) -> Self {
            neon!(vextq_u32::<1>(self.0, self.0))
        }
        #[inline(always)]
        fn lanes2(self) -> Self {
            neon!(vextq_u32::<2>(self.0, self.0))
        }
        #[inline(always)]
        fn lanes3(self) -> Self {
            neon!(vextq_u32::<3>(self.0, self.0))
        }
        #[inline(always)]
        fn bcast_lane3(self) -> Self {
            neon!(vdupq_laneq_u32::<3>(self.0))
        }
        #[inline(always)]
        fn lanes_up1(self) -> Self {
            neon!(vextq_u32::<3>(vdupq_n_u32(0), self.0))
        }
        #[inline(always)]
        fn lanes_up2(self) -> Self {
            neon!(vextq_u32::<2>(vdupq_n_u32(0), self.0))
        }
        #[inline(always)]
        fn rows1(self) -> Self {
            // (x >> 8) inserted under the top byte of (x << 24).
            neon!(vsriq_n_u32::<8>(vshlq_n_u32::<24>(self.0), self.0))
        }
        #[inline(always)]
        fn rows2(self) -> Self {
            neon!(vreinterpretq_u32_u16(vrev32q_u16(vreinterpretq_u16_u32(
                self.0,
            ))))
        }
    }
}

/// The SIMD type of this architecture.
#[cfg(target_arch = "x86_64")]
pub type Native = sse2::Sse2;
/// The SIMD type of this architecture.
#[cfg(target_arch = "aarch64")]
pub type Native = neon::Neon;

/// Eight bit-planes: eight blocks, or one round key broadcast to eight blocks.
type Planes<V> = [V; 8];

/// The 8×8 bit transpose in every byte position that turns eight blocks (register `b` = block
/// `b`) into eight planes (register `i` = bit `i` of every byte, bit `b` of a byte = block
/// `b`), and back: it is its own inverse.
#[inline(always)]
fn transpose<V: V128>(x: &mut Planes<V>) {
    /// Exchanges the bits of `x[a]` at positions with bit `N` set with the bits of `x[b]`
    /// (`b = a + N`) at positions with bit `N` clear, within every byte (`mask` = the clear
    /// positions).
    #[inline(always)]
    fn swapmove<V: V128, const N: i32>(x: &mut Planes<V>, a: usize, b: usize, mask: V) {
        let t = x[a].shr64::<N>().xor(x[b]).and(mask);
        x[b] = x[b].xor(t);
        x[a] = x[a].xor(t.shl64::<N>());
    }
    let m1 = V::splat32(0x5555_5555);
    swapmove::<V, 1>(x, 0, 1, m1);
    swapmove::<V, 1>(x, 2, 3, m1);
    swapmove::<V, 1>(x, 4, 5, m1);
    swapmove::<V, 1>(x, 6, 7, m1);
    let m2 = V::splat32(0x3333_3333);
    swapmove::<V, 2>(x, 0, 2, m2);
    swapmove::<V, 2>(x, 1, 3, m2);
    swapmove::<V, 2>(x, 4, 6, m2);
    swapmove::<V, 2>(x, 5, 7, m2);
    let m4 = V::splat32(0x0f0f_0f0f);
    swapmove::<V, 4>(x, 0, 4, m4);
    swapmove::<V, 4>(x, 1, 5, m4);
    swapmove::<V, 4>(x, 2, 6, m4);
    swapmove::<V, 4>(x, 3, 7, m4);
}

/// SubBytes without its affine constant 0x63 (folded into the round keys): the Boyar–Peralta
/// circuit (top linear layer, shared nonlinear middle, bottom linear layer) on the planes.
/// The circuit's inputs U0..U7 and outputs S0..S7 run from the most significant bit down.
#[inline(always)]
fn sub_bytes_nc<V: V128>(x: &mut Planes<V>) {
    let (u0, u1, u2, u3, u4, u5, u6, u7) = (x[7], x[6], x[5], x[4], x[3], x[2], x[1], x[0]);
    // Top linear layer.
    let t1 = u0.xor(u3);
    let t2 = u0.xor(u5);
    let t3 = u0.xor(u6);
    let t4 = u3.xor(u5);
    let t5 = u4.xor(u6);
    let t6 = t1.xor(t5);
    let t7 = u1.xor(u2);
    let t8 = u7.xor(t6);
    let t9 = u7.xor(t7);
    let t10 = t6.xor(t7);
    let t11 = u1.xor(u5);
    let t12 = u2.xor(u5);
    let t13 = t3.xor(t4);
    let t14 = t6.xor(t11);
    let t15 = t5.xor(t11);
    let t16 = t5.xor(t12);
    let t17 = t9.xor(t16);
    let t18 = u3.xor(u7);
    let t19 = t7.xor(t18);
    let t20 = t1.xor(t19);
    let t21 = u6.xor(u7);
    let t22 = t7.xor(t21);
    let t23 = t2.xor(t22);
    let t24 = t2.xor(t10);
    let t25 = t20.xor(t17);
    let t26 = t3.xor(t16);
    let t27 = t1.xor(t12);
    // Nonlinear middle: inversion in GF(2^4)^2.
    let m1 = t13.and(t6);
    let m2 = t23.and(t8);
    let m3 = t14.xor(m1);
    let m4 = t19.and(u7);
    let m5 = m4.xor(m1);
    let m6 = t3.and(t16);
    let m7 = t22.and(t9);
    let m8 = t26.xor(m6);
    let m9 = t20.and(t17);
    let m10 = m9.xor(m6);
    let m11 = t1.and(t15);
    let m12 = t4.and(t27);
    let m13 = m12.xor(m11);
    let m14 = t2.and(t10);
    let m15 = m14.xor(m11);
    let m16 = m3.xor(m2);
    let m17 = m5.xor(t24);
    let m18 = m8.xor(m7);
    let m19 = m10.xor(m15);
    let m20 = m16.xor(m13);
    let m21 = m17.xor(m15);
    let m22 = m18.xor(m13);
    let m23 = m19.xor(t25);
    let m24 = m22.xor(m23);
    let m25 = m22.and(m20);
    let m26 = m21.xor(m25);
    let m27 = m20.xor(m21);
    let m28 = m23.xor(m25);
    let m29 = m28.and(m27);
    let m30 = m26.and(m24);
    let m31 = m20.and(m23);
    let m32 = m27.and(m31);
    let m33 = m27.xor(m25);
    let m34 = m21.and(m22);
    let m35 = m24.and(m34);
    let m36 = m24.xor(m25);
    let m37 = m21.xor(m29);
    let m38 = m32.xor(m33);
    let m39 = m23.xor(m30);
    let m40 = m35.xor(m36);
    let m41 = m38.xor(m40);
    let m42 = m37.xor(m39);
    let m43 = m37.xor(m38);
    let m44 = m39.xor(m40);
    let m45 = m42.xor(m41);
    let m46 = m44.and(t6);
    let m47 = m40.and(t8);
    let m48 = m39.and(u7);
    let m49 = m43.and(t16);
    let m50 = m38.and(t9);
    let m51 = m37.and(t17);
    let m52 = m42.and(t15);
    let m53 = m45.and(t27);
    let m54 = m41.and(t10);
    let m55 = m44.and(t13);
    let m56 = m40.and(t23);
    let m57 = m39.and(t19);
    let m58 = m43.and(t3);
    let m59 = m38.and(t22);
    let m60 = m37.and(t20);
    let m61 = m42.and(t1);
    let m62 = m45.and(t4);
    let m63 = m41.and(t2);
    // Bottom linear layer (its four XNORs are plain XORs here: the constant is in the keys).
    let l0 = m61.xor(m62);
    let l1 = m50.xor(m56);
    let l2 = m46.xor(m48);
    let l3 = m47.xor(m55);
    let l4 = m54.xor(m58);
    let l5 = m49.xor(m61);
    let l6 = m62.xor(l5);
    let l7 = m46.xor(l3);
    let l8 = m51.xor(m59);
    let l9 = m52.xor(m53);
    let l10 = m53.xor(l4);
    let l11 = m60.xor(l2);
    let l12 = m48.xor(m51);
    let l13 = m50.xor(l0);
    let l14 = m52.xor(m61);
    let l15 = m55.xor(l1);
    let l16 = m56.xor(l0);
    let l17 = m57.xor(l1);
    let l18 = m58.xor(l8);
    let l19 = m63.xor(l4);
    let l20 = l0.xor(l1);
    let l21 = l1.xor(l7);
    let l22 = l3.xor(l12);
    let l23 = l18.xor(l2);
    let l24 = l15.xor(l9);
    let l25 = l6.xor(l10);
    let l26 = l7.xor(l9);
    let l27 = l8.xor(l10);
    let l28 = l11.xor(l14);
    let l29 = l11.xor(l17);
    x[7] = l6.xor(l24);
    x[6] = l16.xor(l26);
    x[5] = l19.xor(l28);
    x[4] = l6.xor(l21);
    x[3] = l20.xor(l22);
    x[2] = l25.xor(l29);
    x[1] = l13.xor(l27);
    x[0] = l6.xor(l23);
}

/// The bits of the S-box's affine constant: the planes complemented by it.
const SBOX_CONST: u8 = 0x63;

/// A column rotation: lane `c` takes lane `c + m (mod 4)`. `m` is a constant at every call.
#[inline(always)]
fn cols<V: V128>(v: V, m: usize) -> V {
    match m % 4 {
        0 => v,
        1 => v.lanes1(),
        2 => v.lanes2(),
        _ => v.lanes3(),
    }
}

/// MixColumns conjugated by `SR^n` (`n` = the round number mod 4, a constant at every call):
/// `MC(a) = 2·(a ⊕ R a) ⊕ R a ⊕ R²(a ⊕ R a)` where `R`, "byte of the next row", becomes "next
/// row and `n` columns on" under the conjugation.
#[inline(always)]
fn mix_columns<V: V128>(x: &mut Planes<V>, n: usize) {
    let mut ra = [V::zero(); 8];
    let mut t = [V::zero(); 8];
    for i in 0..8 {
        ra[i] = cols(x[i].rows1(), n);
        t[i] = x[i].xor(ra[i]);
    }
    // 2·t: the planes move up one bit, the top one folding back as x^4 + x^3 + x + 1.
    let d = [
        t[7],
        t[0].xor(t[7]),
        t[1],
        t[2].xor(t[7]),
        t[3].xor(t[7]),
        t[4],
        t[5],
        t[6],
    ];
    for i in 0..8 {
        x[i] = d[i].xor(ra[i]).xor(cols(t[i].rows2(), 2 * n));
    }
}

#[inline(always)]
fn add_round_key<V: V128>(x: &mut Planes<V>, k: &Planes<V>) {
    for i in 0..8 {
        x[i] = x[i].xor(k[i]);
    }
}

/// `SR^-n` on one plane: row `r` moves `n·r` columns on (lane `c` of row `r` takes lane
/// `c - n·r`).
#[inline(always)]
fn inv_shift_rows_n<V: V128>(v: V, n: usize) -> V {
    let mut out = V::zero();
    for r in 0..4 {
        let row = V::splat32(0xff << (8 * r));
        out = out.or(cols(v, 4 - (n * r) % 4).and(row));
    }
    out
}

/// A key's round keys in the fixsliced plane form the rounds use: key `i` as `SR^-i(K_i)`,
/// keys 1–10 with the S-box constant added.
pub struct Schedule<V>([Planes<V>; 11]);

impl<V: V128> Schedule<V> {
    pub fn new(key: &[u8; 16]) -> Self {
        const RCON: [u8; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];
        let ones = V::splat32(!0);
        let row0 = V::splat32(0xff);
        let mut k = [V::load(key); 8];
        transpose(&mut k);
        let mut rk = [k; 11];
        for (r, rcon) in RCON.iter().enumerate() {
            let mut s = k;
            sub_bytes_nc(&mut s);
            for i in 0..8 {
                // SubWord(RotWord(w3)) ⊕ rcon in every column; the constant bits are public.
                let mut t = s[i].bcast_lane3().rows1();
                if (SBOX_CONST >> i) & 1 == 1 {
                    t = t.xor(ones);
                }
                if (rcon >> i) & 1 == 1 {
                    t = t.xor(row0);
                }
                // w_c ← w_0 ⊕ … ⊕ w_c ⊕ t.
                let mut w = k[i];
                w = w.xor(w.lanes_up1());
                w = w.xor(w.lanes_up2());
                k[i] = w.xor(t);
                let mut f = inv_shift_rows_n(k[i], (r + 1) % 4);
                if (SBOX_CONST >> i) & 1 == 1 {
                    f = f.xor(ones);
                }
                rk[r + 1][i] = f;
            }
        }
        Schedule(rk)
    }

    /// Encrypts eight blocks in place (register `b` = block `b`).
    #[inline(always)]
    pub fn encrypt8(&self, x: &mut Planes<V>) {
        let rk = &self.0;
        transpose(x);
        add_round_key(x, &rk[0]);
        for (i, k) in rk[1..10].iter().enumerate() {
            sub_bytes_nc(x);
            mix_columns(x, (i + 1) % 4);
            add_round_key(x, k);
        }
        sub_bytes_nc(x);
        add_round_key(x, &rk[10]);
        // The registers hold SR^-10 = SR^2 of the state; SR^2 swaps the halves of rows 1 and 3.
        let rows02 = V::splat32(0x00ff_00ff);
        let rows13 = V::splat32(0xff00_ff00);
        for v in x.iter_mut() {
            *v = v.and(rows02).or(v.lanes2().and(rows13));
        }
        transpose(x);
    }
}

/// [`super::rpi_aes::rpi_blocks`] on this module's cipher: `out[..count]` gets the RPIs of
/// `first, first+1, …` under `rpik` (entries past `count` up to the next multiple of eight are
/// overwritten with further RPIs).
pub fn rpi_blocks<V: V128>(
    rpik: &[u8; 16],
    first: Enin,
    count: usize,
    out: &mut [[u8; 16]; MAX_RPIS],
) {
    let schedule = Schedule::<V>::new(rpik);
    let batches = count.min(MAX_RPIS).div_ceil(8);
    for (n, chunk) in out.chunks_exact_mut(8).take(batches).enumerate() {
        let base = first.0.wrapping_add(8 * n as u32);
        let mut x = [V::zero(); 8];
        for (b, v) in x.iter_mut().enumerate() {
            *v = V::load(&padded_data(Enin(base.wrapping_add(b as u32))));
        }
        schedule.encrypt8(&mut x);
        for (v, o) in x.iter().zip(chunk.iter_mut()) {
            v.store(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use aes::cipher::{BlockEncrypt, KeyInit};
    use proptest::prelude::*;

    use super::*;

    fn aes_crate(key: &[u8; 16], block: &[u8; 16]) -> [u8; 16] {
        let mut b = aes::Block::from(*block);
        aes::Aes128Enc::new(key.into()).encrypt_block(&mut b);
        b.into()
    }

    /// The AES S-box from its definition (inverse in GF(2^8), then the affine map).
    fn sbox_reference(a: u8) -> u8 {
        fn mul(mut a: u8, mut b: u8) -> u8 {
            let mut p = 0;
            while b != 0 {
                if b & 1 == 1 {
                    p ^= a;
                }
                let hi = a & 0x80;
                a <<= 1;
                if hi != 0 {
                    a ^= 0x1b;
                }
                b >>= 1;
            }
            p
        }
        let inv = (1..=255u8).find(|&x| mul(a, x) == 1).unwrap_or(0);
        inv ^ inv.rotate_left(1)
            ^ inv.rotate_left(2)
            ^ inv.rotate_left(3)
            ^ inv.rotate_left(4)
            ^ 0x63
    }

    fn load8(blocks: &[[u8; 16]; 8]) -> Planes<Native> {
        std::array::from_fn(|b| Native::load(&blocks[b]))
    }

    fn store8(x: &Planes<Native>) -> [[u8; 16]; 8] {
        let mut out = [[0u8; 16]; 8];
        for (v, o) in x.iter().zip(out.iter_mut()) {
            v.store(o);
        }
        out
    }

    fn pseudo_random_blocks(seed: u8) -> [[u8; 16]; 8] {
        std::array::from_fn(|b| {
            std::array::from_fn(|k| (seed ^ (b as u8 * 16 + k as u8)).wrapping_mul(167))
        })
    }

    #[test]
    fn transpose_puts_bit_i_of_every_byte_in_plane_i() {
        let blocks = pseudo_random_blocks(0x3c);
        let mut x = load8(&blocks);
        transpose(&mut x);
        let planes = store8(&x);
        for (i, plane) in planes.iter().enumerate() {
            for k in 0..16 {
                for (b, block) in blocks.iter().enumerate() {
                    assert_eq!(
                        (plane[k] >> b) & 1,
                        (block[k] >> i) & 1,
                        "plane {i} byte {k} block {b}"
                    );
                }
            }
        }
        transpose(&mut x);
        assert_eq!(store8(&x), blocks, "the transpose is its own inverse");
    }

    #[test]
    fn circuit_is_the_sbox_for_all_256_bytes() {
        for half in 0..2u8 {
            let blocks: [[u8; 16]; 8] = std::array::from_fn(|b| {
                std::array::from_fn(|k| half * 128 + b as u8 * 16 + k as u8)
            });
            let mut x = load8(&blocks);
            transpose(&mut x);
            sub_bytes_nc(&mut x);
            transpose(&mut x);
            for (block, out) in blocks.iter().zip(store8(&x)) {
                for (a, s) in block.iter().zip(out) {
                    assert_eq!(s ^ SBOX_CONST, sbox_reference(*a), "S-box of {a:#04x}");
                }
            }
        }
    }

    #[test]
    fn fips_197_appendix_c1() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let plain: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        let expected = hex::decode("69c4e0d86a7b0430d8cdb78070b4c55a").unwrap();
        let mut blocks = pseudo_random_blocks(7);
        blocks[5] = plain;
        let mut x = load8(&blocks);
        Schedule::<Native>::new(&key).encrypt8(&mut x);
        let out = store8(&x);
        assert_eq!(out[5].as_slice(), expected.as_slice());
        for (b, o) in blocks.iter().zip(out) {
            assert_eq!(o, aes_crate(&key, b), "the other seven blocks too");
        }
    }

    /// Every count of one key, against the `aes` crate block by block.
    fn check_every_count(key: &[u8; 16], first: u32) {
        let expected: Vec<[u8; 16]> = (0..MAX_RPIS as u32)
            .map(|j| aes_crate(key, &padded_data(Enin(first.wrapping_add(j)))))
            .collect();
        for count in 0..=MAX_RPIS {
            let mut out = [[0u8; 16]; MAX_RPIS];
            rpi_blocks::<Native>(key, Enin(first), count, &mut out);
            assert_eq!(&out[..count], &expected[..count], "count {count}");
        }
    }

    #[test]
    fn rpis_wrap_past_the_last_interval() {
        check_every_count(&[0xa5; 16], u32::MAX - 70);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 1 } else { 12 }))]

        #[test]
        fn random_keys_and_starts_equal_the_aes_crate(key: [u8; 16], first: u32) {
            check_every_count(&key, first);
        }
    }
}
