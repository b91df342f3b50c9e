//! MongoDB as the store, with the outbox for outages.
//!
//! A batch goes to MongoDB as one unordered `insert_many` of raw BSON documents. A duplicate key
//! (11000) on our own `_id` means "already stored": a retry, or a file line read twice. Any other
//! per-document error sends that document to `api_rejects` with the server's message while the rest
//! of the batch lands.
//!
//! Other errors are classified ([`errors`]). A *transient* one — network, timeouts, not primary,
//! shutting down — is an outage: after a short retry the batch is committed to the outbox, MongoDB
//! is marked unreachable (logged once), and later batches go straight to the outbox until the
//! forwarder finds MongoDB answering again. A *permanent* one (not authorized, a validator that
//! refuses every document) marks only that collection as failing: its batches wait in the outbox
//! and are retried with a growing pause, while the other collections carry on. Both are states,
//! logged when they change and shown by `health()`, never a retry storm.

mod adopt;
mod config;
mod errors;
mod indexes;
mod query;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Document, RawDocumentBuf};
use mongodb::error::{ErrorKind as DriverKind, InsertManyError};
use mongodb::event::sdam::SdamEvent;
use mongodb::event::EventHandler;
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use mongodb::{Client, Database};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use config::{mask_uri_password, CollectionNames, MongoConfig, WriteConcernW};
pub use query::to_json;

use super::outbox::{Outbox, Taken};
use super::query::{
    CostBucket, FindQuery, Found, Query, RequestBucket, ResponseTimes, SkewedCost, StoreHealth, TimeRange,
};
use super::retention::RetentionConfig;
use super::{document, Batch, ErrorKind, Store, StoreError, WriteOutcome};
use crate::event::{Collection, Event, EventId, NaiveZone, Source, Timestamp};
use crate::redact::Redactor;
use crate::retry::{sleep_until, Backoff};
use crate::shutdown::Shutdown;
use crate::telemetry::Counters;

/// MongoDB refuses documents over 16 MiB (`maxBsonObjectSize`); checked before sending so the
/// reason is clear and the rest of the batch is unaffected.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
const DUPLICATE_KEY: i32 = 11000;
/// Attempts at MongoDB for a live batch before it goes to the outbox.
const LIVE_ATTEMPTS: u32 = 2;
/// The longest pause before a failing collection is tried again.
const MAX_FAILING_PAUSE: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    names: CollectionNames,
    outbox: Outbox,
    /// Whether MongoDB answered the last request. False sends live batches to the outbox.
    reachable: AtomicBool,
    /// Collections MongoDB refuses for a reason a retry will not fix, and when to try again.
    failing: Mutex<[Option<Failing>; Collection::COUNT]>,
    host: String,
    describe: String,
    counters: Arc<Counters>,
    redactor: Arc<Redactor>,
    /// Set at shutdown; see `insert_before_deadline`.
    finish_by: tokio::sync::watch::Sender<Option<Instant>>,
    /// Woken when the driver sees the server come back (it may have lost its indexes).
    reconnected: Arc<Notify>,
    /// Collections (a bit each) whose kept app history was already warned about.
    app_history_warned: std::sync::atomic::AtomicU32,
    write_timeout: Duration,
}

#[derive(Debug, Clone)]
struct Failing {
    message: String,
    pause: Duration,
    retry_at: Instant,
}

/// What one `insert_many` did.
#[derive(Default)]
struct Inserted {
    inserted: usize,
    duplicates: usize,
    /// Documents the server refused, as rejects.
    refused: Vec<Event>,
}

