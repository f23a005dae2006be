//! `/metrics` (Prometheus text) and the store counts behind `/v1/status`.
//!
//! Store counts need the store to decrypt every chunk, so no request computes them: a request
//! reads the last counts and, when they may be out of date, starts one refresh in the
//! background. Everything that says something about the owner's contacts or health (sightings,
//! IDs, exposures) is shown only to an owner token; without one, only operational counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::service::{Metrics, Shared};

/// Counts are refreshed at most this often (a logger flush changes them every few seconds, and
/// each refresh holds the store lock while it decrypts)…
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
                    Ok(Ok(c)) => {
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

fn read_counts(s: &mut crate::store::Store) -> Result<StoreCounts, crate::store::StoreError> {
    let st = s.stats()?;
    let notifying = s
        .exposure_states()?
        .exposures
        .iter()
        .filter(|e| {
            matches!(
                e.delivery.state,
                crate::store::DeliveryState::Pending | crate::store::DeliveryState::Delivered
            )
        })
        .count();
    Ok(StoreCounts {
        sightings: st.sightings,
        distinct_ids: st.distinct_ids,
        case_lists: st.case_lists,
        exposures: st.exposures,
        notifying,
        store_bytes: st.store_bytes,
    })
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
        "Distinct peer IDs held in the store.",
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
        "Stored exposures over the notification threshold.",
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
