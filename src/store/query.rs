//! The query side of the stores: what the API and the monitor ask, answered the same by SQLite and
//! MongoDB (one conformance suite, `tests/store_conformance.rs`, holds both to it).
//!
//! Results are documents in their JSON shape (times as RFC 3339 strings, `_id` as hex), whatever
//! the store. Paging is by key: a [`Cursor`] names the last document seen (its time and a
//! store-specific tie-breaker), so deep pages cost what the first does and inserts between requests
//! neither repeat nor skip documents. Aggregations come in fixed-width time buckets (15 minutes for
//! cost, a minute for requests) that callers combine into hours and days of any time zone.

use std::future::Future;

use crate::event::{Collection, Currency, EventId, Level, Timestamp};

use super::StoreError;

/// `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl TimeRange {
    pub fn between(from: Timestamp, to: Timestamp) -> TimeRange {
        TimeRange {
            from: Some(from),
            to: Some(to),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A field equals a value; the field is one the collection's descriptor keeps (`level`,
    /// `module`, `logger`, `request_id`, `model`, `status`, `source`, …).
    Eq(&'static str, String),
    /// Log level at or above.
    LevelAtLeast(Level),
    /// Text anywhere in the message (logs) or the reason (rejects), ASCII case-insensitive.
    Contains(String),
    /// Events after this position (a stream's replay).
    After(Position),
    /// Events at or after this position (where a replay starts).
    From(Position),
    /// Events at or before this position.
    AtOrBefore(Position),
}

/// An event's place in a stream: its time, then its `_id` (events of one time in the order their
/// ids were given, which is the order they arrived on a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub time_ms: i64,
    pub id: EventId,
}

impl Position {
    pub fn of(time: Timestamp, id: EventId) -> Position {
        Position {
            time_ms: time.as_millis(),
            id,
        }
    }

    /// The position of a document as the stores return it.
    pub fn of_doc(collection: Collection, doc: &serde_json::Value) -> Option<Position> {
        let time = doc.get(collection.time_field())?.as_str()?;
        Some(Position {
            time_ms: Timestamp::parse_rfc3339(time).ok()?.as_millis(),
            id: EventId::from_hex(doc.get("_id")?.as_str()?)?,
        })
    }

    /// As a stream's event id: `<time_ms>_<_id>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.time_ms, self.id)
    }

    pub fn decode(s: &str) -> Option<Position> {
        let (time, id) = s.split_once('_')?;
        Some(Position {
            time_ms: time.parse().ok()?,
            id: EventId::from_hex(id)?,
        })
    }
}

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    /// SQLite's rowid or MongoDB's `_id`, as the store wrote it.
    pub key: String,
}

impl Cursor {
    /// An opaque, URL-safe form: `<time>_<key>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.time_ms, self.key)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (time, key) = s.split_once('_')?;
        let key_ok = !key.is_empty() && key.len() <= 32 && key.bytes().all(|b| b.is_ascii_alphanumeric());
        key_ok.then_some(())?;
        Some(Cursor {
            time_ms: time.parse().ok()?,
            key: key.to_string(),
        })
    }
}

/// Newest first, `limit` at most, after `after` (keyset paging) or past `skip` documents (the
/// original API's `page`, for compatibility); or oldest first in stream order (a replay, paged
/// with [`Filter::After`]).
///
/// `max_bytes` bounds a page in bytes as well as in documents: the documents' JSON text adds up
/// to at most that much (a single larger document is still a page of one), and the page ends with
/// `next` where it stopped. A caller holds no more than it asked for, whatever the documents weigh.
#[derive(Debug, Clone)]
pub struct FindQuery {
    pub collection: Collection,
    pub range: TimeRange,
    pub filters: Vec<Filter>,
    pub limit: usize,
    pub after: Option<Cursor>,
    pub skip: u64,
    /// Count the matches up to this many (0: do not count); past it the count is a lower bound.
    pub count_up_to: u64,
    pub max_bytes: usize,
    pub order: Order,
    pub shape: Shape,
}

