//! MongoDB as the store, with the outbox for outages.
//!
//! A batch goes to MongoDB as one unordered `insert_many` of raw BSON documents. A duplicate key
//! (11000) on our own `_id` means "already stored": a retry, or a file line read twice. Any other
//! per-document error sends that document to `api_rejects` with the server's message while the rest
//! of the batch lands. Anything else — network, timeouts, not primary, shutting down, a write
//! concern error — is an outage: after a short retry the batch is committed to the outbox, MongoDB
//! is marked unreachable (logged once), and later batches go straight to the outbox until the
//! forwarder finds MongoDB answering again and drains the outbox, oldest first.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document, RawDocumentBuf};
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::outbox::Outbox;
use super::retention::RetentionConfig;
use super::{document, Batch, Store, StoreError, WriteOutcome};
use crate::config::{ByteSize, HumanDuration, Problems};
use crate::event::{Collection, Event, EventId, Source, Timestamp};
use crate::redact::Redactor;
use crate::shutdown::Shutdown;
use crate::telemetry::Counters;

/// MongoDB refuses documents over 16 MiB (`maxBsonObjectSize`); checked before sending so the
/// reason is clear and the rest of the batch is unaffected.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
const DUPLICATE_KEY: i32 = 11000;
/// Attempts at MongoDB for a live batch before it goes to the outbox.
const LIVE_ATTEMPTS: u32 = 2;

/// `[mongodb]`: MongoDB as the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    pub enabled: bool,
    /// A MongoDB connection string; credentials and TLS options go in it (`MONGODB_URI` overrides).
    pub uri: String,
    /// `MONGODB_DB_NAME` overrides.
    pub database: String,
    pub collections: CollectionNames,
    /// Write concern: `"majority"` or a number of members (at least 1, so writes are acknowledged).
    pub w: WriteConcernW,
    /// Ask for the write to be in the journal before it is acknowledged.
    pub journal: bool,
    pub connect_timeout: HumanDuration,
    pub server_selection_timeout: HumanDuration,
    /// Batches that could not reach MongoDB wait in the outbox; past this size the oldest are dropped.
    pub max_outbox_bytes: ByteSize,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            enabled: true,
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "lngpt".into(),
            collections: CollectionNames::default(),
            w: WriteConcernW::Nodes(1),
            journal: true,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            server_selection_timeout: HumanDuration(Duration::from_secs(5)),
            max_outbox_bytes: ByteSize(1 << 30),
        }
    }
}

impl MongoConfig {
    pub fn validate(&self, p: &mut Problems) {
        if !self.uri.starts_with("mongodb://") && !self.uri.starts_with("mongodb+srv://") {
            p.add("mongodb.uri", "does not start with mongodb:// or mongodb+srv://");
        }
        if self.database.is_empty() {
            p.add(
                "mongodb.database",
                "is empty; expected a database name such as \"lngpt\"",
            );
        }
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(600));
        p.duration_in("mongodb.connect_timeout", self.connect_timeout, min, max);
        p.duration_in(
            "mongodb.server_selection_timeout",
            self.server_selection_timeout,
            min,
            max,
        );
        p.size_in(
            "mongodb.max_outbox_bytes",
            self.max_outbox_bytes,
            1 << 20,
            crate::config::MAX_BYTES,
        );
    }
}

/// MongoDB's `w`. Zero is not offered: without an acknowledgement nothing could be known to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteConcernW {
    Majority,
    Nodes(u32),
}

