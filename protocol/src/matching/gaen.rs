//! GAEN diagnosis-key matching (`shared/spec/gaen.md` §1).
//!
//! Per key: HKDF-SHA256 → RPIK, the key's `rolling_period` RPIs in one AES pass, one batched
//! probe. HKDF with no salt uses the constant HMAC pads of a 32-byte zero key, so their
//! compressed states are computed once; the remaining six compressions of each key run four keys
//! at a time through [`sha256x`](super::sha256x). Keys are spread over threads in chunks, so a
//! run over millions of keys never holds more than one chunk's RPIs per thread.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::index::ObservationIndex;
use super::rpi_aes::{rpi_blocks4, MAX_RPIS};
use super::sha256x::{compress_lanes, digest_bytes, pad32, IV};
use super::{Hit, MatchConfig, MatchStats};
use crate::gaen::export::{ExportKey, ReportType};
use crate::gaen::{decrypt_metadata, Aemk, Enin, INTERVAL_SECONDS, RPI_VALIDITY_INTERVALS};
use crate::ids::{Rpi, Tek};

const LANES: usize = 4;
/// Keys whose HKDF runs together on the AVX-512 path (one per 32-bit lane of a zmm).
const WIDE: usize = 16;
const KEYS_PER_TASK: usize = 2048;
/// How far ahead the first pass over a task's keys asks for them ([`KeySource::prefetch`]).
const PREFETCH_KEYS: usize = 16;

/// Whether the HKDF runs sixteen keys at a time in AVX-512 lanes (else four through
/// [`compress_lanes`]: SHA-NI pairs or portable).
fn wide_hkdf() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::cpu::avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A published key as the matcher needs it.
#[derive(Clone, Debug)]
pub struct GaenKey {
    pub tek: Tek,
    pub rolling_start: Enin,
    pub rolling_period: u32,
    /// Report type 5: the key was withdrawn and must never match.
    pub revoked: bool,
}

impl GaenKey {
    /// `[first, last]` unix seconds in which a sighting of any of this key's RPIs can count.
    #[inline]
    pub fn validity(&self) -> (i64, i64) {
        validity(self.rolling_start, self.rolling_period)
    }
}

impl From<&ExportKey> for GaenKey {
    fn from(k: &ExportKey) -> GaenKey {
        GaenKey {
            tek: k.tek.clone(),
            rolling_start: Enin(k.rolling_start),
            rolling_period: k.rolling_period,
            revoked: k.report_type == ReportType::Revoked,
        }
    }
}

/// One published key as the matcher reads it (from a [`KeySource`]). No `Debug`: a key that
/// hit says whom the user met.
#[derive(Clone, Copy)]
pub struct KeyRef<'a> {
    pub tek: &'a [u8; 16],
    pub rolling_start: Enin,
    pub rolling_period: u32,
    /// Report type 5: the key was withdrawn and must never match.
    pub revoked: bool,
}

impl KeyRef<'_> {
    /// `[first, last]` unix seconds in which a sighting of any of this key's RPIs can count.
    #[inline]
    pub fn validity(&self) -> (i64, i64) {
        validity(self.rolling_start, self.rolling_period)
    }
}

/// `[first, last]` unix seconds in which a sighting of any RPI of a key with this rolling
/// start and period can count (each RPI ±2 h, [`RPI_VALIDITY_INTERVALS`]).
#[inline]
pub fn validity(rolling_start: Enin, rolling_period: u32) -> (i64, i64) {
    let first = (rolling_start.0 as i64 - RPI_VALIDITY_INTERVALS) * INTERVAL_SECONDS;
    let last = (rolling_start.0 as i64 + rolling_period as i64 + RPI_VALIDITY_INTERVALS)
        * INTERVAL_SECONDS
        - 1;
    (first, last)
}

/// The published keys [`match_keys`] reads, by position: a slice of [`GaenKey`]s, or keys
/// left where they lie in a caller's own layout (the daemon reads its decrypted compact case
/// lists in place rather than copy a million keys into `GaenKey`s for each run).
pub trait KeySource: Sync {
    /// Keys in all.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Key `i` (`i < len()`).
    fn key(&self, i: usize) -> KeyRef<'_>;
    /// A hint that key `i` will be read soon (see [`super::prefetch`]); any `i`, in range or
    /// not. The matcher's first pass over a task's keys asks a few keys ahead: a million keys
    /// are not in cache, and that pass has too little work to hide their misses by itself.
    #[inline]
    fn prefetch(&self, i: usize) {
        let _ = i;
    }
}

