//! The observation index: every identifier heard, with its sightings, laid out for fast probing.
//!
//! A `HashSet` with SipHash costs ≈ 12–22 ns a probe here; the matcher probes every derived ID
//! (96 per Bluezone F0-day, 144 per GAEN key), and nearly all probes miss. So a miss must cost
//! one cache line, and in a 1M-ID log a line that stays in cache: see [`IdTable`]. Bucket and fingerprint come from a keyed hash of the *whole*
//! identifier under a per-build seed, so peers who choose the IDs we log cannot aim them at one
//! bucket (security review M3: hashing only the first 8 bytes let IDs that differ in the rest
//! share one bucket and fingerprint whatever the seed). Probes come in batches, so the cache
//! misses of one batch overlap.

use crate::ids::{Aem, PeerId};
use crate::sighting::Sighting;
use crate::time::UnixSeconds;

/// One reception, as the matcher and scorer need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub time: UnixSeconds,
    pub rssi: i8,
    pub tx_power: Option<i8>,
    pub aem: Option<Aem>,
}

/// 16-bit fingerprints per bucket: one 64-byte cache line. (Measured against 16 32-bit ones:
/// half the memory, so more of a 100k–1M-ID index stays in cache; the extra false matches cost
/// a full-ID compare about once per 2,000 probes.)
const BUCKET: usize = 32;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket([u16; BUCKET]);

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Filter bits an ID, and bits set an ID (each from 6 bits of the filter hash). With 64-bit
/// blocks this passes about 0.4 % of absent IDs on to the buckets (12 bits and 5 passed about
/// 1 %, and at 1M IDs each pass costs a bucket miss). The vector probe in `subkeys` spells out
/// the same six bits.
pub(crate) const FILTER_BITS: usize = 16;
pub(crate) const FILTER_K: u32 = 6;
/// Odd multiplier of the filter hash's finalizer.
const FMUL: u64 = 0xD6E8_FEB8_6659_FD93;

/// The filter's key and size: what a vector kernel needs to probe the filter itself. Its
/// `Debug` shows the size only: the key is what keeps chosen IDs from aiming at one word.
#[derive(Clone, Copy)]
pub struct FilterKey {
    /// XORed into the ID's four little-endian 32-bit words (missing words are 0).
    pub k: [u32; 4],
    /// Words of the filter.
    pub words: usize,
}

impl core::fmt::Debug for FilterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FilterKey")
            .field("k", &"<redacted>")
            .field("words", &self.words)
            .finish()
    }
}

/// The filter hash of an ID given as little-endian 32-bit words: a keyed NH pair sum
/// (`(w0^k0)(w1^k1) + (w2^k2)(w3^k3)`, 64-bit products) then an xor-shift-multiply finalizer.
/// Built from 32 × 32 → 64 multiplies so that AVX-512 computes it sixteen lanes at a time
/// (`subkeys`); unknown keys keep chosen IDs from aiming at one filter word.
#[inline(always)]
pub fn filter_hash(w: [u32; 4], key: &FilterKey) -> u64 {
    let a = (w[0] ^ key.k[0]) as u64 * (w[1] ^ key.k[1]) as u64;
    let b = (w[2] ^ key.k[2]) as u64 * (w[3] ^ key.k[3]) as u64;
    let h = a.wrapping_add(b);
    (h ^ (h >> 32)).wrapping_mul(FMUL)
}

/// The filter word of filter hash `h` (multiply-shift range reduction of its bits 32..64, so
/// the filter need not be a power of two long) and the bits it must hold (bits 0..36).
#[inline(always)]
pub fn filter_slot(h: u64, words: usize) -> (usize, u64) {
    let w = (((h >> 32) * words as u64) >> 32) as usize;
    let mut m = 0u64;
    for k in 0..FILTER_K {
        m |= 1 << ((h >> (6 * k)) & 63);
    }
    (w, m)
}

/// Whether `id`'s word of `filter` (keyed and sized by `fk`) holds all of its bits: false
/// means `id` is surely absent. Callers keep `filter` and `fk` in locals for their loops.
#[inline(always)]
fn passes_filter<const N: usize>(filter: &[u64], fk: &FilterKey, id: &[u8; N]) -> bool {
    let (w, m) = filter_slot(filter_hash(id_words(id), fk), fk.words);
    // `w < words` by construction; the index check stays out of the hot loop's dependency
    // chain.
    let f = filter.get(w).copied().unwrap_or(u64::MAX);
    f & m == m
}

