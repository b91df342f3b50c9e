//! The embedded store: one SQLite file under `state_dir`, WAL mode, one transaction per batch.
//!
//! Each collection is a table named like it, with the fields its descriptor lists
//! ([`super::collections`]) as columns beside the whole document as JSON in `doc`. Times are integer
//! milliseconds in `<field>_ms` columns; the document holds the same time as an RFC 3339 string.
//! `id` is unique, and inserts ignore an id already present, which makes a retried batch (or a
//! re-read file line) harmless.
//!
//! One connection writes; queries run on read-only connections of their own, which WAL lets read
//! while the writer writes. The WAL is persistent (`SQLITE_FCNTL_PERSIST_WAL`): its files stay when
//! the daemon stops, so a reader that keeps a connection open across a restart (a `sqlite3` shell,
//! a dashboard) is not left mapping deleted files. The schema's version is `PRAGMA user_version`;
//! opening a file migrates it forward, and a file from a newer release is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

pub use super::sqlite::Synchronous;
use super::sqlite::{open_connection, open_error};

use super::collections::{self, Spec};
use super::query::{
    CostBucket, Count, Cursor, Filter, FindQuery, Found, Order, Position, Query, RequestBucket, ResponseTime,
    ResponseTimes, Shape, SkewedCost, StoreHealth, TimeRange, COST_BUCKET_MS, REQUEST_BUCKET_MS,
};
use super::{document, Batch, Store, StoreError, WriteOutcome};
use crate::event::{Body, Collection, Currency, Level, Timestamp};

/// The schema this release writes. 1: the first release's tables; 2: filter and sum columns;
/// 3: no plain time index where the statistics' covering index starts with the time; 4: `api_cost.received_at_ms`,
/// the arrival of a cost whose own time was too far ahead (the budget counts it then); 5: the logs' level
/// index holds only WARNING and above (`api_logs_level_timestamp_ms_rare`, issue 23).
pub const SCHEMA_VERSION: i64 = 5;

/// `[embedded]`: the SQLite file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// SQLite file name, relative to `state_dir`.
    pub file: PathBuf,
    pub synchronous: Synchronous,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            file: PathBuf::from("collector.db"),
            synchronous: Synchronous::Normal,
        }
    }
}

/// Rows a retention run deletes per transaction, so that the writer never waits long.
const PRUNE_CHUNK: usize = 5_000;
/// Read-only connections kept for queries.
const READERS: usize = 4;
/// The writer's own checkpoint threshold, only reached if the checkpointer falls behind.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_000;
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Idle read-only connections; more are opened on demand up to [`READERS`].
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    host: Arc<str>,
    /// The INSERT of each collection, built once from its descriptor.
    inserts: Vec<String>,
    /// Whether the last write succeeded.
    writable: AtomicBool,
    /// Since when writes have failed (the file locked or full), and the last error.
    failing: Mutex<Option<(Timestamp, String)>>,
    _checkpointer: Checkpointer,
}