impl KeySource for [GaenKey] {
    #[inline]
    fn len(&self) -> usize {
        <[GaenKey]>::len(self)
    }
    #[inline]
    fn key(&self, i: usize) -> KeyRef<'_> {
        let k = &self[i];
        KeyRef {
            tek: k.tek.as_bytes(),
            rolling_start: k.rolling_start,
            rolling_period: k.rolling_period,
            revoked: k.revoked,
        }
    }
    #[inline]
    fn prefetch(&self, i: usize) {
        if let Some(k) = self.get(i) {
            super::prefetch(k);
        }
    }
}

impl KeySource for Vec<GaenKey> {
    #[inline]
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    #[inline]
    fn key(&self, i: usize) -> KeyRef<'_> {
        self.as_slice().key(i)
    }
    #[inline]
    fn prefetch(&self, i: usize) {
        self.as_slice().prefetch(i)
    }
}

struct Pads {
    ipad: [u32; 8],
    opad: [u32; 8],
}

/// Compressed states of HMAC's inner and outer pads for a 32-byte all-zero key (HKDF's default
/// salt): constant, so worth computing once.
fn zero_salt_pads() -> &'static Pads {
    static PADS: OnceLock<Pads> = OnceLock::new();
    PADS.get_or_init(|| {
        let mut st = [IV; 2];
        compress_lanes(&mut st, &[[0x3636_3636; 16], [0x5c5c_5c5c; 16]]);
        Pads {
            ipad: st[0],
            opad: st[1],
        }
    })
}