/// An ID's bytes as the filter hash's little-endian words.
#[inline(always)]
fn id_words<const N: usize>(id: &[u8; N]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (x, c) in w.iter_mut().zip(id.chunks_exact(4)) {
        *x = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

/// Longest run of buckets an ID may be placed away from its home bucket. With the keyed hash
/// and tables at most half full, a run of even two is rare; a longer one means the seed's
/// hash is unlucky (or known to whoever chose the IDs), so the build starts over with a new key
/// and twice the buckets rather than let probes walk a long chain.
const MAX_RUN: usize = 4;
const MAX_REBUILDS: u32 = 3;

/// Identifiers of one length (`N` = 12 for Bluezone, 16 for GAEN) with their observations.
///
/// Layout: a Bloom filter in front (see `filter`), then buckets of 32 16-bit fingerprints (0 = empty), one cache line each, holding on
/// average ≤ 16; an ID's bucket comes from the top bits of [`Key::hash`] of the whole ID, its
/// fingerprint from 16 other bits of it. A lookup reads one line and compares all 32
/// fingerprints at once (one AVX-512 compare, or four SSE2 ones); only an overflowed bucket
/// sends it on to the next. `groups` runs parallel to the fingerprints and is read only on a fingerprint match,
/// which is then confirmed against the full ID.
pub struct IdTable<const N: usize> {
    /// First level: a register-blocked Bloom filter, [`FILTER_BITS`] bits an ID, every ID's
    /// [`FILTER_K`] bits in one 64-bit word. At 1M IDs it is 2 MB, half the buckets, and a probe
    /// that misses (nearly all) reads one word of it.
    filter: Vec<u64>,
    fkey: FilterKey,
    buckets: Vec<Bucket>,
    /// Bit `b`: bucket `b` filled up and some ID whose home it is lives further on. Only then
    /// does a lookup that found nothing in `b` go on to the next bucket.
    overflowed: Vec<u64>,
    groups: Vec<u32>,
    shift: u32,
    key: Key,
    ids: Vec<[u8; N]>,
    /// `obs[starts[g]..starts[g + 1]]` are group `g`'s observations, sorted by time.
    starts: Vec<u32>,
    obs: Vec<Observation>,
}

/// The per-build key of the table's hash.
#[derive(Clone, Copy)]
struct Key([u64; 3]);

/// 64×64 → 128-bit multiply, halves folded: every output bit depends on every input bit.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = a as u128 * b as u128;
    p as u64 ^ (p >> 64) as u64
}

/// SplitMix64 step: the per-build key words from the seed.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Key {
    fn new(mut seed: u64) -> Key {
        Key([
            splitmix(&mut seed),
            splitmix(&mut seed),
            splitmix(&mut seed),
        ])
    }

    /// Keyed hash of a whole 12- or 16-byte ID: its first and last 8 bytes (overlapping for
    /// 12) go through two keyed folded multiplies (the wyhash/foldhash construction). Two
    /// multiplies a probe, next to one cache miss, and no ID byte left out of the hash.
    #[inline(always)]
    fn hash<const N: usize>(&self, id: &[u8; N]) -> u64 {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&id[..8]);
        hi.copy_from_slice(&id[N - 8..]);
        let (lo, hi) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        fold(fold(lo ^ self.0[0], hi ^ self.0[1]) ^ self.0[2], MUL)
    }
}

#[inline(always)]
fn fingerprint(hash: u64) -> u16 {
    // Bits 16..32: disjoint from the bucket's top bits for any table under 2^32 buckets.
    ((hash >> 16) as u16) | 1
}

