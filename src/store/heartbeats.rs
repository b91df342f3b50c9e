//! Heartbeats: each collector says, in the store it writes to, that it is alive, so that the
//! collectors sharing one MongoDB notice when one of them goes silent (crashed, hung, cut off).
//!
//! A beat increments a counter rather than stamping a time: the others judge silence by when they
//! last *saw the counter move*, on their own clock, so two hosts whose clocks disagree cannot make a
//! living collector look dead or a dead one alive. The times a beat carries are only for people.
//! A collector that stops cleanly says so (`stopped_at`): a planned stop is not an outage.

use std::future::Future;

use serde::Serialize;

use super::StoreError;
use crate::event::Timestamp;

/// One collector's latest beat, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    /// The installation's id (16 hex digits, from the state directory): stable across restarts.
    pub collector: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: Timestamp,
    /// The beating collector's clock at its latest beat (for display).
    pub beat_at: Timestamp,
    /// Beats since the collector's first start; moves at every beat.
    pub beats: u64,
    /// How often it promised to beat, in milliseconds.
    pub every_ms: u64,
    /// Set by a clean stop, cleared by the next start.
    pub stopped_at: Option<Timestamp>,
}

/// What a collector says about itself at a beat (the store counts the beats).
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub collector: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: Timestamp,
    pub at: Timestamp,
    pub every_ms: u64,
    /// A clean stop.
    pub stopping: bool,
}

pub trait Heartbeats: Clone + Send + Sync + 'static {
    /// Records a beat: one document per collector, its counter incremented.
    fn beat(&self, beat: Beat) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every collector's latest beat.
    fn heartbeats(&self) -> impl Future<Output = Result<Vec<Heartbeat>, StoreError>> + Send;
}

/// The embedded store's table (created with the schema): heartbeats are state, not events, and
/// never expire.
pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS collector_heartbeats (
        collector TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, version TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL, beat_at_ms INTEGER NOT NULL, beats INTEGER NOT NULL,
        every_ms INTEGER NOT NULL, stopped_at_ms INTEGER);";

mod embedded_impl {
    use rusqlite::params;

    use super::*;
    use crate::store::EmbeddedStore;

    impl Heartbeats for EmbeddedStore {
        fn beat(&self, beat: Beat) -> impl Future<Output = Result<(), StoreError>> + Send {
            self.with_write(move |conn, _| {
                let stopped = beat.stopping.then_some(beat.at.as_millis());
                conn.execute(
                    "INSERT INTO collector_heartbeats VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)
                     ON CONFLICT (collector) DO UPDATE SET host = ?2, pid = ?3, version = ?4, started_at_ms = ?5,
                         beat_at_ms = ?6, beats = beats + 1, every_ms = ?7, stopped_at_ms = ?8",
                    params![
                        beat.collector,
                        beat.host,
                        beat.pid,
                        beat.version,
                        beat.started_at.as_millis(),
                        beat.at.as_millis(),
                        beat.every_ms as i64,
                        stopped
                    ],
                )?;
                Ok(())
            })
        }

        fn heartbeats(&self) -> impl Future<Output = Result<Vec<Heartbeat>, StoreError>> + Send {
            self.with_read(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT collector, host, pid, version, started_at_ms, beat_at_ms, beats, every_ms, stopped_at_ms
                     FROM collector_heartbeats ORDER BY collector",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(Heartbeat {
                        collector: r.get(0)?,
                        host: r.get(1)?,
                        pid: r.get(2)?,
                        version: r.get(3)?,
                        started_at: Timestamp(r.get(4)?),
                        beat_at: Timestamp(r.get(5)?),
                        beats: r.get::<_, i64>(6)? as u64,
                        every_ms: r.get::<_, i64>(7)? as u64,
                        stopped_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
        }
    }
}

mod mongo_impl {
    use bson::{doc, Document};

    use super::*;
    use crate::store::MongoStore;

    fn date(t: Timestamp) -> bson::DateTime {
        bson::DateTime::from_millis(t.as_millis())
    }

