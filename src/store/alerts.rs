//! Alert state in `api_alerts`, written as conditional updates so that several collectors sharing one
//! MongoDB send each notification once: whoever moves an alert from one state to the next owns the
//! notification for that move ("claims" it); the others see the move already made and stay quiet.
//!
//! The latest occurrence of an alert has the alert's fingerprint as `_id`. When a new occurrence
//! starts, the previous one is kept as history under `<fingerprint>@<started_at ms>`, so the
//! collection holds one document per occurrence, unique by (key, started_at).

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::event::{EventId, Timestamp};
use crate::monitor::vocabulary::{AlertState, Severity, Unit};

/// One occurrence of an alert, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The fingerprint of the rule and its labels.
    pub key: String,
    pub rule: String,
    /// It may rise while the occurrence lasts (a budget alert escalates through its steps).
    pub severity: Severity,
    pub state: AlertState,
    pub title: String,
    pub message: String,
    /// The value when it fired.
    pub value: f64,
    /// The value at the latest evaluation (at the end, for a resolved one); absent until then.
    #[serde(default)]
    pub current: Option<f64>,
    #[serde(default)]
    pub unit: Unit,
    pub threshold: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub started_at: Timestamp,
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
    /// When `current` was measured.
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// When the last notification for it was claimed.
    #[serde(default)]
    pub sent_at: Option<Timestamp>,
    /// Repeat notifications sent so far while firing.
    #[serde(default)]
    pub repeats: u32,
    /// The installation that claimed the latest notification, and whether it has queued it; a
    /// claim whose queueing was cut short by a crash is queued at the next start.
    #[serde(default)]
    pub claimed_by: String,
    #[serde(default)]
    pub queued: bool,
}

impl AlertRecord {
    /// The latest value measured.
    pub fn current_value(&self) -> f64 {
        self.current.unwrap_or(self.value)
    }
}

/// The outcome of trying to start an occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// This call started it: send the notification.
    Claimed,
    /// It already fires (another collector, or an earlier run): adopt it, send nothing.
    AlreadyFiring(Box<AlertRecord>),
}

/// One step of one occurrence that a collector tries to take: the occurrence (its alert's key and
/// when it started), when, and who.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub key: String,
    pub started_at: Timestamp,
    pub now: Timestamp,
    pub by: String,
}

/// What the latest evaluation says of a firing alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub value: f64,
    pub severity: Severity,
    pub title: String,
    pub message: String,
}