impl<const N: usize> IdTable<N> {
    fn build(mut items: Vec<([u8; N], Observation)>, seed: u64) -> Self {
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.time.cmp(&b.1.time)));
        let mut ids = Vec::new();
        let mut starts = Vec::new();
        let mut obs = Vec::with_capacity(items.len());
        for (id, o) in items {
            if ids.last() != Some(&id) {
                ids.push(id);
                starts.push(obs.len() as u32);
            }
            obs.push(o);
        }
        starts.push(obs.len() as u32);
        let mut nb = (ids.len() / (BUCKET / 2)).next_power_of_two().max(2);
        let mut seed = seed;
        let mut t = IdTable {
            filter: Vec::new(),
            fkey: FilterKey {
                k: [0; 4],
                words: 0,
            },
            buckets: Vec::new(),
            overflowed: Vec::new(),
            groups: Vec::new(),
            shift: 0,
            key: Key::new(seed),
            ids,
            starts,
            obs,
        };
        for attempt in 0..=MAX_REBUILDS {
            // The last attempt accepts any run length: correctness never depends on the cap.
            let cap = if attempt == MAX_REBUILDS {
                usize::MAX
            } else {
                MAX_RUN
            };
            if t.place_all(nb, Key::new(seed), cap) {
                break;
            }
            nb *= 2;
            seed = splitmix(&mut seed);
        }
        t
    }

    /// Lays the IDs out in `nb` buckets under `key`; false if some ID would land more than
    /// `max_run` buckets past its home.
    fn place_all(&mut self, nb: usize, key: Key, max_run: usize) -> bool {
        let words = (self.ids.len() * FILTER_BITS).div_ceil(64).max(1);
        self.filter = vec![0; words];
        let (k0, k1) = (key.0[0] ^ key.0[2], key.0[1] ^ key.0[2].rotate_left(32));
        self.fkey = FilterKey {
            k: [k0 as u32, (k0 >> 32) as u32, k1 as u32, (k1 >> 32) as u32],
            words,
        };
        self.buckets = vec![Bucket::default(); nb];
        self.overflowed = vec![0; nb.div_ceil(64)];
        self.groups = vec![0; nb * BUCKET];
        self.shift = 64 - nb.trailing_zeros();
        self.key = key;
        for g in 0..self.ids.len() {
            let (w, m) = filter_slot(filter_hash(id_words(&self.ids[g]), &self.fkey), words);
            self.filter[w] |= m;
            let h = self.key.hash(&self.ids[g]);
            let fp = fingerprint(h);
            let mut b = self.bucket_of(h);
            let mut run = 0;
            'place: loop {
                for i in 0..BUCKET {
                    if self.buckets[b].0[i] == 0 {
                        self.buckets[b].0[i] = fp;
                        self.groups[b * BUCKET + i] = g as u32;
                        break 'place;
                    }
                }
                run += 1;
                if run > max_run {
                    return false;
                }
                self.overflowed[b / 64] |= 1 << (b % 64);
                b = (b + 1) & (nb - 1);
            }
        }
        true
    }

    #[inline(always)]
    fn bucket_of(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// Buckets holding at least one ID (for tests of the spread).
    pub fn occupied_buckets(&self) -> usize {
        self.buckets.iter().filter(|b| b.0[0] != 0).count()
    }

    pub fn distinct_ids(&self) -> usize {
        self.ids.len()
    }

    pub fn observations(&self) -> &[Observation] {
        &self.obs
    }

    #[inline(always)]
    fn is_overflowed(&self, b: usize) -> bool {
        self.overflowed[b / 64] & (1 << (b % 64)) != 0
    }

    /// The group of `id`, if it was ever seen.
    #[inline]
    pub fn find(&self, id: &[u8; N]) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        self.find_with(id, masks)
    }

    /// The full lookup (past the filter), with the bucket compare passed in.
    #[inline(always)]
    fn find_with(&self, id: &[u8; N], compare: impl Fn(&Bucket, u16) -> u32) -> Option<u32> {
        let h = self.key.hash(id);
        let fp = fingerprint(h);
        let mask = self.buckets.len() - 1;
        let mut b = self.bucket_of(h);
        loop {
            let mut hits = compare(&self.buckets[b], fp);
            while hits != 0 {
                let i = hits.trailing_zeros() as usize;
                let g = self.groups[b * BUCKET + i];
                if self.ids[g as usize] == *id {
                    return Some(g);
                }
                hits &= hits - 1;
            }
            if !self.is_overflowed(b) {
                return None;
            }
            b = (b + 1) & mask;
        }
    }

    /// Probes a batch, calling `hit(i, group)` for each `ids[i]` that was seen (in order).
    ///
    /// A tight branch-free first pass hashes every ID and reads its filter word, noting only
    /// the IDs the filter lets through; the full lookup then runs for those few. Nearly every
    /// probe misses and nothing is carried between IDs, so the out-of-order core overlaps the
    /// filter reads by itself. Plain scalar code: the same on every CPU, and no AVX-512 state
    /// to leave dirty for the SSE code around it.
    #[inline]
    pub fn find_batch<T: IdBytes<N>>(&self, ids: &[T], mut hit: impl FnMut(usize, u32)) {
        if self.ids.is_empty() {
            return;
        }
        const CHUNK: usize = 256;
        let filter = &self.filter[..];
        let fkey = self.fkey;
        let mut cand = [0u16; CHUNK];
        for (c, chunk) in ids.chunks(CHUNK).enumerate() {
            let mut n = 0;
            for (i, id) in chunk.iter().enumerate() {
                cand[n] = i as u16;
                n += passes_filter(filter, &fkey, id.id_bytes()) as usize;
            }
            for &i in &cand[..n] {
                self.prefetch_bucket(chunk[i as usize].id_bytes());
            }
            for &i in &cand[..n] {
                let i = i as usize;
                if let Some(g) = self.find_with(chunk[i].id_bytes(), masks) {
                    hit(c * CHUNK + i, g);
                }
            }
        }
    }

    /// Full lookups of IDs that passed the filter (see [`filter`](Self::filter)), calling
    /// `hit(i, group)` for each `ids[i]` that was seen: their buckets are prefetched first, so
    /// that in a large index their cache misses overlap instead of following one another.
    pub fn find_passed<T: IdBytes<N>>(&self, ids: &[T], mut hit: impl FnMut(usize, u32)) {
        if self.ids.is_empty() {
            return;
        }
        for id in ids {
            self.prefetch_bucket(id.id_bytes());
        }
        for (i, id) in ids.iter().enumerate() {
            if let Some(g) = self.find_with(id.id_bytes(), masks) {
                hit(i, g);
            }
        }
    }

    #[inline(always)]
    fn prefetch_bucket(&self, id: &[u8; N]) {
        let b = self.bucket_of(self.key.hash(id));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint that never faults; `b` < buckets.len() anyway.
        unsafe {
            use core::arch::x86_64::*;
            _mm_prefetch::<_MM_HINT_T0>(self.buckets.as_ptr().add(b) as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = b;
    }

    /// The filter, for kernels that probe it themselves (each then confirms a pass with
    /// [`find`](Self::find)): its words, and the key and size [`filter_hash`] and
    /// [`filter_slot`] take.
    pub fn filter(&self) -> (&[u64], FilterKey) {
        (&self.filter, self.fkey)
    }

    /// Observation indices of group `g` with `t0 <= time <= t1`.
    #[inline]
    pub fn seen_within(&self, g: u32, t0: UnixSeconds, t1: UnixSeconds) -> std::ops::Range<usize> {
        let (a, b) = (
            self.starts[g as usize] as usize,
            self.starts[g as usize + 1] as usize,
        );
        let o = &self.obs[a..b];
        let lo = o.partition_point(|x| x.time < t0);
        let hi = o.partition_point(|x| x.time <= t1);
        if lo >= hi {
            a..a
        } else {
            a + lo..a + hi
        }
    }

    pub fn id_of(&self, g: u32) -> &[u8; N] {
        &self.ids[g as usize]
    }
}

/// IDs a [`IdTable::find_batch16`] pass handles at once (two GAEN keys' RPIs). Its prefetched
/// filter lines must still be in L1 when the second pass reads them: 288 lines fit the 32 KB L1
/// of AMD Zen 4, where 576 did not (measured 2026-12-01: GAEN core 2.02M vs 1.93M keys/s at
/// 100k RPIs, 1.70M vs 1.63M at 1M).
#[cfg(target_arch = "x86_64")]
const FILTER_CHUNK16: usize = 288;

impl IdTable<16> {
    /// [`find_batch`](Self::find_batch) for 16-byte IDs laid out one after another (GAEN's
    /// RPIs as the AES kernel writes them). With AVX-512 the filter hash of four IDs is
    /// computed in one zmm register (each ID's two 64-bit halves are the hash's two NH
    /// products), so the first pass costs a few vector instructions per four IDs instead of
    /// some forty scalar ones per ID. Same results, same order.
    // `hit` is only re-borrowed mutably by the x86-64 path.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    pub fn find_batch16(&self, ids: &[[u8; 16]], mut hit: impl FnMut(usize, u32)) {
        #[cfg(target_arch = "x86_64")]
        if super::cpu::avx512() && !self.ids.is_empty() {
            const CHUNK: usize = FILTER_CHUNK16;
            let mut cand = [0u16; CHUNK];
            for (c, chunk) in ids.chunks(CHUNK).enumerate() {
                // SAFETY: the CPU has AVX-512F and DQ (checked above); `fkey.words` is the
                // filter's length.
                let n = unsafe { self.filter_pass16(chunk, &mut cand) };
                for &i in &cand[..n] {
                    self.prefetch_bucket(&chunk[i as usize]);
                }
                for &i in &cand[..n] {
                    let i = i as usize;
                    if let Some(g) = self.find_with(&chunk[i], masks) {
                        hit(c * CHUNK + i, g);
                    }
                }
            }
            return;
        }
        self.find_batch(ids, hit)
    }

    /// Writes the positions of the IDs of `ids` (at most [`FILTER_CHUNK16`]) that pass the
    /// filter to `cand` and returns how many. Two passes: the first hashes every ID, keeps its
    /// word index and bits and prefetches the word; the second tests each word with a scalar
    /// load, by which time the words of a filter too large for the cache (2 MB at 1M IDs)
    /// are on their way. Scalar loads, not `vpgatherqq`: on AMD Zen 4 the gather made the
    /// whole GAEN core 14–21 % slower (1.47M vs 1.70–1.86M keys/s at 100k RPIs, measured
    /// 2026-12-01), and Intel CPUs with the Downfall (GDS) microcode slow gathers as well.
    ///
    /// Eight IDs a step, so that every 64-bit lane after the NH products holds a whole ID: two
    /// zmm of four IDs give sixteen 64-bit products, whose pairs are summed across the two
    /// registers (unpack low + high) into one register of eight hashes, left in the unpacks'
    /// order (the second pass reads them back in ID order: a `vpermq` less). The vector ports are
    /// the limit here (AVX-512 issues on two), so the bit mask uses rotates (`vprolvq` takes
    /// its count modulo 64: no masking) and three-way ORs, and the word indices reach the
    /// scalar prefetches through memory (loads) rather than lane extracts.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn filter_pass16(&self, ids: &[[u8; 16]], cand: &mut [u16; FILTER_CHUNK16]) -> usize {
        use core::arch::x86_64::*;
        use core::mem::MaybeUninit;
        let fk = self.fkey;
        let base = self.filter.as_ptr();
        let key = _mm512_setr_epi32(
            fk.k[0] as i32,
            fk.k[1] as i32,
            fk.k[2] as i32,
            fk.k[3] as i32,
            fk.k[0] as i32,
            fk.k[1] as i32,
            fk.k[2] as i32,
            fk.k[3] as i32,
            fk.k[0] as i32,
            fk.k[1] as i32,
            fk.k[2] as i32,
            fk.k[3] as i32,
            fk.k[0] as i32,
            fk.k[1] as i32,
            fk.k[2] as i32,
            fk.k[3] as i32,
        );
        let fmul = _mm512_set1_epi64(FMUL as i64);
        let nwords = _mm512_set1_epi64(fk.words as i64);
        let one = _mm512_set1_epi64(1);
        // Written in full for the first `8 * octs` entries before any is read: no memset.
        let mut widx = [MaybeUninit::<u64>::uninit(); FILTER_CHUNK16];
        let mut wbits = [MaybeUninit::<u64>::uninit(); FILTER_CHUNK16];
        let widx_p = widx.as_mut_ptr() as *mut u64;
        let wbits_p = wbits.as_mut_ptr() as *mut u64;
        // The stack arrays and the unchecked stores below rely on it: one compare a pass.
        assert!(
            ids.len() <= FILTER_CHUNK16,
            "a pass is at most FILTER_CHUNK16 IDs"
        );
        let octs = ids.len() / 8;
        const PREFETCH_LAG: usize = 2;
        let src = ids.as_ptr() as *const __m512i;
        for o in 0..octs {
            let xa = _mm512_xor_si512(_mm512_loadu_si512(src.add(2 * o) as *const _), key);
            let xb = _mm512_xor_si512(_mm512_loadu_si512(src.add(2 * o + 1) as *const _), key);
            // Qword 2i of an ID's pair: (w0^k0)(w1^k1); qword 2i + 1: (w2^k2)(w3^k3).
            let pa = _mm512_mul_epu32(xa, _mm512_srli_epi64::<32>(xa));
            let pb = _mm512_mul_epu32(xb, _mm512_srli_epi64::<32>(xb));
            let h = _mm512_add_epi64(_mm512_unpacklo_epi64(pa, pb), _mm512_unpackhi_epi64(pa, pb));
            let h = _mm512_mullo_epi64(_mm512_xor_si512(h, _mm512_srli_epi64::<32>(h)), fmul);
            // `vpmuludq` written out: LLVM sees through any shift or dword swap of `h` that
            // both factors' upper halves are zero and emits the three-uop `vpmullq` instead
            // (with Rust 1.95 even for the swap this code used before), on the loop's longest
            // dependency chain.
            let idx: __m512i;
            core::arch::asm!(
                "vpmuludq {idx}, {h}, {n}",
                idx = lateout(zmm_reg) idx,
                h = in(zmm_reg) _mm512_srli_epi64::<32>(h),
                n = in(zmm_reg) nwords,
                options(pure, nomem, nostack, preserves_flags),
            );
            let idx = _mm512_srli_epi64::<32>(idx);
            let bit = |c: __m512i| _mm512_rolv_epi64(one, c);
            let m = _mm512_ternarylogic_epi64::<0xFE>(
                _mm512_ternarylogic_epi64::<0xFE>(
                    bit(h),
                    bit(_mm512_srli_epi64::<6>(h)),
                    bit(_mm512_srli_epi64::<12>(h)),
                ),
                _mm512_or_si512(
                    bit(_mm512_srli_epi64::<18>(h)),
                    bit(_mm512_srli_epi64::<24>(h)),
                ),
                bit(_mm512_srli_epi64::<30>(h)),
            );
            _mm512_storeu_si512(widx_p.add(8 * o) as *mut _, idx);
            _mm512_storeu_si512(wbits_p.add(8 * o) as *mut _, m);
            // The words of the octet two steps back, read back from memory: not extracted
            // from lanes (the vector ports are busy), and not the octet just stored (a 64-bit
            // load from the upper half of a 512-bit store still in the store buffer does not
            // forward, and stalled every step).
            if o >= PREFETCH_LAG {
                let w = core::hint::black_box(widx_p.add(8 * (o - PREFETCH_LAG))) as *const u64;
                for k in 0..8 {
                    _mm_prefetch::<_MM_HINT_T0>(base.add(*w.add(k) as usize) as *const i8);
                }
            }
        }
        let mut n = 0;
        for o in 0..octs {
            let (wo, bo) = (widx_p.add(8 * o), wbits_p.add(8 * o));
            for j in 0..8 {
                // After the unpacks, qword 2l + s of an octet holds its ID 4s + l.
                let k = (j & 3) << 1 | j >> 2;
                let w = *wo.add(k);
                let m = *bo.add(k);
                // Every index is below `fk.words`, the filter's length. The test is written
                // in `asm!` so that LLVM keeps the eight of an octet scalar (it merges their
                // loads into a `vpgatherqq`, slow on AMD Zen 4 and under the Downfall
                // microcode, or moves the words into vectors): `missing = m & !word`.
                let missing: u64;
                core::arch::asm!(
                    "mov {x}, qword ptr [{b} + {w} * 8]",
                    "not {x}",
                    "and {x}, {m}",
                    b = in(reg) base,
                    w = in(reg) w,
                    m = in(reg) m,
                    x = out(reg) missing,
                    options(pure, readonly, nostack),
                );
                // `n <= 8 * o + j < FILTER_CHUNK16`: no bounds check in the loop.
                *cand.get_unchecked_mut(n) = (8 * o + j) as u16;
                n += (missing == 0) as usize;
            }
        }
        for (i, id) in ids.iter().enumerate().skip(8 * octs) {
            cand[n] = i as u16;
            n += passes_filter(&self.filter, &fk, id) as usize;
        }
        n
    }
}

