//! Stores persist batches of events and answer the queries the API needs.
//!
//! One trait for both backends: the embedded SQLite store (the default, no server needed) and
//! MongoDB. A store never decides *whether* to keep an event, only how; the pipeline retries a
//! failed write, so `write` must be idempotent (an id seen before counts as stored).

pub mod document;
pub mod embedded;
pub mod mongo;
pub mod outbox;
pub mod retention;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::event::{Collection, Event, Timestamp};

pub use embedded::EmbeddedStore;
pub use mongo::MongoStore;

/// Events of one collection, written together (one transaction, one `insert_many`).
#[derive(Debug)]
pub struct Batch {
    pub collection: Collection,
    pub events: Vec<Event>,
}

/// What a successful write did: every event of the batch is now durable.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub inserted: usize,
    /// Events whose id was already stored (a retry, or a file line read twice).
    pub duplicates: usize,
    /// Events committed to the outbox, to be delivered when the store answers again.
    pub deferred: usize,
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(format!("SQLite: {e}"))
    }
}

/// Cloning a store is cheap and shares its connections.
pub trait Store: Clone + Send + Sync + 'static {
    /// Makes a batch durable. Retried by the caller on error, so it must be idempotent.
    fn write(&self, batch: Arc<Batch>) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Deletes documents of `collection` older than `cutoff`; returns how many.
    fn prune(&self, collection: Collection, cutoff: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Where the data goes, for the start-up log line.
    fn describe(&self) -> String;
}

/// The store the configuration chose, so the pipeline and the API have one type to hold.
#[derive(Clone)]
pub enum AnyStore {
    Embedded(EmbeddedStore),
    Mongo(MongoStore),
}

impl Store for AnyStore {
    fn write(&self, batch: Arc<Batch>) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                AnyStore::Embedded(s) => s.write(batch).await,
                AnyStore::Mongo(s) => s.write(batch).await,
            }
        }
    }

    fn prune(&self, collection: Collection, cutoff: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                AnyStore::Embedded(s) => s.prune(collection, cutoff).await,
                AnyStore::Mongo(s) => s.prune(collection, cutoff).await,
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            AnyStore::Embedded(s) => s.describe(),
            AnyStore::Mongo(s) => s.describe(),
        }
    }
}
