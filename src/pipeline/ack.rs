//! Delivery acknowledgements: how a source learns that its events are durable.
//!
//! Every chunk a source queues carries one [`Ack`]: the socket answers its client only once all of
//! the client's events are durable, and the file tailer advances its checkpoint only past durable
//! lines. The batcher notes how many of a chunk's events each batch holds; the writer acknowledges
//! them once the store has them (stored, already stored, or committed to the outbox), and when the
//! last event of the chunk is acknowledged, the chunk's callback runs. Dropping events without
//! acknowledging them (a crash, a shutdown timeout) never runs it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Ack(Arc<Chunk>);

struct Chunk {
    remaining: AtomicUsize,
    on_durable: Box<dyn Fn() + Send + Sync>,
}

impl Ack {
    /// An acknowledgement for `events` events; `on_durable` runs once all are acknowledged.
    pub fn new(events: usize, on_durable: impl Fn() + Send + Sync + 'static) -> Ack {
        Ack(Arc::new(Chunk {
            remaining: AtomicUsize::new(events),
            on_durable: Box::new(on_durable),
        }))
    }

    /// One event of the chunk is durable.
    pub fn acknowledge(&self) {
        self.acknowledge_n(1);
    }

    /// `n` events of the chunk are durable.
    pub fn acknowledge_n(&self, n: usize) {
        if n > 0 && self.0.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            (self.0.on_durable)();
        }
    }

    /// Whether two acks are the same chunk's.
    pub fn same(&self, other: &Ack) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ack({} left)", self.0.remaining.load(Ordering::Relaxed))
    }
}

/// The durability of a connection's chunks, in the order it queued them. One per socket connection
/// or HTTP request.
///
/// Chunks become durable out of order (two batches are written at once, and a chunk's events may sit
/// in another collection's batch than the next chunk's), so a count of durable events says nothing
/// about *which* ones are: a sync line is owed its answer only once every chunk before it is durable,
/// while chunks after it may already be. So this keeps the prefix of chunks that are all durable.
#[derive(Default)]
pub struct Delivery {
    queued: AtomicU64,
    done: Mutex<Done>,
    changed: tokio::sync::Notify,
}

/// Which chunks are durable: all before `prefix`, and `early` ones after it.
#[derive(Default)]
struct Done {
    prefix: u64,
    early: BTreeSet<u64>,
}

impl Delivery {
    /// An [`Ack`] for the connection's next chunk, of `events` events; it marks the chunk durable.
    pub fn ack(self: &Arc<Self>, events: usize) -> Ack {
        let this = self.clone();
        let chunk = self.queued.fetch_add(1, Ordering::AcqRel);
        Ack::new(events, move || this.chunk_durable(chunk))
    }

    /// Chunks handed out so far: [`Delivery::durable`] of this waits for all of them.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    fn chunk_durable(&self, chunk: u64) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.early.insert(chunk);
        while let Some(next) = done.early.first().copied().filter(|&c| c == done.prefix) {
            done.early.remove(&next);
            done.prefix += 1;
        }
        drop(done);
        self.changed.notify_waiters();
    }

    /// Whether the first `chunks` chunks are all durable.
    pub fn is_durable(&self, chunks: u64) -> bool {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).prefix >= chunks
    }

    /// Waits until the first `chunks` chunks are all durable.
    pub async fn durable(&self, chunks: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a chunk made durable in between is not missed.
            changed.as_mut().enable();
            if self.is_durable(chunks) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn runs_once_when_the_last_event_is_acknowledged() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let ack = Ack::new(3, move || assert!(!flag.swap(true, Ordering::SeqCst), "runs once"));
        let copies = [ack.clone(), ack.clone(), ack];
        copies[0].acknowledge();
        copies[2].acknowledge();
        assert!(!done.load(Ordering::SeqCst));
        copies[1].acknowledge();
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_chunk_is_durable_only_once_every_chunk_before_it_is() {
        let delivery = Arc::new(Delivery::default());
        let (first, second, third) = (delivery.ack(2), delivery.ack(5), delivery.ack(1));
        assert_eq!(delivery.queued(), 3);
        // The later chunks are stored first: more events are durable than the first chunk holds,
        // but not the first chunk's.
        second.acknowledge_n(5);
        third.acknowledge();
        let through_first = delivery.durable(1);
        tokio::pin!(through_first);
        assert!(futures_util::FutureExt::now_or_never(through_first.as_mut()).is_none());
        first.acknowledge_n(2);
        through_first.await;
        delivery.durable(3).await;
        delivery.durable(0).await;
    }
}
