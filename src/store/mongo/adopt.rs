//! The app's own documents. A deployment that ran the app with `ENABLE_MONGODB=true` holds months
//! of documents the app wrote itself into the same collections (`api_cost` from its
//! `record_api_cost`, logs and performance records from the original handlers): their times are
//! *naive* local times (`datetime.now()`), which pymongo stores as if they were UTC, so read as
//! they are they sit hours off, and the budget of the last hour reads 0 while the app spent.
//!
//! They are converted in place, once: the time field becomes the real instant, the document gets
//! `source: "app"` and an `adopted` record of what was changed (`naive`: the stored value as it was,
//! `offset_minutes`, `offset_from`). In place rather than at every query, because every read — the
//! sort of a listing, a keyset cursor, a stream's replay, the index on the time, the budget's sums
//! — then has one kind of time to deal with, and costs what it costs for the collector's own
//! documents. Nothing else of a document changes, and collections the collector does not own
//! (the app's response cache `stream_chat`) are never touched.
//!
//! The offset comes from the document itself where it can: pymongo stamps the `_id` with the
//! insert's UTC second, and the app inserts right after `datetime.now()`, so the naive time minus
//! the `_id`'s time is the app's UTC offset at that moment (rounded to a quarter hour). That is
//! right whatever zone the app's process had (a container in UTC, a host in Asia/Shanghai, summer
//! time). Where it is not plausible (the `_id` is not an ObjectId, or the difference is not within
//! minutes of a real offset: a document imported later), the time is read in `naive_timezone`.
//!
//! Idempotent and resumable: only documents without `source` are taken (the collector's own always
//! have one), each is updated on that same condition, and a pass that stops half-way (a restart, a
//! kill) leaves the rest for the next. The first pass reads the whole collection; later ones (every
//! minute, for an old copy of the app that still writes directly) only what was inserted since the
//! last, by the `_id`'s time, remembered in `collector_state`.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;

use super::MongoStore;
use crate::event::{Collection, NaiveZone, Timestamp};
use crate::retry::Backoff;
use crate::shutdown::Shutdown;

/// The collections the app wrote itself.
const APP_COLLECTIONS: [Collection; 3] = [Collection::Cost, Collection::Logs, Collection::Performance];
/// Where the passes remember how far they got: one document per collection, `{name, through}`.
pub(super) const STATE_COLLECTION: &str = "collector_state";
/// Documents per `update` command.
const PAGE: usize = 1000;
/// How often documents the app inserted since the last pass are looked for.
const EVERY: Duration = Duration::from_secs(60);
/// A later pass starts this long before the last one did: the app's clock may be behind ours.
const MARGIN_SECS: u32 = 300;
/// The widest offset from UTC a clock has (UTC−12 … UTC+14), and how far from a quarter hour the
/// difference may be for an `_id` to vouch for one.
const MAX_OFFSET_MS: i64 = 14 * 3_600_000;
const QUARTER_HOUR_MS: i64 = 15 * 60_000;
const INSERT_LAG_MS: i64 = 5 * 60_000;

/// How a naive time was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum OffsetFrom {
    /// The document's ObjectId.
    Id,
    /// `naive_timezone`.
    NaiveTimezone,
}

impl OffsetFrom {
    fn as_str(self) -> &'static str {
        match self {
            OffsetFrom::Id => "_id",
            OffsetFrom::NaiveTimezone => "naive_timezone",
        }
    }
}

/// The UTC offset (ms) of the clock that wrote `wall_ms` (a naive time stored as if it were UTC)
/// into a document with this `_id`.
pub(super) fn offset_of(id: &Bson, wall_ms: i64, zone: &NaiveZone) -> (i64, OffsetFrom) {
    if let Bson::ObjectId(oid) = id {
        let inserted_ms = i64::from(u32::from_be_bytes(oid_seconds(oid))) * 1000;
        let diff = wall_ms - inserted_ms;
        let offset = (diff as f64 / QUARTER_HOUR_MS as f64).round() as i64 * QUARTER_HOUR_MS;
        // The `_id` has whole seconds and the insert follows the naive time by a moment.
        if offset.abs() <= MAX_OFFSET_MS && (offset - diff).abs() <= INSERT_LAG_MS {
            return (offset, OffsetFrom::Id);
        }
    }
    let offset = zone.to_utc(wall_ms).map_or(0, |t| wall_ms - t.as_millis());
    (offset, OffsetFrom::NaiveTimezone)
}

