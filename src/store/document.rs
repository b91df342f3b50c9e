//! The stored document of each collection: one field list, written as JSON for the embedded store
//! and as BSON for MongoDB.
//!
//! Field names follow the original Python system and `DESIGN.md`; absent optional fields are left
//! out rather than stored as null. In JSON, `_id` is the ObjectId's hex and times are RFC 3339 UTC
//! strings with milliseconds; in BSON they are an ObjectId and Dates. Numbers keep their kind: cost
//! and durations are doubles, tokens and counts 64-bit integers.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::event::{Body, Event, EventId, Timestamp};

/// Appends the document of `event` to `out` as one JSON object.
pub fn write_json(event: &Event, host: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::new(out);
    Doc {
        event,
        host,
        bson: false,
    }
    .serialize(&mut ser)
}

/// The document of `event` as raw BSON, ready for `insert_many`.
pub fn to_bson(event: &Event, host: &str) -> Result<bson::RawDocumentBuf, bson::ser::Error> {
    bson::to_raw_document_buf(&Doc {
        event,
        host,
        bson: true,
    })
}

struct Doc<'a> {
    event: &'a Event,
    host: &'a str,
    bson: bool,
}

struct Id(EventId, bool);
struct Time(Timestamp, bool);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.1 {
            return bson::oid::ObjectId::from_bytes(*self.0.bytes()).serialize(s);
        }
        let mut buf = Vec::with_capacity(24);
        self.0.write_hex(&mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.1 {
            return bson::DateTime::from_millis(self.0.as_millis()).serialize(s);
        }
        let mut buf = Vec::with_capacity(24);
        self.0.write_rfc3339(&mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl Serialize for Doc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("_id", &Id(e.id, self.bson))?;
        m.serialize_entry(e.collection().time_field(), &Time(e.time, self.bson))?;
        if let Some(received) = e.received {
            // Only for an event whose own time was too far ahead: it counts at arrival.
            m.serialize_entry("received_at", &Time(received, self.bson))?;
        }
        macro_rules! opt {
            ($name:literal, $v:expr) => {
                if let Some(v) = &$v {
                    m.serialize_entry($name, v)?;
                }
            };
        }
        match &e.body {
            Body::Log(l) => {
                m.serialize_entry("level", l.level.as_str())?;
                m.serialize_entry("message", &l.message)?;
                opt!("module", l.module);
                opt!("function", l.function);
                opt!("line", l.line);
                opt!("logger", l.logger);
                opt!("traceback", l.traceback);
                m.serialize_entry("extra", &l.extra)?;
            }
            Body::Cost(c) => {
                m.serialize_entry("model", &c.model)?;
                m.serialize_entry("cost", &c.cost)?;
                m.serialize_entry("currency_symbol", c.currency.symbol())?;
                opt!("input_tokens", c.input_tokens);
                opt!("cached_input_tokens", c.cached_input_tokens);
                opt!("output_tokens", c.output_tokens);
                opt!("total_tokens", c.total_tokens);
                opt!("provider", c.provider);
                opt!("request_id", c.request_id);
                m.serialize_entry("cost_source", c.source.as_str())?;
                if !c.extra.is_empty() {
                    m.serialize_entry("extra", &c.extra)?;
                }
            }
            Body::Performance(p) => {
                m.serialize_entry("response_time", &p.response_time)?;
                m.serialize_entry("status", p.status.as_str())?;
                opt!("error", p.error);
                opt!("model", p.model);
                opt!("provider", p.provider);
                opt!("request_id", p.request_id);
                opt!("first_chunk_time", p.first_chunk_time);
                opt!("chunk_count", p.chunk_count);
                if !p.extra.is_empty() {
                    m.serialize_entry("extra", &p.extra)?;
                }
            }
            Body::Reject(r) => {
                m.serialize_entry("reason", &r.reason)?;
                m.serialize_entry("raw", &r.raw)?;
                m.serialize_entry("raw_bytes", &r.raw_len)?;
            }
            // A few documents a minute: going through a JSON value costs nothing that matters.
            Body::Metric(metrics) => {
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&**metrics) {
                    for (k, v) in fields.iter().filter(|(_, v)| !v.is_null()) {
                        m.serialize_entry(k, v)?;
                    }
                }
            }
        }
        m.serialize_entry("host", self.host)?;
        m.serialize_entry("source", &*e.source)?;
        m.end()
    }
}

/// This machine's name, stored in every document so several hosts can share one database.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
