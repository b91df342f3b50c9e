//! What a stream sends, framed once: Server-Sent Events (`event:`, `id:`, `data:` lines), and the
//! events in the original's shape, from a live event or from a stored document alike.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::event::{Body, Collection, Event};

/// Appends one event: `event:` (unless empty), `id:` (if any), then `data:` from `data`, which
/// writes one line (compact JSON), and the blank line that ends the event.
pub(super) fn write_event(out: &mut Vec<u8>, event: &str, id: Option<&[u8]>, data: impl FnOnce(&mut Vec<u8>)) {
    if !event.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id);
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    data(out);
    out.extend_from_slice(b"\n\n");
}

/// A log in the stream's shape: the original's fields, in its order.
#[derive(Serialize)]
struct LogShape<'a> {
    timestamp: &'a str,
    level: &'a str,
    message: &'a str,
    module: &'a str,
    extra: &'a Map<String, Value>,
}

/// Appends a live event in the stream's shape (compact JSON, one line).
pub(super) fn write_shaped(e: &Event, host: &str, out: &mut Vec<u8>) {
    let start = out.len();
    let written = match &e.body {
        Body::Log(l) => {
            let mut time = Vec::with_capacity(24);
            e.time.write_rfc3339(&mut time);
            let shape = LogShape {
                timestamp: std::str::from_utf8(&time).unwrap_or_default(),
                level: l.level.as_str(),
                message: &l.message,
                module: l.module.as_deref().unwrap_or("unknown"),
                extra: &l.extra,
            };
            serde_json::to_writer(&mut *out, &shape).map_err(|e| e.to_string())
        }
        _ => crate::store::document::write_json(e, host, out).map_err(|e| e.to_string()),
    };
    if let Err(problem) = written {
        out.truncate(start);
        let data = json!({"error": format!("cannot format the event: {problem}")});
        out.extend_from_slice(data.to_string().as_bytes());
    }
}

/// A stored document in the stream's shape (the same as [`write_shaped`] gives).
pub(super) fn shape_doc(collection: Collection, mut doc: Value) -> String {
    if collection != Collection::Logs {
        return doc.to_string();
    }
    let mut take = |k: &str| doc.get_mut(k).map(Value::take);
    json!({
        "timestamp": take("timestamp").unwrap_or(Value::Null),
        "level": take("level").unwrap_or(Value::Null),
        "message": take("message").unwrap_or(Value::Null),
        "module": take("module").unwrap_or_else(|| Value::from("unknown")),
        "extra": take("extra").unwrap_or_else(|| json!({})),
    })
    .to_string()
}
