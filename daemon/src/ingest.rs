//! The one way a case list enters the store, whoever brings it (`cases import`, the HTTP API,
//! the key-server poller, the demo):
//!
//! 1. [`Ingest::accept`]: detect the format, bound the size, parse it completely, verify a GAEN
//!    export under the trust anchors of `cases.trust`, and describe it. Pure CPU; no store.
//! 2. [`store`]: de-duplicate by content and seal it under the day given by the caller.
//! 3. [`ingest`] (the service's path): both of the above off the async runtime, then, for a new
//!    list, count it in [`Metrics::case_lists_stored`](crate::service::Metrics) and wake matching.
//!
//! Errors are typed ([`Error`]) so that each edge maps them itself: the API to a status code,
//! the poller to "refused, do not refetch" versus "retry", the CLI to an exit code. A refused
//! list changes nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bluezone_protocol::bluezone::signed;
use bluezone_protocol::gaen::export::{ExportLimits, TrustedKey};
use bluezone_protocol::time::utc_day;

use crate::caselist::{self, CaseList, Format, Limits};
use crate::config::CasesConfig;
use crate::service::Shared;
use crate::store::{Store, StoreError};

/// Why a case list was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty case list: expected a Bluezone F0 JSON object or a GAEN export zip")]
    Empty,
    #[error("case list of {size} bytes is over the {limit}-byte limit (cases.max_bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("expected a {expected}, got a {got}", expected = .expected.as_str(), got = .got.as_str())]
    WrongFormat { expected: Format, got: Format },
    #[error("not a case list: expected a Bluezone F0 JSON object or a GAEN export zip")]
    Unrecognised,
    #[error("signed case list refused: no trusted signing key is configured (cases.trust)")]
    NoTrustAnchor,
    #[error("signed case list refused: no signature verifies under a key of cases.trust")]
    Unverified,
    /// The content is malformed or over a format limit; `reason` names the field.
    #[error("invalid {format}: {reason}", format = .format.as_str())]
    Invalid { format: Format, reason: String },
    /// Says its cause in the message (not also as `source()`, so it is printed once).
    #[error("storing the case list: {0}")]
    Store(StoreError),
    /// A worker thread failed (a panic in a parser or the store).
    #[error("case list {0} failed")]
    Task(&'static str),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl Error {
    /// The content is at fault (refuse it, do not retry); otherwise the store or the process is.
    pub fn is_content(&self) -> bool {
        !matches!(self, Error::Store(_) | Error::Task(_))
    }
}

/// The trust anchors and limits every path checks a case list against.
#[derive(Clone)]
pub struct Ingest {
    trusted: Arc<Vec<TrustedKey>>,
    max_bytes: usize,
    limits: Limits,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("trusted_keys", &self.trusted.len())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// A checked case list, ready to store.
pub struct Accepted {
    bytes: Vec<u8>,
    pub list: CaseList,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("format", &self.format())
            .field("entries", &self.entries())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Accepted {
    pub fn format(&self) -> Format {
        self.list.format()
    }
    pub fn entries(&self) -> usize {
        self.list.entries()
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The `cases inspect` description.
    pub fn summary(&self) -> serde_json::Value {
        self.list.summary()
    }
}

/// What [`store`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub format: Format,
    pub entries: usize,
    /// False when the same content was stored before (nothing changed).
    pub new: bool,
}

impl Ingest {
    pub fn new(trusted: Vec<TrustedKey>, max_bytes: usize) -> Ingest {
        Ingest {
            trusted: Arc::new(trusted),
            max_bytes,
            limits: Limits::default(),
        }
    }

    /// From `[cases]`: reads the trusted keys (an error names the file).
    pub fn from_config(cases: &CasesConfig) -> anyhow::Result<Ingest> {
        use anyhow::Context;
        let trusted = caselist::load_trusts(&cases.trust).context("cases.trust")?;
        Ok(Ingest::new(trusted, cases.max_bytes))
    }

