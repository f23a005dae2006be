//! `/metrics` (Prometheus text) and the store counts behind `/v1/status`.
//!
//! Store counts come from [`Store::counts`](crate::store::Store::counts), which reads counters
//! and row counts and never opens a sealed value (security L20: a request must not make the
//! store decrypt, whatever was injected over the radio); distinct IDs and notifying exposures
//! come from the last match, held in memory. Still, no request waits for the store: a request
//! reads the last counts and, when they may be out of date, starts one refresh in the
//! background. Everything that says something about the owner's contacts or health (sightings,
//! IDs, exposures) is shown only to an owner token; without one, only operational counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::service::{Metrics, Shared};

/// Counts are refreshed at most this often (a logger flush changes them every few seconds, and
/// each refresh takes the store lock, if only for a few `COUNT(*)`s)…
const STATS_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// …and at least this often while they are asked for, even if no counter moved (retention).
const STATS_MAX_AGE: Duration = Duration::from_secs(60);

/// Store counts (owner only).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StoreCounts {
    pub sightings: usize,
    pub distinct_ids: usize,
    pub case_lists: usize,
    pub exposures: usize,
    pub notifying: usize,
    pub store_bytes: u64,
}

#[derive(Default)]
pub(crate) struct CountsCache {
    last: Mutex<Option<(CacheKey, Instant, StoreCounts)>>,
    refreshing: Arc<AtomicBool>,
}

type CacheKey = [u64; 3];

fn cache_key(m: &Metrics) -> CacheKey {
    [
        Metrics::get(&m.sightings_stored),
        Metrics::get(&m.matches_run),
        Metrics::get(&m.case_lists_stored),
    ]
}

impl CountsCache {
    /// The last counts (`None` before the first refresh finished); starts a refresh in the
    /// background when they may be stale. Never waits for the store.
    pub(crate) fn get(self: &Arc<Self>, shared: &Arc<Shared>) -> Option<StoreCounts> {
        let key = cache_key(&shared.metrics);
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = last.is_some_and(|(k, at, _)| {
            at.elapsed() < STATS_MIN_INTERVAL || (k == key && at.elapsed() < STATS_MAX_AGE)
        });
        if !fresh && !self.refreshing.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let r = shared.with_store(read_counts).await;
                match r {
                    Ok(Ok(mut c)) => {
                        from_last_match(&shared, &mut c);
                        *me.last.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((key, Instant::now(), c));
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "reading store statistics failed"),
                    Err(e) => tracing::error!(error = %e, "reading store statistics failed"),
                }
                me.refreshing.store(false, Ordering::Release);
            });
        }
        last.map(|(_, _, c)| c)
    }
}

/// Counts from the store without decrypting anything: counters and row counts only.
fn read_counts(s: &mut crate::store::Store) -> Result<StoreCounts, crate::store::StoreError> {
    let c = s.counts()?;
    Ok(StoreCounts {
        sightings: usize::try_from(c.sightings).unwrap_or(usize::MAX),
        distinct_ids: 0,
        case_lists: c.case_lists,
        exposures: c.exposures,
        notifying: 0,
        store_bytes: c.store_bytes,
    })
}

/// What only a decryption could count, taken from the last match instead: the distinct IDs it
/// indexed and its exposures over the notification threshold.
fn from_last_match(shared: &Shared, c: &mut StoreCounts) {
    c.distinct_ids = Metrics::get(&shared.metrics.ids_indexed) as usize;
    c.notifying = shared
        .exposures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|e| e.notifies())
        .count();
}

enum Kind {
    Counter,
    Gauge,
}

/// Name, kind, help, value.
type LiveRow = (&'static str, Kind, &'static str, fn(&Metrics) -> f64);
/// Name, help, value (gauges).
type StoreRow = (&'static str, &'static str, fn(&StoreCounts) -> f64);

/// Operational counters, shown to anyone who may reach the API.
const OPERATIONAL: &[LiveRow] = &[
    (
        "bluezoned_store_errors_total",
        Kind::Counter,
        "Failed store writes.",
        |m| c(&m.store_errors),
    ),
    (
        "bluezoned_broadcasts_total",
        Kind::Counter,
        "Broadcast changes put on air.",
        |m| c(&m.broadcasts),
    ),
    (
        "bluezoned_case_lists_stored_total",
        Kind::Counter,
        "New case lists stored by the API or the poller.",
        |m| c(&m.case_lists_stored),
    ),
    (
        "bluezoned_api_token_reloads_total",
        Kind::Counter,
        "SIGHUP reloads of the API token files that took effect.",
        |m| c(&m.token_reloads),
    ),
    (
        "bluezoned_api_token_reload_failures_total",
        Kind::Counter,
        "SIGHUP reloads of the API token files refused (the tokens in use stayed).",
        |m| c(&m.token_reload_failures),
    ),
    (
        "bluezoned_keys_checked_total",
        Kind::Counter,
        "Case keys (F0 records and GAEN keys) matched.",
        |m| c(&m.keys_checked),
    ),
    (
        "bluezoned_matches_total",
        Kind::Counter,
        "Matching runs.",
        |m| c(&m.matches_run),
    ),
    (
        "bluezoned_last_match_duration_seconds",
        Kind::Gauge,
        "Duration of the last match.",
        |m| c(&m.last_match_ms) / 1000.0,
    ),
    (
        "bluezoned_last_match_keys_per_second",
        Kind::Gauge,
        "Keys matched per second in the last match.",
        |m| f64::from_bits(Metrics::get(&m.last_match_keys_per_s)),
    ),
];

