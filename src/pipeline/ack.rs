//! Delivery acknowledgements: how a source learns that its events are durable.
//!
//! A source that must know (the file tailer, which may advance its checkpoint only past durable
//! lines) gives every event of a chunk a clone of one [`Ack`]. The writer acknowledges each event
//! once the store has it (stored, already stored, or committed to the outbox); when the last event
//! of the chunk is acknowledged, the chunk's callback runs. Dropping events without acknowledging
//! them (a crash, a shutdown timeout) never runs it.

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
        if self.0.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            (self.0.on_durable)();
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ack({} left)", self.0.remaining.load(Ordering::Relaxed))
    }
}

/// Acknowledgements do not take part in comparing events.
impl PartialEq for Ack {
    fn eq(&self, _: &Ack) -> bool {
        true
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