fn be_words<const W: usize>(bytes: &[u8]) -> [u32; W] {
    let mut w = [0u32; W];
    for (x, c) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *x = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

/// RPIKs of up to `LANES` TEKs: HKDF-SHA256(ikm = TEK, salt = none, info = "EN-RPIK", L = 16).
fn rpiks(teks: &[&[u8; 16]]) -> [[u8; 16]; LANES] {
    let pads = zero_salt_pads();
    // Extract: PRK = HMAC(0^32, TEK). Inner message is TEK (16 bytes) after the 64-byte pad.
    let mut m = [[0u32; 16]; LANES];
    for (mi, t) in m.iter_mut().zip(teks) {
        mi[..4].copy_from_slice(&be_words::<4>(&t[..]));
        mi[4] = 0x8000_0000;
        mi[15] = (64 + 16) * 8;
    }
    let mut inner = [pads.ipad; LANES];
    compress_lanes(&mut inner, &m);
    let mut outer_msg = [[0u32; 16]; LANES];
    for (o, i) in outer_msg.iter_mut().zip(inner.iter()) {
        *o = pad32(i);
        o[15] = (64 + 32) * 8;
    }
    let mut prk = [pads.opad; LANES];
    compress_lanes(&mut prk, &outer_msg);
    // Expand: T(1) = HMAC(PRK, "EN-RPIK" || 0x01); PRK as a 32-byte HMAC key.
    let mut kpad = [[0u32; 16]; LANES];
    let mut kopad = [[0u32; 16]; LANES];
    for l in 0..LANES {
        for j in 0..16 {
            let k = if j < 8 { prk[l][j] } else { 0 };
            kpad[l][j] = k ^ 0x3636_3636;
            kopad[l][j] = k ^ 0x5c5c_5c5c;
        }
    }
    let mut ist = [IV; LANES];
    compress_lanes(&mut ist, &kpad);
    let mut ost = [IV; LANES];
    compress_lanes(&mut ost, &kopad);
    let info = be_words::<2>(b"EN-RPIK\x01");
    let mut im = [[0u32; 16]; LANES];
    for x in im.iter_mut() {
        x[0] = info[0];
        x[1] = info[1];
        x[2] = 0x8000_0000;
        x[15] = (64 + 8) * 8;
    }
    compress_lanes(&mut ist, &im);
    let mut om = [[0u32; 16]; LANES];
    for (o, i) in om.iter_mut().zip(ist.iter()) {
        *o = pad32(i);
        o[15] = (64 + 32) * 8;
    }
    compress_lanes(&mut ost, &om);
    let mut out = [[0u8; 16]; LANES];
    for (o, s) in out.iter_mut().zip(ost.iter()) {
        o.copy_from_slice(&digest_bytes(s)[..16]);
    }
    out
}

/// [`rpiks`] for up to sixteen TEKs, the words lane-wise in AVX-512 registers: the same six
/// compressions, sixteen keys each (≈ 20 ns a compression against ≈ 37 ns with SHA-NI).
/// Only called when [`wide_hkdf`] holds.
fn rpiks_wide(teks: &[&[u8; 16]]) -> [[u8; 16]; WIDE] {
    #[cfg(target_arch = "x86_64")]
    {
        use super::sha256x16::{compress16, Words16};
        debug_assert!(wide_hkdf());
        let pads = zero_salt_pads();
        let bcast = |v: &[u32; 8]| -> Words16<8> { std::array::from_fn(|w| [v[w]; WIDE]) };
        let mut m: Words16<16> = [[0; WIDE]; 16];
        for (l, t) in teks.iter().take(WIDE).enumerate() {
            for (w, x) in be_words::<4>(&t[..]).into_iter().enumerate() {
                m[w][l] = x;
            }
        }
        m[4] = [0x8000_0000; WIDE];
        m[15] = [(64 + 16) * 8; WIDE];
        let mut inner = bcast(&pads.ipad);
        let mut prk = bcast(&pads.opad);
        let mut ist = bcast(&IV);
        let mut ost = bcast(&IV);
        let mut om: Words16<16> = [[0; WIDE]; 16];
        om[8] = [0x8000_0000; WIDE];
        om[15] = [(64 + 32) * 8; WIDE];
        let info = be_words::<2>(b"EN-RPIK\x01");
        let mut im: Words16<16> = [[0; WIDE]; 16];
        im[0] = [info[0]; WIDE];
        im[1] = [info[1]; WIDE];
        im[2] = [0x8000_0000; WIDE];
        im[15] = [(64 + 8) * 8; WIDE];
        // SAFETY (every `compress16` below): the CPU has AVX-512F (`wide_hkdf`). Each call is
        // one AVX-512 function that LLVM ends with `vzeroupper`, so the SHA-NI/AES code around
        // it never runs with dirty upper state.
        unsafe {
            // Extract: PRK = HMAC(0^32, TEK).
            compress16(&mut inner, &m);
            om[..8].copy_from_slice(&inner);
            compress16(&mut prk, &om);
            // Expand: T(1) = HMAC(PRK, "EN-RPIK" || 0x01).
            let mut kpad: Words16<16> = [[0x3636_3636; WIDE]; 16];
            let mut kopad: Words16<16> = [[0x5c5c_5c5c; WIDE]; 16];
            for w in 0..8 {
                for l in 0..WIDE {
                    kpad[w][l] ^= prk[w][l];
                    kopad[w][l] ^= prk[w][l];
                }
            }
            compress16(&mut ist, &kpad);
            compress16(&mut ost, &kopad);
            compress16(&mut ist, &im);
            om[..8].copy_from_slice(&ist);
            compress16(&mut ost, &om);
        }
        let mut out = [[0u8; 16]; WIDE];
        for (l, o) in out.iter_mut().enumerate() {
            for w in 0..4 {
                o[4 * w..4 * w + 4].copy_from_slice(&ost[w][l].to_be_bytes());
            }
        }
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = teks;
        unreachable!("the wide HKDF is only chosen on x86-64")
    }
}

/// Matches published keys against the index. `hits[i].case` is the key's position in `keys`.
pub fn match_keys<K: KeySource + ?Sized>(
    keys: &K,
    index: &ObservationIndex,
    cfg: &MatchConfig,
) -> (Vec<Hit>, MatchStats) {
    let _ = cfg;
    let range = match index.time_range {
        Some(r) if index.gaen.distinct_ids() > 0 => r,
        _ => {
            return (
                Vec::new(),
                MatchStats {
                    keys_checked: keys.len() as u64,
                    ids_derived: 0,
                },
            )
        }
    };
    let n = keys.len();
    let window = interval_window(range);
    (0..n.div_ceil(KEYS_PER_TASK))
        .into_par_iter()
        .map(|chunk| {
            let base = chunk * KEYS_PER_TASK;
            let len = KEYS_PER_TASK.min(n - base);
            let ks = |i: usize| keys.key(base + i);
            let mut hits = Vec::new();
            let mut derived = 0u64;
            // Cheap rejection first: revoked keys and keys valid wholly outside the log.
            let live: Vec<u32> = (0..len as u32)
                .filter(|&i| {
                    keys.prefetch(base + i as usize + PREFETCH_KEYS);
                    let k = ks(i as usize);
                    let (a, b) = k.validity();
                    !k.revoked && k.rolling_period > 0 && b >= range.0 && a <= range.1
                })
                .collect();
            let mut all_rpis = [[[0u8; 16]; MAX_RPIS]; LANES];
            // The RPIs of keys cut by the log's time span, packed for one probe.
            let mut packed: Vec<[u8; 16]> = Vec::new();
            let mut rpik_buf = [[0u8; 16]; WIDE];
            let wide = wide_hkdf();
            for wide_group in live.chunks(if wide { WIDE } else { LANES }) {
                if wide {
                    let mut teks: [&[u8; 16]; WIDE] = [ks(wide_group[0] as usize).tek; WIDE];
                    for (t, &i) in teks.iter_mut().zip(wide_group) {
                        *t = ks(i as usize).tek;
                    }
                    rpik_buf = rpiks_wide(&teks[..wide_group.len()]);
                }
                for (q, group) in wide_group.chunks(LANES).enumerate() {
                    // Fixed arrays, not Vecs: three allocations per four keys were measurable.
                    let mut teks: [&[u8; 16]; LANES] = [ks(group[0] as usize).tek; LANES];
                    // Lane `l` derives the RPIs of intervals `starts[l]..` (`periods[l]` of
                    // them): the key's, less those whose windows miss the log.
                    let mut starts = [Enin(0); LANES];
                    let mut periods = [0usize; LANES];
                    for (l, &i) in group.iter().enumerate() {
                        let k = ks(i as usize);
                        teks[l] = k.tek;
                        let period = k.rolling_period.min(crate::gaen::TEK_ROLLING_PERIOD);
                        let (from, count) = window.clip(k.rolling_start, period);
                        starts[l] = from;
                        periods[l] = count;
                    }
                    let n = group.len();
                    let keys16 = if wide {
                        &rpik_buf[q * LANES..q * LANES + n]
                    } else {
                        rpik_buf[..LANES].copy_from_slice(&rpiks(&teks[..n]));
                        &rpik_buf[..n]
                    };
                    rpi_blocks4(keys16, &starts[..n], &periods[..n], &mut all_rpis);
                    // The four keys' RPIs in one batch probe (the index takes them in
                    // passes of two keys' worth, prefetching each pass's filter words before
                    // it tests them). Whole keys are
                    // probed where they lie (entries past a short key's period are stale and
                    // skipped); keys cut by the log's span, typically a few intervals each
                    // when the daemon matches new sightings, are packed first.
                    let derived_here = periods[..n].iter().sum::<usize>();
                    derived += derived_here as u64;
                    let flat = all_rpis.as_flattened();
                    let (probe, stride) = if derived_here * 2 < n * MAX_RPIS {
                        packed.clear();
                        for l in 0..n {
                            packed.extend_from_slice(&all_rpis[l][..periods[l]]);
                        }
                        (&packed[..], None)
                    } else {
                        (&flat[..n * MAX_RPIS], Some(MAX_RPIS))
                    };
                    // Probe position → (lane, RPI of that lane).
                    let locate = |x: usize| match stride {
                        Some(s) => (x / s, x % s),
                        None => {
                            let mut l = 0;
                            let mut x = x;
                            while x >= periods[l] {
                                x -= periods[l];
                                l += 1;
                            }
                            (l, x)
                        }
                    };
                    let mut aemk: [Option<Aemk>; LANES] = Default::default();
                    index.gaen.find_batch16(probe, |x, g| {
                        let (l, j) = locate(x);
                        if j >= periods[l] {
                            return;
                        }
                        let i = group[l];
                        let k = ks(i as usize);
                        let enin = starts[l].0 as i64 + j as i64;
                        let a = (enin - RPI_VALIDITY_INTERVALS) * INTERVAL_SECONDS;
                        let b = (enin + RPI_VALIDITY_INTERVALS + 1) * INTERVAL_SECONDS - 1;
                        let r = index.gaen.seen_within(g, a, b);
                        if !r.is_empty() {
                            // Only a matched key's AEMK is derived: its metadata gives the
                            // sender's calibrated tx power for attenuation.
                            let tx_power = index.gaen.observations()[r.start].aem.map(|aem| {
                                let aemk = aemk[l]
                                    .get_or_insert_with(|| Aemk::derive(&Tek::from_bytes(*k.tek)));
                                decrypt_metadata(aemk, &Rpi(probe[x]), &aem).tx_power_dbm
                            });
                            hits.push(Hit {
                                case: (base + i as usize) as u32,
                                group: g,
                                obs: r.start as u32..r.end as u32,
                                tx_power,
                            });
                        }
                    });
                }
            }
            (
                hits,
                MatchStats {
                    keys_checked: len as u64,
                    ids_derived: derived,
                },
            )
        })
        .reduce(|| (Vec::new(), MatchStats::default()), super::join_results)
}

/// The intervals whose RPIs can be seen in a log spanning `[oldest, newest]` (unix seconds):
/// an RPI of interval `e` counts in `[(e - 12) * 600, (e + 13) * 600 - 1]`
/// ([`RPI_VALIDITY_INTERVALS`]). A run over the whole log derives every RPI of every key; the
/// daemon matching a quarter-hour of new sightings derives about twenty-eight a key.
#[derive(Clone, Copy)]
struct IntervalWindow {
    first: i64,
    last: i64,
}

fn interval_window((oldest, newest): (i64, i64)) -> IntervalWindow {
    IntervalWindow {
        first: oldest.div_euclid(INTERVAL_SECONDS) - RPI_VALIDITY_INTERVALS,
        last: newest.div_euclid(INTERVAL_SECONDS) + RPI_VALIDITY_INTERVALS,
    }
}

impl IntervalWindow {
    /// The part of a key's intervals `start..start + period` inside the window: (first,
    /// count), count 0 if none.
    fn clip(&self, start: Enin, period: u32) -> (Enin, usize) {
        let s = i64::from(start.0);
        let from = self.first.max(s);
        let to = self.last.min(s + i64::from(period) - 1);
        if to < from {
            return (start, 0);
        }
        match u32::try_from(from) {
            Ok(first) => (Enin(first), (to - from + 1) as usize),
            // Past the u32 interval numbers (no parsed export has such a key: their rolling
            // starts are at most i32::MAX): the whole period, as without a window.
            Err(_) => (start, period as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaen::Rpik;

    /// The matcher asks for keys up to `PREFETCH_KEYS` past a task's end: a hint for a key
    /// that does not exist does nothing (no panic, no fault).
    #[test]
    fn prefetch_past_the_end_is_harmless() {
        let keys = vec![GaenKey {
            tek: Tek::from_bytes([1; 16]),
            rolling_start: Enin(0),
            rolling_period: 144,
            revoked: false,
        }];
        for i in [0, 1, PREFETCH_KEYS, usize::MAX] {
            keys.prefetch(i);
            keys.as_slice().prefetch(i);
        }
    }

    #[test]
    fn lane_hkdf_equals_hkdf_crate() {
        let teks: Vec<Tek> = (0..3u8).map(|i| Tek::from_bytes([i * 7 + 1; 16])).collect();
        let refs: Vec<&[u8; 16]> = teks.iter().map(|t| t.as_bytes()).collect();
        let out = rpiks(&refs);
        for (l, t) in teks.iter().enumerate() {
            assert_eq!(&out[l], Rpik::derive(t).as_bytes());
        }
        if wide_hkdf() {
            for n in [1usize, 5, 16] {
                let teks: Vec<Tek> = (0..n as u8)
                    .map(|i| Tek::from_bytes([i.wrapping_mul(29) ^ 0x5a; 16]))
                    .collect();
                let refs: Vec<&[u8; 16]> = teks.iter().map(|t| t.as_bytes()).collect();
                let out = rpiks_wide(&refs);
                for (l, t) in teks.iter().enumerate() {
                    assert_eq!(&out[l], Rpik::derive(t).as_bytes(), "n {n} lane {l}");
                }
            }
        }
    }
}
