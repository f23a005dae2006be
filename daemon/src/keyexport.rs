//! Key export for a person who tests positive: the files a health authority would publish.
//!
//! Safety rules (spec bluezone §5.1): Bluezone entries are one per day with
//! `time_end = time_start + 86399`, so no entry rolls into a day that was not exported; every
//! day's key is independent random, so nothing chains into later days either; a base key is
//! never exported (there is none). After an export the caller rotates the device's own keys, so
//! the published keys cannot be linked to what the device broadcasts next.

use bluezone_protocol::bluezone::{F0Entry, F0List, SlotsPerDay};
use bluezone_protocol::gaen::export::{
    write_export, write_unsigned_export, ExportError, ExportFile, ExportKey, ExportSigner,
    ReportType,
};
use bluezone_protocol::gaen::{Enin, TEK_ROLLING_PERIOD};
use bluezone_protocol::time::DAY_SECONDS;

use crate::store::OwnKeys;

/// One F0 entry per UTC day, covering exactly that day.
pub fn f0_list(own: &[OwnKeys]) -> F0List {
    F0List {
        entries: own
            .iter()
            .map(|k| F0Entry {
                daily_key: k.daily_key.clone(),
                time_start: k.day * DAY_SECONDS,
                time_end: k.day * DAY_SECONDS + DAY_SECONDS - 1,
                max: SlotsPerDay::DEFAULT,
            })
            .collect(),
    }
}

/// The ENIN at which `day`'s TEK starts (its 00:00 UTC); the TEK then rolls for
/// `TEK_ROLLING_PERIOD` intervals, exactly the day.
fn rolling_start(day: i64) -> u32 {
    Enin::from_unix(day * DAY_SECONDS).rolling_start().0
}

/// A GAEN export of the days' TEKs (report type: confirmed test), signed by `signer` if given,
/// else unsigned (for an official to upload; the authority signs what it publishes).
pub fn gaen_zip(
    own: &[OwnKeys],
    signer: Option<&ExportSigner>,
    region: &str,
) -> Result<Vec<u8>, ExportError> {
    let keys: Vec<ExportKey> = own
        .iter()
        .map(|k| ExportKey {
            report_type: ReportType::ConfirmedTest,
            ..ExportKey::new(k.tek.clone(), rolling_start(k.day))
        })
        .collect();
    let start = own.iter().map(|k| k.day).min().unwrap_or(0) * DAY_SECONDS;
    let end = own.iter().map(|k| k.day + 1).max().unwrap_or(0) * DAY_SECONDS;
    let file = ExportFile {
        start_timestamp: start.max(0) as u64,
        end_timestamp: end.max(0) as u64,
        region: region.to_string(),
        batch_num: 1,
        batch_size: 1,
        signature_infos: signer.map(|s| vec![s.signature_info()]).unwrap_or_default(),
        keys,
        revised_keys: Vec::new(),
    };
    debug_assert!(file
        .keys
        .iter()
        .all(|k| k.rolling_period == TEK_ROLLING_PERIOD));
    match signer {
        Some(s) => write_export(&file, s),
        None => write_unsigned_export(&file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_tek_starts_at_its_midnight_and_covers_the_day() {
        // 2020-04-02 00:00 UTC is ENIN 2642976 (EN v1.2 vectors).
        let day = 1_585_785_600 / DAY_SECONDS;
        assert_eq!(rolling_start(day), 2_642_976);
        assert_eq!(
            rolling_start(day + 1),
            2_642_976 + TEK_ROLLING_PERIOD,
            "the next day's TEK starts where this one ends"
        );
    }
}