    pub fn has_trust_anchors(&self) -> bool {
        !self.trusted.is_empty()
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Checks `bytes` completely; `only` refuses another format. A signed F0 zip (a health
    /// authority's publication, `bluezone::signed`) must verify under the trust anchors; its
    /// `f0.json` is what is accepted and stored.
    pub fn accept(&self, bytes: Vec<u8>, only: Option<Format>) -> Result<Accepted, Error> {
        if bytes.is_empty() {
            return Err(Error::Empty);
        }
        if bytes.len() > self.max_bytes {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let bytes = if signed::is_signed_f0(&bytes) {
            if self.trusted.is_empty() {
                return Err(Error::NoTrustAnchor);
            }
            signed::verified_json(&bytes, &self.trusted, &ExportLimits::DEFAULT)
                .map_err(|_| Error::Unverified)?
        } else {
            bytes
        };
        let got = caselist::detect(&bytes).map_err(|_| Error::Unrecognised)?;
        if let Some(expected) = only.filter(|&f| f != got) {
            return Err(Error::WrongFormat { expected, got });
        }
        if got == Format::GaenExport && self.trusted.is_empty() {
            return Err(Error::NoTrustAnchor);
        }
        let list =
            caselist::parse(&bytes, &self.trusted, &self.limits).map_err(|e| Error::Invalid {
                format: got,
                reason: crate::error_chain(&anyhow::Error::new(e)),
            })?;
        if let CaseList::GaenExport(x) = &list {
            // With trust anchors `parse` verifies or fails; this keeps that a checked contract.
            if !x.is_verified() {
                return Err(Error::Unverified);
            }
        }
        Ok(Accepted { bytes, list })
    }
}

/// Stores an accepted list under `day` (UTC day number), unless its content is there already,
/// with its compact form for matching (parsed once, here).
pub fn store(store: &mut Store, list: &Accepted, day: i64) -> Result<Stored, Error> {
    let (id, new) = store.insert_parsed_case_list(day, &list.list, &list.bytes)?;
    Ok(Stored {
        id,
        format: list.format(),
        entries: list.entries(),
        new,
    })
}

/// What [`ingest`] did: the stored list, and the description `cases import` prints (format,
/// entries, and each skipped entry with its index, field and reason).
#[derive(Clone, Debug)]
pub struct Ingested {
    pub stored: Stored,
    pub summary: serde_json::Value,
}

impl Ingested {
    /// How many entries were skipped as malformed.
    pub fn skipped(&self) -> u64 {
        self.summary["skipped_total"].as_u64().unwrap_or(0)
    }
}

/// The service's path: accept and store on the blocking pool (neither parsing a 64 MiB zip nor
/// SQLite's fsync may stall the runtime), then count a new list and wake matching.
pub async fn ingest(
    shared: &Arc<Shared>,
    ingest: &Ingest,
    bytes: Vec<u8>,
    only: Option<Format>,
) -> Result<Ingested, Error> {
    let checker = ingest.clone();
    let accepted = tokio::task::spawn_blocking(move || checker.accept(bytes, only))
        .await
        .map_err(|_| Error::Task("check"))??;
    let day = utc_day(shared.clock.now());
    let (stored, summary) = shared
        .with_store(move |s| store(s, &accepted, day).map(|st| (st, accepted.summary())))
        .await
        .map_err(|_| Error::Task("store"))??;
    if stored.new {
        shared
            .metrics
            .case_lists_stored
            .fetch_add(1, Ordering::Relaxed);
        shared.match_now.notify_one();
    }
    Ok(Ingested { stored, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f0() -> Vec<u8> {
        let key = hex::encode([7u8; 32]);
        format!(r#"{{"data":[{{"daily_key":"{key}","time_start":1728000000,"max":96,"time_end":1728086399}}]}}"#)
            .into_bytes()
    }

    #[test]
    fn accept_refuses_with_a_typed_reason() {
        let none = Ingest::new(Vec::new(), 1 << 20);
        assert!(matches!(none.accept(Vec::new(), None), Err(Error::Empty)));
        assert!(matches!(
            Ingest::new(Vec::new(), 10).accept(f0(), None),
            Err(Error::TooLarge { limit: 10, .. })
        ));
        assert!(matches!(
            none.accept(f0(), Some(Format::GaenExport)),
            Err(Error::WrongFormat {
                expected: Format::GaenExport,
                got: Format::BluezoneF0
            })
        ));
        assert!(matches!(
            none.accept(b"PK\x03\x04rest".to_vec(), None),
            Err(Error::NoTrustAnchor)
        ));
        let e = none.accept(b"hello".to_vec(), None).unwrap_err();
        assert!(matches!(e, Error::Unrecognised) && e.is_content());
        let ok = none.accept(f0(), None).unwrap();
        assert_eq!((ok.format(), ok.entries()), (Format::BluezoneF0, 1));
    }

    #[test]
    fn store_dedups_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::init(dir.path()).unwrap();
        let list = Ingest::new(Vec::new(), 1 << 20).accept(f0(), None).unwrap();
        let a = store(&mut s, &list, 20_000).unwrap();
        let b = store(&mut s, &list, 20_001).unwrap();
        assert!(a.new && !b.new);
        assert_eq!(a.id, b.id);
        assert_eq!(s.case_lists().unwrap().len(), 1);
    }
}
