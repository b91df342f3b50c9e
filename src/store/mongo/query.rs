//! The query side on MongoDB: finds with keyset paging, and the cost and request aggregations, in
//! the pipeline stages and operators MongoDB has had since 4.0 (`$toLong` on a Date, `$mod`,
//! `$subtract`). Documents come back in the embedded store's JSON shape.

use bson::{doc, Bson, Document, RawBsonRef, RawDocumentBuf};
use futures_util::TryStreamExt;

use super::indexes::document_path;
use super::MongoStore;
use crate::event::{Collection, Currency, Level, Timestamp};
use crate::store::embedded::text_field;
use crate::store::query::{
    bucket_start, CostBucket, Count, Cursor, Filter, FindQuery, Found, Order, Position, RequestBucket, ResponseTime,
    ResponseTimes, Shape, SkewedCost, TimeRange, COST_BUCKET_MS, REQUEST_BUCKET_MS,
};

/// Documents per reply of a find bounded in bytes: what the driver holds at once.
const BOUNDED_BATCH: u32 = 16;
use crate::store::StoreError;

fn query_error(e: mongodb::error::Error) -> StoreError {
    let message = format!("MongoDB: {e}");
    match super::errors::classify(&e) {
        crate::store::ErrorKind::Transient => StoreError::transient(message),
        crate::store::ErrorKind::Permanent => StoreError::permanent(message),
    }
}

fn range_filter(time: &str, range: TimeRange, filter: &mut Document) {
    let mut bounds = Document::new();
    if let Some(from) = range.from {
        bounds.insert("$gte", bson::DateTime::from_millis(from.as_millis()));
    }
    if let Some(to) = range.to {
        bounds.insert("$lt", bson::DateTime::from_millis(to.as_millis()));
    }
    if !bounds.is_empty() {
        filter.insert(time, bounds);
    }
}

