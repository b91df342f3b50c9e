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

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// What an event costs the budget beyond its line: the parsed struct, its strings and map, and
/// its encoded document while it is written. Measured, not exact; see the memory test.
pub const EVENT_OVERHEAD: usize = 512;

/// The bytes one event of a `line_len`-byte line is charged: the line, its parsed copy and its
/// encoded document, plus the fixed overhead.
pub fn event_cost(line_len: usize) -> u32 {
    u32::try_from(line_len.saturating_mul(2).saturating_add(EVENT_OVERHEAD)).unwrap_or(u32::MAX)
}

#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    released: Notify,
    /// Sources waiting for admission right now; the batcher flushes early when anyone waits.
    waiting: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                used: AtomicUsize::new(0),
                released: Notify::new(),
                waiting: AtomicUsize::new(0),
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

    /// Waits until the budget is below its limit, then reserves `bytes` for a read.
    pub async fn admit(&self, bytes: usize) -> Reservation {
        if let Some(r) = self.try_admit(bytes) {
            return r;
        }
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitGuard(&self.inner.waiting);
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

    /// Blocking form of [`Budget::admit`] for sources on threads of their own.
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
            })
    }

    /// Charges `bytes` without waiting: for memory already in use (what an admitted read produced).
    pub fn force(&self, bytes: usize) -> Reservation {
        self.inner.used.fetch_add(bytes, Ordering::AcqRel);
        Reservation {
            budget: Some(self.inner.clone()),
            bytes,
        }
    }

    /// A reservation of nothing, to merge others into.
    pub fn empty(&self) -> Reservation {
        Reservation {
            budget: Some(self.inner.clone()),
            bytes: 0,
        }
    }
}

struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
            budget.used.fetch_add(bytes - self.bytes, Ordering::AcqRel);
        } else {
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
        from.bytes -= moved;
        self.bytes += moved;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
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
        let budget = Budget::new(100);
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

    #[test]
    fn moving_bytes_between_reservations_keeps_the_total() {
        let budget = Budget::new(1000);
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
