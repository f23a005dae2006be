//! A hostile 16 MiB F0 list stays under 64 MB of peak heap (security review M12: the parser never
//! builds a `serde_json::Value` of what it was sent). Its own test binary, because the counting
//! allocator sees every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bluezone_protocol::bluezone::f0::{parse_f0, F0Limits};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests of this binary measure one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const FILE_BYTES: usize = 16 << 20;
const HEAP_LIMIT: usize = 64_000_000;

/// Peak heap above what was live before, while parsing `doc`.
fn peak_while_parsing(doc: &[u8]) -> (usize, bool) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let ok = parse_f0(doc, &F0Limits::default()).is_ok();
    (PEAK.load(Ordering::SeqCst) - base, ok)
}

fn key() -> String {
    "ab".repeat(32)
}

#[test]
fn a_huge_array_in_a_time_field_is_not_held() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let head = format!(
        r#"{{"data":[{{"daily_key":"{}","time_end":1596844900,"time_start":["#,
        key()
    );
    let mut doc = Vec::with_capacity(FILE_BYTES + 200);
    doc.extend_from_slice(head.as_bytes());
    doc.push(b'0');
    while doc.len() < FILE_BYTES {
        doc.extend_from_slice(b",0");
    }
    doc.extend_from_slice(
        format!(
            r#"]}},{{"daily_key":"{}","time_start":1596844800,"time_end":1596844900}}]}}"#,
            key()
        )
        .as_bytes(),
    );
    let (peak, ok) = peak_while_parsing(&doc);
    assert!(ok, "the valid second entry is kept");
    assert!(peak < HEAP_LIMIT, "peak heap {peak} bytes");
}

#[test]
fn many_entries_stay_bounded() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The smallest valid entries there can be (no `max`), as many as fit in 16 MiB, plus bad
    // ones whose descriptions could pile up.
    let good = format!(
        r#"{{"daily_key":"{}","time_start":1596844800,"time_end":1596844900}}"#,
        key()
    );
    let mut doc = Vec::with_capacity(FILE_BYTES + 200);
    doc.extend_from_slice(br#"{"data":["#);
    doc.extend_from_slice(good.as_bytes());
    let mut i = 0u64;
    while doc.len() < FILE_BYTES {
        doc.push(b',');
        if i.is_multiple_of(2) {
            doc.extend_from_slice(good.as_bytes());
        } else {
            doc.extend_from_slice(br#"{"daily_key":[[[[1]]]],"time_start":"x"}"#);
        }
        i += 1;
    }
    doc.extend_from_slice(b"]}");
    let (peak, ok) = peak_while_parsing(&doc);
    assert!(ok);
    assert!(peak < HEAP_LIMIT, "peak heap {peak} bytes");
}