/// Conditional writes of alert state. Every method is one atomic step in the store.
pub trait AlertStore: Clone + Send + Sync + 'static {
    /// Starts an occurrence unless the alert already fires.
    fn fire(&self, record: AlertRecord) -> impl Future<Output = Result<Fired, StoreError>> + Send;

    /// Counts one more repeat if the occurrence still fires with `repeats_seen` repeats; true when
    /// this call did (and so sends the repeat).
    fn repeat(
        &self,
        claim: Claim,
        repeats_seen: u32,
        now: Measured,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Raises the occurrence's severity to `to.severity` if it still fires at `from`; true when
    /// this call did (and so sends the escalation).
    fn escalate(
        &self,
        claim: Claim,
        from: Severity,
        to: Measured,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Notes the latest measurement of a firing occurrence (its value and words); claims nothing.
    fn refresh(
        &self,
        key: String,
        started_at: Timestamp,
        now: Timestamp,
        measured: Measured,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends the occurrence if it still fires, at `value`; true when this call did.
    fn resolve(&self, claim: Claim, value: f64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that the claimed notification is in the delivery queues.
    fn mark_queued(&self, key: String, started_at: Timestamp) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Occurrences that fire now.
    fn firing(&self) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send;
}

/// The names a severity may be stored under (`medium` by earlier versions).
fn stored_names(s: Severity) -> &'static [&'static str] {
    match s {
        Severity::Warning => &["warning", "medium"],
        Severity::Info => &["info"],
        Severity::High => &["high"],
        Severity::Critical => &["critical"],
    }
}

/// The `_id` of an alert's latest occurrence: an ObjectId made from its fingerprint (both stores
/// then hold the same ids, and MongoDB's default `_id` type is kept).
pub fn current_id(key: &str) -> EventId {
    id_of(key.as_bytes(), b"")
}

/// The `_id` an occurrence keeps once a newer one replaced it.
pub fn history_id(key: &str, started_at: Timestamp) -> EventId {
    id_of(key.as_bytes(), &started_at.as_millis().to_le_bytes())
}

fn id_of(key: &[u8], salt: &[u8]) -> EventId {
    let fnv = |seed: u64, parts: &[&[u8]]| {
        parts
            .iter()
            .flat_map(|p| p.iter())
            .fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let a = fnv(0xcbf2_9ce4_8422_2325, &[key, b"\0", salt]);
    let b = fnv(0x8422_2325_cbf2_9ce4, &[salt, b"\0", key]);
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes()[..4]);
    EventId(bytes)
}

impl AlertRecord {
    /// The stored JSON document (times as RFC 3339, as every embedded document).
    pub fn to_json(&self, id: EventId, host: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("_id".into(), id.to_string().into());
            m.insert("host".into(), host.into());
        }
        v
    }

    pub fn from_json(v: serde_json::Value) -> Result<AlertRecord, StoreError> {
        serde_json::from_value(v).map_err(|e| StoreError::permanent(format!("a stored alert cannot be read: {e}")))
    }
}

mod embedded_impl {
    use rusqlite::{params, OptionalExtension};

    use super::*;
    use crate::store::EmbeddedStore;

    impl AlertStore for EmbeddedStore {
        fn fire(&self, record: AlertRecord) -> impl Future<Output = Result<Fired, StoreError>> + Send {
            self.with_write(move |conn, host| {
                let tx = conn.transaction()?;
                let current: Option<String> = tx
                    .query_row(
                        "SELECT doc FROM api_alerts WHERE id = ?1",
                        [&current_id(&record.key).bytes()[..]],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(doc) = current {
                    let old = AlertRecord::from_json(
                        serde_json::from_str(&doc).map_err(|e| StoreError::permanent(e.to_string()))?,
                    )?;
                    if old.state == AlertState::Firing {
                        return Ok(Fired::AlreadyFiring(Box::new(old)));
                    }
                    // The previous occurrence stays, as history.
                    let history = history_id(&old.key, old.started_at);
                    tx.execute(
                        "UPDATE OR REPLACE api_alerts SET id = ?1, doc = json_set(doc, '$._id', ?2) WHERE id = ?3",
                        params![
                            &history.bytes()[..],
                            history.to_string(),
                            &current_id(&record.key).bytes()[..]
                        ],
                    )?;
                }
                insert(&tx, current_id(&record.key), &record, host)?;
                tx.commit()?;
                Ok(Fired::Claimed)
            })
        }

        fn repeat(
            &self,
            claim: Claim,
            repeats_seen: u32,
            now: Measured,
        ) -> impl Future<Output = Result<bool, StoreError>> + Send {
            self.with_write(move |conn, _| {
                let n = conn.execute(
                    "UPDATE api_alerts SET doc = json_set(doc, '$.repeats', ?3, '$.current', ?4, '$.title', ?5,
                         '$.message', ?6, '$.sent_at', ?7, '$.updated_at', ?7, '$.claimed_by', ?8, '$.queued', json('false'))
                     WHERE id = ?1 AND state = 'firing' AND started_at_ms = ?2 AND json_extract(doc, '$.repeats') = ?9",
                    params![
                        &current_id(&claim.key).bytes()[..],
                        claim.started_at.as_millis(),
                        repeats_seen + 1,
                        now.value,
                        now.title,
                        now.message,
                        claim.now.to_string(),
                        claim.by,
                        repeats_seen
                    ],
                )?;
                Ok(n == 1)
            })
        }

        fn escalate(
            &self,
            claim: Claim,
            from: Severity,
            to: Measured,
        ) -> impl Future<Output = Result<bool, StoreError>> + Send {
            self.with_write(move |conn, _| {
                let names = stored_names(from);
                let n = conn.execute(
                    "UPDATE api_alerts SET severity = ?3, doc = json_set(doc, '$.severity', ?3, '$.current', ?4,
                         '$.title', ?5, '$.message', ?6, '$.sent_at', ?7, '$.updated_at', ?7, '$.claimed_by', ?8,
                         '$.queued', json('false'))
                     WHERE id = ?1 AND state = 'firing' AND started_at_ms = ?2 AND severity IN (?9, ?10)",
                    params![
                        &current_id(&claim.key).bytes()[..],
                        claim.started_at.as_millis(),
                        to.severity.name(),
                        to.value,
                        to.title,
                        to.message,
                        claim.now.to_string(),
                        claim.by,
                        names[0],
                        names.get(1).copied().unwrap_or(names[0]),
                    ],
                )?;
                Ok(n == 1)
            })
        }

        fn refresh(
            &self,
            key: String,
            started_at: Timestamp,
            now: Timestamp,
            measured: Measured,
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            self.with_write(move |conn, _| {
                conn.execute(
                    "UPDATE api_alerts SET doc = json_set(doc, '$.current', ?3, '$.title', ?4, '$.message', ?5,
                         '$.updated_at', ?6)
                     WHERE id = ?1 AND state = 'firing' AND started_at_ms = ?2",
                    params![
                        &current_id(&key).bytes()[..],
                        started_at.as_millis(),
                        measured.value,
                        measured.title,
                        measured.message,
                        now.to_string()
                    ],
                )?;
                Ok(())
            })
        }

        fn resolve(&self, claim: Claim, value: f64) -> impl Future<Output = Result<bool, StoreError>> + Send {
            self.with_write(move |conn, _| {
                let n = conn.execute(
                    "UPDATE api_alerts SET state = 'resolved', doc = json_set(doc, '$.state', 'resolved', '$.current', ?3,
                         '$.ended_at', ?4, '$.sent_at', ?4, '$.updated_at', ?4, '$.claimed_by', ?5, '$.queued', json('false'))
                     WHERE id = ?1 AND state = 'firing' AND started_at_ms = ?2",
                    params![
                        &current_id(&claim.key).bytes()[..],
                        claim.started_at.as_millis(),
                        value,
                        claim.now.to_string(),
                        claim.by
                    ],
                )?;
                Ok(n == 1)
            })
        }

        fn mark_queued(
            &self,
            key: String,
            started_at: Timestamp,
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            self.with_write(move |conn, _| {
                conn.execute(
                    "UPDATE api_alerts SET doc = json_set(doc, '$.queued', json('true')) WHERE id = ?1 AND started_at_ms = ?2",
                    params![&current_id(&key).bytes()[..], started_at.as_millis()],
                )?;
                Ok(())
            })
        }

        fn firing(&self) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
            self.with_read(|conn| {
                let mut stmt = conn.prepare("SELECT doc FROM api_alerts WHERE state = 'firing'")?;
                let docs = stmt.query_map([], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for doc in docs {
                    let value = serde_json::from_str(&doc?).map_err(|e| StoreError::permanent(e.to_string()))?;
                    out.push(AlertRecord::from_json(value)?);
                }
                Ok(out)
            })
        }
    }

    fn insert(tx: &rusqlite::Transaction<'_>, id: EventId, r: &AlertRecord, host: &str) -> Result<(), StoreError> {
        tx.execute(
            "INSERT OR REPLACE INTO api_alerts (id, started_at_ms, key, state, rule, severity, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &id.bytes()[..],
                r.started_at.as_millis(),
                r.key,
                r.state.as_str(),
                r.rule,
                r.severity.name(),
                r.to_json(id, host).to_string()
            ],
        )?;
        Ok(())
    }
}

