//! The pipeline: a bounded queue from the sources, a batcher per collection, and a writer.
//!
//! Memory is bounded by permits, one per event, taken by a source before it queues events and given
//! back by the writer only once they are stored. When the store is slow the permits run out and
//! sources wait: the app's writes block instead of the daemon dropping or hoarding events.
//!
//! ```text
//! sources ──Vec<Event>──> batcher ──Batch (one collection, ≤ max_batch)──> writer ──> Store
//! ```

pub mod ack;
mod batcher;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

pub use batcher::Batcher;
pub use writer::Writer;

use crate::config::{HumanDuration, Problems};
use crate::event::Event;
use crate::telemetry::Counters;

/// `[pipeline]`: the queue between sources and the store, batching, and shutdown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events accepted but not yet stored; when full, sources wait (the app's writes block).
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub max_wait: HumanDuration,
    pub shutdown_timeout: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: 16_384,
            max_batch: 1000,
            max_wait: HumanDuration(Duration::from_millis(200)),
            shutdown_timeout: HumanDuration(Duration::from_secs(15)),
        }
    }
}

impl PipelineConfig {
    pub fn validate(&self, p: &mut Problems) {
        p.in_range("pipeline.max_batch", self.max_batch, 1..=100_000);
        if self.queue_capacity < self.max_batch {
            p.add(
                "pipeline.queue_capacity",
                format!(
                    "is {}; expected at least pipeline.max_batch ({})",
                    self.queue_capacity, self.max_batch
                ),
            );
        }
        p.in_range("pipeline.queue_capacity", self.queue_capacity, 1..=10_000_000);
        p.duration_in(
            "pipeline.max_wait",
            self.max_wait,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        );
        p.duration_in(
            "pipeline.shutdown_timeout",
            self.shutdown_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
    }
}

/// The queue's entrance, cloned into every source.
#[derive(Clone)]
pub struct PipelineSender {
    tx: mpsc::Sender<Vec<Event>>,
    permits: Arc<Semaphore>,
    capacity: usize,
    counters: Arc<Counters>,
}

/// The pipeline has shut down; nothing more is accepted.
#[derive(Debug)]
pub struct Closed;

impl PipelineSender {
    /// Queues events, waiting while the queue is full. On `Ok`, the events are accepted: the
    /// pipeline stores them before it finishes. Returns how many of them are rejects.
    pub async fn send(&self, mut events: Vec<Event>) -> Result<u64, Closed> {
        let mut total_rejects = 0;
        while !events.is_empty() {
            let rest = if events.len() > self.capacity {
                events.split_off(self.capacity)
            } else {
                Vec::new()
            };
            let n = events.len();
            self.permits.acquire_many(n as u32).await.map_err(|_| Closed)?.forget();
            let rejects = events.iter().filter(|e| e.is_reject()).count() as u64;
            self.tx.send(events).await.map_err(|_| Closed)?;
            self.counters.accepted(n as u64 - rejects, rejects);
            total_rejects += rejects;
            events = rest;
        }
        Ok(total_rejects)
    }

    /// A read-only view of the queue's fill, which does not keep the pipeline open.
    pub fn gauge(&self) -> QueueGauge {
        QueueGauge {
            permits: self.permits.clone(),
            capacity: self.capacity,
        }
    }
}

#[derive(Clone)]
pub struct QueueGauge {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl QueueGauge {
    /// Events accepted and not yet stored.
    pub fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.permits.available_permits())
    }
}

/// Builds the three parts. The sender goes to sources, the batcher and writer are spawned.
pub fn pipeline<S: crate::store::Store>(
    cfg: &PipelineConfig,
    store: S,
    counters: Arc<Counters>,
) -> (PipelineSender, Batcher, Writer<S>) {
    let permits = Arc::new(Semaphore::new(cfg.queue_capacity));
    // The channels hold few messages: the permits, not the channels, bound memory.
    let (tx, rx) = mpsc::channel(64);
    let (batch_tx, batch_rx) = mpsc::channel(4);
    let sender = PipelineSender {
        tx,
        permits: permits.clone(),
        capacity: cfg.queue_capacity,
        counters: counters.clone(),
    };
    let batcher = Batcher::new(rx, batch_tx, cfg.max_batch, cfg.max_wait.0);
    let writer = Writer::new(batch_rx, store, permits, counters);
    (sender, batcher, writer)
}

/// Sleeps until `deadline`, or forever when there is none (one arm of a `select!`).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Retry delays for a failing store: 100 ms doubling to 5 s, with ±25 % jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = (crate::event::EventId::new().0[11] as u64 * base / 2) / 255; // 0..base/2
    Duration::from_millis(base * 3 / 4 + jitter)
}
