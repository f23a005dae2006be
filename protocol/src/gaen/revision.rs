//! Key revisions across publications, as the reference key server defines them
//! (`google/exposure-notifications-server`, `export.proto` `revised_keys`; security review M4).
//!
//! A key is identified by its TEK and rolling start. Of all its publications, the latest wins:
//! ordered by the export's `end_timestamp`, then by import order, and within one export a
//! `revised_keys` entry after a `keys` entry. REVOKED is final: once any publication revokes a
//! key it never produces an exposure again, whatever is published later or imported in which
//! order. The reference server refuses to revise a revoked key, so a later non-revoked copy can
//! only be a stale re-publication; making REVOKED final also makes the result independent of the
//! order lists happen to be imported in.

use std::collections::BTreeMap;

use super::export::{ExportFile, ExportKey, ReportType};
use crate::ids::Tek;

/// Where a key was published, in the order that decides which publication wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Publication {
    /// The export's `end_timestamp`, unix seconds.
    pub end_timestamp: u64,
    /// Position of the export among imports (earlier import = smaller).
    pub import_order: u64,
    /// True for an entry of `revised_keys`.
    pub revised: bool,
}

/// One published copy of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    pub tek: Tek,
    pub rolling_start: u32,
    pub rolling_period: u32,
    pub report_type: ReportType,
    pub days_since_onset: Option<i32>,
    pub publication: Publication,
}

impl PublishedKey {
    pub fn from_export(k: &ExportKey, publication: Publication) -> PublishedKey {
        PublishedKey {
            tek: k.tek.clone(),
            rolling_start: k.rolling_start,
            rolling_period: k.rolling_period,
            report_type: k.report_type,
            days_since_onset: k.days_since_onset,
            publication,
        }
    }

    /// Every key and revised key of one export file.
    pub fn all_of(file: &ExportFile, import_order: u64) -> Vec<PublishedKey> {
        let at = |revised| Publication {
            end_timestamp: file.end_timestamp,
            import_order,
            revised,
        };
        let keys = file.keys.iter().map(|k| Self::from_export(k, at(false)));
        let revised = file
            .revised_keys
            .iter()
            .map(|k| Self::from_export(k, at(true)));
        keys.chain(revised).collect()
    }

    fn id(&self) -> ([u8; 16], u32) {
        (*self.tek.as_bytes(), self.rolling_start)
    }
}

/// The effective key set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revised {
    /// Keys that may produce exposures, each as its winning publication says, in
    /// (TEK, rolling start) order.
    pub keys: Vec<PublishedKey>,
    /// Keys revoked by some publication (the revoking copy): match nothing, and an exposure
    /// already stored for one is to be withdrawn.
    pub revoked: Vec<PublishedKey>,
}

/// Resolves every publication of every key to the effective key set.
pub fn revise(published: impl IntoIterator<Item = PublishedKey>) -> Revised {
    let mut winner: BTreeMap<([u8; 16], u32), PublishedKey> = BTreeMap::new();
    for k in published {
        let rank = |k: &PublishedKey| (k.report_type == ReportType::Revoked, k.publication);
        match winner.get(&k.id()) {
            Some(w) if rank(w) >= rank(&k) => {}
            _ => {
                winner.insert(k.id(), k);
            }
        }
    }
    let (revoked, keys) = winner
        .into_values()
        .partition(|k| k.report_type == ReportType::Revoked);
    Revised { keys, revoked }
}
