//! The outbox: batches that could not reach MongoDB, kept in the embedded SQLite file.
//!
//! A batch is committed here before the pipeline counts it as taken, and leaves only once MongoDB
//! has it. One row per batch: the documents as concatenated BSON, ready to send again. The outbox
//! has a cap in bytes; past it the oldest batches are dropped, counted and logged — the only place
//! where the daemon ever drops accepted data.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bson::RawDocumentBuf;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::Notify;

use super::sqlite::{open_connection, Synchronous};
use super::StoreError;
use crate::event::Collection;

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    cap_bytes: u64,
    /// Totals of what is in the table, kept in memory so that gauges cost nothing.
    bytes: AtomicU64,
    events: [AtomicU64; Collection::COUNT],
    dropped: AtomicU64,
    pushed: Notify,
}

/// The oldest batch of a collection waiting.
pub struct Pending {
    pub seq: i64,
    pub collection: Collection,
    pub docs: Vec<RawDocumentBuf>,
}

/// What reading the oldest row gave.
pub enum Taken {
    Batch(Pending),
    /// A row whose bytes do not split into documents (a damaged file): set it aside, do not let it
    /// block the rest.
    Corrupt {
        seq: i64,
        events: u64,
        reason: String,
        /// Its first bytes, to keep with the reject.
        head: Vec<u8>,
    },
}

