//! Groups queued events into per-collection batches.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ack::Ack;
use super::budget::{Budget, Reservation};
use super::{sleep_until, Chunk, QueuedBatch};
use crate::event::{Collection, Event};
use crate::store::Batch;

/// Flushes a collection's buffer when it reaches `max_batch`, `max_wait` after its first event, or
/// at once when the budget runs short: part-filled batches must not hold memory that the sources
/// are waiting for.
pub struct Batcher {
    rx: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<QueuedBatch>,
    budget: Budget,
    max_batch: usize,
    max_wait: Duration,
    buffers: [Buffer; Collection::COUNT],
}

struct Buffer {
    events: Vec<Event>,
    /// How many of the events each chunk's ack covers, in order.
    acks: Vec<(Ack, usize)>,
    reservation: Reservation,
    deadline: Option<Instant>,
}

impl Buffer {
    fn new(budget: &Budget) -> Buffer {
        Buffer {
            events: Vec::new(),
            acks: Vec::new(),
            reservation: budget.empty(),
            deadline: None,
        }
    }
}

impl Batcher {
    pub(crate) fn new(
        rx: mpsc::Receiver<Chunk>,
        out: mpsc::Sender<QueuedBatch>,
        budget: Budget,
        max_batch: usize,
        max_wait: Duration,
    ) -> Batcher {
        Batcher {
            rx,
            out,
            max_batch,
            max_wait,
            buffers: std::array::from_fn(|_| Buffer::new(&budget)),
            budget,
        }
    }

    /// Runs until every sender is gone, then flushes what is left; dropping `out` then tells the
    /// writer that nothing more will come.
    pub async fn run(mut self) {
        loop {
            let next_deadline = self.buffers.iter().filter_map(|b| b.deadline).min();
            tokio::select! {
                chunk = self.rx.recv() => match chunk {
                    Some(chunk) => {
                        if !self.add(chunk).await {
                            return;
                        }
                        if self.budget.is_short() && !self.flush_all().await {
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
        self.flush_all().await;
    }

    /// Returns false when the writer is gone (only after a fatal store error).
    async fn add(&mut self, chunk: Chunk) -> bool {
        let Chunk {
            events,
            ack,
            mut reservation,
        } = chunk;
        for event in events {
            let c = event.collection();
            let buf = &mut self.buffers[c.index()];
            if buf.events.is_empty() {
                buf.events.reserve(self.max_batch);
                buf.deadline = Some(Instant::now() + self.max_wait);
            }
            buf.reservation.take_from(&mut reservation, event.cost as usize);
            if let Some(ack) = &ack {
                match buf.acks.last_mut() {
                    Some((last, n)) if last.same(ack) => *n += 1,
                    _ => buf.acks.push((ack.clone(), 1)),
                }
            }
            buf.events.push(event);
            if buf.events.len() >= self.max_batch && !self.flush(c).await {
                return false;
            }
        }
        true
    }

    async fn flush_all(&mut self) -> bool {
        for c in Collection::ALL {
            if !self.flush(c).await {
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
        let queued = QueuedBatch {
            batch: Batch {
                collection,
                events: std::mem::take(&mut buf.events),
            },
            acks: std::mem::take(&mut buf.acks),
            reservation: std::mem::replace(&mut buf.reservation, self.budget.empty()),
        };
        self.out.send(queued).await.is_ok()
    }
}