/// Copies the WAL into the database file from a thread and connection of its own. A PASSIVE
/// checkpoint never blocks the writer, and the copying no longer sits on the insert path.
struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!("checkpoint of the embedded store failed, will retry: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::permanent(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A batch's documents encoded into one buffer (one allocation per batch, not per event).
struct EncodedDocs {
    text: String,
    ends: Vec<usize>,
}

impl EncodedDocs {
    fn encode(batch: &Batch, host: &str) -> Result<EncodedDocs, StoreError> {
        let mut buf = Vec::with_capacity(batch.events.len() * 320);
        let mut ends = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            document::write_json(e, host, &mut buf)
                .map_err(|err| StoreError::permanent(format!("cannot encode event {}: {err}", e.id)))?;
            ends.push(buf.len());
        }
        let text = String::from_utf8(buf)
            .map_err(|err| StoreError::permanent(format!("documents encoded to invalid UTF-8: {err}")))?;
        Ok(EncodedDocs { text, ends })
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database file and migrates its schema to this release's.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<EmbeddedStore, StoreError> {
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            crate::state_dir::refuse_symlink(&file).map_err(StoreError::permanent)?;
        }
        let mut conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        configure(&conn, path, synchronous)?;
        migrate(&mut conn).map_err(|e| e.context(format!("cannot prepare {}", path.display())))?;
        let checkpointer = Checkpointer::start(path)?;
        let inserts = collections::ALL.iter().map(|spec| insert_sql(spec)).collect();
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                path: path.to_path_buf(),
                host: document::hostname().into(),
                inserts,
                writable: AtomicBool::new(true),
                failing: Mutex::new(None),
                _checkpointer: checkpointer,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send {
        let inner = self.inner.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                // A panic while holding it leaves the connection, not half-written data: SQLite rolls
                // back what was not committed. Keep using it.
                let mut guard = inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(&mut guard, &inner)
            })
            .await
            .map_err(|e| StoreError::permanent(format!("embedded store task failed: {e}")))?
        }
    }

    /// Runs `f` on the writing connection, with this store's host name (for documents it makes).
    pub(crate) fn with_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send {
        self.with_writer(move |conn, inner| f(conn, &inner.host))
    }

    /// Runs `f` on a read-only connection (crate-internal queries outside `Query`).
    pub(crate) fn with_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send {
        self.with_reader(f)
    }

    /// Runs `f` on a read-only connection, beside the writer. Dropping the future (a caller's
    /// timeout) interrupts the query, so an abandoned scan does not hold a thread and a connection.
    fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send {
        let inner = self.inner.clone();
        async move {
            let running = InterruptOnDrop::default();
            let slot = running.0.clone();
            tokio::task::spawn_blocking(move || {
                let idle = inner.readers.lock().ok().and_then(|mut r| r.pop());
                let conn = match idle {
                    Some(c) => c,
                    None => open_connection(&inner.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
                };
                if let Ok(mut s) = slot.lock() {
                    *s = Some(conn.get_interrupt_handle());
                }
                let result = f(&conn);
                if let Ok(mut s) = slot.lock() {
                    *s = None;
                }
                if let Ok(mut idle) = inner.readers.lock() {
                    if idle.len() < READERS {
                        idle.push(conn);
                    }
                }
                result
            })
            .await
            .map_err(|e| StoreError::permanent(format!("embedded store query failed: {e}")))?
        }
    }
}

/// The interrupt handle of a query while it runs; interrupts it if dropped before it finished.
#[derive(Default)]
struct InterruptOnDrop(Arc<Mutex<Option<rusqlite::InterruptHandle>>>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Ok(mut running) = self.0.lock() {
            if let Some(handle) = running.take() {
                handle.interrupt();
            }
        }
    }
}