impl Outbox {
    pub fn open(path: &Path, synchronous: Synchronous, cap_bytes: u64) -> Result<Outbox, StoreError> {
        let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {};
             CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL,
                 events INTEGER NOT NULL, bytes INTEGER NOT NULL, docs BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS outbox_collection_seq ON outbox (collection, seq);",
            synchronous.pragma()
        ))?;
        let events: [AtomicU64; Collection::COUNT] = Default::default();
        let mut bytes = 0u64;
        {
            let mut stmt = conn.prepare(
                "SELECT collection, coalesce(sum(events), 0), coalesce(sum(bytes), 0) FROM outbox GROUP BY collection",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?;
            for row in rows {
                let (name, n, b) = row?;
                if let Some(c) = collection_named(&name) {
                    events[c.index()].store(n.max(0) as u64, Relaxed);
                }
                bytes += b.max(0) as u64;
            }
        }
        Ok(Outbox {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                cap_bytes,
                bytes: AtomicU64::new(bytes),
                events,
                dropped: AtomicU64::new(0),
                pushed: Notify::new(),
            }),
        })
    }

    /// Events waiting.
    pub fn events(&self) -> u64 {
        self.inner.events.iter().map(|e| e.load(Relaxed)).sum()
    }

    /// Events of one collection waiting.
    pub fn events_of(&self, c: Collection) -> u64 {
        self.inner.events[c.index()].load(Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Relaxed)
    }

    /// Events dropped by the cap since start.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Relaxed)
    }

    /// Waits until something is pushed.
    pub async fn pushed(&self) {
        self.inner.pushed.notified().await
    }

    /// Commits a batch; when this returns Ok the documents are durable here.
    pub async fn push(&self, collection: Collection, docs: Vec<RawDocumentBuf>) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let events = docs.len() as u64;
            let mut blob = Vec::with_capacity(docs.iter().map(|d| d.as_bytes().len()).sum());
            for d in &docs {
                blob.extend_from_slice(d.as_bytes());
            }
            let bytes = blob.len() as u64;
            let mut conn = inner.lock()?;
            // One transaction: the cap holds on disk at every moment, and totals change only on commit.
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO outbox (collection, events, bytes, docs) VALUES (?1, ?2, ?3, ?4)",
                params![collection.name(), events as i64, bytes as i64, blob],
            )?;
            let dropped = inner.enforce_cap(&tx, inner.bytes.load(Relaxed) + bytes)?;
            tx.commit()?;
            inner.events[collection.index()].fetch_add(events, Relaxed);
            inner.bytes.fetch_add(bytes, Relaxed);
            let mut dropped_events = 0;
            for row in &dropped {
                inner.forget(row);
                dropped_events += row.events;
            }
            drop(conn);
            if dropped_events > 0 {
                let total = inner.dropped.fetch_add(dropped_events, Relaxed) + dropped_events;
                tracing::warn!(
                    "outbox over mongodb.max_outbox_bytes ({} bytes): dropped the oldest {dropped_events} events \
                     ({total} since start); they are lost. MongoDB has been unreachable for long; raise the cap or fix MongoDB",
                    inner.cap_bytes
                );
            }
            inner.pushed.notify_one();
            Ok(())
        })
        .await
    }

    /// The oldest batch of `collection`.
    pub async fn oldest(&self, collection: Collection) -> Result<Option<Taken>, StoreError> {
        self.oldest_after(collection, 0).await
    }

    /// The oldest batch of `collection` after row `after`: the forwarder reads the next batch while
    /// the one before is still being sent (and so still here).
    pub async fn oldest_after(&self, collection: Collection, after: i64) -> Result<Option<Taken>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.lock()?;
            let row = conn
                .prepare_cached(
                    "SELECT seq, events, docs FROM outbox WHERE collection = ?1 AND seq > ?2 ORDER BY seq LIMIT 1",
                )?
                .query_row(params![collection.name(), after], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, raw_bytes(r.get_ref(2)?)))
                })
                .optional()?;
            let Some((seq, events, blob)) = row else {
                return Ok(None);
            };
            Ok(Some(match split_documents(&blob) {
                Ok(docs) => Taken::Batch(Pending { seq, collection, docs }),
                Err(reason) => Taken::Corrupt {
                    seq,
                    events: events.max(0) as u64,
                    reason,
                    head: blob[..blob.len().min(crate::event::MAX_RAW_BYTES)].to_vec(),
                },
            }))
        })
        .await
    }

    /// Every document of `collection` waiting (readable ones), for totals that must count them.
    pub async fn documents(&self, collection: Collection) -> Result<Vec<RawDocumentBuf>, StoreError> {
        if self.events_of(collection) == 0 {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.lock()?;
            let mut stmt = conn.prepare_cached("SELECT docs FROM outbox WHERE collection = ?1 ORDER BY seq")?;
            let blobs = stmt.query_map([collection.name()], |r| Ok(raw_bytes(r.get_ref(0)?)))?;
            let mut docs = Vec::new();
            for blob in blobs {
                docs.extend(split_documents(&blob?).unwrap_or_default());
            }
            Ok(docs)
        })
        .await
    }

    /// Removes a batch once MongoDB has it.
    pub async fn remove(&self, seq: i64) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.lock()?;
            if let Some(row) = delete(&conn, seq)? {
                inner.forget(&row);
            }
            Ok(())
        })
        .await
    }

    /// Removes a batch that cannot be delivered (already set aside); its events count as dropped.
    pub async fn discard(&self, seq: i64) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.lock()?;
            if let Some(row) = delete(&conn, seq)? {
                inner.forget(&row);
                inner.dropped.fetch_add(row.events, Relaxed);
            }
            Ok(())
        })
        .await
    }
}

/// A deleted row's size.
struct Row {
    collection: Option<Collection>,
    events: u64,
    bytes: u64,
}

