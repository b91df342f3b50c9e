//! The indexes of each collection, from its descriptor, created idempotently and named as MongoDB
//! names them by default (so indexes the Python app made are recognised). The time index carries
//! the retention as its TTL; a changed retention is applied in place with `collMod`.

use std::time::Duration;

use bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use super::MongoStore;
use crate::event::Collection;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::store::retention::{AppHistory, RetentionConfig};

pub(super) struct IndexSpec {
    pub name: String,
    keys: Document,
    ttl: Option<Duration>,
    sparse: bool,
}

/// The indexes of `c`: time (with the TTL), each indexed field with time, sparse fields alone.
pub(super) fn index_specs(c: Collection, keep: Duration) -> Vec<IndexSpec> {
    let spec = c.spec();
    let time = spec.time_field;
    // MongoDB's TTL is an int32 of seconds (about 68 years).
    let ttl = (!keep.is_zero()).then_some(keep.min(Duration::from_secs(i32::MAX as u64)));
    let mut specs = vec![IndexSpec {
        name: format!("{time}_-1"),
        keys: doc! { time: -1 },
        ttl,
        sparse: false,
    }];
    for field in spec.indexed {
        specs.push(IndexSpec {
            name: format!("{field}_1_{time}_-1"),
            keys: doc! { *field: 1, time: -1 },
            ttl: None,
            sparse: false,
        });
    }
    for field in spec.sparse_indexed {
        let path = document_path(c, field);
        specs.push(IndexSpec {
            name: format!("{path}_1"),
            keys: doc! { path: 1 },
            ttl: None,
            sparse: true,
        });
    }
    specs
}

/// Where a descriptor's field sits in the stored document (`request_id` of a log is in `extra`).
pub(super) fn document_path(c: Collection, field: &str) -> String {
    c.spec().column(field).map_or(field.to_string(), |col| {
        col.json_path.trim_start_matches("$.").to_string()
    })
}

impl MongoStore {
    /// Makes sure the indexes exist: at start, and again whenever MongoDB comes back (a restarted
    /// server may have lost them). Retried until MongoDB answers; every step gives way to shutdown.
    pub(super) async fn keep_indexes(self, retention: RetentionConfig, mut shutdown: Shutdown) {
        loop {
            let mut attempt = 0u32;
            loop {
                let result = tokio::select! {
                    r = self.try_ensure_indexes(&retention) => r,
                    _ = shutdown.recv() => return,
                };
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        if attempt == 0 {
                            tracing::warn!("cannot create MongoDB indexes yet, will retry: {e}");
                        }
                        attempt = attempt.saturating_add(1);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Backoff::STORE.delay(attempt)) => {}
                    _ = shutdown.recv() => return,
                }
            }
            tokio::select! {
                _ = self.inner.reconnected.notified() => {
                    tracing::debug!("MongoDB reconnected: checking the indexes again");
                }
                _ = shutdown.recv() => return,
            }
        }
    }

    async fn try_ensure_indexes(&self, retention: &RetentionConfig) -> Result<(), mongodb::error::Error> {
        let mut created = 0;
        for c in Collection::ALL {
            let mut keep = retention.keep(c).0;
            if retention.app_history == AppHistory::Keep && !keep.is_zero() && self.holds_app_history(c, keep).await? {
                keep = Duration::ZERO;
            }
            for spec in index_specs(c, keep) {
                created += usize::from(self.ensure_index(c, spec).await?);
            }
        }
        if created > 0 {
            tracing::info!("MongoDB indexes are in place ({created} created or changed)");
        }
        Ok(())
    }

    /// Whether `c` holds documents the app wrote itself (adopted or not yet) older than `keep`,
    /// which a TTL would delete: if it does, the time index gets no TTL and the log says why once.
    async fn holds_app_history(&self, c: Collection, keep: Duration) -> Result<bool, mongodb::error::Error> {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let cutoff = bson::DateTime::from_millis(crate::event::Timestamp::now().as_millis().saturating_sub(keep_ms));
        let time = c.spec().time_field;
        let filter = doc! {
            time: { "$lt": cutoff },
            "$or": [ { "source": { "$exists": false } }, { "source": "app" } ],
        };
        let old = self
            .documents(c)
            .find_one(filter)
            .projection(doc! { "_id": 1 })
            .await?
            .is_some();
        let bit = 1u32 << c.index();
        if old
            && self
                .inner
                .app_history_warned
                .fetch_or(bit, std::sync::atomic::Ordering::Relaxed)
                & bit
                == 0
        {
            let name = self.name(c);
            tracing::warn!(
                "{name} holds documents the app wrote itself that are older than retention.{} ({}): a TTL would delete them, so nothing in {name} expires. Set retention.app_history = \"expire\" to apply the retention to them too, or retention.{} = \"0\" to keep everything",
                c.name(),
                crate::units::HumanDuration(keep),
                c.name()
            );
        }
        Ok(old)
    }

    /// Returns whether anything had to be done.
    async fn ensure_index(&self, c: Collection, spec: IndexSpec) -> Result<bool, mongodb::error::Error> {
        use futures_util::TryStreamExt;
        let coll = self.raw_collection(c);
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
            Some(_) if current_ttl == spec.ttl => Ok(false),
            Some(_) => self.change_ttl(c, &spec, current_ttl).await.map(|()| true),
            None => {
                let options = IndexOptions::builder()
                    .name(spec.name.clone())
                    .expire_after(spec.ttl)
                    .sparse(spec.sparse.then_some(true))
                    .build();
                let model = IndexModel::builder().keys(spec.keys.clone()).options(options).build();
                match coll.create_index(model).await {
                    Ok(_) => Ok(true),
                    // IndexOptionsConflict / IndexKeySpecsConflict: same keys, other options.
                    Err(e) if matches!(*e.kind, ErrorKind::Command(ref ce) if ce.code == 85 || ce.code == 86) => {
                        self.change_ttl(c, &spec, None).await.map(|()| true)
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
        let secs = spec
            .ttl
            .map_or(i64::from(i32::MAX), |d| d.as_secs().min(i32::MAX as u64) as i64);
        let name = self.name(c);
        self.inner
            .db
            .run_command(doc! { "collMod": name, "index": { "name": &spec.name, "expireAfterSeconds": secs } })
            .await?;
        tracing::info!("changed the TTL of {name}.{} from {from:?} to {secs} s", spec.name);
        Ok(())
    }
}
