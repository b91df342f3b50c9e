//! One byte budget for everything accepted and not yet stored.
//!
//! Memory is bounded in bytes, not in events: partial lines held by sources, queued events and the
//! batches being written all hold a [`Reservation`] of the budget, given back when dropped (so a
//! cancelled send or a panicking task cannot leak it). A source asks to be *admitted* before each
//! read; while the budget is used up it waits, and so do its clients' writes: back-pressure, never
//! an OOM kill.
//!
//! What a read turns into cannot be known before the bytes are read, so admission is "below the
//! limit" rather than "fits under the limit": the admitted read then [`Reservation::resize`]s to
//! what it produced. Admissions are taken one at a time, so the budget is exceeded by at most one
//! read's worth.
//!
//! A partial line holds its bytes until its newline comes, so waiting for admission while holding
//! one is hold-and-wait: enough connections each part-way through a long line fill the budget, and
//! none can read the rest that would free it (issue 20: a reservation deadlock). The way out is
//! the [`MemoryBudget::line_lane`]: one connection at a time that holds a partial line and has data to
//! read may read past the limit until that line ends, so some line always completes, becomes an
//! event, and its bytes come back once stored. The lane opens only while partial lines are what
//! fills the budget (what is queued for the store holds less than half of it): a slow or locked
//! store is waited for, as before, and the lane cannot grow the queue without bound. Sources also
//! give up what a stalled client holds while others wait (see `socket.line_timeout`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// What an event costs the budget beyond its line: the parsed struct, its strings and map, and
/// its encoded document while it is written. Measured, not exact; see the memory test.
pub const EVENT_OVERHEAD: usize = 512;

/// The bytes one event of a `line_len`-byte line is charged: the line, its parsed copy and its
/// encoded document, plus the fixed overhead.
pub fn held_bytes_for_line(line_len: usize) -> u32 {
    u32::try_from(line_len.saturating_mul(2).saturating_add(EVENT_OVERHEAD)).unwrap_or(u32::MAX)
}

#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    released: Notify,
    /// Sources waiting for admission right now; the batcher flushes early when anyone waits.
    waiting: AtomicUsize,
    /// Since when sources have waited without a break (None: nobody waits), for `/readyz`.
    waiting_since: Mutex<Option<SystemTime>>,
    /// One permit: the connection that may read past the limit to finish its partial line.
    lane: Arc<Semaphore>,
    /// Of `used`, the bytes partial lines hold (reservations made by [`MemoryBudget::partial`]).
    partial: AtomicUsize,
}

/// Sources have waited for memory without a break since `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturation {
    pub since: SystemTime,
    /// How many wait right now.
    pub waiting: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                used: AtomicUsize::new(0),
                released: Notify::new(),
                waiting: AtomicUsize::new(0),
                waiting_since: Mutex::new(None),
                lane: Arc::new(Semaphore::new(1)),
                partial: AtomicUsize::new(0),
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes held by reservations now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Whether sources wait, or soon will: the moment to stop holding part-filled batches.
    pub fn is_short(&self) -> bool {
        self.inner.waiting.load(Ordering::Relaxed) > 0 || self.used() >= self.inner.limit - self.inner.limit / 4
    }

    /// Whether a source waits for memory right now: the moment a client that holds budget and
    /// sends nothing is holding others up.
    pub fn has_waiters(&self) -> bool {
        self.inner.waiting.load(Ordering::Relaxed) > 0
    }

    /// Since when sources have waited for memory without a break, if they wait now.
    pub fn saturation(&self) -> Option<Saturation> {
        let since = *self.inner.waiting_since.lock().unwrap_or_else(|p| p.into_inner());
        since.map(|since| Saturation {
            since,
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        })
    }

    /// Bytes held by partial lines now.
    pub fn partial_used(&self) -> usize {
        self.inner.partial.load(Ordering::Relaxed)
    }

    /// Whether the lane may be given: partial lines, not events waiting for the store, fill the
    /// budget (what is queued holds less than half of it).
    fn lane_open(&self) -> bool {
        self.used().saturating_sub(self.partial_used()) < self.inner.limit / 2
    }

    /// Waits for the line lane: a connection holding a partial line that cannot be admitted takes
    /// it, and then reads with [`MemoryBudget::force`] until that line ends (or its client pauses), so
    /// some partial line always completes even when partial lines fill the budget. Counts as
    /// waiting while it waits.
    pub async fn line_lane(&self) -> LanePermit {
        let mut waiting = None;
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.lane_open() {
                if let Ok(permit) = self.inner.lane.clone().try_acquire_owned() {
                    return LanePermit {
                        _permit: permit,
                        inner: self.inner.clone(),
                    };
                }
            }
            waiting.get_or_insert_with(|| WaitGuard::enter(&self.inner));
            released.await;
        }
    }

    /// Waits until the budget is below its limit, then reserves `bytes` for a read.
    pub async fn admit(&self, bytes: usize) -> Reservation {
        if let Some(r) = self.try_admit(bytes) {
            return r;
        }
        let _waiting = WaitGuard::enter(&self.inner);
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(r) = self.try_admit(bytes) {
                return r;
            }
            released.await;
        }
    }

    /// Blocking form of [`MemoryBudget::admit`] for sources on threads of their own.
    pub fn admit_blocking(&self, runtime: &tokio::runtime::Handle, bytes: usize) -> Reservation {
        self.try_admit(bytes)
            .unwrap_or_else(|| runtime.block_on(self.admit(bytes)))
    }

    fn try_admit(&self, bytes: usize) -> Option<Reservation> {
        let limit = self.inner.limit;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < limit).then(|| used.saturating_add(bytes))
            })
            .ok()
            .map(|_| Reservation {
                budget: Some(self.inner.clone()),
                bytes,
                partial: false,
            })
    }

    /// Charges `bytes` without waiting: for memory already in use (what an admitted read produced).
    pub fn force(&self, bytes: usize) -> Reservation {
        self.inner.used.fetch_add(bytes, Ordering::AcqRel);
        Reservation {
            budget: Some(self.inner.clone()),
            bytes,
            partial: false,
        }
    }

    /// A reservation of nothing, to merge others into.
    pub fn empty(&self) -> Reservation {
        Reservation {
            budget: Some(self.inner.clone()),
            bytes: 0,
            partial: false,
        }
    }

    /// An empty reservation for a connection's partial line: its bytes count as partial too.
    pub fn partial(&self) -> Reservation {
        Reservation {
            budget: Some(self.inner.clone()),
            bytes: 0,
            partial: true,
        }
    }
}

