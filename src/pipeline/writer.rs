//! Hands batches to the store, retrying until they are durable.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::store::{Batch, Store};
use crate::telemetry::Counters;

/// Batches written at once: while one is inserted, the next is encoded.
const MAX_IN_FLIGHT: usize = 2;

pub struct Writer<S> {
    rx: mpsc::Receiver<Batch>,
    store: S,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl<S: Store> Writer<S> {
    pub fn new(rx: mpsc::Receiver<Batch>, store: S, permits: Arc<Semaphore>, counters: Arc<Counters>) -> Writer<S> {
        Writer {
            rx,
            store,
            permits,
            counters,
        }
    }

    /// Writes batches until the batcher is done, then waits for the writes in flight.
    pub async fn run(mut self) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut writes = JoinSet::new();
        while let Some(batch) = self.rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (store, permits, counters) = (self.store.clone(), self.permits.clone(), self.counters.clone());
            writes.spawn(async move {
                let n = batch.events.len();
                write_until_durable(&store, Arc::new(batch), &counters).await;
                permits.add_permits(n);
                drop(slot);
            });
            while writes.try_join_next().is_some() {}
        }
        while writes.join_next().await.is_some() {}
    }
}

/// A failing store is retried with backoff, never skipped: accepted events are not dropped.
/// The queue fills meanwhile and the sources wait.
async fn write_until_durable<S: Store>(store: &S, batch: Arc<Batch>, counters: &Counters) {
    let mut attempt = 0;
    loop {
        match store.write(batch.clone()).await {
            Ok(outcome) => {
                if attempt > 0 {
                    tracing::info!(
                        collection = batch.collection.name(),
                        "store is writable again after {attempt} failed attempts"
                    );
                }
                counters.stored(batch.collection, outcome.inserted as u64, outcome.duplicates as u64);
                counters.deferred(outcome.deferred as u64);
                for ack in batch.events.iter().filter_map(|e| e.ack.as_ref()) {
                    ack.acknowledge();
                }
                return;
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
                attempt += 1;
            }
        }
    }
}
