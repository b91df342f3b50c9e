//! One descriptor per collection: its time field, the fields the embedded store keeps as columns
//! beside the document, and the indexes both stores build. Adding a collection, a filter column or
//! an index is one edit here; the SQLite schema, its migrations and the MongoDB index specs follow.

use crate::event::Collection;

/// A field the embedded store keeps as a column (for filtering and sums) beside the JSON document.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub sql_type: &'static str,
    /// Where the field sits in the document, to fill the column in rows written before it existed.
    pub json_path: &'static str,
}

#[derive(Debug)]
pub struct Spec {
    pub collection: Collection,
    /// The document field that holds the event's time: the sort key, the range filter, the TTL.
    pub time_field: &'static str,
    /// The time column of the embedded store (integer milliseconds).
    pub time_column: &'static str,
    pub columns: &'static [Column],
    /// Secondary indexes, each on (field, time descending) in both stores.
    pub indexed: &'static [&'static str],
    /// Partial indexes of the embedded store on fields that are mostly absent (e.g. `request_id`).
    pub sparse_indexed: &'static [&'static str],
    /// Indexed fields whose embedded index holds only the rows with one of a few rare values (the
    /// index's `WHERE`): the common values are most rows and are found by time, and the index costs
    /// a B-tree insert only for the rare ones. MongoDB indexes the field whole (it is in `indexed`).
    pub rare_values: &'static [(&'static str, &'static [&'static str])],
    /// Fields of `indexed` the embedded store does not index (MongoDB does): their filters are
    /// answered by the time index, and they cost no B-tree insert per event.
    pub embedded_unindexed: &'static [&'static str],
    /// Columns the embedded store's aggregations read: indexed after the time, so that a range's
    /// sums come from the index alone instead of every row. The index then also serves time ranges
    /// and listings, in place of a plain time index.
    pub covering: &'static [&'static str],
}

const fn col(name: &'static str, sql_type: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        sql_type,
        json_path,
    }
}

pub const LOGS: Spec = Spec {
    collection: Collection::Logs,
    time_field: "timestamp",
    time_column: "timestamp_ms",
    columns: &[
        col("level", "TEXT NOT NULL", "$.level"),
        col("module", "TEXT", "$.module"),
        col("logger", "TEXT", "$.logger"),
        col("request_id", "TEXT", "$.extra.request_id"),
    ],
    indexed: &["level", "module"],
    sparse_indexed: &["request_id"],
    // INFO and DEBUG are nearly every event (one B-tree insert each for nothing): issue 23.
    rare_values: &[("level", &["WARNING", "ERROR", "CRITICAL"])],
    embedded_unindexed: &[],
    covering: &[],
};

pub const COST: Spec = Spec {
    collection: Collection::Cost,
    time_field: "created_at",
    time_column: "created_at_ms",
    columns: &[
        col("model", "TEXT NOT NULL", "$.model"),
        col("currency", "TEXT", "$.currency_symbol"),
        col("cost", "REAL", "$.cost"),
        col("input_tokens", "INTEGER", "$.input_tokens"),
        col("output_tokens", "INTEGER", "$.output_tokens"),
        col("total_tokens", "INTEGER", "$.total_tokens"),
        col("request_id", "TEXT", "$.request_id"),
        // Only an event whose own time was too far ahead has one: the budget counts it at arrival.
        col("received_at_ms", "INTEGER", "$.received_at"),
    ],
    indexed: &["model"],
    sparse_indexed: &["received_at_ms"],
    rare_values: &[],
    embedded_unindexed: &[],
    covering: &[
        "model",
        "currency",
        "cost",
        "input_tokens",
        "output_tokens",
        "total_tokens",
    ],
};

pub const PERFORMANCE: Spec = Spec {
    collection: Collection::Performance,
    time_field: "timestamp",
    time_column: "timestamp_ms",
    columns: &[
        col("status", "TEXT NOT NULL", "$.status"),
        col("model", "TEXT", "$.model"),
        col("response_time", "REAL", "$.response_time"),
        col("first_chunk_time", "REAL", "$.first_chunk_time"),
        col("request_id", "TEXT", "$.request_id"),
    ],
    indexed: &["status"],
    sparse_indexed: &[],
    rare_values: &[],
    embedded_unindexed: &[],
    covering: &["model", "status", "response_time", "first_chunk_time"],
};

pub const REJECTS: Spec = Spec {
    collection: Collection::Rejects,
    time_field: "received_at",
    time_column: "received_at_ms",
    columns: &[col("source", "TEXT NOT NULL", "$.source")],
    indexed: &[],
    sparse_indexed: &[],
    rare_values: &[],
    embedded_unindexed: &[],
    covering: &[],
};

pub const METRICS: Spec = Spec {
    collection: Collection::Metrics,
    time_field: "minute",
    time_column: "minute_ms",
    columns: &[col("model", "TEXT", "$.model")],
    indexed: &["model"],
    sparse_indexed: &[],
    rare_values: &[],
    embedded_unindexed: &[],
    covering: &[],
};

/// One document per alert: `_id` is the alert's fingerprint while it is the latest occurrence, and
/// `<fingerprint>@<started_at ms>` once a newer one has replaced it (kept as history).
pub const ALERTS: Spec = Spec {
    collection: Collection::Alerts,
    time_field: "started_at",
    time_column: "started_at_ms",
    columns: &[
        col("key", "TEXT NOT NULL", "$.key"),
        col("state", "TEXT NOT NULL", "$.state"),
        col("rule", "TEXT", "$.rule"),
        col("severity", "TEXT", "$.severity"),
    ],
    indexed: &["state", "key"],
    sparse_indexed: &[],
    rare_values: &[],
    embedded_unindexed: &[],
    covering: &[],
};

pub const ALL: [&Spec; Collection::COUNT] = [&LOGS, &COST, &PERFORMANCE, &REJECTS, &METRICS, &ALERTS];

impl Collection {
    pub fn spec(self) -> &'static Spec {
        ALL[self.index()]
    }
}

impl Spec {
    /// The column of a filterable field, if the embedded store keeps one.
    pub fn column(&self, field: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == field)
    }

    /// The rare values of `field` whose rows alone its embedded index holds, if it is such a field.
    pub fn rare_values(&self, field: &str) -> Option<&'static [&'static str]> {
        self.rare_values.iter().find(|(f, _)| *f == field).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_collection_has_its_descriptor_in_order() {
        for c in Collection::ALL {
            assert_eq!(c.spec().collection, c);
            assert_eq!(c.spec().time_field, c.time_field());
            for field in c.spec().indexed.iter().chain(c.spec().sparse_indexed) {
                assert!(
                    c.spec().column(field).is_some(),
                    "{field} of {} has no column",
                    c.name()
                );
            }
            for (field, _) in c.spec().rare_values {
                assert!(
                    c.spec().indexed.contains(field),
                    "{field} of {} is not indexed",
                    c.name()
                );
            }
            for field in c.spec().embedded_unindexed {
                assert!(
                    c.spec().indexed.contains(field),
                    "{field} of {} is not indexed",
                    c.name()
                );
            }
        }
    }
}
