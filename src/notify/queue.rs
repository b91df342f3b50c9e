//! The durable queues: one row per (receiver, notification) in `notify_queue`, in the state
//! directory's SQLite file.
//!
//! A row is `pending` until its delivery is answered: then `delivered`, or `failed` when given up
//! (with the answer kept in `answer`). Rows are grouped into deliveries by `batch`, set when a
//! delivery is first tried and never changed after, so that every retry carries the same id.
//! Finished rows are kept for [`HISTORY_MS`], so that a notification enqueued again (a monitor
//! replaying after a crash) is recognised by its id and not sent twice.
//!
//! `notify_active` holds the firing alerts of Alertmanager receivers (re-posted until resolved);
//! `notify_posts` the times of recent posts, so that a restart does not reset a vendor's rate limit.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::Notification;
use crate::event::Timestamp;
use crate::monitor::vocabulary::AlertState;
use crate::store::sqlite::{open_connection, Synchronous};

/// How long delivered and given-up rows are kept: 7 days.
pub const HISTORY_MS: i64 = 7 * 86_400_000;

#[derive(Clone)]
pub struct Queue {
    conn: Arc<Mutex<Connection>>,
}

/// A receiver a notification is queued for.
pub struct Target {
    pub receiver: String,
    /// Alertmanager: keep the alert among the active ones while it fires.
    pub keeps_active: bool,
}

/// One queued notification.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    /// `Err` when the stored JSON cannot be read back (a damaged file): given up, never blocking.
    pub notification: Result<Notification, String>,
}

/// A delivery: rows sent together, retried together.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub rows: Vec<Row>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not to be tried before (epoch ms).
    pub next_ms: i64,
}

