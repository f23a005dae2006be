//! The process's allocator: the system allocator, with every large allocation asked to be
//! backed by transparent huge pages.
//!
//! Matching reads a million published keys and probes an index of up to a million observed IDs
//! at random. With 4 KB pages nearly every such read also misses the TLB, and under a
//! hypervisor's nested paging a TLB miss costs several memory accesses: on these VMs a pass over
//! 1M keys between bursts of matching spent ~100 ns a key on page walks alone, and the GAEN core
//! gained 13–25 % with huge pages (`benches/matching.rs`, README). Where THP is in
//! `madvise` mode (the default of many distributions, and these machines), only memory marked
//! with `MADV_HUGEPAGE` gets huge pages; this allocator marks the 2 MB-aligned interior of every
//! allocation of at least [`THRESHOLD`] bytes as it is made, before anything touches it.
//!
//! A mark only helps memory not yet touched: a block glibc carves from memory it used before
//! keeps the 4 KB pages already faulted in (glibc serves large blocks from fresh mappings,
//! until freeing one raises its threshold for that). Fixing the threshold
//! (`mallopt(M_MMAP_THRESHOLD)`) would keep every large block fresh, but it also stops glibc
//! from adapting its heap trimming, and the 200-device demo took about 25 % longer with it
//! (alternating runs on a noisy host); the matching benches gained nothing more from it (the
//! first version of this allocator, without it, measured the same gains). A mark made on heap
//! memory stays on that range after the block is freed, so small blocks placed there later may
//! share a huge page: a little memory, never contents.
//!
//! A hint: where the kernel declines (THP `never`, no free huge page), nothing changes but the
//! speed. Contents, sizes and alignment are exactly the system allocator's; small allocations
//! go straight through. `main.rs` and the benches install it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are marked. Below it an allocation's 2 MB-aligned
/// interior is at most one huge page, and often none.
pub const THRESHOLD: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// [`System`], marking large allocations for transparent huge pages.
pub struct HugePageAlloc;

// SAFETY: every method hands the request to `System` unchanged and returns its result; the only
// addition, `madvise(MADV_HUGEPAGE)` on a range inside the block just returned, changes how the
// block's pages are backed, never its contents, size or address.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // A large `calloc` block from a fresh mapping (always so above glibc's 32 MB ceiling,
        // e.g. the 33 MB 1M-key list) is already zero and untouched, so marking it afterwards
        // is early enough; one carved from reused heap memory was cleared first and keeps its
        // 4 KB pages. (`System` clears an over-aligned block itself, before the
        // mark: such a block keeps 4 KB pages. The matcher allocates none.)
        let p = System.alloc_zeroed(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        advise(p, new_size);
        p
    }
}

/// The 2 MB-aligned part `[first, end)` of the block `[start, start + len)`, if the block is
/// large enough to be marked and holds at least one whole huge page.
fn huge_interior(start: usize, len: usize) -> Option<(usize, usize)> {
    if len < THRESHOLD {
        return None;
    }
    let first = start.checked_next_multiple_of(HUGE_PAGE)?;
    let end = start.checked_add(len)? / HUGE_PAGE * HUGE_PAGE;
    (end > first).then_some((first, end))
}

