//! Hands batches to the store, retrying until they are durable.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::store::{Batch, Store};
use crate::telemetry::Counters;

pub struct Writer<S> {
    rx: mpsc::Receiver<Batch>,
    store: S,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl<S: Store> Writer<S> {
    pub fn new(
        rx: mpsc::Receiver<Batch>,
        store: S,
        permits: Arc<Semaphore>,
        counters: Arc<Counters>,
    ) -> Writer<S> {
        Writer {
            rx,
            store,
            permits,
            counters,
        }
    }

    /// Writes batches until the batcher is done. A failing store is retried with backoff, never
    /// skipped: accepted events are not dropped. The queue fills meanwhile and sources wait.
    pub async fn run(mut self) {
        while let Some(batch) = self.rx.recv().await {
            let batch = Arc::new(batch);
            let mut attempt = 0;
            loop {
                match self.store.write(batch.clone()).await {
                    Ok(outcome) => {
                        if attempt > 0 {
                            tracing::info!(
                                collection = batch.collection.name(),
                                "store is writable again after {attempt} failed attempts"
                            );
                        }
                        self.counters.stored(
                            batch.collection,
                            outcome.inserted as u64,
                            outcome.duplicates as u64,
                        );
                        break;
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
            self.permits.add_permits(batch.events.len());
        }
    }
}
