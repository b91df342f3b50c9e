//! lngpt-collector: a sidecar daemon that collects an LLM application's log, API cost and API
//! performance records, checks and redacts them, and batches them into a store.
//!
//! The data flows one way:
//!
//! ```text
//! source (socket) ─> line decoder ─> event parser + redactor ─> pipeline queue ─> batcher ─> store
//!                                          └─> rejects (with a reason) travel the same way
//! ```
//!
//! * [`source`] reads bytes and turns them into [`event::Event`]s; it knows nothing of storage.
//! * [`pipeline`] bounds memory (a permit per queued event; full means the sources wait), groups
//!   events per collection and flushes at `max_batch` or `max_wait`.
//! * [`store`] persists batches; [`store::embedded`] is SQLite, one transaction per batch.
//! * [`shutdown`] carries the stop signal to every task and waits for them to finish.
//!
//! `ARCHITECTURE.md` at the top of the repository has the map in more words.

pub mod app;
pub mod config;
pub mod event;
pub mod pipeline;
pub mod redact;
pub mod send;
pub mod shutdown;
pub mod source;
pub mod state_dir;
pub mod store;
pub mod telemetry;