impl MongoStore {
    /// Connects lazily: MongoDB may be down at start; events then wait in the outbox. Indexes are
    /// created as soon as MongoDB answers, and the forwarder drains the outbox from then on.
    pub async fn open(
        cfg: &MongoConfig,
        retention: &RetentionConfig,
        naive: NaiveZone,
        outbox: Outbox,
        counters: Arc<Counters>,
        redactor: Arc<Redactor>,
        shutdown: Shutdown,
    ) -> Result<MongoStore, StoreError> {
        let masked = mask_uri_password(&cfg.uri);
        let mut options = ClientOptions::parse(&cfg.uri)
            .await
            .map_err(|e| StoreError::permanent(format!("mongodb.uri {masked} cannot be used: {e}")))?;
        options.app_name.get_or_insert_with(|| "lngpt-collector".into());
        options.connect_timeout = Some(cfg.connect_timeout.0);
        options.server_selection_timeout = Some(cfg.server_selection_timeout.0);
        let w = match cfg.w {
            WriteConcernW::Majority => Acknowledgment::Majority,
            WriteConcernW::Nodes(n) => Acknowledgment::Nodes(n),
        };
        options.write_concern = Some(WriteConcern::builder().w(w).journal(cfg.journal).build());
        let reconnected = Arc::new(Notify::new());
        let wake = reconnected.clone();
        options.sdam_event_handler = Some(EventHandler::callback(move |event: SdamEvent| {
            if let SdamEvent::ServerDescriptionChanged(change) = event {
                let was_down = change.previous_description.server_type() == mongodb::ServerType::Unknown;
                let is_up = change.new_description.server_type() != mongodb::ServerType::Unknown;
                if was_down && is_up {
                    wake.notify_one();
                }
            }
        }));
        let client = Client::with_options(options)
            .map_err(|e| StoreError::permanent(format!("MongoDB client for {masked}: {e}")))?;
        let store = MongoStore {
            inner: Arc::new(Inner {
                db: client.database(&cfg.database),
                names: cfg.collections.clone(),
                outbox,
                reachable: AtomicBool::new(true),
                failing: Mutex::new(Default::default()),
                host: document::hostname(),
                describe: format!("MongoDB {masked}, database {}", cfg.database),
                counters,
                redactor,
                finish_by: tokio::sync::watch::Sender::new(None),
                reconnected,
                app_history_warned: Default::default(),
                write_timeout: cfg.write_timeout.0,
            }),
        };
        tokio::spawn(
            store
                .clone()
                .keep_indexes(retention.clone(), shutdown.child("MongoDB indexes")),
        );
        tokio::spawn(
            store
                .clone()
                .adopt_app_documents(naive, shutdown.child("adopting the app's documents")),
        );
        tokio::spawn(store.clone().forward(shutdown));
        Ok(store)
    }

    /// How long a write may go unanswered (`mongodb.write_timeout`).
    pub(crate) fn write_timeout(&self) -> Duration {
        self.inner.write_timeout
    }

    fn name(&self, c: Collection) -> &str {
        self.inner.names.name(c)
    }

    /// A collection as plain documents (for the alert and query code).
    pub(crate) fn documents(&self, c: Collection) -> mongodb::Collection<Document> {
        self.inner.db.collection(self.name(c))
    }

    pub(crate) fn host(&self) -> &str {
        &self.inner.host
    }

    fn raw_collection(&self, c: Collection) -> mongodb::Collection<RawDocumentBuf> {
        self.inner.db.collection(self.name(c))
    }

    /// Encodes a batch; documents that cannot be stored in MongoDB become rejects here.
    fn encode(&self, batch: &Batch) -> (Vec<RawDocumentBuf>, Vec<Event>) {
        let mut docs = Vec::with_capacity(batch.events.len());
        let mut rejects = Vec::new();
        for e in &batch.events {
            match document::to_bson(e, &self.inner.host) {
                Ok(d) if d.as_bytes().len() <= MAX_DOCUMENT_BYTES => docs.push(d),
                Ok(d) => rejects.push(self.reject_of(
                    e,
                    format!(
                        "document is {} bytes after normalization, over MongoDB's limit of {MAX_DOCUMENT_BYTES} bytes (16 MiB)",
                        d.as_bytes().len()
                    ),
                )),
                Err(err) => rejects.push(self.reject_of(e, format!("cannot be encoded as BSON: {err}"))),
            }
        }
        (docs, rejects)
    }

    /// A reject for an event the store cannot take; `raw` is its JSON document. The reject takes
    /// the event's id, so a retried batch makes the same reject, which is then stored once.
    fn reject_of(&self, e: &Event, reason: String) -> Event {
        let mut raw = Vec::new();
        let _ = document::write_json(e, &self.inner.host, &mut raw);
        let len = raw.len();
        Event::reject(
            e.id,
            Source::from("store"),
            Timestamp::now(),
            reason,
            &raw,
            len,
            &self.inner.redactor,
        )
    }