/// A regular expression that matches `text` literally.
fn literal_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for ch in text.chars() {
        if "\\^$.|?*+()[]{}".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn filter_of(q: &FindQuery) -> Result<Document, StoreError> {
    let spec = q.collection.spec();
    let mut filter = Document::new();
    range_filter(spec.time_field, q.range, &mut filter);
    // Position bounds, each an `$or` on the time and `_id`: together under one `$and`.
    let mut positions: Vec<Document> = Vec::new();
    let time = spec.time_field;
    let at = |p: &Position| {
        (
            bson::DateTime::from_millis(p.time_ms),
            bson::oid::ObjectId::from_bytes(p.id.0),
        )
    };
    for f in &q.filters {
        match f {
            Filter::Eq(field, value) => {
                if spec.column(field).is_none() {
                    return Err(StoreError::permanent(format!(
                        "{} cannot be filtered by {field}",
                        q.collection.name()
                    )));
                }
                filter.insert(document_path(q.collection, field), value.as_str());
            }
            Filter::LevelAtLeast(min) => {
                let levels: Vec<&str> = Level::ALL.iter().filter(|l| *l >= min).map(|l| l.as_str()).collect();
                filter.insert("level", doc! { "$in": levels });
            }
            Filter::Contains(text) => {
                let field = text_field(q.collection)
                    .ok_or_else(|| StoreError::permanent(format!("{} has no text to search", q.collection.name())))?;
                filter.insert(field, doc! { "$regex": literal_regex(text), "$options": "i" });
            }
            Filter::After(p) => {
                let (t, id) = at(p);
                positions.push(doc! { "$or": [ { time: { "$gt": t } }, { time: t, "_id": { "$gt": id } } ] });
            }
            Filter::From(p) => {
                let (t, id) = at(p);
                positions.push(doc! { "$or": [ { time: { "$gt": t } }, { time: t, "_id": { "$gte": id } } ] });
            }
            Filter::AtOrBefore(p) => {
                let (t, id) = at(p);
                positions.push(doc! { "$or": [ { time: { "$lt": t } }, { time: t, "_id": { "$lte": id } } ] });
            }
        }
    }
    if !positions.is_empty() {
        filter.insert("$and", positions);
    }
    Ok(filter)
}

impl MongoStore {
    pub(super) async fn find_docs(&self, q: FindQuery) -> Result<Found, StoreError> {
        let coll = self.inner.db.collection::<Document>(self.name(q.collection));
        let time = q.collection.spec().time_field;
        let filter = filter_of(&q)?;
        let total = if q.count_up_to > 0 {
            let n = coll
                .count_documents(filter.clone())
                .limit(q.count_up_to.saturating_add(1))
                .await
                .map_err(query_error)?;
            Some(Count {
                n: n.min(q.count_up_to),
                exact: n <= q.count_up_to,
            })
        } else {
            None
        };
        let mut filter = filter;
        if let Some(after) = &q.after {
            let id = bson::oid::ObjectId::parse_str(&after.key)
                .map_err(|_| StoreError::permanent("the cursor was not made by this store"))?;
            let at = bson::DateTime::from_millis(after.time_ms);
            let keyset = doc! { "$or": [ { time: { "$lt": at } }, { time: at, "_id": { "$lt": id } } ] };
            filter = doc! { "$and": [filter, keyset] };
        }
        let limit = q.limit.max(1);
        let sort = match q.order {
            Order::Newest => doc! { time: -1, "_id": -1 },
            Order::Oldest => doc! { time: 1, "_id": 1 },
        };
        let raw = self.inner.db.collection::<RawDocumentBuf>(self.name(q.collection));
        let mut find = raw
            .find(filter)
            .sort(sort)
            .skip(if q.after.is_some() { 0 } else { q.skip })
            .limit(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        if q.max_bytes != usize::MAX {
            // A page bounded in bytes must not arrive as one reply of up to 16 MiB.
            find = find.batch_size(BOUNDED_BATCH);
        }
        let mut cursor = find.await.map_err(query_error)?;
        let mut found = Found::default();
        let mut kept = 0;
        let mut last = None;
        let mut more = false;
        while let Some(raw) = cursor.try_next().await.map_err(query_error)? {
            if kept == limit {
                more = true;
                break;
            }
            let d = raw
                .to_document()
                .map_err(|e| StoreError::permanent(format!("MongoDB: a stored document cannot be read: {e}")))?;
            let time_ms = d.get_datetime(time).map(|t| t.timestamp_millis()).unwrap_or(0);
            let id = d.get_object_id("_id").ok();
            let value = to_json(Bson::Document(d));
            // The size the embedded store measures: the document's JSON text.
            let text = serde_json::to_string(&value).unwrap_or_default();
            if kept > 0 && found.bytes.saturating_add(text.len()) > q.max_bytes {
                more = true;
                break;
            }
            found.bytes += text.len();
            let position = Position {
                time_ms,
                id: crate::event::EventId(id.map(|i| i.bytes()).unwrap_or_default()),
            };
            match q.shape {
                Shape::Positions => found.positions.push(position),
                Shape::Text => {
                    found.positions.push(position);
                    found.texts.push(text);
                }
                Shape::Values => found.docs.push(value),
            }
            kept += 1;
            last = Some(Cursor {
                time_ms,
                key: id.map(|i| i.to_hex()).unwrap_or_default(),
            });
        }
        found.next = if more { last } else { None };
        found.total = total;
        Ok(found)
    }

    pub(super) async fn cost_buckets_of(&self, range: TimeRange) -> Result<Vec<CostBucket>, StoreError> {
        let mut matched = Document::new();
        range_filter("created_at", range, &mut matched);
        let ms = doc! { "$toLong": "$created_at" };
        let pipeline = vec![
            doc! { "$match": matched },
            doc! { "$group": {
                "_id": {
                    "b": { "$subtract": [ms.clone(), { "$mod": [ms, COST_BUCKET_MS] }] },
                    "model": "$model",
                    "currency": "$currency_symbol",
                },
                "cost": { "$sum": "$cost" },
                "input": { "$sum": { "$ifNull": ["$input_tokens", 0] } },
                "output": { "$sum": { "$ifNull": ["$output_tokens", 0] } },
                "total": { "$sum": { "$ifNull": ["$total_tokens", 0] } },
                "calls": { "$sum": 1 },
            } },
        ];
        let coll = self.inner.db.collection::<Document>(self.name(Collection::Cost));
        let mut cursor = coll.aggregate(pipeline).await.map_err(query_error)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(query_error)? {
            let key = d.get_document("_id").cloned().unwrap_or_default();
            out.push(CostBucket {
                start_ms: number(key.get("b")) as i64,
                model: key.get_str("model").unwrap_or("").to_string(),
                currency: key
                    .get_str("currency")
                    .ok()
                    .and_then(Currency::parse)
                    .unwrap_or(Currency::Usd),
                cost: number(d.get("cost")),
                input_tokens: number(d.get("input")) as u64,
                output_tokens: number(d.get("output")) as u64,
                total_tokens: number(d.get("total")) as u64,
                calls: number(d.get("calls")) as u64,
            });
        }
        // Spend waiting in the outbox counts as spent.
        for d in self.inner.outbox.documents(Collection::Cost).await? {
            let Some(t) = time_of(&d, "created_at").filter(|t| in_range(*t, range)) else {
                continue;
            };
            let get = |k: &str| match d.get(k) {
                Ok(Some(RawBsonRef::Double(f))) => Some(f),
                Ok(Some(RawBsonRef::Int64(i))) => Some(i as f64),
                Ok(Some(RawBsonRef::Int32(i))) => Some(f64::from(i)),
                _ => None,
            };
            add_cost(
                &mut out,
                CostBucket {
                    start_ms: bucket_start(t, COST_BUCKET_MS),
                    model: d.get_str("model").unwrap_or("").to_string(),
                    currency: d
                        .get_str("currency_symbol")
                        .ok()
                        .and_then(Currency::parse)
                        .unwrap_or(Currency::Usd),
                    cost: get("cost").unwrap_or(0.0),
                    input_tokens: get("input_tokens").unwrap_or(0.0) as u64,
                    output_tokens: get("output_tokens").unwrap_or(0.0) as u64,
                    total_tokens: get("total_tokens").unwrap_or(0.0) as u64,
                    calls: 1,
                },
            );
        }
        out.sort_by(|a, b| (a.start_ms, &a.model).cmp(&(b.start_ms, &b.model)));
        Ok(out)
    }

    /// Costs counted at arrival (with `received_at`) whose own time or arrival is in `range`: the
    /// sparse index on `received_at` holds only those. The outbox's count too.
    pub(super) async fn skewed_costs_of(&self, range: TimeRange) -> Result<Vec<SkewedCost>, StoreError> {
        let mut own = Document::new();
        range_filter("created_at", range, &mut own);
        let mut arrived = Document::new();
        range_filter("received_at", range, &mut arrived);
        let filter = doc! {
            "received_at": { "$exists": true },
            "$or": [own, arrived],
        };
        let coll = self.inner.db.collection::<Document>(self.name(Collection::Cost));
        let mut cursor = coll.find(filter).await.map_err(query_error)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(query_error)? {
            let time = |k: &str| d.get_datetime(k).ok().map(|t| t.timestamp_millis());
            if let (Some(time_ms), Some(received_ms)) = (time("created_at"), time("received_at")) {
                out.push(SkewedCost {
                    time_ms,
                    received_ms,
                    model: d.get_str("model").unwrap_or("").to_string(),
                    currency: d
                        .get_str("currency_symbol")
                        .ok()
                        .and_then(Currency::parse)
                        .unwrap_or(Currency::Usd),
                    cost: number(d.get("cost")),
                });
            }
        }
        for d in self.inner.outbox.documents(Collection::Cost).await? {
            let (Some(time_ms), Some(received_ms)) = (time_of(&d, "created_at"), time_of(&d, "received_at")) else {
                continue;
            };
            if !in_range(time_ms, range) && !in_range(received_ms, range) {
                continue;
            }
            let cost = match d.get("cost") {
                Ok(Some(RawBsonRef::Double(f))) => f,
                Ok(Some(RawBsonRef::Int64(i))) => i as f64,
                Ok(Some(RawBsonRef::Int32(i))) => f64::from(i),
                _ => 0.0,
            };
            out.push(SkewedCost {
                time_ms,
                received_ms,
                model: d.get_str("model").unwrap_or("").to_string(),
                currency: d
                    .get_str("currency_symbol")
                    .ok()
                    .and_then(Currency::parse)
                    .unwrap_or(Currency::Usd),
                cost,
            });
        }
        Ok(out)
    }

    pub(super) async fn request_buckets_of(&self, range: TimeRange) -> Result<Vec<RequestBucket>, StoreError> {
        let mut matched = Document::new();
        range_filter("timestamp", range, &mut matched);
        let ms = doc! { "$toLong": "$timestamp" };
        let pipeline = vec![
            doc! { "$match": matched },
            doc! { "$group": {
                "_id": {
                    "b": { "$subtract": [ms.clone(), { "$mod": [ms, REQUEST_BUCKET_MS] }] },
                    "model": "$model",
                },
                "calls": { "$sum": 1 },
                "errors": { "$sum": { "$cond": [{ "$eq": ["$status", "error"] }, 1, 0] } },
                "rt": { "$sum": "$response_time" },
                "fc": { "$sum": { "$ifNull": ["$first_chunk_time", 0] } },
                "fcn": { "$sum": { "$cond": [{ "$ne": [{ "$ifNull": ["$first_chunk_time", null] }, null] }, 1, 0] } },
            } },
        ];
        let coll = self.inner.db.collection::<Document>(self.name(Collection::Performance));
        let mut cursor = coll.aggregate(pipeline).await.map_err(query_error)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(query_error)? {
            let key = d.get_document("_id").cloned().unwrap_or_default();
            out.push(RequestBucket {
                start_ms: number(key.get("b")) as i64,
                model: key.get_str("model").ok().map(str::to_string),
                calls: number(d.get("calls")) as u64,
                errors: number(d.get("errors")) as u64,
                response_time_sum: number(d.get("rt")),
                first_chunk_sum: number(d.get("fc")),
                first_chunk_count: number(d.get("fcn")) as u64,
            });
        }
        out.sort_by(|a, b| (a.start_ms, &a.model).cmp(&(b.start_ms, &b.model)));
        Ok(out)
    }
}

impl MongoStore {
    pub(super) async fn response_times_of(
        &self,
        range: TimeRange,
        model: Option<String>,
        limit: usize,
    ) -> Result<ResponseTimes, StoreError> {
        let mut filter = Document::new();
        range_filter("timestamp", range, &mut filter);
        if let Some(model) = model {
            filter.insert("model", model);
        }
        filter.insert("response_time", doc! { "$type": "number" });
        let coll = self.inner.db.collection::<Document>(self.name(Collection::Performance));
        let mut cursor = coll
            .find(filter)
            .projection(doc! { "_id": 0, "timestamp": 1, "model": 1, "response_time": 1 })
            .sort(doc! { "timestamp": 1 })
            .limit(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
            .await
            .map_err(query_error)?;
        let mut samples = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(query_error)? {
            samples.push(ResponseTime {
                time_ms: d.get_datetime("timestamp").map(|t| t.timestamp_millis()).unwrap_or(0),
                model: d.get_str("model").ok().map(str::to_string),
                seconds: number(d.get("response_time")),
            });
        }
        let truncated = samples.len() > limit;
        samples.truncate(limit);
        Ok(ResponseTimes { samples, truncated })
    }
}

fn number(v: Option<&Bson>) -> f64 {
    match v {
        Some(Bson::Double(f)) => *f,
        Some(Bson::Int32(i)) => f64::from(*i),
        Some(Bson::Int64(i)) => *i as f64,
        _ => 0.0,
    }
}

fn time_of(d: &RawDocumentBuf, field: &str) -> Option<i64> {
    d.get_datetime(field).ok().map(|t| t.timestamp_millis())
}

fn in_range(t: i64, range: TimeRange) -> bool {
    range.from.is_none_or(|f| t >= f.as_millis()) && range.to.is_none_or(|to| t < to.as_millis())
}

fn add_cost(out: &mut Vec<CostBucket>, b: CostBucket) {
    match out
        .iter_mut()
        .find(|o| o.start_ms == b.start_ms && o.model == b.model && o.currency == b.currency)
    {
        Some(o) => {
            o.cost += b.cost;
            o.input_tokens += b.input_tokens;
            o.output_tokens += b.output_tokens;
            o.total_tokens += b.total_tokens;
            o.calls += b.calls;
        }
        None => out.push(b),
    }
}

/// A stored BSON value in the JSON shape the embedded store keeps: ObjectIds as hex, Dates as
/// RFC 3339 with milliseconds, numbers as numbers.
pub fn to_json(v: Bson) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Bson::Document(d) => Value::Object(d.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Bson::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(t) => {
            let mut out = Vec::with_capacity(24);
            Timestamp(t.timestamp_millis()).write_rfc3339(&mut out);
            Value::String(String::from_utf8_lossy(&out).into_owned())
        }
        Bson::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::String(s) => Value::String(s),
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Null | Bson::Undefined => Value::Null,
        other => other.into_relaxed_extjson(),
    }
}