const _: () = assert!(
    FILTER_K == 6,
    "the AVX-512 filter probes spell out six bits"
);

/// Bit mask of the bucket's slots equal to `fp` (SSE2, part of the x86-64 baseline).
#[inline(always)]
fn masks(bucket: &Bucket, fp: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86-64 baseline; the bucket is 64-byte aligned, so the
        // four aligned 16-byte loads stay inside it.
        unsafe {
            let f = _mm_set1_epi16(fp as i16);
            let p = bucket.0.as_ptr() as *const __m128i;
            let c = |k: usize| _mm_cmpeq_epi16(_mm_load_si128(p.add(k)), f);
            // Packing two compares gives one byte per slot, so one movemask covers 16 slots.
            let lo = _mm_movemask_epi8(_mm_packs_epi16(c(0), c(1))) as u32;
            let hi = _mm_movemask_epi8(_mm_packs_epi16(c(2), c(3))) as u32;
            lo | hi << 16
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Compared a slot at a time, the 32 compares vectorise (NEON on ARM gateways).
        let mut hits = 0u32;
        for (i, &x) in bucket.0.iter().enumerate() {
            hits |= ((x == fp) as u32) << i;
        }
        hits
    }
}

/// Anything that holds an identifier's bytes: plain arrays, and AES output blocks (so the GAEN
/// matcher probes its RPIs where the cipher wrote them, without a copy).
pub trait IdBytes<const N: usize> {
    fn id_bytes(&self) -> &[u8; N];
}