/// The first statements on a file: where a file that is not a database shows itself.
fn configure(conn: &Connection, path: &Path, synchronous: Synchronous) -> Result<(), StoreError> {
    // 16 KiB pages: fewer page splits and cache look-ups per row than 4 KiB; measured 1.4x the
    // insert rate (cargo bench --bench socket_throughput). Applies to new files only.
    conn.execute_batch("PRAGMA page_size = 16384;")
        .map_err(|e| open_error(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::permanent(format!(
            "SQLite refused WAL mode (got {mode}); is the file on a network filesystem?"
        )));
    }
    // A 4 MiB page cache keeps the indexes' hot pages in memory as the tables grow (the 2 MiB
    // default made inserts read pages back). Inserts append at each B-tree's right edge (ids and
    // times increase), a few hundred KiB; 16 MiB measured the same rate for 12 MiB more peak RSS
    // (cargo bench --bench peer_rsyslog). Checkpoints run on a connection of their own (see
    // `Checkpointer`) so the writer does not copy pages; its own autocheckpoint is a backstop.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -4096; PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES};",
        synchronous.pragma()
    ))?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`]: tables and indexes from the descriptors, and columns
/// added since (filled from the documents already stored). Idempotent; one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::permanent(format!(
            "the file was written by a newer lngpt-collector (schema {version}; this release knows {SCHEMA_VERSION}); \
             run that release, or move the file aside"
        )));
    }
    let tx = conn.transaction()?;
    for spec in collections::ALL {
        let table = spec.collection.name();
        let columns: String = spec
            .columns
            .iter()
            .map(|c| format!(", {} {}", c.name, c.sql_type))
            .collect();
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id BLOB NOT NULL UNIQUE, {time} INTEGER NOT NULL{columns}, doc TEXT NOT NULL);",
            time = spec.time_column
        ))?;
        let existing: Vec<String> = tx
            .prepare(&format!("PRAGMA table_info({table})"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<Result<_, _>>()?;
        for c in spec.columns.iter().filter(|c| !existing.iter().any(|e| e == c.name)) {
            // Added columns cannot be NOT NULL; old rows get the value their document holds.
            let sql_type = c.sql_type.trim_end_matches(" NOT NULL");
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {} {sql_type};", c.name))?;
            let filled = tx.execute(
                &format!(
                    "UPDATE {table} SET {0} = json_extract(doc, ?1) WHERE {0} IS NULL",
                    c.name
                ),
                [c.json_path],
            )?;
            if filled > 0 {
                tracing::info!(
                    "embedded store: added {table}.{} and filled it for {filled} stored documents",
                    c.name
                );
            }
        }
        let existing: Vec<String> = tx
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL")?
            .query_map([table], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        let wanted = indexes(spec);
        for (name, columns) in &wanted {
            if !existing.contains(name) {
                tx.execute_batch(&format!("CREATE INDEX {name} ON {table} {columns};"))?;
                if version > 0 {
                    tracing::info!("embedded store: added the index {name}");
                }
            }
        }
        // Indexes this release does not define (older names, a plain time index where the covering
        // index starts with the time) would cost a B-tree insert per event for nothing.
        for name in existing.iter().filter(|e| !wanted.iter().any(|(name, _)| name == *e)) {
            tx.execute_batch(&format!("DROP INDEX {name};"))?;
            tracing::info!("embedded store: dropped the index {name}, which this release does not use");
        }
    }
    tx.execute_batch(super::heartbeats::CREATE_TABLE)?;
    if version != SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        if version > 0 {
            tracing::info!("embedded store: schema upgraded from {version} to {SCHEMA_VERSION}");
        }
    }
    tx.commit()?;
    Ok(())
}

/// The indexes a collection's table has in this release (besides the id's own): name, and what
/// follows `ON <table>`.
fn indexes(spec: &Spec) -> Vec<(String, String)> {
    let (table, time) = (spec.collection.name(), spec.time_column);
    let mut out: Vec<(String, String)> = spec
        .indexed
        .iter()
        .filter(|f| !spec.embedded_unindexed.contains(f))
        .map(|f| match spec.rare_values(f) {
            // Only the rare values' rows: queries for them carry the same term (see `filters`).
            Some(values) => (
                format!("{table}_{f}_{time}_rare"),
                format!("({f}, {time}) WHERE {}", rare_term(f, values)),
            ),
            None => (format!("{table}_{f}_{time}"), format!("({f}, {time})")),
        })
        .collect();
    out.extend(
        spec.sparse_indexed
            .iter()
            .map(|f| (format!("{table}_{f}"), format!("({f}) WHERE {f} IS NOT NULL"))),
    );
    out.push(if spec.covering.is_empty() {
        (format!("{table}_{time}"), format!("({time})"))
    } else {
        // For statistics: a range's sums come from the index alone.
        (
            format!("{table}_{time}_covering"),
            format!("({time}, {})", spec.covering.join(", ")),
        )
    });
    out
}

/// `(field = 'A' OR field = 'B')`: the `WHERE` of a partial index over `field`'s rare values. SQLite
/// uses a partial index only for a query whose `WHERE` has a term the same as the index's (a bound
/// parameter proves nothing), so the queries for those values add this very text. Not `IN (…)`:
/// every insert evaluates the index's `WHERE`, and a constant `IN` list is built into an ephemeral
/// table each time (callgrind: 14,000 more instructions per event than the whole index saves).
fn rare_term(field: &str, values: &[&str]) -> String {
    let list: Vec<String> = values
        .iter()
        .map(|v| format!("{field} = '{}'", v.replace('\'', "''")))
        .collect();
    format!("({})", list.join(" OR "))
}

fn insert_sql(spec: &Spec) -> String {
    let names: String = spec.columns.iter().map(|c| format!(", {}", c.name)).collect();
    let marks: String = spec.columns.iter().map(|_| ", ?").collect();
    format!(
        "INSERT OR IGNORE INTO {} (id, {}{names}, doc) VALUES (?, ?{marks}, ?)",
        spec.collection.name(),
        spec.time_column
    )
}

/// Binds an event's columns in its descriptor's order, after `id` and the time.
fn bind_columns(stmt: &mut rusqlite::Statement<'_>, e: &crate::event::Event) -> rusqlite::Result<usize> {
    let mut i = 3;
    let mut bind = |v: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
        stmt.raw_bind_parameter(i, v)?;
        i += 1;
        Ok(())
    };
    match &e.body {
        Body::Log(l) => {
            let request_id = l.extra.get("request_id").and_then(|v| v.as_str());
            bind(&l.level.as_str())?;
            bind(&l.module)?;
            bind(&l.logger)?;
            bind(&request_id)?;
        }
        Body::Cost(c) => {
            bind(&c.model)?;
            bind(&c.currency.symbol())?;
            bind(&c.cost)?;
            bind(&c.input_tokens.and_then(|n| i64::try_from(n).ok()))?;
            bind(&c.output_tokens.and_then(|n| i64::try_from(n).ok()))?;
            bind(&c.total_tokens.and_then(|n| i64::try_from(n).ok()))?;
            bind(&c.request_id)?;
            bind(&e.received.map(|t| t.as_millis()))?;
        }
        Body::Performance(p) => {
            bind(&p.status.as_str())?;
            bind(&p.model)?;
            bind(&p.response_time)?;
            bind(&p.first_chunk_time)?;
            bind(&p.request_id)?;
        }
        Body::Reject(_) => bind(&&*e.source)?,
        Body::Metric(m) => bind(&m.model)?,
    }
    Ok(i)
}

fn insert_batch(
    conn: &mut Connection,
    inner: &Inner,
    batch: &Batch,
    docs: &EncodedDocs,
) -> Result<WriteOutcome, StoreError> {
    let tx = conn.transaction()?;
    let mut inserted = 0;
    {
        let mut stmt = tx.prepare_cached(&inner.inserts[batch.collection.index()])?;
        for (i, e) in batch.events.iter().enumerate() {
            stmt.raw_bind_parameter(1, &e.id.bytes()[..])?;
            stmt.raw_bind_parameter(2, e.time.as_millis())?;
            let next = bind_columns(&mut stmt, e)?;
            stmt.raw_bind_parameter(next, docs.get(i))?;
            inserted += stmt.raw_execute()?;
        }
    }
    tx.commit()?;
    Ok(WriteOutcome {
        inserted,
        duplicates: batch.events.len() - inserted,
        deferred: 0,
    })
}

impl Store for EmbeddedStore {
    fn write(&self, batch: Arc<Batch>) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> + Send {
        // Encoding happens here, on the caller's thread and outside the lock, so it overlaps the
        // insert of the batch before.
        let docs = EncodedDocs::encode(&batch, &self.inner.host);
        let insert = docs.map(|docs| self.with_writer(move |conn, inner| insert_batch(conn, inner, &batch, &docs)));
        let inner = self.inner.clone();
        async move {
            let result = insert?.await;
            inner.writable.store(result.is_ok(), Ordering::Relaxed);
            let mut failing = inner.failing.lock().unwrap_or_else(|p| p.into_inner());
            *failing = match &result {
                Ok(_) => None,
                Err(e) => Some((
                    failing.as_ref().map_or_else(Timestamp::now, |(since, _)| *since),
                    e.to_string(),
                )),
            };
            drop(failing);
            result
        }
    }

    /// Deletes one chunk of expired rows; the caller repeats while a full chunk went.
    fn prune(
        &self,
        collection: Collection,
        cutoff: Timestamp,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send {
        self.with_writer(move |conn, _| {
            let (table, column) = (collection.name(), collection.spec().time_column);
            let sql = format!(
                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT {PRUNE_CHUNK})"
            );
            Ok(conn.execute(&sql, [cutoff.as_millis()])? as u64)
        })
    }

    fn describe(&self) -> String {
        format!("embedded SQLite store {}", self.inner.path.display())
    }
}

/// Rows a prune call deletes at most; fewer means the collection is done.
pub const fn prune_chunk() -> u64 {
    PRUNE_CHUNK as u64
}

/// A WHERE clause and its parameters.
#[derive(Default)]
struct Where {
    sql: Vec<String>,
    params: Vec<SqlValue>,
}

impl Where {
    fn push(&mut self, sql: impl Into<String>, params: impl IntoIterator<Item = SqlValue>) {
        self.sql.push(sql.into());
        self.params.extend(params);
    }

    fn range(&mut self, column: &str, range: TimeRange) {
        if let Some(from) = range.from {
            self.push(format!("{column} >= ?"), [SqlValue::Integer(from.as_millis())]);
        }
        if let Some(to) = range.to {
            self.push(format!("{column} < ?"), [SqlValue::Integer(to.as_millis())]);
        }
    }

    fn clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.sql.join(" AND "))
        }
    }
}

/// The text field `q` searches in, per collection.
pub(crate) fn text_field(c: Collection) -> Option<&'static str> {
    match c {
        Collection::Logs => Some("message"),
        Collection::Rejects => Some("reason"),
        _ => None,
    }
}

fn filters(q: &FindQuery) -> Result<Where, StoreError> {
    let spec = q.collection.spec();
    let mut w = Where::default();
    w.range(spec.time_column, q.range);
    for f in &q.filters {
        match f {
            Filter::Eq(field, value) => {
                let column = spec.column(field).ok_or_else(|| {
                    StoreError::permanent(format!("{} cannot be filtered by {field}", q.collection.name()))
                })?;
                w.push(format!("{} = ?", column.name), [SqlValue::Text(value.clone())]);
                if let Some(rare) = spec.rare_values(field).filter(|r| r.contains(&value.as_str())) {
                    w.push(rare_term(field, rare), []);
                }
            }
            Filter::LevelAtLeast(min) => {
                let levels: Vec<SqlValue> = Level::ALL
                    .iter()
                    .filter(|l| *l >= min)
                    .map(|l| SqlValue::Text(l.as_str().into()))
                    .collect();
                let rare = spec.rare_values("level").filter(|rare| {
                    levels
                        .iter()
                        .all(|l| matches!(l, SqlValue::Text(t) if rare.contains(&t.as_str())))
                });
                let marks = vec!["?"; levels.len()].join(", ");
                w.push(format!("level IN ({marks})"), levels);
                if let Some(rare) = rare {
                    w.push(rare_term("level", rare), []);
                }
            }
            Filter::Contains(text) => {
                let field = text_field(q.collection)
                    .ok_or_else(|| StoreError::permanent(format!("{} has no text to search", q.collection.name())))?;
                let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                w.push(
                    format!("json_extract(doc, '$.{field}') LIKE ? ESCAPE '\\'"),
                    [SqlValue::Text(format!("%{escaped}%"))],
                );
            }
            Filter::After(p) => {
                let time = spec.time_column;
                w.push(format!("{time} >= ?"), [SqlValue::Integer(p.time_ms)]);
                w.push(format!("({time} > ? OR id > ?)"), position_params(p));
            }
            Filter::From(p) => {
                let time = spec.time_column;
                w.push(format!("{time} >= ?"), [SqlValue::Integer(p.time_ms)]);
                w.push(format!("({time} > ? OR id >= ?)"), position_params(p));
            }
            Filter::AtOrBefore(p) => {
                let time = spec.time_column;
                w.push(format!("{time} <= ?"), [SqlValue::Integer(p.time_ms)]);
                w.push(format!("({time} < ? OR id <= ?)"), position_params(p));
            }
        }
    }
    Ok(w)
}

fn position_params(p: &Position) -> [SqlValue; 2] {
    [SqlValue::Integer(p.time_ms), SqlValue::Blob(p.id.bytes().to_vec())]
}

fn find(conn: &Connection, q: &FindQuery) -> Result<Found, StoreError> {
    let spec = q.collection.spec();
    let (table, time) = (q.collection.name(), spec.time_column);
    let w = filters(q)?;
    let total = if q.count_up_to > 0 {
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table}{} LIMIT {})",
            w.clause(),
            q.count_up_to.saturating_add(1)
        );
        let n: i64 = conn.query_row(&sql, params_from_iter(w.params.iter()), |r| r.get(0))?;
        let n = n as u64;
        Some(Count {
            n: n.min(q.count_up_to),
            exact: n <= q.count_up_to,
        })
    } else {
        None
    };
    let mut w = w;
    if let Some(after) = &q.after {
        let rowid: i64 = after
            .key
            .parse()
            .map_err(|_| StoreError::permanent("the cursor was not made by this store"))?;
        // The bound on the time alone lets SQLite seek the time index to the cursor instead of
        // scanning from the newest row: deep pages cost what the first does.
        w.push(
            format!("{time} <= ? AND ({time} < ? OR rowid < ?)"),
            [
                SqlValue::Integer(after.time_ms),
                SqlValue::Integer(after.time_ms),
                SqlValue::Integer(rowid),
            ],
        );
    }
    let limit = q.limit.max(1);
    let order = match q.order {
        Order::Newest => format!("{time} DESC, rowid DESC"),
        Order::Oldest => format!("{time}, id"),
    };
    // Sizes first (`octet_length` reads a text's length from its header, not its pages), each
    // document then by its rowid once it is known to fit: a page holds what `max_bytes` allows,
    // never more, and the row after it is seen without being read.
    let sql = format!(
        "SELECT rowid, {time}, id, octet_length(doc) FROM {table}{} ORDER BY {order} LIMIT {} OFFSET {}",
        w.clause(),
        limit + 1,
        if q.after.is_some() { 0 } else { q.skip }
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut doc_of = conn.prepare_cached(&format!("SELECT doc FROM {table} WHERE rowid = ?1"))?;
    let mut rows = stmt.query(params_from_iter(w.params.iter()))?;
    let mut found = Found::default();
    let mut kept = 0;
    let mut last = None;
    let mut more = false;
    while let Some(row) = rows.next()? {
        let size = row.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as usize;
        if kept == limit || (kept > 0 && found.bytes.saturating_add(size) > q.max_bytes) {
            more = true;
            break;
        }
        let (rowid, time_ms): (i64, i64) = (row.get(0)?, row.get(1)?);
        let position = || -> rusqlite::Result<Position> {
            let id = row.get_ref(2)?.as_blob_or_null().map_err(rusqlite::Error::from)?;
            let id = id.and_then(|b| <[u8; 12]>::try_from(b).ok()).unwrap_or_default();
            Ok(Position {
                time_ms,
                id: crate::event::EventId(id),
            })
        };
        match q.shape {
            Shape::Positions => found.positions.push(position()?),
            Shape::Values | Shape::Text => {
                let doc: String = doc_of.query_row([rowid], |r| r.get(0))?;
                if q.shape == Shape::Text {
                    found.positions.push(position()?);
                    found.texts.push(doc);
                } else {
                    let value = serde_json::from_str(&doc)
                        .map_err(|e| StoreError::permanent(format!("a stored {table} document is not JSON: {e}")))?;
                    found.docs.push(value);
                }
            }
        }
        found.bytes += size;
        kept += 1;
        last = Some(Cursor {
            time_ms,
            key: rowid.to_string(),
        });
    }
    found.next = if more { last } else { None };
    found.total = total;
    Ok(found)
}

/// Rows come in time order from the covering index, so each 15-minute bucket is summed while it is
/// read and closed at the next: SQLite's `GROUP BY` sorted every row of the range first (130 of 170 ms
/// for a day of 150,000 costs, `cargo bench --bench api`).
fn cost_buckets(conn: &Connection, range: TimeRange) -> Result<Vec<CostBucket>, StoreError> {
    let mut w = Where::default();
    w.range("created_at_ms", range);
    let sql = format!(
        "SELECT created_at_ms, model, currency, cost, input_tokens, output_tokens, total_tokens
         FROM api_cost{} ORDER BY created_at_ms",
        w.clause()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(w.params.iter()))?;
    let mut out: Vec<CostBucket> = Vec::new();
    // Where the open bucket's entries (one per model and currency) start in `out`.
    let mut open = 0;
    while let Some(row) = rows.next()? {
        let time: i64 = row.get(0)?;
        let start_ms = time - time % COST_BUCKET_MS;
        if out.last().is_some_and(|b| b.start_ms != start_ms) {
            open = out.len();
        }
        let model = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        let currency = row
            .get_ref(2)?
            .as_str_or_null()
            .map_err(rusqlite::Error::from)?
            .and_then(Currency::parse)
            .unwrap_or(Currency::Usd);
        let at = match out[open..]
            .iter()
            .position(|b| b.model == model && b.currency == currency)
        {
            Some(i) => open + i,
            None => {
                out.push(CostBucket {
                    start_ms,
                    model: model.to_string(),
                    currency,
                    cost: 0.0,
                    input_tokens: 0,
                    output_tokens: 0,
                    total_tokens: 0,
                    calls: 0,
                });
                out.len() - 1
            }
        };
        let tokens =
            |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64) };
        let (input, output, total) = (tokens(4)?, tokens(5)?, tokens(6)?);
        let b = &mut out[at];
        b.cost += row.get::<_, Option<f64>>(3)?.unwrap_or(0.0);
        b.input_tokens = b.input_tokens.saturating_add(input);
        b.output_tokens = b.output_tokens.saturating_add(output);
        b.total_tokens = b.total_tokens.saturating_add(total);
        b.calls += 1;
    }
    // The order of MongoDB's answer (and of the `GROUP BY` this replaced).
    out.sort_by(|a, b| (a.start_ms, &a.model, a.currency.symbol()).cmp(&(b.start_ms, &b.model, b.currency.symbol())));
    Ok(out)
}

fn skewed_costs(conn: &Connection, range: TimeRange) -> Result<Vec<SkewedCost>, StoreError> {
    // The partial index holds only the (rare) costs counted at arrival.
    let (from, to) = (
        range.from.map_or(i64::MIN, |t| t.as_millis()),
        range.to.map_or(i64::MAX, |t| t.as_millis()),
    );
    let mut stmt = conn.prepare_cached(
        "SELECT created_at_ms, received_at_ms, model, currency, cost FROM api_cost
         WHERE received_at_ms IS NOT NULL
           AND ((created_at_ms >= ?1 AND created_at_ms < ?2) OR (received_at_ms >= ?1 AND received_at_ms < ?2))",
    )?;
    let rows = stmt.query_map(rusqlite::params![from, to], |r| {
        Ok(SkewedCost {
            time_ms: r.get(0)?,
            received_ms: r.get(1)?,
            model: r.get(2)?,
            currency: r
                .get::<_, Option<String>>(3)?
                .as_deref()
                .and_then(Currency::parse)
                .unwrap_or(Currency::Usd),
            cost: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn request_buckets(conn: &Connection, range: TimeRange) -> Result<Vec<RequestBucket>, StoreError> {
    let mut w = Where::default();
    w.range("timestamp_ms", range);
    let sql = format!(
        "SELECT timestamp_ms - (timestamp_ms % {REQUEST_BUCKET_MS}) AS bucket, model, count(*),
                sum(status = 'error'), sum(response_time), sum(first_chunk_time), count(first_chunk_time)
         FROM api_performance{} GROUP BY bucket, model ORDER BY bucket",
        w.clause()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(w.params.iter()), |r| {
        Ok(RequestBucket {
            start_ms: r.get(0)?,
            model: r.get(1)?,
            calls: r.get::<_, i64>(2)?.max(0) as u64,
            errors: r.get::<_, i64>(3)?.max(0) as u64,
            response_time_sum: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
            first_chunk_sum: r.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
            first_chunk_count: r.get::<_, i64>(6)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn response_times(
    conn: &Connection,
    range: TimeRange,
    model: Option<&str>,
    limit: usize,
) -> Result<ResponseTimes, StoreError> {
    let mut w = Where::default();
    w.range("timestamp_ms", range);
    if let Some(model) = model {
        w.push("model = ?", [SqlValue::Text(model.to_string())]);
    }
    w.push("response_time IS NOT NULL", []);
    let sql = format!(
        "SELECT timestamp_ms, model, response_time FROM api_performance{} ORDER BY timestamp_ms LIMIT {}",
        w.clause(),
        limit.saturating_add(1)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(w.params.iter()), |r| {
        Ok(ResponseTime {
            time_ms: r.get(0)?,
            model: r.get(1)?,
            seconds: r.get(2)?,
        })
    })?;
    let mut samples: Vec<ResponseTime> = rows.collect::<Result<_, _>>()?;
    let truncated = samples.len() > limit;
    samples.truncate(limit);
    Ok(ResponseTimes { samples, truncated })
}

impl Query for EmbeddedStore {
    fn find(&self, q: FindQuery) -> impl std::future::Future<Output = Result<Found, StoreError>> + Send {
        self.with_reader(move |conn| find(conn, &q))
    }

    fn cost_buckets(
        &self,
        range: TimeRange,
    ) -> impl std::future::Future<Output = Result<Vec<CostBucket>, StoreError>> + Send {
        self.with_reader(move |conn| cost_buckets(conn, range))
    }

    fn skewed_costs(
        &self,
        range: TimeRange,
    ) -> impl std::future::Future<Output = Result<Vec<SkewedCost>, StoreError>> + Send {
        self.with_reader(move |conn| skewed_costs(conn, range))
    }

    fn request_buckets(
        &self,
        range: TimeRange,
    ) -> impl std::future::Future<Output = Result<Vec<RequestBucket>, StoreError>> + Send {
        self.with_reader(move |conn| request_buckets(conn, range))
    }

    fn response_times(
        &self,
        range: TimeRange,
        model: Option<String>,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<ResponseTimes, StoreError>> + Send {
        self.with_reader(move |conn| response_times(conn, range, model.as_deref(), limit))
    }

    fn health(&self) -> StoreHealth {
        let failing = self.inner.failing.lock().unwrap_or_else(|p| p.into_inner()).clone();
        StoreHealth {
            kind: "sqlite",
            reachable: self.inner.writable.load(Ordering::Relaxed),
            address: self.inner.path.display().to_string(),
            unreachable_since: failing.as_ref().map(|(since, _)| *since),
            last_error: failing.map(|(_, e)| e),
            ..StoreHealth::default()
        }
    }

    /// A batch is queryable once it is stored.
    fn waiting(&self, _: Collection) -> u64 {
        0
    }
}

/// The schema version of an existing file, if it is one (for tests and tools).
pub fn schema_version(path: &Path) -> Result<Option<i64>, StoreError> {
    let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0)).optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::FindQuery;

    /// SQLite's plan for a listing of `api_logs` with `q`'s filters, newest first.
    fn plan(conn: &Connection, q: &FindQuery) -> String {
        let w = filters(q).unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT rowid FROM api_logs{} ORDER BY timestamp_ms DESC, rowid DESC LIMIT 51",
            w.clause()
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let details = stmt
            .query_map(params_from_iter(w.params.iter()), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        details.join("; ")
    }

    #[test]
    fn every_level_filter_is_served_by_an_index_the_rare_levels_by_the_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let _store = EmbeddedStore::open(&path, Synchronous::Normal).unwrap();
        let conn = Connection::open(&path).unwrap();
        let day = TimeRange::between(
            Timestamp::parse_rfc3339("2026-11-26T00:00:00Z").unwrap(),
            Timestamp::parse_rfc3339("2026-11-27T00:00:00Z").unwrap(),
        );
        let query = |range: TimeRange, filter: Filter| {
            let mut q = FindQuery::new(Collection::Logs);
            q.range = range;
            q.filters.push(filter);
            q
        };
        for level in ["WARNING", "ERROR", "CRITICAL"] {
            for range in [TimeRange::default(), day] {
                let p = plan(&conn, &query(range, Filter::Eq("level", level.into())));
                assert!(p.contains("INDEX api_logs_level_timestamp_ms_rare"), "{level}: {p}");
            }
        }
        for min in [Level::Warning, Level::Error, Level::Critical] {
            let p = plan(&conn, &query(day, Filter::LevelAtLeast(min)));
            assert!(p.contains("INDEX api_logs_level_timestamp_ms_rare"), "{min:?}: {p}");
        }
        // INFO and DEBUG are most rows: found by time, never by a scan of the table.
        for filter in [
            Filter::Eq("level", "INFO".into()),
            Filter::Eq("level", "DEBUG".into()),
            Filter::LevelAtLeast(Level::Info),
            Filter::LevelAtLeast(Level::Debug),
        ] {
            let p = plan(&conn, &query(day, filter));
            assert!(p.contains("INDEX api_logs_timestamp_ms"), "{p}");
            assert!(!p.contains("_rare"), "{p}");
        }
    }

    #[test]
    fn the_rare_index_holds_only_the_rare_levels() {
        let spec = collections::LOGS;
        let (name, sql) = indexes(&spec)
            .into_iter()
            .find(|(name, _)| name.contains("level"))
            .unwrap();
        assert_eq!(name, "api_logs_level_timestamp_ms_rare");
        assert_eq!(
            sql,
            "(level, timestamp_ms) WHERE (level = 'WARNING' OR level = 'ERROR' OR level = 'CRITICAL')"
        );
    }
}
