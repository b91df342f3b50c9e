//! Stores persist batches of events (the write side, [`Store`]) and answer what the API and the
//! monitor ask ([`query::Query`]).
//!
//! Two backends behind both traits: the embedded SQLite store (the default, no server needed) and
//! MongoDB. A store never decides *whether* to keep an event, only how; the pipeline retries a
//! failed write, so `write` must be idempotent (an id seen before counts as stored). Each
//! collection's layout — time field, columns, indexes — is described once, in [`collections`].

pub mod alerts;
pub mod collections;
pub mod document;
pub mod embedded;
pub mod mongo;
pub mod outbox;
pub mod query;
pub mod retention;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::event::{Collection, Event, Timestamp};

pub use embedded::EmbeddedStore;
pub use mongo::MongoStore;
use query::{CostBucket, FindQuery, Found, Query, RequestBucket, ResponseTimes, SkewedCost, StoreHealth, TimeRange};

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

/// Whether trying again can help, so that the writer, the outbox and the API can each react right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Busy, locked, disk full, unreachable, timed out: retry later.
    Transient,
    /// Corrupt, not authorized, invalid: retrying will not help until someone acts.
    Permanent,
}

#[derive(Debug)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn transient(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The same error with what was being done in front.
    pub fn context(self, doing: impl fmt::Display) -> StoreError {
        StoreError {
            kind: self.kind,
            message: format!("{doing}: {}", self.message),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let transient = matches!(
            e.sqlite_error_code(),
            Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | OutOfMemory | FileLockingProtocolFailed)
        );
        let message = format!("SQLite: {e}");
        if transient {
            StoreError::transient(message)
        } else {
            StoreError::permanent(message)
        }
    }
}

/// The write side. Cloning a store is cheap and shares its connections.
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

/// Runs the same call on whichever store this is.
macro_rules! either {
    ($self:expr, $s:ident => $call:expr) => {{
        let this = $self.clone();
        async move {
            match this {
                AnyStore::Embedded($s) => $call.await,
                AnyStore::Mongo($s) => $call.await,
            }
        }
    }};
}

impl Store for AnyStore {
    fn write(&self, batch: Arc<Batch>) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        either!(self, s => s.write(batch))
    }

    fn prune(&self, collection: Collection, cutoff: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        either!(self, s => s.prune(collection, cutoff))
    }

    fn describe(&self) -> String {
        match self {
            AnyStore::Embedded(s) => s.describe(),
            AnyStore::Mongo(s) => s.describe(),
        }
    }
}

impl Query for AnyStore {
    fn find(&self, q: FindQuery) -> impl Future<Output = Result<Found, StoreError>> + Send {
        either!(self, s => s.find(q))
    }

    fn cost_buckets(&self, range: TimeRange) -> impl Future<Output = Result<Vec<CostBucket>, StoreError>> + Send {
        either!(self, s => s.cost_buckets(range))
    }

    fn skewed_costs(&self, range: TimeRange) -> impl Future<Output = Result<Vec<SkewedCost>, StoreError>> + Send {
        either!(self, s => s.skewed_costs(range))
    }

    fn request_buckets(&self, range: TimeRange) -> impl Future<Output = Result<Vec<RequestBucket>, StoreError>> + Send {
        either!(self, s => s.request_buckets(range))
    }

    fn response_times(
        &self,
        range: TimeRange,
        model: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<ResponseTimes, StoreError>> + Send {
        either!(self, s => s.response_times(range, model, limit))
    }

    fn health(&self) -> StoreHealth {
        match self {
            AnyStore::Embedded(s) => s.health(),
            AnyStore::Mongo(s) => s.health(),
        }
    }

    fn waiting(&self, collection: Collection) -> u64 {
        match self {
            AnyStore::Embedded(s) => s.waiting(collection),
            AnyStore::Mongo(s) => s.waiting(collection),
        }
    }
}