impl<const N: usize> IdBytes<N> for [u8; N] {
    #[inline(always)]
    fn id_bytes(&self) -> &[u8; N] {
        self
    }
}

impl IdBytes<16> for aes::Block {
    #[inline(always)]
    fn id_bytes(&self) -> &[u8; 16] {
        self.as_ref()
    }
}

/// Both protocols' identifiers, built from the store's read-out.
pub struct ObservationIndex {
    pub bluezone: IdTable<12>,
    pub gaen: IdTable<16>,
    /// Time of the oldest and newest sighting (keys entirely outside are rejected cheaply).
    pub time_range: Option<(UnixSeconds, UnixSeconds)>,
}

impl ObservationIndex {
    /// `seed` should be random per build (the daemon draws it); it only spreads the table.
    pub fn build(sightings: &[Sighting], seed: u64) -> ObservationIndex {
        let mut bz = Vec::new();
        let mut ga = Vec::new();
        let mut range: Option<(i64, i64)> = None;
        for s in sightings {
            let o = Observation {
                time: s.time,
                rssi: s.rssi,
                tx_power: s.tx_power,
                aem: s.aem,
            };
            range = Some(match range {
                None => (s.time, s.time),
                Some((a, b)) => (a.min(s.time), b.max(s.time)),
            });
            match s.peer {
                PeerId::Bluezone(id) => bz.push((id.0, o)),
                PeerId::Gaen(rpi) => ga.push((rpi.0, o)),
            }
        }
        ObservationIndex {
            bluezone: IdTable::build(bz, seed),
            gaen: IdTable::build(ga, seed.rotate_left(17)),
            time_range: range,
        }
    }