impl Inner {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        // A panic while holding it leaves a connection behind, not half-changed data: SQLite
        // rolls back what was not committed. Keep using it.
        Ok(self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn forget(&self, row: &Row) {
        if let Some(c) = row.collection {
            self.events[c.index()].fetch_sub(row.events, Relaxed);
        }
        self.bytes.fetch_sub(row.bytes, Relaxed);
    }

    /// Drops the oldest batches while `bytes` is over the cap (never the last one left); returns
    /// the rows dropped.
    fn enforce_cap(&self, conn: &Connection, mut bytes: u64) -> Result<Vec<Row>, StoreError> {
        let mut dropped = Vec::new();
        while bytes > self.cap_bytes {
            let oldest: Vec<i64> = conn
                .prepare_cached("SELECT seq FROM outbox ORDER BY seq LIMIT 2")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if oldest.len() < 2 {
                break;
            }
            if let Some(row) = delete(conn, oldest[0])? {
                bytes -= row.bytes;
                dropped.push(row);
            }
        }
        Ok(dropped)
    }
}

fn collection_named(name: &str) -> Option<Collection> {
    Collection::ALL.into_iter().find(|c| c.name() == name)
}

/// Deletes row `seq`; returns what it held.
fn delete(conn: &Connection, seq: i64) -> Result<Option<Row>, StoreError> {
    let row: Option<(String, i64, i64)> = conn
        .query_row(
            "DELETE FROM outbox WHERE seq = ?1 RETURNING collection, events, bytes",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.map(|(name, events, bytes)| Row {
        collection: collection_named(&name),
        events: events.max(0) as u64,
        bytes: bytes.max(0) as u64,
    }))
}

/// The bytes a row's `docs` holds, whatever type a damaged file gives it (never a panic on bad UTF-8).
fn raw_bytes(v: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    match v {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
        _ => Vec::new(),
    }
}

/// Splits concatenated BSON documents (each starts with its own length).
fn split_documents(blob: &[u8]) -> Result<Vec<RawDocumentBuf>, String> {
    let mut docs = Vec::new();
    let mut at = 0;
    while at < blob.len() {
        let len_bytes: [u8; 4] = blob
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or("truncated length")?;
        let len = i32::from_le_bytes(len_bytes);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= blob.len() && len >= 5)
            .ok_or_else(|| format!("bad document length {len} at byte {at}"))?;
        docs.push(RawDocumentBuf::from_bytes(blob[at..end].to_vec()).map_err(|e| e.to_string())?);
        at = end;
    }
    Ok(docs)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::permanent(format!("outbox task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: i32, pad: usize) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("i", i);
        d.append("pad", "x".repeat(pad));
        d
    }

    #[tokio::test]
    async fn batches_come_back_oldest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let outbox = Outbox::open(&path, Synchronous::Normal, 1 << 30).unwrap();
        outbox
            .push(Collection::Logs, vec![doc(1, 10), doc(2, 10)])
            .await
            .unwrap();
        outbox.push(Collection::Cost, vec![doc(3, 10)]).await.unwrap();
        outbox.push(Collection::Logs, vec![doc(4, 10)]).await.unwrap();
        assert_eq!(outbox.events(), 4);
        drop(outbox);
        let outbox = Outbox::open(&path, Synchronous::Normal, 1 << 30).unwrap();
        assert_eq!(outbox.events(), 4, "totals are read back at start");
        let Some(Taken::Batch(first)) = outbox.oldest(Collection::Logs).await.unwrap() else {
            panic!("a batch")
        };
        assert_eq!(first.collection, Collection::Logs);
        assert_eq!(first.docs, vec![doc(1, 10), doc(2, 10)]);
        let Some(Taken::Batch(after_first)) = outbox.oldest_after(Collection::Logs, first.seq).await.unwrap() else {
            panic!("the batch after the first")
        };
        assert_eq!(
            after_first.docs,
            vec![doc(4, 10)],
            "read ahead while the first is still there"
        );
        outbox.remove(first.seq).await.unwrap();
        outbox.remove(after_first.seq).await.unwrap();
        let Some(Taken::Batch(second)) = outbox.oldest(Collection::Cost).await.unwrap() else {
            panic!("a batch")
        };
        assert_eq!((second.collection, second.docs.len()), (Collection::Cost, 1));
        outbox.remove(second.seq).await.unwrap();
        assert!(outbox.oldest(Collection::Logs).await.unwrap().is_none());
        assert_eq!((outbox.events(), outbox.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn over_the_cap_the_oldest_batches_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("o.db"), Synchronous::Normal, 10_000).unwrap();
        for i in 0..10 {
            outbox.push(Collection::Logs, vec![doc(i, 3000)]).await.unwrap();
        }
        assert!(outbox.bytes() <= 10_000);
        assert_eq!(outbox.dropped() + outbox.events(), 10);
        assert!(outbox.dropped() >= 7);
        let Some(Taken::Batch(oldest)) = outbox.oldest(Collection::Logs).await.unwrap() else {
            panic!("a batch")
        };
        assert_eq!(
            oldest.docs[0].get_i32("i").unwrap(),
            outbox.dropped() as i32,
            "the newest are kept"
        );
    }
}