/// The line lane, held; when dropped the next connection may have it.
pub struct LanePermit {
    _permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        // Waiters for the lane wait on `released`.
        self.inner.released.notify_waiters();
    }
}

/// Counts a waiting source, and keeps when the current unbroken stretch of waiting began.
struct WaitGuard<'a>(&'a Inner);

impl<'a> WaitGuard<'a> {
    fn enter(inner: &'a Inner) -> WaitGuard<'a> {
        let mut since = inner.waiting_since.lock().unwrap_or_else(|p| p.into_inner());
        if inner.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            *since = Some(SystemTime::now());
        }
        WaitGuard(inner)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut since = self.0.waiting_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            *since = None;
        }
    }
}

impl Inner {
    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            self.released.notify_waiters();
        }
    }
}

/// Bytes of the budget held until dropped.
#[derive(Default)]
pub struct Reservation {
    budget: Option<Arc<Inner>>,
    bytes: usize,
    /// Held by a partial line (counted in `Inner::partial` too).
    partial: bool,
}

impl Reservation {
    /// A reservation that holds nothing and belongs to no budget (tests, internal events).
    pub fn none() -> Reservation {
        Reservation::default()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows (without waiting) or shrinks (giving bytes back) to exactly `bytes`.
    pub fn resize(&mut self, bytes: usize) {
        let Some(budget) = &self.budget else { return };
        if bytes > self.bytes {
            if self.partial {
                budget.partial.fetch_add(bytes - self.bytes, Ordering::AcqRel);
            }
            budget.used.fetch_add(bytes - self.bytes, Ordering::AcqRel);
        } else {
            if self.partial {
                budget.partial.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            }
            budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    /// Moves up to `bytes` from `from` into this reservation (both of one budget): no atomics, so
    /// handing an event's share from a chunk to a batch costs nothing.
    pub fn take_from(&mut self, from: &mut Reservation, bytes: usize) {
        let moved = bytes.min(from.bytes);
        if self.budget.is_none() {
            self.budget = from.budget.clone();
        }
        if from.partial != self.partial {
            if let Some(budget) = &self.budget {
                if self.partial {
                    budget.partial.fetch_add(moved, Ordering::AcqRel);
                } else {
                    budget.partial.fetch_sub(moved, Ordering::AcqRel);
                }
            }
        }
        from.bytes -= moved;
        self.bytes += moved;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            if self.partial {
                budget.partial.fetch_sub(self.bytes, Ordering::AcqRel);
            }
            budget.release(self.bytes);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reservation({} bytes)", self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_come_back_when_dropped_and_admission_waits_while_used_up() {
        let budget = MemoryBudget::new(100);
        let a = budget.admit(60).await;
        let mut b = budget.admit(60).await; // admitted below the limit: may exceed it once
        assert_eq!(budget.used(), 120);
        assert!(budget.is_short());
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(10).await.bytes() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "used up: the next read waits");
        b.resize(30);
        drop(a);
        assert_eq!(waiter.await.unwrap(), 10);
        drop(b);
        assert_eq!(budget.used(), 0, "every byte came back");
    }

    #[tokio::test]
    async fn the_line_lane_lets_one_partial_line_through_a_full_budget_and_waiting_is_dated() {
        let budget = MemoryBudget::new(100);
        let mut partial = budget.partial();
        partial.resize(100);
        assert_eq!(budget.partial_used(), 100);
        assert_eq!(budget.saturation(), None);
        let lane = budget.line_lane().await;
        let second = {
            let budget = budget.clone();
            tokio::spawn(async move { drop(budget.line_lane().await) })
        };
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(10).await.bytes() })
        };
        while budget.saturation().map(|s| s.waiting) != Some(2) {
            tokio::task::yield_now().await;
        }
        assert!(budget.has_waiters());
        drop(lane);
        second.await.unwrap();
        drop(partial);
        assert_eq!(waiter.await.unwrap(), 10);
        assert_eq!(budget.saturation(), None, "nobody waits: not saturated");
        assert_eq!(budget.partial_used(), 0);
        // Events waiting for the store fill it: no lane, the store is waited for.
        let _queued = budget.force(60);
        let no_lane = {
            let budget = budget.clone();
            tokio::spawn(async move { drop(budget.line_lane().await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !no_lane.is_finished(),
            "the lane stays shut while the queue holds the budget"
        );
        drop(_queued);
        no_lane.await.unwrap();
    }

    #[test]
    fn moving_bytes_between_reservations_keeps_the_total() {
        let budget = MemoryBudget::new(1000);
        let mut chunk = budget.force(300);
        let mut batch = budget.empty();
        batch.take_from(&mut chunk, 120);
        batch.take_from(&mut chunk, 500);
        assert_eq!((chunk.bytes(), batch.bytes(), budget.used()), (0, 300, 300));
        drop(chunk);
        drop(batch);
        assert_eq!(budget.used(), 0);
    }
}