mod mongo_impl {
    use bson::{doc, Bson, Document};
    use mongodb::options::ReturnDocument;

    use super::*;
    use crate::store::mongo::to_json;
    use crate::store::MongoStore;

    /// The BSON document: the JSON shape with times as Dates.
    fn to_bson(r: &AlertRecord, id: EventId, host: &str) -> Document {
        let mut d = bson::to_document(&r.to_json(id, host)).unwrap_or_default();
        d.insert("_id", oid(id));
        for field in ["started_at", "ended_at", "sent_at", "updated_at"] {
            let t = match field {
                "started_at" => Some(r.started_at),
                "ended_at" => r.ended_at,
                "updated_at" => r.updated_at,
                _ => r.sent_at,
            };
            if let Some(t) = t {
                d.insert(field, bson::DateTime::from_millis(t.as_millis()));
            }
        }
        d
    }

    fn oid(id: EventId) -> bson::oid::ObjectId {
        bson::oid::ObjectId::from_bytes(*id.bytes())
    }

    fn date(t: Timestamp) -> bson::DateTime {
        bson::DateTime::from_millis(t.as_millis())
    }

    fn error(e: mongodb::error::Error) -> StoreError {
        StoreError::transient(format!("MongoDB: {e}"))
    }

    /// A call that gives up after `limit` (`mongodb.write_timeout`): a MongoDB that hangs must not
    /// stall the monitor, whose alerts are needed most then.
    async fn within<T>(
        limit: std::time::Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(StoreError::transient(format!(
                "MongoDB: no answer within mongodb.write_timeout ({})",
                crate::units::HumanDuration(limit)
            )))
        })
    }

    impl AlertStore for MongoStore {
        fn fire(&self, record: AlertRecord) -> impl Future<Output = Result<Fired, StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                let coll = this.documents(crate::event::Collection::Alerts);
                let id = oid(current_id(&record.key));
                // Usually it already fires (an earlier run, another collector): say so without a
                // write. The upsert below settles the race when two collectors start it at once.
                let firing = coll
                    .find_one(doc! { "_id": id, "state": "firing" })
                    .await
                    .map_err(error)?;
                if let Some(d) = firing {
                    return Ok(Fired::AlreadyFiring(Box::new(AlertRecord::from_json(to_json(
                        Bson::Document(d),
                    ))?)));
                }
                let new = to_bson(&record, current_id(&record.key), this.host());
                let before = coll
                    .find_one_and_replace(doc! { "_id": id, "state": { "$ne": "firing" } }, new)
                    .upsert(true)
                    .return_document(ReturnDocument::Before)
                    .await;
                match before {
                    Ok(Some(mut old)) => {
                        // The previous occurrence stays, as history (once, whoever gets here first).
                        let started = old
                            .get_datetime("started_at")
                            .map(|t| t.timestamp_millis())
                            .unwrap_or(0);
                        old.insert("_id", oid(history_id(&record.key, Timestamp(started))));
                        let _ = coll.insert_one(old).await;
                        Ok(Fired::Claimed)
                    }
                    Ok(None) => Ok(Fired::Claimed),
                    // Usually the upsert lost a race (a duplicate key: another collector's firing
                    // occurrence holds the `_id`). Whatever the error, what fires now decides: the
                    // caller must not take a lost race for a store it cannot reach.
                    Err(e) => {
                        let current = coll
                            .find_one(doc! { "_id": id, "state": "firing" })
                            .await
                            .map_err(error)?;
                        match current {
                            Some(d) => Ok(Fired::AlreadyFiring(Box::new(AlertRecord::from_json(to_json(
                                Bson::Document(d),
                            ))?))),
                            None if crate::store::mongo::is_duplicate_key(&e) => Err(StoreError::transient(
                                "the alert changed while it was being claimed; trying again",
                            )),
                            None => Err(error(e)),
                        }
                    }
                }
            })
        }

        fn repeat(
            &self,
            claim: Claim,
            repeats_seen: u32,
            now: Measured,
        ) -> impl Future<Output = Result<bool, StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                let r = this
                    .documents(crate::event::Collection::Alerts)
                    .update_one(
                        doc! { "_id": oid(current_id(&claim.key)), "state": "firing", "started_at": date(claim.started_at), "repeats": i64::from(repeats_seen) },
                        doc! { "$set": {
                            "repeats": i64::from(repeats_seen) + 1, "current": now.value, "title": now.title,
                            "message": now.message, "sent_at": date(claim.now), "updated_at": date(claim.now),
                            "claimed_by": claim.by, "queued": false,
                        } },
                    )
                    .await
                    .map_err(error)?;
                Ok(r.modified_count == 1)
            })
        }

        fn escalate(
            &self,
            claim: Claim,
            from: Severity,
            to: Measured,
        ) -> impl Future<Output = Result<bool, StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                let r = this
                    .documents(crate::event::Collection::Alerts)
                    .update_one(
                        doc! {
                            "_id": oid(current_id(&claim.key)), "state": "firing", "started_at": date(claim.started_at),
                            "severity": { "$in": stored_names(from).to_vec() },
                        },
                        doc! { "$set": {
                            "severity": to.severity.name(), "current": to.value, "title": to.title,
                            "message": to.message, "sent_at": date(claim.now), "updated_at": date(claim.now),
                            "claimed_by": claim.by, "queued": false,
                        } },
                    )
                    .await
                    .map_err(error)?;
                Ok(r.modified_count == 1)
            })
        }

        fn refresh(
            &self,
            key: String,
            started_at: Timestamp,
            now: Timestamp,
            measured: Measured,
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                this.documents(crate::event::Collection::Alerts)
                    .update_one(
                        doc! { "_id": oid(current_id(&key)), "state": "firing", "started_at": date(started_at) },
                        doc! { "$set": {
                            "current": measured.value, "title": measured.title, "message": measured.message,
                            "updated_at": date(now),
                        } },
                    )
                    .await
                    .map_err(error)?;
                Ok(())
            })
        }

        fn resolve(&self, claim: Claim, value: f64) -> impl Future<Output = Result<bool, StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                let r = this
                    .documents(crate::event::Collection::Alerts)
                    .update_one(
                        doc! { "_id": oid(current_id(&claim.key)), "state": "firing", "started_at": date(claim.started_at) },
                        doc! { "$set": {
                            "state": "resolved", "current": value, "ended_at": date(claim.now), "sent_at": date(claim.now),
                            "updated_at": date(claim.now), "claimed_by": claim.by, "queued": false,
                        } },
                    )
                    .await
                    .map_err(error)?;
                Ok(r.modified_count == 1)
            })
        }

        fn mark_queued(
            &self,
            key: String,
            started_at: Timestamp,
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                this.documents(crate::event::Collection::Alerts)
                    .update_one(
                        doc! { "_id": oid(current_id(&key)), "started_at": date(started_at) },
                        doc! { "$set": { "queued": true } },
                    )
                    .await
                    .map_err(error)?;
                Ok(())
            })
        }

        fn firing(&self) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
            let this = self.clone();
            let limit = this.write_timeout();
            within(limit, async move {
                use futures_util::TryStreamExt;
                let docs: Vec<Document> = this
                    .documents(crate::event::Collection::Alerts)
                    .find(doc! { "state": "firing" })
                    .await
                    .map_err(error)?
                    .try_collect()
                    .await
                    .map_err(error)?;
                docs.into_iter()
                    .map(|d| AlertRecord::from_json(to_json(Bson::Document(d))))
                    .collect()
            })
        }
    }
}

