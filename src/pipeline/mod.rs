//! The pipeline: a byte budget, a queue from the sources, a batcher per collection, a writer, and
//! a tap that shows stored events to the rest of the daemon.
//!
//! Memory is bounded in bytes ([`memory`]): a source is admitted before each read, and what it read
//! holds a reservation until the writer has stored it. When the store is slow the budget runs out
//! and sources wait: the app's writes block instead of the daemon dropping or hoarding events.
//! Every chunk carries an [`ack::Ack`]; a source learns through it when its events are durable.
//!
//! ```text
//! sources ──Chunk──> batcher ──QueuedBatch (one collection, ≤ max_batch)──> writer ──> Store
//!                                                                              └──> tap (monitor, live streams)
//! ```

pub mod ack;
mod batcher;
pub mod memory;
pub mod tap;
mod writer;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use batcher::Batcher;
pub use writer::{Writer, WriterReport};

use crate::event::Event;
use crate::problems::Problems;
use crate::store::Batch;
use crate::telemetry::Counters;
use crate::units::{ByteSize, HumanDuration};
use ack::Ack;
use memory::{MemoryBudget, Reservation};
use tap::Tap;

/// `[pipeline]`: the queue between sources and the store, batching, and shutdown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Bytes for everything accepted and not yet stored (partial lines, queued events, batches
    /// being written); when used up, sources stop reading and the app's writes block.
    pub memory_budget: ByteSize,
    pub max_batch: usize,
    pub max_wait: HumanDuration,
    pub shutdown_timeout: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            memory_budget: ByteSize(8 << 20),
            max_batch: 1000,
            max_wait: HumanDuration(Duration::from_millis(200)),
            shutdown_timeout: HumanDuration(Duration::from_secs(15)),
        }
    }
}

impl PipelineConfig {
    pub fn validate(&self, p: &mut Problems) {
        p.in_range("pipeline.max_batch", self.max_batch, 1..=100_000);
        p.size_in("pipeline.memory_budget", self.memory_budget, 1 << 20, 64 << 30);
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

/// What a source queues at once: the events of one read, the bytes they hold, and how the source
/// learns they are durable.
pub struct Chunk {
    pub events: Vec<Event>,
    pub ack: Option<Ack>,
    pub reservation: Reservation,
}

/// A batch on its way to the store, with what it must give back once stored.
pub(crate) struct QueuedBatch {
    pub batch: Batch,
    /// How many of the batch's events each chunk's ack covers.
    pub acks: Vec<(Ack, usize)>,
    pub reservation: Reservation,
    /// Counts the batch as the writer's work until it is stored.
    pub backlog: batcher::BacklogEntry,
}

/// The queue's entrance, cloned into every source.
#[derive(Clone)]
pub struct PipelineSender {
    tx: mpsc::Sender<Chunk>,
    memory: MemoryBudget,
    counters: Arc<Counters>,
}

/// The pipeline has shut down; nothing more is accepted.
#[derive(Debug)]
pub struct Closed;

impl PipelineSender {
    /// Queues a chunk. On `Ok`, its events are accepted: the pipeline stores them before it
    /// finishes, and the chunk's ack runs once they are durable. Returns how many are rejects.
    pub async fn send(&self, chunk: Chunk) -> Result<u64, Closed> {
        let n = chunk.events.len() as u64;
        let (mut rejects, mut own) = (0, 0);
        for e in &chunk.events {
            match e.body {
                crate::event::Body::Reject(_) => rejects += 1,
                // The daemon's own documents (the monitor's windows) are not events received.
                crate::event::Body::Metric(_) => own += 1,
                _ => {}
            }
        }
        self.tx.send(chunk).await.map_err(|_| Closed)?;
        self.counters.accepted(n - rejects - own, rejects);
        self.counters.own(own);
        Ok(rejects)
    }

    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// A sender with no pipeline behind it, for unit tests of sources that only make events.
    #[cfg(test)]
    pub fn unconnected() -> PipelineSender {
        PipelineSender {
            tx: mpsc::channel(1).0,
            memory: MemoryBudget::new(16 << 20),
            counters: Arc::default(),
        }
    }

    /// A sender whose chunks a unit test receives itself, to acknowledge them as the writer
    /// would (or to drop them unacknowledged, as a crash does).
    #[cfg(test)]
    pub fn to_test(capacity: usize, budget: usize) -> (PipelineSender, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sender = PipelineSender {
            tx,
            memory: MemoryBudget::new(budget),
            counters: Arc::default(),
        };
        (sender, rx)
    }
}

/// Everything the pipeline is made of; `spawn` the batcher and writer, hand `sender` to sources.
pub struct Pipeline<S> {
    pub sender: PipelineSender,
    pub batcher: Batcher,
    pub writer: Writer<S>,
    pub memory: MemoryBudget,
    /// Batches written so far: moves while the pipeline is alive.
    pub progress: Arc<AtomicU64>,
}

/// Builds the pipeline's parts around `store`; stored events are shown to `tap`.
pub fn pipeline<S: crate::store::Store>(
    cfg: &PipelineConfig,
    store: S,
    counters: Arc<Counters>,
    tap: Tap,
) -> Pipeline<S> {
    let budget = MemoryBudget::new(cfg.memory_budget.as_usize());
    // The channels hold few messages: the budget, not the channels, bounds memory.
    let (tx, rx) = mpsc::channel(64);
    let (batch_tx, batch_rx) = mpsc::channel(4);
    let progress = Arc::new(AtomicU64::new(0));
    Pipeline {
        sender: PipelineSender {
            tx,
            memory: budget.clone(),
            counters: counters.clone(),
        },
        batcher: Batcher::new(rx, batch_tx, budget.clone(), cfg.max_batch, cfg.max_wait.0),
        writer: Writer::new(batch_rx, store, counters, tap, progress.clone()),
        memory: budget,
        progress,
    }
}