/// How an attempt ended, as recorded.
pub enum Outcome<'a> {
    Delivered(&'a str),
    Retry { next_ms: i64, answer: &'a str },
    Failed(&'a str),
}

impl Queue {
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Queue, String> {
        crate::state_dir::refuse_symlink(path)?;
        let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
            .map_err(|e| e.to_string())?;
        let setup = || -> rusqlite::Result<()> {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.execute_batch(&format!(
                "PRAGMA synchronous = {};
                 CREATE TABLE IF NOT EXISTS notify_queue (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     receiver TEXT NOT NULL, id TEXT NOT NULL, alert_key TEXT NOT NULL, state TEXT NOT NULL,
                     notification TEXT NOT NULL, enqueued_ms INTEGER NOT NULL,
                     status TEXT NOT NULL DEFAULT 'pending', batch TEXT, attempts INTEGER NOT NULL DEFAULT 0,
                     next_ms INTEGER NOT NULL DEFAULT 0, answer TEXT, done_ms INTEGER,
                     UNIQUE (receiver, id));
                 CREATE INDEX IF NOT EXISTS notify_queue_pending ON notify_queue (receiver, status, seq);
                 CREATE TABLE IF NOT EXISTS notify_active (
                     receiver TEXT NOT NULL, alert_key TEXT NOT NULL, notification TEXT NOT NULL,
                     PRIMARY KEY (receiver, alert_key));
                 CREATE TABLE IF NOT EXISTS notify_posts (receiver TEXT NOT NULL, at_ms INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS notify_posts_receiver ON notify_posts (receiver, at_ms);",
                synchronous.pragma()
            ))?;
            // Old history goes at each start; a daemon that runs for months prunes in `finish`.
            conn.execute(
                "DELETE FROM notify_queue WHERE status != 'pending' AND done_ms < ?1",
                [Timestamp::now().as_millis() - HISTORY_MS],
            )?;
            Ok(())
        };
        setup().map_err(|e| {
            format!(
                "cannot prepare the notification queues in {}: {e}; check that the state directory is writable",
                path.display()
            )
        })?;
        Ok(Queue {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Commits `n` for every target in one transaction; returns the receivers that did not have it.
    pub async fn enqueue(&self, n: Notification, targets: Vec<Target>) -> Result<Vec<String>, String> {
        let json = serde_json::to_string(&n).map_err(|e| format!("cannot encode notification {}: {e}", n.id))?;
        let now = Timestamp::now().as_millis();
        self.blocking(move |conn| {
            let tx = conn.transaction()?;
            let mut added = Vec::new();
            for t in &targets {
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO notify_queue (receiver, id, alert_key, state, notification, enqueued_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![t.receiver, n.id, n.alert_key, n.state.as_str(), json, now],
                )?;
                if inserted == 0 {
                    continue;
                }
                if t.keeps_active {
                    match n.state {
                        AlertState::Firing => tx.execute(
                            "INSERT OR REPLACE INTO notify_active (receiver, alert_key, notification) VALUES (?1, ?2, ?3)",
                            params![t.receiver, n.alert_key, json],
                        )?,
                        AlertState::Resolved => tx.execute(
                            "DELETE FROM notify_active WHERE receiver = ?1 AND alert_key = ?2",
                            params![t.receiver, n.alert_key],
                        )?,
                    };
                }
                added.push(t.receiver.clone());
            }
            tx.commit()?;
            Ok(added)
        })
        .await
        .map_err(|e| format!("cannot queue the notification: {e}"))
    }

    /// Notifications waiting for `receiver`.
    pub fn pending_count_blocking(&self, receiver: &str) -> Result<u64, String> {
        let conn = self.lock();
        conn.query_row(
            "SELECT count(*) FROM notify_queue WHERE receiver = ?1 AND status = 'pending'",
            [receiver],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as u64)
        .map_err(|e| e.to_string())
    }

    /// The delivery already formed and not finished, if any.
    pub async fn open_batch(&self, receiver: &str) -> Result<Option<Batch>, String> {
        let receiver = receiver.to_string();
        self.blocking(move |conn| {
            let head: Option<(String, u32, i64)> = conn
                .query_row(
                    "SELECT batch, attempts, next_ms FROM notify_queue
                     WHERE receiver = ?1 AND status = 'pending' AND batch IS NOT NULL ORDER BY seq LIMIT 1",
                    [&receiver],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((id, attempts, next_ms)) = head else {
                return Ok(None);
            };
            let rows = select_rows(
                conn,
                "WHERE receiver = ?1 AND status = 'pending' AND batch = ?2 ORDER BY seq",
                params![receiver, id],
            )?;
            Ok(Some(Batch {
                id,
                rows,
                attempts,
                next_ms,
            }))
        })
        .await
    }

    /// When the oldest notification not yet in a delivery was enqueued.
    pub async fn oldest_unbatched(&self, receiver: &str) -> Result<Option<i64>, String> {
        let receiver = receiver.to_string();
        self.blocking(move |conn| {
            conn.query_row(
                "SELECT enqueued_ms FROM notify_queue
                 WHERE receiver = ?1 AND status = 'pending' AND batch IS NULL ORDER BY seq LIMIT 1",
                [&receiver],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    /// Up to `max` notifications not yet in a delivery, oldest first.
    pub async fn unbatched(&self, receiver: &str, max: usize) -> Result<Vec<Row>, String> {
        let receiver = receiver.to_string();
        self.blocking(move |conn| {
            select_rows(
                conn,
                "WHERE receiver = ?1 AND status = 'pending' AND batch IS NULL ORDER BY seq LIMIT ?2",
                params![receiver, max as i64],
            )
        })
        .await
    }

    /// Freezes `rows` into the delivery `id`.
    pub async fn form_batch(&self, receiver: &str, id: &str, rows: &[Row]) -> Result<(), String> {
        let (receiver, id) = (receiver.to_string(), id.to_string());
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        self.blocking(move |conn| {
            let tx = conn.transaction()?;
            for seq in &seqs {
                tx.execute(
                    "UPDATE notify_queue SET batch = ?3 WHERE receiver = ?1 AND seq = ?2 AND batch IS NULL",
                    params![receiver, seq, id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records how an attempt at delivery `id` ended.
    pub async fn record(&self, receiver: &str, id: &str, outcome: Outcome<'_>) -> Result<(), String> {
        let now = Timestamp::now().as_millis();
        let (status, next_ms, answer) = match outcome {
            Outcome::Delivered(a) => ("delivered", None, a),
            Outcome::Retry { next_ms, answer } => ("pending", Some(next_ms), answer),
            Outcome::Failed(a) => ("failed", None, a),
        };
        let (receiver, id, answer) = (receiver.to_string(), id.to_string(), answer.to_string());
        self.blocking(move |conn| {
            conn.execute(
                "UPDATE notify_queue SET status = ?3, attempts = attempts + 1, next_ms = coalesce(?4, next_ms),
                     answer = ?5, done_ms = CASE WHEN ?3 = 'pending' THEN NULL ELSE ?6 END
                 WHERE receiver = ?1 AND batch = ?2 AND status = 'pending'",
                params![receiver, id, status, next_ms, answer, now],
            )?;
            if status != "pending" {
                conn.execute(
                    "DELETE FROM notify_queue WHERE status != 'pending' AND done_ms < ?1",
                    [now - HISTORY_MS],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Gives up single rows that cannot be read back.
    pub async fn fail_rows(&self, receiver: &str, seqs: Vec<i64>, answer: &str) -> Result<(), String> {
        let (receiver, answer) = (receiver.to_string(), answer.to_string());
        let now = Timestamp::now().as_millis();
        self.blocking(move |conn| {
            for seq in seqs {
                conn.execute(
                    "UPDATE notify_queue SET status = 'failed', answer = ?3, done_ms = ?4 WHERE receiver = ?1 AND seq = ?2",
                    params![receiver, seq, answer, now],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The firing alerts of an Alertmanager receiver.
    pub async fn active(&self, receiver: &str) -> Result<Vec<Notification>, String> {
        let receiver = receiver.to_string();
        self.blocking(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT notification FROM notify_active WHERE receiver = ?1 ORDER BY alert_key")?;
            let rows = stmt.query_map([&receiver], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for json in rows {
                // A damaged row is skipped: the next firing notification of that alert replaces it.
                if let Ok(n) = serde_json::from_str(&json?) {
                    out.push(n);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records a post at `at_ms`, forgetting those before `forget_before_ms`.
    pub async fn record_post(&self, receiver: &str, at_ms: i64, forget_before_ms: i64) -> Result<(), String> {
        let receiver = receiver.to_string();
        self.blocking(move |conn| {
            conn.execute(
                "INSERT INTO notify_posts (receiver, at_ms) VALUES (?1, ?2)",
                params![receiver, at_ms],
            )?;
            conn.execute(
                "DELETE FROM notify_posts WHERE receiver = ?1 AND at_ms < ?2",
                params![receiver, forget_before_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Times of posts since `since_ms`, oldest first.
    pub async fn posts_since(&self, receiver: &str, since_ms: i64) -> Result<Vec<i64>, String> {
        let receiver = receiver.to_string();
        self.blocking(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT at_ms FROM notify_posts WHERE receiver = ?1 AND at_ms >= ?2 ORDER BY at_ms")?;
            let rows = stmt.query_map(params![receiver, since_ms], |r| r.get(0))?;
            rows.collect::<Result<Vec<i64>, _>>()
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding it leaves uncommitted work, which SQLite rolls back: keep using it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(|e| format!("notification queue: {e}"))
        })
        .await
        .map_err(|e| format!("notification queue task failed: {e}"))?
    }
}

fn select_rows(conn: &Connection, filter: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT seq, notification FROM notify_queue {filter}"))?;
    let rows = stmt.query_map(params, |r| {
        let seq: i64 = r.get(0)?;
        let json = match r.get_ref(1)? {
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                String::from_utf8_lossy(t).into_owned()
            }
            _ => String::new(),
        };
        Ok(Row {
            seq,
            notification: serde_json::from_str(&json)
                .map_err(|e| format!("queued row {seq} cannot be read back ({e}); it was damaged on disk")),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::monitor::vocabulary::Severity;

    pub fn note(id: &str, state: AlertState) -> Notification {
        Notification {
            id: id.into(),
            alert_key: "k".into(),
            rule: "error_rate".into(),
            severity: Severity::High,
            escalated_from: None,
            state,
            title: "t".into(),
            message: "m".into(),
            value: 1.0,
            current: 1.0,
            unit: Default::default(),
            threshold: 0.5,
            labels: Default::default(),
            starts_at: Timestamp(1_795_680_000_000),
            ends_at: None,
        }
    }

    #[tokio::test]
    async fn rows_survive_reopening_are_deduplicated_and_batches_are_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let q = Queue::open(&path, Synchronous::Normal).unwrap();
        let t = || {
            vec![Target {
                receiver: "r".into(),
                keeps_active: true,
            }]
        };
        assert_eq!(q.enqueue(note("a", AlertState::Firing), t()).await.unwrap(), vec!["r"]);
        assert!(q.enqueue(note("a", AlertState::Firing), t()).await.unwrap().is_empty());
        q.enqueue(note("b", AlertState::Firing), t()).await.unwrap();
        drop(q);
        let q = Queue::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(q.pending_count_blocking("r").unwrap(), 2);
        assert_eq!(q.active("r").await.unwrap().len(), 1);
        let rows = q.unbatched("r", 10).await.unwrap();
        q.form_batch("r", "d1", &rows[..1]).await.unwrap();
        let b = q.open_batch("r").await.unwrap().unwrap();
        assert_eq!((b.id.as_str(), b.rows.len()), ("d1", 1));
        q.record(
            "r",
            "d1",
            Outcome::Retry {
                next_ms: 5,
                answer: "HTTP 500",
            },
        )
        .await
        .unwrap();
        let b = q.open_batch("r").await.unwrap().unwrap();
        assert_eq!((b.attempts, b.next_ms), (1, 5));
        q.record("r", "d1", Outcome::Delivered("HTTP 200")).await.unwrap();
        assert!(q.open_batch("r").await.unwrap().is_none());
        assert_eq!(q.pending_count_blocking("r").unwrap(), 1);
        q.enqueue(note("c", AlertState::Resolved), t()).await.unwrap();
        assert!(q.active("r").await.unwrap().is_empty(), "resolved removes the alert");
    }
}