/// Runs the same call on whichever store this is.
impl AlertStore for super::AnyStore {
    fn fire(&self, record: AlertRecord) -> impl Future<Output = Result<Fired, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.fire(record).await,
                super::AnyStore::Mongo(s) => s.fire(record).await,
            }
        }
    }

    fn repeat(
        &self,
        claim: Claim,
        repeats_seen: u32,
        now: Measured,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.repeat(claim, repeats_seen, now).await,
                super::AnyStore::Mongo(s) => s.repeat(claim, repeats_seen, now).await,
            }
        }
    }

    fn escalate(
        &self,
        claim: Claim,
        from: Severity,
        to: Measured,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.escalate(claim, from, to).await,
                super::AnyStore::Mongo(s) => s.escalate(claim, from, to).await,
            }
        }
    }

    fn refresh(
        &self,
        key: String,
        started_at: Timestamp,
        now: Timestamp,
        measured: Measured,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.refresh(key, started_at, now, measured).await,
                super::AnyStore::Mongo(s) => s.refresh(key, started_at, now, measured).await,
            }
        }
    }

    fn resolve(&self, claim: Claim, value: f64) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.resolve(claim, value).await,
                super::AnyStore::Mongo(s) => s.resolve(claim, value).await,
            }
        }
    }

    fn mark_queued(&self, key: String, started_at: Timestamp) -> impl Future<Output = Result<(), StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.mark_queued(key, started_at).await,
                super::AnyStore::Mongo(s) => s.mark_queued(key, started_at).await,
            }
        }
    }

    fn firing(&self) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        let this = self.clone();
        async move {
            match this {
                super::AnyStore::Embedded(s) => s.firing().await,
                super::AnyStore::Mongo(s) => s.firing().await,
            }
        }
    }
}