/// The order of a find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first, ties by storage order (listings, keyset cursors).
    Newest,
    /// Oldest first by [`Position`] (time, then `_id`): a stream's replay. Pages follow each other
    /// with [`Filter::After`] on the last position, not with `after`.
    Oldest,
}

/// What a find returns of each document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Parsed documents ([`Found::docs`]).
    Values,
    /// The documents' JSON text as the API sends it, and their positions ([`Found::texts`],
    /// [`Found::positions`]): nothing parsed and serialized again.
    Text,
    /// Positions only ([`Found::positions`]), with the bytes the documents' text would take
    /// ([`Found::bytes`]): where a replay must start, without holding what it will send.
    Positions,
}

impl FindQuery {
    pub fn new(collection: Collection) -> FindQuery {
        FindQuery {
            collection,
            range: TimeRange::default(),
            filters: Vec::new(),
            limit: 100,
            after: None,
            skip: 0,
            count_up_to: 0,
            max_bytes: usize::MAX,
            order: Order::Newest,
            shape: Shape::Values,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub n: u64,
    /// False when counting stopped at the cap: there are at least `n`.
    pub exact: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Found {
    /// [`Shape::Values`]: the documents.
    pub docs: Vec<serde_json::Value>,
    /// [`Shape::Text`]: the documents' JSON text.
    pub texts: Vec<String>,
    /// [`Shape::Text`] and [`Shape::Positions`]: each document's position, in the find's order.
    pub positions: Vec<Position>,
    /// The bytes of the documents' JSON text in this page.
    pub bytes: usize,
    /// Where the next page starts; None on the last page. (With [`Order::Oldest`], whether there
    /// is a next page: it starts after the last position.)
    pub next: Option<Cursor>,
    pub total: Option<Count>,
}

/// Cost records of one model and currency in one time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct CostBucket {
    pub start_ms: i64,
    pub model: String,
    pub currency: Currency,
    pub cost: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub calls: u64,
}

/// Performance records of one model (None: records without one) in one time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBucket {
    pub start_ms: i64,
    pub model: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub response_time_sum: f64,
    pub first_chunk_sum: f64,
    pub first_chunk_count: u64,
}

/// One performance record's response time (seconds), for percentiles, which sums cannot give.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseTime {
    pub time_ms: i64,
    pub model: Option<String>,
    pub seconds: f64,
}

/// Response times in a range, oldest first, at most the limit asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseTimes {
    pub samples: Vec<ResponseTime>,
    /// More records matched than the limit: the samples are the oldest `limit` of them.
    pub truncated: bool,
}

/// Cost buckets are this wide: every time zone's hours and days are made of whole buckets.
pub const COST_BUCKET_MS: i64 = 15 * 60 * 1000;
pub const REQUEST_BUCKET_MS: i64 = 60 * 1000;

/// What the store can say about itself right now, without waiting on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreHealth {
    /// "sqlite" or "mongodb".
    pub kind: &'static str,
    /// Whether the last write or probe reached the store.
    pub reachable: bool,
    /// Events and bytes waiting in the outbox (MongoDB only).
    pub outbox_events: u64,
    pub outbox_bytes: u64,
    /// Events dropped by the outbox cap since start.
    pub outbox_dropped: u64,
    /// Collections whose writes fail for a reason retrying will not fix (e.g. not authorized).
    pub failing_collections: Vec<String>,
    /// Where the store is: MongoDB's address (password masked) or the SQLite file.
    pub address: String,
    /// Since when writes have failed (MongoDB unreachable, the file locked or full), and the last
    /// error as the driver or SQLite said it (for a "details" view; the page words its own).
    pub unreachable_since: Option<crate::event::Timestamp>,
    pub last_error: Option<String>,
    /// When the oldest batch waiting in the outbox was queued (MongoDB only).
    pub outbox_oldest: Option<crate::event::Timestamp>,
}

