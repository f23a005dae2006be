//! Which instruction-set paths the matching kernels may use.
//!
//! Every kernel's dispatch asks here, so one switch forces them all onto their portable code:
//! `BLUEZONED_FORCE_PORTABLE=1` in the environment (read once, at the first dispatch). CI runs
//! the vector and property tests a second time with it, so the fallbacks that no CI machine
//! would otherwise reach (x86 without SHA-NI, ARM gateways) are checked by the same tests.
//!
//! `is_x86_feature_detected!` already caches the CPUID result in a static, so no wrapper cache.

use std::sync::OnceLock;

/// The environment variable that forces the portable paths.
pub const FORCE_PORTABLE_ENV: &str = "BLUEZONED_FORCE_PORTABLE";

/// True when the portable paths are forced (`BLUEZONED_FORCE_PORTABLE` set to anything but
/// empty or `0`).
pub fn force_portable() -> bool {
    // The one value kept: reading the environment takes a lock and allocates.
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var_os(FORCE_PORTABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// SHA-NI with the SSE levels its kernel is compiled for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn sha_ni() -> bool {
    !force_portable()
        && std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse2")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("sse4.1")
}

/// AVX-512 F + BW + DQ (the 16-lane SHA-256, and the filter probe's 64-bit multiplies).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx512() -> bool {
    !force_portable()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
}

/// AES-NI (the `aes` crate's hardware backend, ≈ 4× the bitsliced portable AES).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn aes_ni() -> bool {
    !force_portable() && std::is_x86_feature_detected!("aes")
}

/// VAES on 512-bit vectors (four AES blocks a round instruction) with AES-NI for the schedule.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn vaes512() -> bool {
    avx512() && std::is_x86_feature_detected!("vaes") && std::is_x86_feature_detected!("aes")
}