    async fn insert(&self, c: Collection, docs: &[RawDocumentBuf]) -> Result<Inserted, mongodb::error::Error> {
        if docs.is_empty() {
            return Ok(Inserted::default());
        }
        let collection = self.raw_collection(c);
        let insert = collection.insert_many(docs).ordered(false);
        let answered = match tokio::time::timeout(self.inner.write_timeout, insert).await {
            Ok(answered) => answered,
            Err(_) => {
                return Err(mongodb::error::Error::custom(format!(
                    "no answer within mongodb.write_timeout ({})",
                    crate::units::HumanDuration(self.inner.write_timeout)
                )))
            }
        };
        match answered {
            Ok(r) => Ok(Inserted {
                inserted: r.inserted_ids.len(),
                ..Inserted::default()
            }),
            Err(e) => match *e.kind {
                DriverKind::InsertMany(InsertManyError {
                    write_errors: Some(ref errors),
                    write_concern_error: None,
                    ..
                }) => {
                    let mut out = Inserted::default();
                    for w in errors {
                        if w.code == DUPLICATE_KEY {
                            out.duplicates += 1;
                        } else if let Some(d) = docs.get(w.index) {
                            out.refused.push(self.refused(c, d, w.code, &w.message));
                        }
                    }
                    out.inserted = docs.len() - out.duplicates - out.refused.len();
                    Ok(out)
                }
                _ => Err(e),
            },
        }
    }

    fn refused(&self, c: Collection, d: &RawDocumentBuf, code: i32, message: &str) -> Event {
        let id = d
            .get_object_id("_id")
            .map(|id| EventId(id.bytes()))
            .unwrap_or_else(|_| EventId::new());
        let raw = bson::Bson::Document(Document::try_from(d.as_ref()).unwrap_or_default())
            .into_relaxed_extjson()
            .to_string();
        Event::reject(
            id,
            Source::from("store"),
            Timestamp::now(),
            format!(
                "MongoDB refused the document for {} (code {code}): {message}",
                self.name(c)
            ),
            raw.as_bytes(),
            d.as_bytes().len(),
            &self.inner.redactor,
        )
    }

