//! Heavy reads — listings and statistics — share a memory budget of their own (a stream replay is
//! bounded by `api.max_response_bytes` and takes only the store turns below),
//! `api.read_memory`, apart from the pipeline's `memory_budget`: however many readers come at
//! once, they wait for each other and never for (or instead of) ingest.
//!
//! A read works in pieces: it is admitted for a piece ([`PIECE_BYTES`]) before it asks the store,
//! holds that [`ReadMemory`] while the piece waits for its client, and gives it back once the
//! connection has written it (the piece's bytes own the reservation: [`ReadMemory::into_bytes`]).
//! Admission waits while the pieces held would pass the budget, so a slow client holds one piece,
//! not its whole answer. A piece that comes back larger than it was admitted for (a single
//! document larger than a piece) keeps what it holds: the budget is passed by at most one
//! document per read in flight.
//!
//! CPU is bounded apart from memory: at most [`QUERIES_AT_ONCE`] pieces are being read from the
//! store at a time, so a reconnect storm of stream clients queues rather than taking the cores
//! ingest needs.
//!
//! Memory goes back to the system after a burst: glibc keeps what was freed in its arenas, so once
//! the last piece of a burst is given back the heap is trimmed ([`crate::allocator::trim_soon`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// What a read asks the store for at a time.
pub const PIECE_BYTES: usize = 256 * 1024;
/// Pieces read from the store at once, over all readers.
pub const QUERIES_AT_ONCE: usize = 2;
/// A burst that held at least this much is followed by a trim of the heap.
const TRIM_AFTER_BYTES: usize = 4 << 20;

#[derive(Clone)]
pub struct Reads {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    state: Mutex<State>,
    freed: Notify,
    queries: Arc<Semaphore>,
    abandoned: AtomicU64,
}

#[derive(Default)]
struct State {
    used: usize,
    /// The most held since the budget was last empty.
    peak: usize,
}

impl Reads {
    pub fn new(limit: usize) -> Reads {
        Reads {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                state: Mutex::new(State::default()),
                freed: Notify::new(),
                queries: Arc::new(Semaphore::new(QUERIES_AT_ONCE)),
                abandoned: AtomicU64::new(0),
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes held by reads now.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// Notes a read given up because its client left.
    pub fn abandoned_one(&self) {
        self.inner.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn abandoned(&self) -> u64 {
        self.inner.abandoned.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `bytes` fit beside what other reads hold (or nothing is held: a piece larger
    /// than the whole budget still gets its turn), then holds them.
    pub async fn admit(&self, bytes: usize) -> ReadMemory {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if s.used == 0 || s.used.saturating_add(bytes) <= self.inner.limit {
                    s.used += bytes;
                    s.peak = s.peak.max(s.used);
                    return ReadMemory {
                        reads: self.clone(),
                        bytes,
                    };
                }
            }
            freed.await;
        }
    }

    /// A turn to read from the store (held for one piece's query, not while its client reads).
    pub async fn query_turn(&self) -> OwnedSemaphorePermit {
        match self.inner.queries.clone().acquire_owned().await {
            Ok(p) => p,
            // Never closed; a closed semaphore would only mean no limit.
            Err(_) => unreachable!("the read semaphore is never closed"),
        }
    }

    fn release(&self, bytes: usize) {
        let trim = {
            let mut s = self.lock();
            s.used = s.used.saturating_sub(bytes);
            let burst_over = s.used == 0 && s.peak >= TRIM_AFTER_BYTES;
            if s.used == 0 {
                s.peak = 0;
            }
            burst_over
        };
        self.inner.freed.notify_waiters();
        if trim {
            crate::allocator::trim_soon();
        }
    }
}

/// Bytes a read holds of [`Reads`], given back when dropped.
pub struct ReadMemory {
    reads: Reads,
    bytes: usize,
}

impl ReadMemory {
    /// What the piece turned out to hold (more than admitted only for one large document).
    pub fn resize(&mut self, bytes: usize) {
        if bytes > self.bytes {
            let mut s = self.reads.lock();
            s.used += bytes - self.bytes;
            s.peak = s.peak.max(s.used);
        } else if bytes < self.bytes {
            self.reads.release(self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    /// `buf` as the body's bytes, holding this memory until the connection has written them.
    pub fn into_bytes(mut self, buf: Vec<u8>) -> Bytes {
        self.resize(buf.len());
        Bytes::from_owner(Held { buf, _memory: self })
    }
}

impl Drop for ReadMemory {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.reads.release(self.bytes);
        }
    }
}

struct Held {
    buf: Vec<u8>,
    _memory: ReadMemory,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_waits_until_pieces_held_are_given_back() {
        let reads = Reads::new(1000);
        let a = reads.admit(600).await;
        let big = reads.admit(300).await;
        assert_eq!(reads.used(), 900);
        // 600 + 300 + 200 > 1000: waits for one of them.
        let waiting = tokio::spawn({
            let reads = reads.clone();
            async move { reads.admit(200).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let bytes = a.into_bytes(vec![0; 600]);
        assert!(!waiting.is_finished() || reads.used() <= 1100);
        drop(bytes);
        let c = waiting.await.unwrap();
        assert_eq!(reads.used(), 500);
        drop((big, c));
        assert_eq!(reads.used(), 0);
        // Larger than the whole budget: admitted when nothing else is held.
        let huge = reads.admit(5000).await;
        assert_eq!(reads.used(), 5000);
        drop(huge);
    }
}
