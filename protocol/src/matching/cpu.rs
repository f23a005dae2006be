//! Which instruction-set paths the matching kernels may use.
//!
//! Every kernel's dispatch asks here, so one switch forces them all onto their portable code:
//! `BLUEZONED_FORCE_PORTABLE=1` in the environment (read once, at the first dispatch); and
//! `BLUEZONED_NO_AVX512=1` keeps SHA-NI and AES-NI but not AVX-512 or VAES. CI runs the vector
//! and property tests again with each, so the paths that no CI machine would otherwise reach
//! (x86 without AVX-512, x86 without SHA-NI, ARM gateways) are checked by the same tests.
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

/// The environment variable that turns off the AVX-512 paths only (16-lane SHA-256, the
/// AVX-512 filter probes, VAES): the middle tier runs, SHA-NI and AES-NI as on most x86 CPUs
/// without AVX-512 (AMD Zen 2/3, Intel before Ice Lake). CI runs the vectors and matcher
/// properties with it too, so every tier a machine can pick is tested end to end.
pub const NO_AVX512_ENV: &str = "BLUEZONED_NO_AVX512";

/// True when the AVX-512 paths are turned off (`BLUEZONED_NO_AVX512` set to anything but empty
/// or `0`), or the portable paths forced.
pub fn no_avx512() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    force_portable()
        || *OFF.get_or_init(|| {
            std::env::var_os(NO_AVX512_ENV).is_some_and(|v| !v.is_empty() && v != "0")
        })
}

/// AVX-512 F + BW + DQ (the 16-lane SHA-256, and the filter probe's 64-bit multiplies).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx512() -> bool {
    !no_avx512()
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Each CI run of the tests (none, `BLUEZONED_NO_AVX512=1`, `BLUEZONED_FORCE_PORTABLE=1`)
    /// checks that the tier it meant to test is the one the dispatch picks.
    #[test]
    fn switches_pick_the_tier_they_name() {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
        let has = |f: bool| f && !set(FORCE_PORTABLE_ENV);
        assert_eq!(force_portable(), set(FORCE_PORTABLE_ENV));
        assert_eq!(sha_ni(), has(std::is_x86_feature_detected!("sha")));
        assert_eq!(aes_ni(), has(std::is_x86_feature_detected!("aes")));
        let wide = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq");
        assert_eq!(avx512(), has(wide) && !set(NO_AVX512_ENV));
        if set(NO_AVX512_ENV) || set(FORCE_PORTABLE_ENV) {
            assert!(!avx512() && !vaes512());
        }
    }
}
