//! A global allocator that counts, per role (the thread's job in the bench), how many
//! allocations were made, and how many bytes are live in the whole process.
//!
//! Each bench binary installs it with
//! `#[global_allocator] static A: support::alloc::Counting = support::alloc::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// What a thread does in a bench; its allocations are counted under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Other = 0,
    Proxy = 1,
    Client = 2,
    Upstream = 3,
}

const ROLES: usize = 4;

thread_local! {
    // `const` and without a destructor: reading it never allocates, so the allocator may.
    static ROLE: Cell<usize> = const { Cell::new(0) };
}

static ALLOCS: [AtomicU64; ROLES] = [const { AtomicU64::new(0) }; ROLES];
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

/// Counts calls to `alloc` and `realloc` (a growth may move, so it is an allocation) per role.
pub struct Counting;

fn count(size: i64, new_alloc: bool) {
    if new_alloc {
        let role = ROLE.try_with(Cell::get).unwrap_or(0);
        ALLOCS[role].fetch_add(1, Relaxed);
    }
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method forwards to `System` with the arguments it got; the counting only
// touches atomics and a const thread-local, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64, true);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64, true);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64), false);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64, true);
        System.realloc(ptr, layout, new_size)
    }
}

/// Counts this thread's allocations under `role` from now on.
pub fn set_role(role: Role) {
    ROLE.with(|r| r.set(role as usize));
}

/// Allocations made so far by threads of `role`.
pub fn allocs(role: Role) -> u64 {
    ALLOCS[role as usize].load(Relaxed)
}

/// Heap bytes live now, in the whole process.
pub fn live_bytes() -> i64 {
    LIVE.load(Relaxed)
}

/// The most heap bytes live at once since the last [`reset_peak`].
pub fn peak_bytes() -> i64 {
    PEAK.load(Relaxed)
}

pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}
