//! Hands batches to the store, retrying until they are durable, then acknowledges them and shows
//! them to the tap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::tap::Tap;
use super::QueuedBatch;
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
            let handle = in_flight.tasks.spawn(async move {
                write_until_durable(&store, queued, &counters, &tap).await;
                progress.fetch_add(1, Ordering::Relaxed);
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

/// A failing store is retried with backoff, never skipped: accepted events are not dropped.
/// The budget fills meanwhile and the sources wait.
async fn write_until_durable<S: Store>(store: &S, queued: QueuedBatch, counters: &Counters, tap: &Tap) {
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
                tokio::time::sleep(super::backoff(attempt)).await;
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
    let Batch { collection, events } = Arc::try_unwrap(batch).unwrap_or_else(|shared| Batch {
        collection: shared.collection,
        events: shared.events.clone(),
    });
    tap.stored(collection, events);
}