fn oid_seconds(oid: &ObjectId) -> [u8; 4] {
    let b = oid.bytes();
    [b[0], b[1], b[2], b[3]]
}

/// The smallest ObjectId of a second: `_id >= this` finds what was inserted from then on.
fn oid_from_seconds(secs: u32) -> ObjectId {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    ObjectId::from_bytes(b)
}

/// The update statement for one of the app's documents (`_id` and the time field read).
pub(super) fn statement(
    d: &Document,
    time_field: &str,
    zone: &NaiveZone,
) -> Option<(Document, Option<(i64, OffsetFrom)>)> {
    let id = d.get("_id")?.clone();
    let only_the_apps = doc! { "_id": id.clone(), "source": { "$exists": false } };
    let (set, placed) = match d.get(time_field) {
        Some(Bson::DateTime(naive)) => {
            let wall_ms = naive.timestamp_millis();
            let (offset, from) = offset_of(&id, wall_ms, zone);
            let set = doc! {
                time_field: bson::DateTime::from_millis(wall_ms - offset),
                "source": "app",
                "adopted": {
                    "naive": naive,
                    "offset_minutes": offset / 60_000,
                    "offset_from": from.as_str(),
                },
            };
            (set, Some((offset, from)))
        }
        // A time the app did not write as a date: marked, so that it is not looked at again, and
        // left where it is (queries by time do not find it).
        _ => (
            doc! {
                "source": "app",
                "adopted": { "problem": format!("no {time_field} date to convert") },
            },
            None,
        ),
    };
    Some((doc! { "q": only_the_apps, "u": { "$set": set } }, placed))
}

impl MongoStore {
    /// Adopts the app's documents now and then every minute, until shutdown.
    pub(super) async fn adopt_app_documents(self, zone: NaiveZone, mut shutdown: Shutdown) {
        let mut since: BTreeMap<Collection, Option<u32>> = BTreeMap::new();
        let mut failures = 0u32;
        loop {
            let mut failed = false;
            for c in APP_COLLECTIONS {
                // Every call to MongoDB below may hang with it: the stop must not wait for them.
                let pass = async {
                    let from = match since.get(&c) {
                        Some(s) => *s,
                        None => self.adopted_through(c).await?,
                    };
                    since.insert(c, from);
                    let started = Timestamp::now();
                    let report = self.adopt_pass(c, from, &zone).await?;
                    let secs = u32::try_from(started.as_millis() / 1000).unwrap_or(u32::MAX);
                    if let Err(e) = self.save_adopted_through(c, started).await {
                        tracing::debug!(
                            "cannot note how far the app's {} documents were adopted: {e}",
                            self.name(c)
                        );
                    }
                    since.insert(c, Some(secs));
                    Ok::<_, mongodb::error::Error>(report)
                };
                let pass = tokio::select! {
                    pass = pass => pass,
                    _ = shutdown.recv() => return,
                };
                match pass {
                    Ok(report) => {
                        if report.documents > 0 {
                            tracing::info!("{}", report.describe(self.name(c)));
                        }
                    }
                    Err(e) => {
                        failed = true;
                        if failures == 0 {
                            tracing::warn!(
                                "cannot adopt the app's own documents in {} yet, will retry: {e}",
                                self.name(c)
                            );
                        }
                    }
                }
            }
            failures = if failed { failures.saturating_add(1) } else { 0 };
            let pause = if failed {
                Backoff::STORE.delay(failures).max(Duration::from_secs(1))
            } else {
                EVERY
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.recv() => return,
            }
        }
    }

