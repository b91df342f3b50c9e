//! The C allocator, told to give memory back. A sidecar runs for months: what a burst of reads
//! took must not stay with the process after the burst.
//!
//! glibc's malloc keeps freed memory in its arenas (one per thread that allocates, up to eight per
//! core), and raises its mmap threshold to the largest block freed, so that after one large answer
//! every later megabyte-sized buffer comes from the heap and stays there. [`tune`] fixes the
//! threshold (large buffers are mapped and unmapped, so freeing them gives them back at once) and
//! caps the arenas; [`trim_soon`] returns the free pages of every arena to the system after a burst,
//! at most once a second, on a thread of its own (`malloc_trim` walks the heap).
//!
//! A leaf: imports nothing of the crate. Elsewhere than Linux with glibc, both do nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Blocks this large or larger are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 256 * 1024;
/// Arenas at most: threads share them instead of each keeping its own free memory.
const ARENAS: i32 = 2;
const TRIM_EVERY_MS: u64 = 1000;

static LAST_TRIM_MS: AtomicU64 = AtomicU64::new(0);
static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Sets the allocator's policy; call first thing, before threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Gives the heap's free pages back to the system, soon and at most once a second.
pub fn trim_soon() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if now.saturating_sub(LAST_TRIM_MS.load(Ordering::Relaxed)) < TRIM_EVERY_MS || TRIMMING.swap(true, Ordering::AcqRel)
    {
        return;
    }
    LAST_TRIM_MS.store(now, Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| {
        trim_now();
        TRIMMING.store(false, Ordering::Release);
    });
    if spawned.is_err() {
        TRIMMING.store(false, Ordering::Release);
    }
}

/// Gives the heap's free pages back now.
pub fn trim_now() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