/// Reads of the stored collections. Cloning is cheap; queries run concurrently with writes.
pub trait Query: Clone + Send + Sync + 'static {
    fn find(&self, q: FindQuery) -> impl Future<Output = Result<Found, StoreError>> + Send;

    /// Cost per (15-minute bucket, model, currency) in `range`. With MongoDB, what waits in the
    /// outbox counts too: spend does not vanish during an outage.
    fn cost_buckets(&self, range: TimeRange) -> impl Future<Output = Result<Vec<CostBucket>, StoreError>> + Send;

    /// The costs whose own time was too far ahead to be believed (rare: see `max_clock_skew`) and
    /// whose own time or arrival lies in `range`. The budget counts them at arrival: see
    /// [`budget_buckets`].
    fn skewed_costs(&self, range: TimeRange) -> impl Future<Output = Result<Vec<SkewedCost>, StoreError>> + Send;

    /// Requests per (minute, model) in `range`.
    fn request_buckets(&self, range: TimeRange) -> impl Future<Output = Result<Vec<RequestBucket>, StoreError>> + Send;

    /// Response times of performance records in `range` (of one model, if given), oldest first,
    /// at most `limit`.
    fn response_times(
        &self,
        range: TimeRange,
        model: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<ResponseTimes, StoreError>> + Send;

    fn health(&self) -> StoreHealth;

    /// Events of `collection` that are stored but not found by queries yet: with MongoDB, those
    /// waiting in the outbox for it.
    fn waiting(&self, collection: Collection) -> u64;
}

/// A cost counted at its arrival rather than its own time.
#[derive(Debug, Clone, PartialEq)]
pub struct SkewedCost {
    pub time_ms: i64,
    pub received_ms: i64,
    pub model: String,
    pub currency: Currency,
    pub cost: f64,
}

/// [`Query::cost_buckets`] as the budget counts: each cost in the bucket of its arrival where its
/// own time was too far ahead (taken out of its own time's bucket, put into its arrival's), so
/// that the store's totals agree with what the monitor counted in memory.
pub async fn budget_buckets<Q: Query>(store: &Q, range: TimeRange) -> Result<Vec<CostBucket>, StoreError> {
    let mut buckets = store.cost_buckets(range).await?;
    let skewed = store.skewed_costs(range).await?;
    for s in &skewed {
        let inside =
            |t: i64| range.from.is_none_or(|f| t >= f.as_millis()) && range.to.is_none_or(|to| t < to.as_millis());
        for (time, sign) in [(s.time_ms, -1.0), (s.received_ms, 1.0)] {
            if !inside(time) {
                continue;
            }
            let start_ms = bucket_start(time, COST_BUCKET_MS);
            let found = buckets
                .iter_mut()
                .find(|b| b.start_ms == start_ms && b.model == s.model && b.currency == s.currency);
            let b = match found {
                Some(b) => b,
                None => {
                    buckets.push(CostBucket {
                        start_ms,
                        model: s.model.clone(),
                        currency: s.currency,
                        cost: 0.0,
                        input_tokens: 0,
                        output_tokens: 0,
                        total_tokens: 0,
                        calls: 0,
                    });
                    let last = buckets.len() - 1;
                    &mut buckets[last]
                }
            };
            b.cost += sign * s.cost;
            if sign > 0.0 {
                b.calls += 1;
            } else {
                b.calls = b.calls.saturating_sub(1);
            }
        }
    }
    buckets.retain(|b| b.calls > 0 || b.cost.abs() > 1e-12);
    buckets
        .sort_by(|a, b| (a.start_ms, &a.model, a.currency.symbol()).cmp(&(b.start_ms, &b.model, b.currency.symbol())));
    Ok(buckets)
}

/// The bucket `time_ms` falls in.
pub fn bucket_start(time_ms: i64, width_ms: i64) -> i64 {
    time_ms - time_ms.rem_euclid(width_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = Cursor {
            time_ms: 1_795_680_000_000,
            key: "65a1b2c3d4e5f60718293a4b".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for junk in ["", "x", "12_", "_abc", "12_a;b", "abc_12"] {
            assert_eq!(Cursor::decode(junk), None, "{junk}");
        }
        assert_eq!(bucket_start(1_000_123, 60_000), 960_000);
    }
}