/// Counters about the owner's surroundings (how many devices were heard): owner token only.
const OWNER_LIVE: &[LiveRow] = &[
    (
        "bluezoned_receptions_total",
        Kind::Counter,
        "Advertisements received from the radio.",
        |m| c(&m.receptions),
    ),
    (
        "bluezoned_sightings_stored_total",
        Kind::Counter,
        "Sightings durably written to the store.",
        |m| c(&m.sightings_stored),
    ),
    (
        "bluezoned_ids_indexed",
        Kind::Gauge,
        "Distinct peer IDs indexed by the last match.",
        |m| c(&m.ids_indexed),
    ),
];

/// Store counts: owner token only.
const OWNER_STORE: &[StoreRow] = &[
    (
        "bluezoned_store_size_bytes",
        "Store database plus WAL size.",
        |s| s.store_bytes as f64,
    ),
    (
        "bluezoned_store_sightings",
        "Sightings held in the store.",
        |s| s.sightings as f64,
    ),
    (
        "bluezoned_store_distinct_ids",
        "Distinct peer IDs read by the last match.",
        |s| s.distinct_ids as f64,
    ),
    (
        "bluezoned_case_lists",
        "Case lists held in the store.",
        |s| s.case_lists as f64,
    ),
    ("bluezoned_exposures", "Exposures held in the store.", |s| {
        s.exposures as f64
    }),
    (
        "bluezoned_notifying_exposures",
        "Exposures over the notification threshold in the last match.",
        |s| s.notifying as f64,
    ),
];

fn c(a: &AtomicU64) -> f64 {
    Metrics::get(a) as f64
}

fn put(out: &mut String, name: &str, kind: &Kind, help: &str, value: f64) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    ));
}

/// The exposition text; `store` is `Some` only for an owner (and once counts exist).
pub(crate) fn render(
    m: &Metrics,
    uptime_s: u64,
    owner: bool,
    store: Option<StoreCounts>,
) -> String {
    let mut out = String::new();
    for (name, kind, help, f) in OPERATIONAL {
        put(&mut out, name, kind, help, f(m));
    }
    put(
        &mut out,
        "bluezoned_uptime_seconds",
        &Kind::Gauge,
        "Seconds since the API started.",
        uptime_s as f64,
    );
    if owner {
        for (name, kind, help, f) in OWNER_LIVE {
            put(&mut out, name, kind, help, f(m));
        }
        if let Some(s) = store {
            for (name, help, f) in OWNER_STORE {
                put(&mut out, name, &Kind::Gauge, help, f(&s));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluezone_protocol::{PeerId, RollingId, Sighting};

    fn batch(n: usize, tag: u8, time: i64) -> Vec<Sighting> {
        (0..n)
            .map(|i| Sighting {
                peer: PeerId::Bluezone(RollingId([tag, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
                time: time + i as i64,
                rssi: -60,
                tx_power: None,
                aem: None,
            })
            .collect()
    }

    /// Security L20: the counts behind `/v1/status` and `/metrics` open no sealed value. A store
    /// whose only sightings chunk and exposure row no longer open (as if the day key were
    /// gone) still gives every count: what was read decrypted nothing. Counting by decryption
    /// would skip the chunk (0 sightings) and fail on the exposure.
    #[test]
    fn counts_open_no_sealed_value() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = crate::store::Store::init(dir.path()).unwrap();
        store.insert_sightings(&batch(7, 1, 1_700_000_000)).unwrap();
        store.insert_sightings(&batch(5, 2, 1_700_000_100)).unwrap();
        let conn = store.conn_for_tests();
        // Garble every sealed value: no chunk, day key or exposure can be opened any more.
        conn.execute_batch(
            "UPDATE sightings SET blob = zeroblob(length(blob));
             UPDATE day_keys SET wrapped = zeroblob(length(wrapped));
             INSERT INTO exposures (day, key_hash, blob) VALUES (19000, 'x', x'00112233');",
        )
        .unwrap();
        assert_eq!(
            store.for_each_chunk(i64::MIN, i64::MAX, |_, _| {}).unwrap(),
            2,
            "both chunks are unreadable"
        );
        let c = read_counts(&mut store).unwrap();
        assert_eq!(c.sightings, 12);
        assert_eq!(c.exposures, 1);
        assert_eq!(c.case_lists, 0);
        assert!(c.store_bytes > 0);
    }
}
