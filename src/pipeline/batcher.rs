//! Groups queued events into per-collection batches.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sleep_until;
use crate::event::{Collection, Event};
use crate::store::Batch;

/// Flushes a collection's buffer when it reaches `max_batch`, or `max_wait` after its first event.
pub struct Batcher {
    rx: mpsc::Receiver<Vec<Event>>,
    out: mpsc::Sender<Batch>,
    max_batch: usize,
    max_wait: Duration,
    buffers: [Buffer; 4],
}

#[derive(Default)]
struct Buffer {
    events: Vec<Event>,
    deadline: Option<Instant>,
}

impl Batcher {
    pub fn new(
        rx: mpsc::Receiver<Vec<Event>>,
        out: mpsc::Sender<Batch>,
        max_batch: usize,
        max_wait: Duration,
    ) -> Batcher {
        Batcher {
            rx,
            out,
            max_batch,
            max_wait,
            buffers: Default::default(),
        }
    }

    /// Runs until every sender is gone, then flushes what is left; dropping `out` then tells the
    /// writer that nothing more will come.
    pub async fn run(mut self) {
        loop {
            let next_deadline = self.buffers.iter().filter_map(|b| b.deadline).min();
            tokio::select! {
                chunk = self.rx.recv() => match chunk {
                    Some(events) => {
                        if !self.add(events).await {
                            return;
                        }
                    }
                    None => break,
                },
                _ = sleep_until(next_deadline) => {
                    let now = Instant::now();
                    for c in Collection::ALL {
                        if self.buffers[c.index()].deadline.is_some_and(|d| d <= now) && !self.flush(c).await {
                            return;
                        }
                    }
                }
            }
        }
        for c in Collection::ALL {
            if !self.flush(c).await {
                return;
            }
        }
    }

    /// Returns false when the writer is gone (only after a fatal store error).
    async fn add(&mut self, events: Vec<Event>) -> bool {
        for event in events {
            let c = event.collection();
            let buf = &mut self.buffers[c.index()];
            if buf.events.is_empty() {
                buf.events.reserve(self.max_batch);
                buf.deadline = Some(Instant::now() + self.max_wait);
            }
            buf.events.push(event);
            if buf.events.len() >= self.max_batch && !self.flush(c).await {
                return false;
            }
        }
        true
    }

    async fn flush(&mut self, collection: Collection) -> bool {
        let buf = &mut self.buffers[collection.index()];
        buf.deadline = None;
        if buf.events.is_empty() {
            return true;
        }
        let events = std::mem::take(&mut buf.events);
        self.out.send(Batch { collection, events }).await.is_ok()
    }
}
