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

use super::embedded::Synchronous;
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
    events: AtomicU64,
    dropped: AtomicU64,
    pushed: Notify,
}

/// The oldest batch waiting.
pub struct Pending {
    pub seq: i64,
    pub collection: Collection,
    pub docs: Vec<RawDocumentBuf>,
}

impl Outbox {
    pub fn open(path: &Path, synchronous: Synchronous, cap_bytes: u64) -> Result<Outbox, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError(format!("cannot open the outbox {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let sync = synchronous.pragma();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync};
             CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL,
                 events INTEGER NOT NULL, bytes INTEGER NOT NULL, docs BLOB NOT NULL);"
        ))?;
        let (events, bytes): (i64, i64) = conn.query_row(
            "SELECT coalesce(sum(events), 0), coalesce(sum(bytes), 0) FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                cap_bytes,
                bytes: AtomicU64::new(bytes as u64),
                events: AtomicU64::new(events as u64),
                dropped: AtomicU64::new(0),
                pushed: Notify::new(),
            }),
        })
    }

    /// Events waiting.
    pub fn events(&self) -> u64 {
        self.inner.events.load(Relaxed)
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
            let (dropped_events, dropped_bytes) = inner.enforce_cap(&tx, inner.bytes.load(Relaxed) + bytes)?;
            tx.commit()?;
            inner.events.fetch_add(events, Relaxed);
            inner.bytes.fetch_add(bytes, Relaxed);
            inner.events.fetch_sub(dropped_events, Relaxed);
            inner.bytes.fetch_sub(dropped_bytes, Relaxed);
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

    pub async fn oldest(&self) -> Result<Option<Pending>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.lock()?;
            let row = conn
                .query_row(
                    "SELECT seq, collection, docs FROM outbox ORDER BY seq LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?)),
                )
                .optional()?;
            let Some((seq, name, blob)) = row else { return Ok(None) };
            let collection = Collection::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .ok_or_else(|| StoreError(format!("outbox row {seq} names an unknown collection {name:?}")))?;
            Ok(Some(Pending {
                seq,
                collection,
                docs: split_documents(&blob, seq)?,
            }))
        })
        .await
    }

    /// Removes a batch once MongoDB has it.
    pub async fn remove(&self, seq: i64) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.lock()?;
            let (events, bytes) = delete(&conn, seq)?;
            inner.events.fetch_sub(events, Relaxed);
            inner.bytes.fetch_sub(bytes, Relaxed);
            Ok(())
        })
        .await
    }
}

impl Inner {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError("the outbox lock was poisoned by a panic".into()))
    }

    /// Drops the oldest batches while `bytes` is over the cap (never the last one left); returns the
    /// events and bytes dropped.
    fn enforce_cap(&self, conn: &Connection, mut bytes: u64) -> Result<(u64, u64), StoreError> {
        let (mut dropped_events, mut dropped_bytes) = (0, 0);
        while bytes > self.cap_bytes {
            let oldest: Vec<i64> = conn
                .prepare_cached("SELECT seq FROM outbox ORDER BY seq LIMIT 2")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if oldest.len() < 2 {
                break;
            }
            let (e, b) = delete(conn, oldest[0])?;
            dropped_events += e;
            dropped_bytes += b;
            bytes -= b;
        }
        Ok((dropped_events, dropped_bytes))
    }
}

/// Deletes row `seq`; returns its events and bytes.
fn delete(conn: &Connection, seq: i64) -> Result<(u64, u64), StoreError> {
    let row: Option<(i64, i64)> = conn
        .query_row(
            "DELETE FROM outbox WHERE seq = ?1 RETURNING events, bytes",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (events, bytes) = row.unwrap_or((0, 0));
    Ok((events as u64, bytes as u64))
}

/// Splits concatenated BSON documents (each starts with its own length).
fn split_documents(blob: &[u8], seq: i64) -> Result<Vec<RawDocumentBuf>, StoreError> {
    let corrupt = |why: &str| StoreError(format!("outbox row {seq} is corrupt ({why})"));
    let mut docs = Vec::new();
    let mut at = 0;
    while at < blob.len() {
        let len_bytes: [u8; 4] = blob
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("truncated length"))?;
        let len = i32::from_le_bytes(len_bytes);
        let end = usize::try_from(len)
            .ok()
            .map(|l| at + l)
            .filter(|&e| e <= blob.len() && len >= 5)
            .ok_or_else(|| corrupt("bad length"))?;
        docs.push(RawDocumentBuf::from_bytes(blob[at..end].to_vec()).map_err(|e| corrupt(&e.to_string()))?);
        at = end;
    }
    Ok(docs)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError(format!("outbox task failed: {e}")))?
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
        assert_eq!(outbox.events(), 3);
        drop(outbox);
        let outbox = Outbox::open(&path, Synchronous::Normal, 1 << 30).unwrap();
        assert_eq!(outbox.events(), 3, "totals are read back at start");
        let first = outbox.oldest().await.unwrap().unwrap();
        assert_eq!(first.collection, Collection::Logs);
        assert_eq!(first.docs, vec![doc(1, 10), doc(2, 10)]);
        outbox.remove(first.seq).await.unwrap();
        let second = outbox.oldest().await.unwrap().unwrap();
        assert_eq!((second.collection, second.docs.len()), (Collection::Cost, 1));
        outbox.remove(second.seq).await.unwrap();
        assert!(outbox.oldest().await.unwrap().is_none());
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
        let oldest = outbox.oldest().await.unwrap().unwrap();
        assert_eq!(
            oldest.docs[0].get_i32("i").unwrap(),
            outbox.dropped() as i32,
            "the newest are kept"
        );
    }
}
