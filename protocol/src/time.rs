//! UTC day arithmetic. Both protocols start their days at 00:00 UTC.

/// Seconds since the unix epoch. Signed so that differences and skews need no casts.
pub type UnixSeconds = i64;

pub const DAY_SECONDS: i64 = 86_400;

/// The UTC day number (days since 1970-01-01) containing `t`.
pub fn utc_day(t: UnixSeconds) -> i64 {
    t.div_euclid(DAY_SECONDS)
}

/// 00:00 UTC of the day containing `t`.
pub fn utc_midnight(t: UnixSeconds) -> UnixSeconds {
    utc_day(t) * DAY_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn midnight() {
        assert_eq!(utc_midnight(1596844800 + 5), 1596844800);
        assert_eq!(utc_midnight(1596844799), 1596844800 - 86400);
        assert_eq!(utc_day(-1), -1);
    }
}