impl Serialize for WriteConcernW {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WriteConcernW::Majority => s.serialize_str("majority"),
            WriteConcernW::Nodes(n) => s.collect_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for WriteConcernW {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WriteConcernW;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"majority\" or a number of members ≥ 1 such as \"1\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WriteConcernW, E> {
                if s == "majority" {
                    return Ok(WriteConcernW::Majority);
                }
                match s.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(WriteConcernW::Nodes(n)),
                    _ => Err(E::custom(format!(
                        "is {s:?}; expected \"majority\" or a number of members ≥ 1 such as \"1\""
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<WriteConcernW, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionNames {
    pub api_logs: String,
    pub api_cost: String,
    pub api_performance: String,
    pub api_rejects: String,
}

impl Default for CollectionNames {
    fn default() -> Self {
        CollectionNames {
            api_logs: "api_logs".into(),
            api_cost: "api_cost".into(),
            api_performance: "api_performance".into(),
            api_rejects: "api_rejects".into(),
        }
    }
}

/// `mongodb://user:secret@host/` → `mongodb://user:***@host/`.
pub fn mask_uri_password(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_string();
    };
    let authority_end = uri[scheme_end..].find(['/', '?']).map_or(uri.len(), |i| scheme_end + i);
    let Some(at) = uri[scheme_end..authority_end].rfind('@').map(|i| scheme_end + i) else {
        return uri.to_string();
    };
    match uri[scheme_end..at].find(':') {
        Some(colon) => format!("{}:***{}", &uri[..scheme_end + colon], &uri[at..]),
        None => uri.to_string(),
    }
}

#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    names: [String; 4],
    outbox: Outbox,
    /// Whether MongoDB answered the last request. False sends live batches to the outbox.
    up: AtomicBool,
    host: String,
    describe: String,
    counters: Arc<Counters>,
    redactor: Arc<Redactor>,
    /// Set at shutdown; see `insert_before_deadline`.
    finish_by: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
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
        outbox: Outbox,
        counters: Arc<Counters>,
        redactor: Arc<Redactor>,
        shutdown: Shutdown,
    ) -> Result<MongoStore, StoreError> {
        let masked = mask_uri_password(&cfg.uri);
        let mut options = ClientOptions::parse(&cfg.uri)
            .await
            .map_err(|e| StoreError(format!("mongodb.uri {masked} cannot be used: {e}")))?;
        options.app_name.get_or_insert_with(|| "lngpt-collector".into());
        options.connect_timeout = Some(cfg.connect_timeout.0);
        options.server_selection_timeout = Some(cfg.server_selection_timeout.0);
        let w = match cfg.w {
            WriteConcernW::Majority => Acknowledgment::Majority,
            WriteConcernW::Nodes(n) => Acknowledgment::Nodes(n),
        };
        options.write_concern = Some(WriteConcern::builder().w(w).journal(cfg.journal).build());
        let client =
            Client::with_options(options).map_err(|e| StoreError(format!("MongoDB client for {masked}: {e}")))?;
        let db = client.database(&cfg.database);
        let n = &cfg.collections;
        let store = MongoStore {
            inner: Arc::new(Inner {
                db,
                names: [
                    n.api_logs.clone(),
                    n.api_cost.clone(),
                    n.api_performance.clone(),
                    n.api_rejects.clone(),
                ],
                outbox,
                up: AtomicBool::new(true),
                host: document::hostname(),
                describe: format!("MongoDB {masked}, database {}", cfg.database),
                counters,
                redactor,
                finish_by: tokio::sync::watch::Sender::new(None),
            }),
        };
        tokio::spawn(store.clone().ensure_indexes(retention.clone(), shutdown.child()));
        tokio::spawn(store.clone().forward(shutdown));
        Ok(store)
    }

    fn collection(&self, c: Collection) -> mongodb::Collection<RawDocumentBuf> {
        self.inner.db.collection(&self.inner.names[c.index()])
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

    /// A reject for an event the store cannot take; `raw` is its JSON document.
    fn reject_of(&self, e: &Event, reason: String) -> Event {
        let mut raw = Vec::new();
        let _ = document::write_json(e, &self.inner.host, &mut raw);
        let len = raw.len();
        Event::reject(
            EventId::new(),
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
        match self.collection(c).insert_many(docs).ordered(false).await {
            Ok(r) => Ok(Inserted {
                inserted: r.inserted_ids.len(),
                ..Inserted::default()
            }),
            Err(e) => match *e.kind {
                ErrorKind::InsertMany(InsertManyError {
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
        let raw = bson::Bson::Document(Document::try_from(d.as_ref()).unwrap_or_default())
            .into_relaxed_extjson()
            .to_string();
        Event::reject(
            EventId::new(),
            Source::from("store"),
            Timestamp::now(),
            format!(
                "MongoDB refused the document for {} (code {code}): {message}",
                self.inner.names[c.index()]
            ),
            raw.as_bytes(),
            d.as_bytes().len(),
            &self.inner.redactor,
        )
    }

    /// Stores rejects made by the store itself; they never fail a batch.
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
        Box::pin(self.write_batch(&batch)).await.map(|_| ())
    }

    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        let (docs, rejects) = self.encode(batch);
        let mut outcome = WriteOutcome::default();
        if self.inner.up.load(Relaxed) {
            let mut attempt = 0;
            loop {
                match self.insert_before_deadline(batch.collection, &docs).await {
                    Ok(done) => {
                        outcome.inserted = done.inserted;
                        outcome.duplicates = done.duplicates;
                        self.store_rejects(done.refused).await?;
                        break;
                    }
                    Err(e) if attempt + 1 < LIVE_ATTEMPTS => {
                        tracing::debug!("insert into MongoDB failed, retrying: {e}");
                        tokio::time::sleep(crate::pipeline::backoff(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        self.mark_down(&e);
                        outcome.deferred = docs.len();
                        self.inner.outbox.push(batch.collection, docs).await?;
                        break;
                    }
                }
            }
        } else {
            outcome.deferred = docs.len();
            self.inner.outbox.push(batch.collection, docs).await?;
        }
        self.store_rejects(rejects).await?;
        Ok(outcome)
    }

    /// An insert that gives way when the shutdown deadline comes: the batch then goes to the outbox,
    /// so every accepted event is in MongoDB or the outbox when the daemon exits. If the insert did
    /// land after all, the replay from the outbox meets duplicate keys: still stored once.
    /// The deadline can arrive while the insert runs, so it is watched, not read once.
    async fn insert_before_deadline(&self, c: Collection, docs: &[RawDocumentBuf]) -> Result<Inserted, String> {
        let mut deadline = self.inner.finish_by.subscribe();
        let insert = self.insert(c, docs);
        tokio::pin!(insert);
        loop {
            let current = *deadline.borrow_and_update();
            tokio::select! {
                r = &mut insert => return r.map_err(|e| e.to_string()),
                _ = crate::pipeline::sleep_until(current) => return Err("no answer before the shutdown deadline".into()),
                changed = deadline.changed() => {
                    if changed.is_err() {
                        return insert.await.map_err(|e| e.to_string());
                    }
                }
            }
        }
    }

    /// From now on, inserts still unanswered at `deadline`, running or not, give way to the outbox.
    pub fn finish_by(&self, deadline: tokio::time::Instant) {
        self.inner.finish_by.send_replace(Some(deadline));
    }

    fn mark_down(&self, e: &dyn std::fmt::Display) {
        if self.inner.up.swap(false, Relaxed) {
            tracing::warn!(
                "MongoDB is unreachable ({e}); batches wait in the outbox until it answers again ({} events there now)",
                self.inner.outbox.events()
            );
        }
    }

    fn mark_up(&self) {
        if !self.inner.up.swap(true, Relaxed) {
            tracing::info!(
                "MongoDB answers again; draining {} events from the outbox",
                self.inner.outbox.events()
            );
        }
    }

    async fn ping(&self) -> Result<(), mongodb::error::Error> {
        self.inner.db.run_command(doc! { "ping": 1 }).await.map(|_| ())
    }

    /// Drains the outbox oldest-first whenever MongoDB answers. Runs beside live writes, one batch at
    /// a time, so both make progress.
    async fn forward(self, mut shutdown: Shutdown) {
        let outbox = self.inner.outbox.clone();
        let mut failures = 0;
        loop {
            if outbox.events() == 0 {
                tokio::select! {
                    _ = outbox.pushed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.recv() => return,
                }
                continue;
            }
            if !self.inner.up.load(Relaxed) {
                let probe = tokio::select! {
                    p = self.ping() => p,
                    _ = shutdown.recv() => return,
                };
                if probe.is_err() {
                    failures += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(crate::pipeline::backoff(failures.min(5))) => {}
                        _ = shutdown.recv() => return,
                    }
                    continue;
                }
                failures = 0;
                self.mark_up();
            }
            let pending = match outbox.oldest().await {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("cannot read the outbox: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let sent = tokio::select! {
                r = self.insert(pending.collection, &pending.docs) => r,
                _ = shutdown.recv() => return,
            };
            match sent {
                Ok(done) => {
                    let refused = done.refused;
                    self.inner
                        .counters
                        .stored(pending.collection, done.inserted as u64, done.duplicates as u64);
                    if let Err(e) = self.store_rejects(refused).await {
                        tracing::error!("cannot store rejects: {e}");
                    }
                    if let Err(e) = outbox.remove(pending.seq).await {
                        tracing::error!("cannot remove a delivered batch from the outbox (it will be sent again): {e}");
                    }
                }
                Err(e) => self.mark_down(&e),
            }
        }
    }

    /// Creates the indexes of DESIGN.md, idempotently; retention becomes the TTL of the time index,
    /// and a changed retention updates it in place (`collMod`). Retried until MongoDB answers.
    async fn ensure_indexes(self, retention: RetentionConfig, mut shutdown: Shutdown) {
        let mut attempt = 0;
        loop {
            match self.try_ensure_indexes(&retention).await {
                Ok(()) => return,
                Err(e) => {
                    if attempt == 0 {
                        tracing::warn!("cannot create MongoDB indexes yet, will retry: {e}");
                    }
                    attempt += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(crate::pipeline::backoff(attempt.min(6))) => {}
                _ = shutdown.recv() => return,
            }
        }
    }

    async fn try_ensure_indexes(&self, retention: &RetentionConfig) -> Result<(), mongodb::error::Error> {
        for c in Collection::ALL {
            let keep = retention.keep(c).0;
            for spec in index_specs(c, keep) {
                self.ensure_index(c, spec).await?;
            }
        }
        tracing::info!("MongoDB indexes are in place");
        Ok(())
    }

    async fn ensure_index(&self, c: Collection, spec: IndexSpec) -> Result<(), mongodb::error::Error> {
        use futures_util::TryStreamExt;
        let coll = self.collection(c);
        let mut existing = None;
        match coll.list_indexes().await {
            Ok(mut cursor) => {
                while let Some(model) = cursor.try_next().await? {
                    if model.options.as_ref().and_then(|o| o.name.as_deref()) == Some(spec.name.as_str()) {
                        existing = Some(model);
                    }
                }
            }
            // A collection that does not exist yet has no indexes (NamespaceNotFound).
            Err(e) if matches!(*e.kind, ErrorKind::Command(ref ce) if ce.code == 26) => {}
            Err(e) => return Err(e),
        }
        let current_ttl = existing
            .as_ref()
            .and_then(|m| m.options.as_ref())
            .and_then(|o| o.expire_after);
        match existing {
            Some(_) if current_ttl == spec.ttl || (spec.ttl.is_none() && current_ttl.is_none()) => Ok(()),
            Some(_) => self.change_ttl(c, &spec, current_ttl).await,
            None => {
                let options = IndexOptions::builder()
                    .name(spec.name.clone())
                    .expire_after(spec.ttl)
                    .build();
                let model = IndexModel::builder().keys(spec.keys.clone()).options(options).build();
                match coll.create_index(model).await {
                    Ok(_) => Ok(()),
                    // IndexOptionsConflict / IndexKeySpecsConflict: same keys, other options.
                    Err(e) if matches!(*e.kind, ErrorKind::Command(ref ce) if ce.code == 85 || ce.code == 86) => {
                        self.change_ttl(c, &spec, None).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// `collMod` changes a TTL in place. Keeping forever on an index that has a TTL sets the
    /// largest TTL MongoDB takes (about 68 years), since a TTL cannot be removed in place.
    async fn change_ttl(
        &self,
        c: Collection,
        spec: &IndexSpec,
        from: Option<Duration>,
    ) -> Result<(), mongodb::error::Error> {
        let secs = spec.ttl.map_or(i32::MAX as i64, |d| d.as_secs() as i64);
        self.inner
            .db
            .run_command(doc! { "collMod": &self.inner.names[c.index()], "index": { "name": &spec.name, "expireAfterSeconds": secs } })
            .await?;
        tracing::info!(
            "changed the TTL of {}.{} from {from:?} to {secs} s",
            self.inner.names[c.index()],
            spec.name
        );
        Ok(())
    }
}

struct IndexSpec {
    name: String,
    keys: Document,
    ttl: Option<Duration>,
}

/// The indexes of each collection (DESIGN.md), named as MongoDB names them by default so that
/// indexes the Python app made are recognised. The time index carries the TTL.
fn index_specs(c: Collection, keep: Duration) -> Vec<IndexSpec> {
    let time = c.time_field();
    let ttl = (!keep.is_zero()).then_some(keep);
    let mut specs = vec![IndexSpec {
        name: format!("{time}_-1"),
        keys: doc! { time: -1 },
        ttl,
    }];
    let by = match c {
        Collection::Logs => vec!["level", "module"],
        Collection::Cost => vec!["model"],
        Collection::Performance => vec!["status"],
        Collection::Rejects => vec![],
    };
    for field in by {
        specs.push(IndexSpec {
            name: format!("{field}_1_{time}_-1"),
            keys: doc! { field: 1, time: -1 },
            ttl: None,
        });
    }
    specs
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

#[cfg(test)]
mod config_tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn mongodb_section_env_names_and_masking() {
        let load_env = |text: &str, env: &[(&str, &str)]| {
            Config::from_toml(
                text,
                "test.toml",
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .map_err(|e| e.first().clone())
        };
        let c = load_env("", &[]).unwrap();
        assert!(c.mongo().is_none(), "no section: the embedded store serves");
        let c = load_env(
            "[mongodb]\ndatabase = \"x\"\n",
            &[
                ("MONGODB_URI", "mongodb://app:s3cret@db:27017/?tls=true"),
                ("MONGODB_DB_NAME", "novel"),
            ],
        )
        .unwrap();
        let m = c.mongo().unwrap();
        assert_eq!(
            (m.uri.as_str(), m.database.as_str()),
            ("mongodb://app:s3cret@db:27017/?tls=true", "novel")
        );
        let shown = c.to_masked_toml();
        assert!(
            shown.contains("mongodb://app:***@db:27017/?tls=true") && !shown.contains("s3cret"),
            "{shown}"
        );
        let c = load_env("", &[("MONGODB_URI", "mongodb://h")]).unwrap();
        assert!(c.mongo().is_some(), "MONGODB_URI alone turns MongoDB on");
        let c = load_env("", &[("MONGODB_DB_NAME", "novel")]).unwrap();
        assert!(c.mongo().is_none(), "MONGODB_DB_NAME alone does not");
        let c = load_env("[mongodb]\nenabled = false\n", &[]).unwrap();
        assert!(c.mongo().is_none());
        let e = load_env("[mongodb]\nuri = \"http://x\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "mongodb.uri");
        let e = load_env("[mongodb]\nw = \"0\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "mongodb.w");
        let e = load_env("[mongodb.collections]\napi_log = \"x\"\n", &[]).unwrap_err();
        assert!(e.problem.contains("did you mean `mongodb.collections.api_logs`"), "{e}");
        assert_eq!(mask_uri_password("mongodb://h1,h2/db"), "mongodb://h1,h2/db");
        assert_eq!(
            mask_uri_password("mongodb+srv://u:p@x.example/db?authSource=admin"),
            "mongodb+srv://u:***@x.example/db?authSource=admin"
        );
    }
}