fn advise(p: *mut u8, len: usize) {
    if p.is_null() {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Some((first, end)) = huge_interior(p as usize, len) {
        // SAFETY: `[first, end)` lies inside the block the allocator has just handed out
        // (`huge_interior`), and MADV_HUGEPAGE never changes memory contents. Its result is
        // deliberately ignored: a kernel without THP (EINVAL) just keeps 4 KB pages.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = len;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_huge_pages_inside_a_large_block_are_marked() {
        const M: usize = 1 << 20;
        // Below the threshold: nothing, even when a whole aligned huge page is inside.
        assert_eq!(huge_interior(2 * M, THRESHOLD - 1), None);
        // Aligned at both ends: all of it.
        assert_eq!(huge_interior(2 * M, 4 * M), Some((2 * M, 6 * M)));
        // Unaligned: rounded inwards at both ends.
        assert_eq!(huge_interior(2 * M + 16, 5 * M), Some((4 * M, 6 * M)));
        assert_eq!(huge_interior(M, 4 * M), Some((2 * M, 4 * M)));
        // Large enough, but no whole aligned huge page inside.
        assert_eq!(huge_interior(2 * M + 1, 4 * M - 2), None);
        // At the top of the address space: no overflow.
        assert_eq!(huge_interior(usize::MAX - M, THRESHOLD), None);
    }

    /// Through the allocator, blocks of every size keep what was written to them, across growth
    /// and shrinking (small to large and back, in place or moved).
    #[test]
    fn blocks_keep_their_contents_across_realloc() {
        let a = HugePageAlloc;
        let sizes = [16, 4096, THRESHOLD + 12345, 3 * THRESHOLD, 100, 7];
        let layout = Layout::from_size_align(sizes[0], 8).unwrap();
        // SAFETY: each pointer is the allocator's latest for the layout it is used with, and
        // only the first `min(old, new)` bytes are read after each move.
        unsafe {
            let mut p = a.alloc(layout);
            assert!(!p.is_null());
            let mut size = sizes[0];
            for (i, b) in (0..size).map(|i| (i, i as u8)) {
                *p.add(i) = b;
            }
            for &next in &sizes[1..] {
                p = a.realloc(p, Layout::from_size_align(size, 8).unwrap(), next);
                assert!(!p.is_null());
                for i in 0..size.min(next) {
                    assert_eq!(*p.add(i), i as u8, "byte {i} after {size} → {next}");
                }
                for i in size.min(next)..next {
                    *p.add(i) = i as u8;
                }
                size = next;
            }
            a.dealloc(p, Layout::from_size_align(size, 8).unwrap());
            let z = Layout::from_size_align(2 * THRESHOLD, 64).unwrap();
            let q = a.alloc_zeroed(z);
            assert!(!q.is_null() && (q as usize).is_multiple_of(64));
            assert!(std::slice::from_raw_parts(q, z.size())
                .iter()
                .all(|&b| b == 0));
            a.dealloc(q, z);
        }
    }

    /// A large block's interior is really marked: the kernel lists its mapping with the `hg`
    /// flag (`MADV_HUGEPAGE`). The flag is set whatever memory is free, so this does not depend
    /// on a huge page being available; it is skipped only on a kernel built without THP.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_block_is_marked_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("skipped: this kernel has no transparent huge pages");
            return;
        }
        let a = HugePageAlloc;
        let smaps_flags = |p: *mut u8, size: usize| {
            let (first, _) = huge_interior(p as usize, size).unwrap();
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            vma_flags(&smaps, first).expect("the block's mapping is listed")
        };
        // Plain and zeroed (`calloc`).
        for zeroed in [false, true] {
            let layout = Layout::from_size_align(3 * THRESHOLD, 8).unwrap();
            // SAFETY: the block is only addressed, not read, and freed with its own layout.
            let p = unsafe {
                if zeroed {
                    a.alloc_zeroed(layout)
                } else {
                    a.alloc(layout)
                }
            };
            assert!(!p.is_null());
            let flags = smaps_flags(p, layout.size());
            // SAFETY: as above.
            unsafe { a.dealloc(p, layout) };
            assert!(
                flags.split_whitespace().any(|f| f == "hg"),
                "zeroed {zeroed}: VmFlags of the block's mapping: {flags}"
            );
        }
    }

    /// The `VmFlags` line of the mapping of `/proc/self/smaps` that contains `addr`.
    #[cfg(target_os = "linux")]
    fn vma_flags(smaps: &str, addr: usize) -> Option<String> {
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = head.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.trim().to_string());
                }
            }
        }
        None
    }
}