    pub fn distinct_ids(&self) -> usize {
        self.bluezone.distinct_ids() + self.gaen.distinct_ids()
    }

    pub fn sightings(&self) -> usize {
        self.bluezone.observations().len() + self.gaen.observations().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RollingId;

    fn s(id: u8, t: i64) -> Sighting {
        Sighting {
            peer: PeerId::Bluezone(RollingId([id; 12])),
            time: t,
            rssi: -60,
            tx_power: None,
            aem: None,
        }
    }

    #[test]
    fn finds_what_was_seen_and_nothing_else() {
        let sightings: Vec<_> = (0..200u8)
            .map(|i| s(i, 1000 + i as i64))
            .chain([s(5, 10)])
            .collect();
        let idx = ObservationIndex::build(&sightings, 42);
        assert_eq!(idx.bluezone.distinct_ids(), 200);
        assert_eq!(idx.time_range, Some((10, 1199)));
        let g = idx.bluezone.find(&[5; 12]).unwrap();
        assert_eq!(idx.bluezone.seen_within(g, 0, 100).len(), 1);
        assert_eq!(idx.bluezone.seen_within(g, 0, 2000).len(), 2);
        assert_eq!(idx.bluezone.seen_within(g, 11, 1004).len(), 0);
        assert_eq!(idx.bluezone.find(&[0xee; 12]), None);
        let mut hits = vec![];
        idx.bluezone
            .find_batch(&[[1; 12], [0xfe; 12], [199; 12]], |i, _| hits.push(i));
        assert_eq!(hits, vec![0, 2]);
        // An ID whose first bytes are 0 is still found.
        let z = ObservationIndex::build(&[s(0, 1)], 7);
        assert!(z.bluezone.find(&[0; 12]).is_some());
        // Forty IDs sharing their first 8 bytes are each found, and only themselves.
        let twins: Vec<Sighting> = (0..40u8)
            .map(|i| {
                let mut id = [7u8; 12];
                id[11] = i;
                Sighting {
                    peer: PeerId::Bluezone(RollingId(id)),
                    ..s(0, 100 + i as i64)
                }
            })
            .chain((0..60u8).map(|i| s(i.wrapping_add(100), 5)))
            .collect();
        let t = ObservationIndex::build(&twins, 99);
        for i in 0..40u8 {
            let mut id = [7u8; 12];
            id[11] = i;
            let g = t.bluezone.find(&id).expect("twin found");
            assert_eq!(t.bluezone.id_of(g), &id);
            let mut n = 0;
            t.bluezone.find_batch(&[id], |_, g2| {
                assert_eq!(g2, g);
                n += 1
            });
            assert_eq!(n, 1);
        }
        let mut absent = [7u8; 12];
        absent[11] = 200;
        assert_eq!(t.bluezone.find(&absent), None);
        let mut n = 0;
        t.bluezone.find_batch(&[absent], |_, _| n += 1);
        assert_eq!(n, 0);
        let empty = ObservationIndex::build(&[], 1);
        assert_eq!(empty.bluezone.find(&[0; 12]), None);
    }

    /// Security review M3: IDs that differ only after their first 8 bytes (what a peer flooding
    /// the log would broadcast) spread over the buckets like random ones, for either protocol.
    #[test]
    fn ids_sharing_a_prefix_spread_over_buckets() {
        const K: u32 = 4096;
        let crafted_bz: Vec<Sighting> = (0..K)
            .map(|i| {
                let mut id = [0xAB; 12];
                id[8..].copy_from_slice(&i.to_le_bytes());
                Sighting {
                    peer: PeerId::Bluezone(RollingId(id)),
                    ..s(0, 100)
                }
            })
            .collect();
        let crafted_ga: Vec<Sighting> = (0..K)
            .map(|i| {
                let mut id = [0xCD; 16];
                id[12..].copy_from_slice(&i.to_le_bytes());
                Sighting {
                    peer: PeerId::Gaen(crate::ids::Rpi(id)),
                    ..s(0, 100)
                }
            })
            .collect();
        for seed in [1u64, 0xDEAD_BEEF, u64::MAX] {
            let bz = ObservationIndex::build(&crafted_bz, seed);
            let ga = ObservationIndex::build(&crafted_ga, seed);
            // 4096 IDs in 256 buckets: a random spread leaves almost none empty; one shared
            // bucket (the old behaviour) would fill 4096 / 32 = 128 in one run.
            for (name, t) in [
                ("bluezone", bz.bluezone.occupied_buckets()),
                ("gaen", ga.gaen.occupied_buckets()),
            ] {
                assert!(t >= 250, "{name} seed {seed}: {t} of 256 buckets used");
            }
            for i in (0..K).step_by(97) {
                let mut id = [0xAB; 12];
                id[8..].copy_from_slice(&i.to_le_bytes());
                assert!(bz.bluezone.find(&id).is_some());
            }
        }
    }

    /// The batch probes (scalar and, where the CPU has it, the AVX-512 one for 16-byte IDs)
    /// report exactly the IDs `find` finds, in order, for batch lengths around the vector and
    /// chunk sizes; and every ID in the table passes its own filter.
    #[test]
    fn batch_probes_equal_single_lookups() {
        use crate::ids::Rpi;
        let id = |i: u32| -> [u8; 16] {
            let mut b = [0u8; 16];
            for (k, c) in b.chunks_exact_mut(4).enumerate() {
                c.copy_from_slice(
                    &(i.wrapping_mul(0x9E37_79B9).rotate_left(k as u32 * 7) ^ k as u32)
                        .to_le_bytes(),
                );
            }
            b
        };
        let sightings: Vec<Sighting> = (0..5000u32)
            .step_by(2)
            .map(|i| Sighting {
                peer: PeerId::Gaen(Rpi(id(i))),
                ..s(0, 100)
            })
            .collect();
        let t = ObservationIndex::build(&sightings, 77);
        for len in [
            // Around the AVX-512 pass's chunk (288) and two of them (576).
            0usize, 1, 3, 4, 5, 7, 8, 9, 143, 144, 255, 256, 257, 287, 288, 289, 575, 576, 577, 600,
        ] {
            let batch: Vec<[u8; 16]> = (0..len as u32).map(|i| id(i * 3)).collect();
            let want: Vec<(usize, u32)> = batch
                .iter()
                .enumerate()
                .filter_map(|(i, x)| t.gaen.find(x).map(|g| (i, g)))
                .collect();
            let mut got = vec![];
            t.gaen.find_batch(&batch, |i, g| got.push((i, g)));
            assert_eq!(got, want, "find_batch, len {len}");
            let mut got16 = vec![];
            t.gaen.find_batch16(&batch, |i, g| got16.push((i, g)));
            assert_eq!(got16, want, "find_batch16, len {len}");
            // Every even ID below 5000 is in the table: each found, so each passed its filter.
            assert_eq!(want.len(), len.div_ceil(2), "present IDs found, len {len}");
        }
    }

    /// The AVX-512 filter pass keeps exactly the IDs whose filter word (tested the scalar
    /// way) holds all their bits: every present ID, and only a few absent ones.
    #[test]
    fn the_vector_filter_pass_keeps_what_the_scalar_filter_keeps() {
        #[cfg(target_arch = "x86_64")]
        {
            if !super::super::cpu::avx512() {
                eprintln!("no AVX-512 here (or switched off): the vector filter pass is not run");
                return;
            }
            let id = |i: u32| -> [u8; 16] {
                let mut b = [0u8; 16];
                for (k, c) in b.chunks_exact_mut(4).enumerate() {
                    c.copy_from_slice(
                        &(i.wrapping_mul(0x2545_F491) ^ (k as u32) << 29).to_le_bytes(),
                    );
                }
                b
            };
            let sightings: Vec<Sighting> = (0..20_000u32)
                .step_by(2)
                .map(|i| Sighting {
                    peer: PeerId::Gaen(crate::ids::Rpi(id(i))),
                    ..s(0, 100)
                })
                .collect();
            let t = ObservationIndex::build(&sightings, 5);
            let table = &t.gaen;
            let (mut present, mut absent_kept) = (0, 0);
            for len in [1usize, 7, 8, 9, 100, 287, 288] {
                for start in [0u32, 1001, 7777] {
                    let batch: Vec<[u8; 16]> = (start..start + len as u32).map(id).collect();
                    let mut cand = [0u16; FILTER_CHUNK16];
                    // SAFETY: the CPU has AVX-512 (checked above); the batch is one pass.
                    let n = unsafe { table.filter_pass16(&batch, &mut cand) };
                    let want: Vec<u16> = (0..len as u16)
                        .filter(|&i| passes_filter(&table.filter, &table.fkey, &batch[i as usize]))
                        .collect();
                    assert_eq!(&cand[..n], &want[..], "len {len}, start {start}");
                    for i in 0..len {
                        let kept = want.contains(&(i as u16));
                        if (start as usize + i).is_multiple_of(2) {
                            assert!(kept, "a present ID failed its filter (len {len})");
                            present += 1;
                        } else {
                            absent_kept += kept as usize;
                        }
                    }
                }
            }
            // About 0.4 % of absent IDs pass a 16-bit-an-ID filter; a filter that let
            // everything through would keep half of every batch.
            assert!(present > 500);
            assert!(
                absent_kept * 50 < present,
                "{absent_kept} absent IDs passed"
            );
        }
    }
}