    /// Stores rejects made by the store itself (to MongoDB, or to the outbox).
    async fn store_rejects(&self, rejects: Vec<Event>) -> Result<(), StoreError> {
        if rejects.is_empty() {
            return Ok(());
        }
        for r in &rejects {
            if let crate::event::Body::Reject(body) = &r.body {
                tracing::warn!("rejected a document: {}", body.reason);
            }
        }
        self.inner.counters.accepted(0, rejects.len() as u64);
        let batch = Batch {
            collection: Collection::Rejects,
            events: rejects,
        };
        let outcome = Box::pin(self.write_batch(&batch)).await?;
        self.inner
            .counters
            .stored(Collection::Rejects, outcome.inserted as u64, outcome.duplicates as u64);
        self.inner.counters.deferred(outcome.deferred as u64);
        Ok(())
    }

    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        let c = batch.collection;
        let (docs, rejects) = self.encode(batch);
        let mut outcome = WriteOutcome::default();
        if self.inner.reachable.load(Relaxed) && !self.is_failing(c) {
            let mut attempt = 0;
            loop {
                match self.insert_before_deadline(c, &docs).await {
                    Ok(done) => {
                        outcome.inserted = done.inserted;
                        outcome.duplicates = done.duplicates;
                        self.store_rejects(done.refused).await?;
                        break;
                    }
                    Err(Attempt::Failed(e)) if errors::classify(&e) == ErrorKind::Permanent => {
                        self.mark_failing(c, &e);
                        outcome.deferred = docs.len();
                        self.inner.outbox.push(c, docs).await?;
                        break;
                    }
                    Err(e) if attempt + 1 < LIVE_ATTEMPTS && !matches!(e, Attempt::Deadline) => {
                        tracing::debug!("insert into MongoDB failed, retrying: {e}");
                        tokio::time::sleep(Backoff::STORE.delay(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        self.mark_down(&e);
                        outcome.deferred = docs.len();
                        self.inner.outbox.push(c, docs).await?;
                        break;
                    }
                }
            }
        } else {
            outcome.deferred = docs.len();
            self.inner.outbox.push(c, docs).await?;
        }
        self.store_rejects(rejects).await?;
        Ok(outcome)
    }

    /// An insert that gives way when the shutdown deadline comes: the batch then goes to the outbox,
    /// so every accepted event is in MongoDB or the outbox when the daemon exits. If the insert did
    /// land after all, the replay from the outbox meets duplicate keys: still stored once.
    /// The deadline can arrive while the insert runs, so it is watched, not read once.
    async fn insert_before_deadline(&self, c: Collection, docs: &[RawDocumentBuf]) -> Result<Inserted, Attempt> {
        let mut deadline = self.inner.finish_by.subscribe();
        let insert = self.insert(c, docs);
        tokio::pin!(insert);
        loop {
            let current = *deadline.borrow_and_update();
            tokio::select! {
                r = &mut insert => return r.map_err(Attempt::Failed),
                _ = sleep_until(current) => return Err(Attempt::Deadline),
                changed = deadline.changed() => {
                    if changed.is_err() {
                        return insert.await.map_err(Attempt::Failed);
                    }
                }
            }
        }
    }

    /// From now on, inserts still unanswered at `deadline`, running or not, give way to the outbox.
    pub fn finish_by(&self, deadline: Instant) {
        self.inner.finish_by.send_replace(Some(deadline));
    }

    fn mark_down(&self, e: &dyn std::fmt::Display) {
        if self.inner.reachable.swap(false, Relaxed) {
            tracing::warn!(
                "MongoDB is unreachable ({e}); batches wait in the outbox until it answers again ({} events there now)",
                self.inner.outbox.events()
            );
        }
    }

    fn mark_up(&self) {
        if !self.inner.reachable.swap(true, Relaxed) {
            tracing::info!(
                "MongoDB answers again; draining {} events from the outbox",
                self.inner.outbox.events()
            );
            // A server that restarted may have lost its indexes.
            self.inner.reconnected.notify_one();
        }
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, [Option<Failing>; Collection::COUNT]> {
        self.inner
            .failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_failing(&self, c: Collection) -> bool {
        self.failing()[c.index()].is_some()
    }

    /// A permanent refusal: the collection's batches wait in the outbox, tried again with a
    /// doubling pause. Logged when it starts, not on every try.
    fn mark_failing(&self, c: Collection, e: &mongodb::error::Error) {
        let message = format!(
            "MongoDB refuses writes to {}{}: {}",
            self.name(c),
            errors::code(e)
                .map(|code| format!(" (code {code})"))
                .unwrap_or_default(),
            errors::describe(e)
        );
        let mut failing = self.failing();
        let slot = &mut failing[c.index()];
        let pause = slot
            .as_ref()
            .map_or(Duration::from_secs(1), |f| (f.pause * 2).min(MAX_FAILING_PAUSE));
        if slot.is_none() {
            tracing::error!(
                "{message}; its events wait in the outbox and are retried with a growing pause (other collections carry on). \
                 Fix the cause (e.g. the user's roles), no restart needed"
            );
        }
        *slot = Some(Failing {
            message,
            pause,
            retry_at: Instant::now() + pause,
        });
    }

    fn clear_failing(&self, c: Collection) {
        if self.failing()[c.index()].take().is_some() {
            tracing::info!("MongoDB accepts writes to {} again", self.name(c));
        }
    }

    async fn ping(&self) -> Result<(), mongodb::error::Error> {
        self.inner.db.run_command(doc! { "ping": 1 }).await.map(|_| ())
    }

    /// The next collection whose outbox batches may be sent now, taking turns; or how long until
    /// a failing one may be tried again.
    fn next_sendable(&self, turn: &mut usize) -> Result<Collection, Option<Instant>> {
        let failing = self.failing().clone();
        let now = Instant::now();
        let mut earliest = None;
        for i in 0..Collection::COUNT {
            let c = Collection::ALL[(*turn + i) % Collection::COUNT];
            if self.inner.outbox.events_of(c) == 0 {
                continue;
            }
            match &failing[c.index()] {
                Some(f) if f.retry_at > now => {
                    earliest = Some(earliest.map_or(f.retry_at, |e: Instant| e.min(f.retry_at)));
                }
                _ => {
                    *turn = (*turn + i + 1) % Collection::COUNT;
                    return Ok(c);
                }
            }
        }
        Err(earliest)
    }

    /// Drains the outbox oldest-first per collection whenever MongoDB answers, beside live writes.
    /// A collection that MongoDB refuses waits its turn; the others carry on.
    ///
    /// Pipelined: while a batch is being inserted, the batch delivered before it is removed and the
    /// next one is read, so MongoDB waits on neither (one batch at a time measured about half the
    /// live rate). Inserts stay one at a time, oldest first per collection. A batch is removed only
    /// after MongoDB has it; one sent again after a crash or shutdown meets its duplicate keys and
    /// is stored once.
    async fn forward(self, mut shutdown: Shutdown) {
        let outbox = self.inner.outbox.clone();
        let mut failures = 0;
        let mut turn = 0;
        // Sent, not yet removed from the outbox.
        let mut delivered: Option<i64> = None;
        // Read ahead while the batch before it was sent.
        let mut ahead: Option<Taken> = None;
        loop {
            if ahead.is_none() || !self.inner.reachable.load(Relaxed) {
                // Nothing read ahead (or MongoDB gone): settle the bookkeeping first, so that the
                // outbox's counts are exact for what follows.
                ahead = None;
                if let Some(seq) = delivered.take() {
                    self.remove_delivered(seq).await;
                }
            }
            if outbox.events() == 0 {
                tokio::select! {
                    _ = outbox.pushed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.recv() => return,
                }
                continue;
            }
            if !self.inner.reachable.load(Relaxed) {
                let probe = tokio::select! {
                    p = self.ping() => p,
                    _ = shutdown.recv() => return,
                };
                if probe.is_err() {
                    failures += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(Backoff::STORE.delay(failures)) => {}
                        _ = shutdown.recv() => return,
                    }
                    continue;
                }
                failures = 0;
                self.mark_up();
            }
            let taken = match ahead.take() {
                Some(t) => t,
                None => {
                    let c = match self.next_sendable(&mut turn) {
                        Ok(c) => c,
                        Err(wait_until) => {
                            // Only failing collections have batches waiting: sleep until the first may retry.
                            let until = wait_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                            tokio::select! {
                                _ = tokio::time::sleep_until(until) => {}
                                _ = outbox.pushed() => {}
                                _ = shutdown.recv() => return,
                            }
                            continue;
                        }
                    };
                    match outbox.oldest(c).await {
                        Ok(Some(t)) => t,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::error!("cannot read the outbox: {e}");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = shutdown.recv() => return,
                            }
                            continue;
                        }
                    }
                }
            };
            let pending = match taken {
                Taken::Batch(p) => p,
                Taken::Corrupt {
                    seq,
                    events,
                    reason,
                    head,
                } => {
                    self.set_aside_corrupt(seq, events, reason, head).await;
                    continue;
                }
            };
            let c = pending.collection;
            // The collection to send next, chosen now (it takes turns as before).
            let next = self.next_sendable(&mut turn).ok();
            let read_ahead = async {
                if let Some(seq) = delivered.take() {
                    self.remove_delivered(seq).await;
                }
                let next = next?;
                // The batch being sent is still in the outbox: read past it.
                let after = if next == c { pending.seq } else { 0 };
                match outbox.oldest_after(next, after).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!("cannot read the outbox ahead (read again later): {e}");
                        None
                    }
                }
            };
            let (sent, next) = tokio::select! {
                r = futures_util::future::join(self.insert(c, &pending.docs), read_ahead) => r,
                _ = shutdown.recv() => return,
            };
            match sent {
                Ok(done) => {
                    self.clear_failing(c);
                    self.inner
                        .counters
                        .stored(c, done.inserted as u64, done.duplicates as u64);
                    if let Err(e) = self.store_rejects(done.refused).await {
                        tracing::error!("cannot store rejects: {e}");
                    }
                    delivered = Some(pending.seq);
                    ahead = next;
                }
                Err(e) if errors::classify(&e) == ErrorKind::Permanent => self.mark_failing(c, &e),
                Err(e) => self.mark_down(&e),
            }
        }
    }

    /// Removes a batch MongoDB has; if that fails, it is sent again later and stored once.
    async fn remove_delivered(&self, seq: i64) {
        if let Err(e) = self.inner.outbox.remove(seq).await {
            tracing::error!("cannot remove a delivered batch from the outbox (it will be sent again): {e}");
        }
    }

    /// A row of the outbox that cannot be read back: it is kept as a reject with its bytes (so it
    /// can be looked at) and removed, so that it does not block the rest.
    async fn set_aside_corrupt(&self, seq: i64, events: u64, reason: String, head: Vec<u8>) {
        let reason = format!(
            "outbox row {seq} ({events} events) could not be read back ({reason}); its first bytes are kept here"
        );
        tracing::error!("{reason}");
        let reject = Event::reject(
            EventId::new(),
            Source::from("outbox"),
            Timestamp::now(),
            reason,
            &head,
            head.len(),
            &self.inner.redactor,
        );
        if let Err(e) = self.store_rejects(vec![reject]).await {
            tracing::error!("cannot store the reject for outbox row {seq}: {e}");
            return;
        }
        if let Err(e) = self.inner.outbox.discard(seq).await {
            tracing::error!("cannot remove outbox row {seq}: {e}");
        }
    }
}

