//! A window's figures as the statistics read them: from an `api_metrics` document, or from the
//! monitor's memory for windows not written yet. Summed per minute over every document of it (the
//! window's own, its late additions, other collectors' sharing one MongoDB), they give a minute's
//! calls, errors, sums and latency sketch without reading its requests.

use serde_json::Value;

use super::sketch::Sketch;
use crate::event::{EventId, MinuteMetrics};

#[derive(Clone, Debug, Default)]
pub struct Rollup {
    /// The document's `_id`: memory and store report a window once.
    pub id: Option<EventId>,
    pub start_ms: i64,
    pub width_ms: i64,
    /// None: all models.
    pub model: Option<String>,
    /// Events that came after the window was written.
    pub late: bool,
    /// Written by a release that keeps sketches and sums (older documents cannot stand for their
    /// window: the statistics read its requests instead).
    pub complete: bool,
    pub requests: u64,
    pub errors: u64,
    pub duration_total: f64,
    pub first_chunk_total: f64,
    pub first_chunk_count: u64,
    pub sketch: Option<Sketch>,
    pub unmodelled: Option<Box<Rollup>>,
}

impl Rollup {
    /// A stored `api_metrics` document; None if it is not one.
    pub fn from_doc(doc: &Value) -> Option<Rollup> {
        let start_ms = crate::event::Timestamp::parse_rfc3339(doc.get("minute")?.as_str()?)
            .ok()?
            .as_millis();
        let id = doc.get("_id").and_then(Value::as_str).and_then(EventId::from_hex);
        let mut r = Rollup::from_fields(doc)?;
        r.id = id;
        r.start_ms = start_ms;
        Some(r)
    }

    fn from_fields(doc: &Value) -> Option<Rollup> {
        let u = |k: &str| doc.get(k).and_then(Value::as_u64).unwrap_or(0);
        let f = |k: &str| doc.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        Some(Rollup {
            id: None,
            start_ms: 0,
            width_ms: doc.get("window_ms").and_then(Value::as_i64)?,
            model: doc.get("model").and_then(Value::as_str).map(str::to_string),
            late: doc.get("late").and_then(Value::as_bool).unwrap_or(false),
            complete: doc.get("first_chunk_count").is_some(),
            requests: u("request_count"),
            errors: u("error_count"),
            duration_total: f("total_duration"),
            first_chunk_total: f("first_chunk_total"),
            first_chunk_count: u("first_chunk_count"),
            sketch: doc
                .get("latency_sketch")
                .and_then(Value::as_str)
                .and_then(Sketch::decode),
            unmodelled: doc.get("unmodelled").and_then(|u| Rollup::from_fields(u).map(Box::new)),
        })
    }

    /// A window document the monitor holds (not written, or not stored yet).
    pub fn from_metrics(id: EventId, start_ms: i64, m: &MinuteMetrics) -> Rollup {
        Rollup {
            id: Some(id),
            start_ms,
            width_ms: m.window_ms,
            model: m.model.clone(),
            late: m.late,
            complete: true,
            requests: m.request_count,
            errors: m.error_count,
            duration_total: m.total_duration,
            first_chunk_total: m.first_chunk_total,
            first_chunk_count: m.first_chunk_count,
            sketch: m.latency_sketch.as_deref().and_then(Sketch::decode),
            unmodelled: m
                .unmodelled
                .as_deref()
                .map(|u| Box::new(Rollup::from_metrics(id, start_ms, u))),
        }
    }
}
