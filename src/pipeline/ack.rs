//! Delivery acknowledgements: how a source learns that its events are durable.
//!
//! Every chunk a source queues carries one [`Ack`]: the socket answers its client only once all of
//! the client's events are durable, and the file tailer advances its checkpoint only past durable
//! lines. The batcher notes how many of a chunk's events each batch holds; the writer acknowledges
//! them once the store has them (stored, already stored, or committed to the outbox), and when the
//! last event of the chunk is acknowledged, the chunk's callback runs. Dropping events without
//! acknowledging them (a crash, a shutdown timeout) never runs it.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

/// The durability of a connection's events: how many it queued, how many are durable, and a way to
/// wait until the second catches up with the first. One per socket connection or HTTP request.
#[derive(Default)]
pub struct Delivery {
    durable: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Delivery {
    /// An [`Ack`] for a chunk of `events` events that counts them here once durable.
    pub fn ack(self: &Arc<Self>, events: usize) -> Ack {
        let this = self.clone();
        Ack::new(events, move || {
            this.durable.fetch_add(events, Ordering::AcqRel);
            this.changed.notify_waiters();
        })
    }

    /// Waits until at least `events` events are durable.
    pub async fn durable(&self, events: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.durable.load(Ordering::Acquire) >= events {
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
}