/// Why one insert did not happen.
enum Attempt {
    Failed(mongodb::error::Error),
    Deadline,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Failed(e) => write!(f, "{e}"),
            Attempt::Deadline => f.write_str("no answer before the shutdown deadline"),
        }
    }
}

impl Store for MongoStore {
    fn write(&self, batch: Arc<Batch>) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> + Send {
        let this = self.clone();
        async move { this.write_batch(&batch).await }
    }

    /// MongoDB expires documents itself, through the TTL indexes.
    async fn prune(&self, _: Collection, _: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn describe(&self) -> String {
        self.inner.describe.clone()
    }
}

impl Query for MongoStore {
    fn find(&self, q: FindQuery) -> impl std::future::Future<Output = Result<Found, StoreError>> + Send {
        let this = self.clone();
        async move { this.find_docs(q).await }
    }

    fn cost_buckets(
        &self,
        range: TimeRange,
    ) -> impl std::future::Future<Output = Result<Vec<CostBucket>, StoreError>> + Send {
        let this = self.clone();
        async move { this.cost_buckets_of(range).await }
    }

    fn skewed_costs(
        &self,
        range: TimeRange,
    ) -> impl std::future::Future<Output = Result<Vec<SkewedCost>, StoreError>> + Send {
        let this = self.clone();
        async move { this.skewed_costs_of(range).await }
    }

    fn request_buckets(
        &self,
        range: TimeRange,
    ) -> impl std::future::Future<Output = Result<Vec<RequestBucket>, StoreError>> + Send {
        let this = self.clone();
        async move { this.request_buckets_of(range).await }
    }

    fn response_times(
        &self,
        range: TimeRange,
        model: Option<String>,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<ResponseTimes, StoreError>> + Send {
        let this = self.clone();
        async move { this.response_times_of(range, model, limit).await }
    }

    fn health(&self) -> StoreHealth {
        let failing_collections = self
            .failing()
            .iter()
            .filter_map(|f| f.as_ref().map(|f| f.message.clone()))
            .collect();
        StoreHealth {
            kind: "mongodb",
            reachable: self.inner.reachable.load(Relaxed),
            outbox_events: self.inner.outbox.events(),
            outbox_bytes: self.inner.outbox.bytes(),
            outbox_dropped: self.inner.outbox.dropped(),
            failing_collections,
        }
    }

    fn waiting(&self, collection: Collection) -> u64 {
        self.inner.outbox.events_of(collection)
    }
}

/// Whether MongoDB refused a write because the `_id` (or another unique key) exists.
pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    errors::code(e) == Some(DUPLICATE_KEY)
}
