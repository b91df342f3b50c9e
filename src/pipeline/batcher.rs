//! Groups queued events into per-collection batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::ack::Ack;
use super::memory::{MemoryBudget, Reservation};
use super::{Chunk, QueuedBatch};
use crate::event::{Collection, Event};
use crate::retry::sleep_until;
use crate::store::Batch;

/// Flushes a collection's buffer when it reaches `max_batch`, `max_wait` after its first event, or
/// early when the budget runs short and the writer has nothing else to do: part-filled batches must
/// not hold memory that the sources are waiting for, but while the writer is busy, flushing them
/// would only make its next transactions smaller (each costs about the same whatever its size;
/// flushing at every shortage kept batches far below `max_batch` at full speed and wrote 1.6x the
/// bytes).
pub struct Batcher {
    rx: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<QueuedBatch>,
    memory: MemoryBudget,
    backlog: Backlog,
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
    fn new(budget: &MemoryBudget) -> Buffer {
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
        memory: MemoryBudget,
        max_batch: usize,
        max_wait: Duration,
    ) -> Batcher {
        Batcher {
            rx,
            out,
            backlog: Backlog::default(),
            max_batch,
            max_wait,
            buffers: std::array::from_fn(|_| Buffer::new(&memory)),
            memory,
        }
    }

    /// Runs until every sender is gone, then flushes what is left; dropping `out` then tells the
    /// writer that nothing more will come.
    pub async fn run(mut self) {
        loop {
            let next_deadline = self.buffers.iter().filter_map(|b| b.deadline).min();
            let holding = self.buffers.iter().any(|b| !b.events.is_empty());
            tokio::select! {
                chunk = self.rx.recv() => match chunk {
                    Some(chunk) => {
                        if !self.add(chunk).await || !self.flush_if_starved().await {
                            return;
                        }
                    }
                    None => break,
                },
                // The writer finished its work while part-filled batches wait.
                _ = self.backlog.drained(), if holding && self.memory.is_short() => {
                    if !self.flush_if_starved().await {
                        return;
                    }
                }
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
            buf.reservation.take_from(&mut reservation, event.held_bytes as usize);
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

    /// Flushes everything when sources wait for memory the buffers hold and the writer is idle.
    async fn flush_if_starved(&mut self) -> bool {
        if self.memory.is_short() && self.backlog.is_empty() {
            return self.flush_all().await;
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
            reservation: std::mem::replace(&mut buf.reservation, self.memory.empty()),
            backlog: self.backlog.enter(),
        };
        self.out.send(queued).await.is_ok()
    }
}

/// Batches handed to the writer and not yet stored.
#[derive(Clone, Default)]
pub(crate) struct Backlog {
    inner: Arc<BacklogInner>,
}

#[derive(Default)]
struct BacklogInner {
    batches: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    fn enter(&self) -> BacklogEntry {
        self.inner.batches.fetch_add(1, Ordering::AcqRel);
        BacklogEntry(self.inner.clone())
    }

    fn is_empty(&self) -> bool {
        self.inner.batches.load(Ordering::Acquire) == 0
    }

    /// Resolves once the writer has stored everything handed to it (or already had).
    async fn drained(&self) {
        self.inner.drained.notified().await;
    }
}

/// One batch of the backlog; dropped once it is stored.
pub(crate) struct BacklogEntry(Arc<BacklogInner>);

impl Drop for BacklogEntry {
    fn drop(&mut self) {
        if self.0.batches.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Parser, Source, Timestamp};

    fn chunk(budget: &MemoryBudget, n: usize) -> Chunk {
        let parser = Parser::new(Arc::new(crate::redact::Redactor::disabled()));
        let events = (0..n)
            .map(|i| {
                let line = format!(r#"{{"message":"m{i}"}}"#);
                parser.parse(line.as_bytes(), &Source::from("t"), Timestamp(0), EventId::new())
            })
            .collect();
        Chunk {
            events,
            ack: None,
            reservation: budget.empty(),
        }
    }

    /// Hands `chunk` to the batcher and returns once it has taken it in (the single-threaded
    /// runtime runs the batcher's whole turn before this task looks again).
    async fn hand_over(tx: &mpsc::Sender<Chunk>, chunk: Chunk) {
        tx.send(chunk).await.unwrap();
        while tx.capacity() < tx.max_capacity() {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_short_budget_flushes_part_filled_batches_only_when_the_writer_is_idle() {
        let budget = MemoryBudget::new(1 << 20);
        // The sources' reads hold the budget: it is short from here on.
        let _held = budget.force(1 << 20);
        let (tx, rx) = mpsc::channel(8);
        let (out, mut written) = mpsc::channel(4);
        let max_wait = Duration::from_secs(3600);
        tokio::spawn(Batcher::new(rx, out, budget.clone(), 1000, max_wait).run());

        // The writer is idle: the part-filled batch goes at once.
        hand_over(&tx, chunk(&budget, 10)).await;
        let first = written.try_recv().expect("flushed at once to an idle writer");
        assert_eq!(first.batch.events.len(), 10);

        // While the writer holds it, more events wait in the buffer, to make one larger batch.
        hand_over(&tx, chunk(&budget, 20)).await;
        hand_over(&tx, chunk(&budget, 30)).await;
        assert!(written.try_recv().is_err(), "nothing flushed while the writer is busy");

        // Stored: the writer is idle again, and the waiting events follow without max_wait.
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(60), written.recv())
            .await
            .expect("flushed when the writer became idle")
            .unwrap();
        assert_eq!(second.batch.events.len(), 50);
    }
}
