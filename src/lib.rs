//! lngpt-collector: a sidecar daemon that collects an LLM application's log, API cost and API
//! performance records, checks and redacts them, and batches them into a store — without ever
//! acknowledging an event that is not durable, and without ever holding more memory than its budget.
//!
//! The data flows one way:
//!
//! ```text
//! source (socket, files) ─> line decoder ─> event parser + redactor ─> pipeline ─> store
//!                                      └─> rejects (with a reason) travel the same way
//! pipeline: budget (bytes) ─> batcher ─> writer ─> acks back to the sources, tap to the monitor
//! ```
//!
//! * [`app`] starts everything and stops it in three phases under one deadline.
//! * [`source`] reads bytes and turns them into [`event::Event`]s; it knows nothing of storage.
//! * [`pipeline`] bounds memory in bytes (sources are admitted before each read), groups events per
//!   collection, and acknowledges them once durable.
//! * [`store`] persists batches (write side) and answers queries (query side), on SQLite or MongoDB.
//! * [`notify`] delivers the monitor's alerts to webhooks: durable queues, retries, rate limits.
//! * [`shutdown`] carries the stop signal to every task and waits for them to finish.
//!
//! `ARCHITECTURE.md` at the top of the repository has the map in more words.

pub mod allocator;
pub mod api;
pub mod app;
pub mod config;
pub mod event;
pub mod monitor;
pub mod notify;
pub mod pipeline;
pub mod problems;
pub mod redact;
pub mod retry;
pub mod send;
pub mod shutdown;
pub mod source;
pub mod state_dir;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod units;

#[cfg(test)]
mod invariants;