    /// One pass over the documents without `source` (inserted since `since`, by their `_id`).
    async fn adopt_pass(
        &self,
        c: Collection,
        since: Option<u32>,
        zone: &NaiveZone,
    ) -> Result<Adopted, mongodb::error::Error> {
        let time = c.spec().time_field;
        let mut filter = doc! { "source": { "$exists": false } };
        if let Some(secs) = since {
            filter.insert(
                "_id",
                doc! { "$gte": oid_from_seconds(secs.saturating_sub(MARGIN_SECS)) },
            );
        }
        let mut cursor = self
            .documents(c)
            .find(filter)
            .projection(doc! { "_id": 1, time: 1 })
            .batch_size(PAGE as u32)
            .await?;
        let mut report = Adopted::default();
        let mut page = Vec::with_capacity(PAGE);
        loop {
            let next = cursor.try_next().await?;
            let done = next.is_none();
            if let Some((stmt, placed)) = next.as_ref().and_then(|d| statement(d, time, zone)) {
                page.push(stmt);
                report.note(placed);
            }
            if page.len() == PAGE || (done && !page.is_empty()) {
                report.documents += self.apply(c, std::mem::take(&mut page)).await?;
            }
            if done {
                return Ok(report);
            }
        }
    }

    /// Runs the statements as one unordered `update` command; how many documents changed.
    async fn apply(&self, c: Collection, statements: Vec<Document>) -> Result<u64, mongodb::error::Error> {
        let reply = self
            .inner
            .db
            .run_command(doc! { "update": self.name(c), "updates": statements, "ordered": false })
            .await?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            if let Some(first) = errors.first() {
                tracing::warn!(
                    "{} of the app's documents in {} could not be adopted: {first}",
                    errors.len(),
                    self.name(c)
                );
            }
        }
        let changed = reply
            .get("nModified")
            .and_then(Bson::as_i64)
            .or_else(|| reply.get("nModified").and_then(Bson::as_i32).map(i64::from))
            .unwrap_or(0);
        Ok(u64::try_from(changed).unwrap_or(0))
    }

    /// The second the last complete pass over `c` started, if one did.
    async fn adopted_through(&self, c: Collection) -> Result<Option<u32>, mongodb::error::Error> {
        let state = self.inner.db.collection::<Document>(STATE_COLLECTION);
        let found = state.find_one(doc! { "name": state_key(self.name(c)) }).await?;
        Ok(found
            .and_then(|d| d.get_datetime("through").ok().copied())
            .and_then(|t| u32::try_from(t.timestamp_millis() / 1000).ok()))
    }

    async fn save_adopted_through(&self, c: Collection, started: Timestamp) -> Result<(), mongodb::error::Error> {
        let state = self.inner.db.collection::<Document>(STATE_COLLECTION);
        let through = bson::DateTime::from_millis(started.as_millis());
        state
            .update_one(
                doc! { "name": state_key(self.name(c)) },
                doc! { "$set": { "through": through } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }
}

fn state_key(collection: &str) -> String {
    format!("adopted:{collection}")
}

/// What one pass changed, for the log line.
#[derive(Default)]
struct Adopted {
    documents: u64,
    /// (offset in ms, where it came from) → documents.
    offsets: BTreeMap<(i64, OffsetFrom), u64>,
    without_time: u64,
}

impl Adopted {
    fn note(&mut self, placed: Option<(i64, OffsetFrom)>) {
        match placed {
            Some(key) => *self.offsets.entry(key).or_default() += 1,
            None => self.without_time += 1,
        }
    }

    fn describe(&self, collection: &str) -> String {
        let offsets: Vec<String> = self
            .offsets
            .iter()
            .map(|((offset, from), n)| {
                let by = match from {
                    OffsetFrom::Id => "by their _id",
                    OffsetFrom::NaiveTimezone => "by naive_timezone",
                };
                format!("{n} at {} {by}", utc_offset(*offset))
            })
            .collect();
        let mut line = format!(
            "adopted {} documents the app wrote itself into {collection}: their naive times are now instants ({}); the originals are kept under `adopted`",
            self.documents,
            offsets.join(", ")
        );
        if self.without_time > 0 {
            line.push_str(&format!(
                "; {} had no time to convert and stay out of time queries",
                self.without_time
            ));
        }
        line
    }
}

/// `UTC+08:00`.
fn utc_offset(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let minutes = ms.abs() / 60_000;
    format!("UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid_at(secs: u32) -> Bson {
        let mut b = [7u8; 12];
        b[..4].copy_from_slice(&secs.to_be_bytes());
        Bson::ObjectId(ObjectId::from_bytes(b))
    }

    #[test]
    fn the_offset_comes_from_the_id_whatever_the_zone_and_from_naive_timezone_where_the_id_cannot_tell() {
        let shanghai = NaiveZone::named("Asia/Shanghai").unwrap();
        let utc = NaiveZone::Utc;
        // 2026-12-07 12:00:00Z inserted; the app's clock said 20:00:00.350 (UTC+8).
        let inserted: u32 = 1_796_644_800;
        let wall = i64::from(inserted) * 1000 + 8 * 3_600_000 + 350;
        assert_eq!(
            offset_of(&oid_at(inserted), wall, &utc),
            (8 * 3_600_000, OffsetFrom::Id)
        );
        // A container in UTC: the naive time is UTC, whatever naive_timezone says.
        let wall_utc = i64::from(inserted) * 1000 + 350;
        assert_eq!(offset_of(&oid_at(inserted), wall_utc, &shanghai), (0, OffsetFrom::Id));
        // Nepal's +05:45 is a quarter-hour multiple too.
        let nepal = i64::from(inserted) * 1000 + 5 * 3_600_000 + 45 * 60_000;
        assert_eq!(offset_of(&oid_at(inserted), nepal, &utc).0, 345 * 60_000);
        // Imported a month later: the id does not vouch for an offset; naive_timezone decides.
        let imported = inserted + 30 * 86_400;
        assert_eq!(
            offset_of(&oid_at(imported), wall, &shanghai),
            (8 * 3_600_000, OffsetFrom::NaiveTimezone)
        );
        // Not an ObjectId.
        assert_eq!(
            offset_of(&Bson::Int32(5), wall, &shanghai),
            (8 * 3_600_000, OffsetFrom::NaiveTimezone)
        );
    }

    #[test]
    fn a_statement_converts_the_time_keeps_the_original_and_only_touches_documents_without_source() {
        let inserted: u32 = 1_796_644_800;
        let naive = bson::DateTime::from_millis(i64::from(inserted) * 1000 + 8 * 3_600_000);
        let d = doc! { "_id": oid_at(inserted), "created_at": naive };
        let (stmt, placed) = statement(&d, "created_at", &NaiveZone::Utc).unwrap();
        assert_eq!(placed, Some((8 * 3_600_000, OffsetFrom::Id)));
        assert_eq!(
            stmt.get_document("q").unwrap().get_document("source").unwrap(),
            &doc! { "$exists": false }
        );
        let set = stmt.get_document("u").unwrap().get_document("$set").unwrap();
        assert_eq!(
            set.get_datetime("created_at").unwrap().timestamp_millis(),
            i64::from(inserted) * 1000
        );
        assert_eq!(set.get_str("source").unwrap(), "app");
        assert_eq!(
            set.get_document("adopted").unwrap().get_datetime("naive").unwrap(),
            &naive
        );
        // No date: marked, not moved.
        let (stmt, placed) = statement(
            &doc! { "_id": oid_at(inserted), "created_at": "yesterday" },
            "created_at",
            &NaiveZone::Utc,
        )
        .unwrap();
        assert_eq!(placed, None);
        assert!(!stmt
            .get_document("u")
            .unwrap()
            .get_document("$set")
            .unwrap()
            .contains_key("created_at"));
        assert_eq!(utc_offset(-(3 * 3_600_000 + 30 * 60_000)), "UTC-03:30");
    }
}