    fn error(e: mongodb::error::Error) -> StoreError {
        StoreError::transient(format!("MongoDB: {e}"))
    }

    /// `collector_state` holds one document per collector, `{name: "heartbeat:<collector>", …}`.
    const PREFIX: &str = "heartbeat:";

    impl Heartbeats for MongoStore {
        fn beat(&self, beat: Beat) -> impl Future<Output = Result<(), StoreError>> + Send {
            let this = self.clone();
            async move {
                let state = this.state_documents();
                let stopped = if beat.stopping {
                    bson::Bson::DateTime(date(beat.at))
                } else {
                    bson::Bson::Null
                };
                let update = doc! {
                    "$set": {
                        "kind": "heartbeat", "collector": &beat.collector, "host": &beat.host,
                        "pid": i64::from(beat.pid), "version": &beat.version,
                        "started_at": date(beat.started_at), "beat_at": date(beat.at),
                        "every_ms": beat.every_ms as i64, "stopped_at": stopped,
                    },
                    "$inc": { "beats": 1_i64 },
                };
                let call = state
                    .update_one(doc! { "name": format!("{PREFIX}{}", beat.collector) }, update)
                    .upsert(true);
                match tokio::time::timeout(this.write_timeout(), call).await {
                    Ok(result) => result.map(|_| ()).map_err(error),
                    Err(_) => Err(StoreError::transient(
                        "MongoDB: no answer to the heartbeat within mongodb.write_timeout",
                    )),
                }
            }
        }

        fn heartbeats(&self) -> impl Future<Output = Result<Vec<Heartbeat>, StoreError>> + Send {
            let this = self.clone();
            async move {
                let state = this.state_documents();
                let read = async {
                    let mut cursor = state.find(doc! { "kind": "heartbeat" }).await.map_err(error)?;
                    let mut out = Vec::new();
                    while cursor.advance().await.map_err(error)? {
                        let d: Document = cursor
                            .deserialize_current()
                            .map_err(|e| StoreError::permanent(format!("a heartbeat cannot be read: {e}")))?;
                        if let Some(hb) = from_document(&d) {
                            out.push(hb);
                        }
                    }
                    out.sort_by(|a, b| a.collector.cmp(&b.collector));
                    Ok(out)
                };
                match tokio::time::timeout(this.write_timeout(), read).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::transient(
                        "MongoDB: no answer to the heartbeat read within mongodb.write_timeout",
                    )),
                }
            }
        }
    }

    /// A stored beat; one a newer or older release wrote differently is skipped, not fatal.
    fn from_document(d: &Document) -> Option<Heartbeat> {
        let time = |k: &str| d.get_datetime(k).ok().map(|t| Timestamp(t.timestamp_millis()));
        let int = |k: &str| match d.get(k)? {
            bson::Bson::Int32(n) => u64::try_from(*n).ok(),
            bson::Bson::Int64(n) => u64::try_from(*n).ok(),
            bson::Bson::Double(n) if *n >= 0.0 => Some(*n as u64),
            _ => None,
        };
        Some(Heartbeat {
            collector: d.get_str("collector").ok()?.to_string(),
            host: d.get_str("host").unwrap_or_default().to_string(),
            pid: int("pid").and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            version: d.get_str("version").unwrap_or_default().to_string(),
            started_at: time("started_at")?,
            beat_at: time("beat_at")?,
            beats: int("beats")?,
            every_ms: int("every_ms").unwrap_or(0),
            stopped_at: time("stopped_at"),
        })
    }
}

/// Runs the same call on whichever store this is.
impl Heartbeats for super::AnyStore {
    fn beat(&self, beat: Beat) -> impl Future<Output = Result<(), StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.beat(beat).await,
                super::AnyStore::Mongo(s) => s.beat(beat).await,
            }
        }
    }

    fn heartbeats(&self) -> impl Future<Output = Result<Vec<Heartbeat>, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.heartbeats().await,
                super::AnyStore::Mongo(s) => s.heartbeats().await,
            }
        }
    }
}
