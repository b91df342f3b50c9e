//! Hands batches to the store, retrying until they are durable, then acknowledges them and shows
//! them to the tap, in the order they left the queue.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;

use super::tap::Tap;
use super::QueuedBatch;
use crate::retry::Backoff;
use crate::store::{Batch, Store};
use crate::telemetry::Counters;

/// Batches written at once: while one is inserted, the next is encoded.
const MAX_IN_FLIGHT: usize = 2;

pub struct Writer<S> {
    rx: mpsc::Receiver<QueuedBatch>,
    store: S,
    counters: Arc<Counters>,
    tap: Tap,
    /// Bumped by every write that completes; the watchdog's proof that the pipeline moves.
    progress: Arc<AtomicU64>,
}

/// How the writer ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Events of write tasks that failed (a panic): accepted and not known to be stored.
    pub lost: u64,
}

impl<S: Store> Writer<S> {
    pub(crate) fn new(
        rx: mpsc::Receiver<QueuedBatch>,
        store: S,
        counters: Arc<Counters>,
        tap: Tap,
        progress: Arc<AtomicU64>,
    ) -> Writer<S> {
        Writer {
            rx,
            store,
            counters,
            tap,
            progress,
        }
    }

    /// Writes batches until the batcher is done, then waits for the writes in flight.
    pub async fn run(mut self) -> WriterReport {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut in_flight = InFlight::default();
        let in_order = Arc::new(InOrder::default());
        let mut tickets = 0u64..;
        while let Some(queued) = self.rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let n = queued.batch.events.len() as u64;
            let (store, counters, tap, progress) = (
                self.store.clone(),
                self.counters.clone(),
                self.tap.clone(),
                self.progress.clone(),
            );
            // Taken before the write: a task that fails still gives up its turn when dropped.
            let turn = Turn {
                order: in_order.clone(),
                ticket: tickets.next().unwrap_or(u64::MAX),
            };
            let handle = in_flight.tasks.spawn(async move {
                let Batch { collection, events } = write_until_durable(&store, queued, &counters).await;
                progress.fetch_add(1, Ordering::Relaxed);
                turn.order.wait_for(turn.ticket).await;
                tap.stored(collection, events);
                drop(turn);
                drop(slot);
            });
            in_flight.sizes.insert(handle.id(), n);
            while let Some(joined) = in_flight.tasks.try_join_next_with_id() {
                in_flight.reap(joined);
            }
        }
        while let Some(joined) = in_flight.tasks.join_next_with_id().await {
            in_flight.reap(joined);
        }
        WriterReport { lost: in_flight.lost }
    }
}

/// Write tasks running, and what failed ones held.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    sizes: HashMap<tokio::task::Id, u64>,
    lost: u64,
}

impl InFlight {
    fn reap(&mut self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match joined {
            Ok((id, ())) => id,
            Err(e) => {
                let lost = self.sizes.get(&e.id()).copied().unwrap_or(0);
                tracing::error!("a batch write failed ({e}); its {lost} events are not known to be stored");
                self.lost += lost;
                e.id()
            }
        };
        self.sizes.remove(&id);
    }
}

/// Stored batches go to the tap in the order they left the queue, though two are written at once
/// and either may finish first: a stream resumed with Last-Event-ID replays what came after the
/// client's last event by (time, id), which is the queue's order for each connection's events, so
/// the live feed must not show a later batch before an earlier one (the earlier one's events would
/// then be neither shown nor replayed).
#[derive(Default)]
struct InOrder {
    turns: std::sync::Mutex<Turns>,
    changed: Notify,
}

#[derive(Default)]
struct Turns {
    /// The ticket whose turn it is.
    next: u64,
    /// Tickets done ahead of their turn.
    done_early: BTreeSet<u64>,
}

impl InOrder {
    async fn wait_for(&self, ticket: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change in between is not missed.
            changed.as_mut().enable();
            if self.turns.lock().unwrap_or_else(|p| p.into_inner()).next >= ticket {
                return;
            }
            changed.await;
        }
    }

    fn done(&self, ticket: u64) {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.done_early.insert(ticket);
        while let Some(next) = turns.done_early.first().copied().filter(|&t| t == turns.next) {
            turns.done_early.remove(&next);
            turns.next += 1;
        }
        drop(turns);
        self.changed.notify_waiters();
    }
}

/// A batch's place in the tap's order; dropping it (after the tap, or when the task fails) lets
/// the next one go.
struct Turn {
    order: Arc<InOrder>,
    ticket: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.done(self.ticket);
    }
}

/// A failing store is retried with backoff, never skipped: accepted events are not dropped.
/// The budget fills meanwhile and the sources wait. Returns the batch, for the tap.
async fn write_until_durable<S: Store>(store: &S, queued: QueuedBatch, counters: &Counters) -> Batch {
    let QueuedBatch {
        batch,
        acks,
        reservation,
        backlog,
    } = queued;
    let batch = Arc::new(batch);
    let mut attempt = 0;
    let outcome = loop {
        let started = std::time::Instant::now();
        match store.write(batch.clone()).await {
            Ok(outcome) => {
                counters.write_latency.observe(started.elapsed());
                break outcome;
            }
            Err(e) => {
                if attempt == 0 {
                    tracing::error!(
                        collection = batch.collection.name(),
                        events = batch.events.len(),
                        "cannot store a batch, retrying until it succeeds: {e}"
                    );
                }
                tokio::time::sleep(Backoff::STORE.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    };
    if attempt > 0 {
        tracing::info!(
            collection = batch.collection.name(),
            "store is writable again after {attempt} failed attempts"
        );
    }
    counters.stored(batch.collection, outcome.inserted as u64, outcome.duplicates as u64);
    counters.deferred(outcome.deferred as u64);
    for (ack, n) in &acks {
        ack.acknowledge_n(*n);
    }
    // The memory is the live feed's now (bounded by its length), no longer the budget's.
    drop(reservation);
    drop(backlog);
    Arc::try_unwrap(batch).unwrap_or_else(|shared| Batch {
        collection: shared.collection,
        events: shared.events.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn batches_reach_the_tap_in_queue_order_and_a_failed_one_does_not_hold_the_rest() {
        let order = Arc::new(InOrder::default());
        let shown = Arc::new(Mutex::new(Vec::new()));
        let turn = |ticket| Turn {
            order: order.clone(),
            ticket,
        };
        // Written out of order: 2, then 1, then 0 fails (its task is dropped without a tap).
        let (first, second, third) = (turn(0), turn(1), turn(2));
        let show = |t: Turn| {
            let shown = shown.clone();
            tokio::spawn(async move {
                t.order.wait_for(t.ticket).await;
                shown.lock().unwrap().push(t.ticket);
            })
        };
        let late = show(third);
        let early = show(second);
        tokio::task::yield_now().await;
        assert!(shown.lock().unwrap().is_empty(), "nothing before batch 0");
        drop(first);
        late.await.unwrap();
        early.await.unwrap();
        assert_eq!(*shown.lock().unwrap(), vec![1, 2]);
    }
}
