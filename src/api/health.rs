//! Probes: `/healthz` says the process serves; `/readyz` says whether events can be kept now (the
//! store answers, or with MongoDB away, the outbox still takes them), and whether intake is
//! saturated: sources waiting for memory, and since when (`intake`). Waiting is back-pressure and
//! normal in a burst, so it alone turns `/readyz` to 503 only once it has lasted
//! [`SATURATED_FOR`] without a break: the store is far behind, or something holds the memory.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Api;
use crate::event::Timestamp;
use crate::pipeline::memory::Saturation;
use crate::store::query::Query;

/// Sources waiting for memory this long without a break make `/readyz` answer 503.
pub const SATURATED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// `intake` in `/readyz`: memory in use, and whether (since when) sources wait for it.
fn intake(saturation: Option<Saturation>, used: usize, limit: usize) -> (serde_json::Value, Option<String>) {
    let Some(s) = saturation else {
        return (
            json!({"saturated": false, "memory_used": used, "memory_limit": limit}),
            None,
        );
    };
    let waited = s.since.elapsed().unwrap_or_default();
    let since_ms = s
        .since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let since = Timestamp(since_ms).to_string();
    let value = json!({
        "saturated": true,
        "since": since,
        "waited_seconds": waited.as_secs(),
        "waiting": s.waiting,
        "memory_used": used,
        "memory_limit": limit,
    });
    let reason = (waited >= SATURATED_FOR).then(|| {
        format!(
            "intake is saturated since {since}: sources have waited for memory for {}s without a break ({} of pipeline.memory_budget {} in use); the store is not keeping up, or clients hold it (see the log)",
            waited.as_secs(),
            crate::units::ByteSize(used as u64),
            crate::units::ByteSize(limit as u64),
        )
    });
    (value, reason)
}

pub async fn alive() -> Json<serde_json::Value> {
    Json(json!({"success": true, "status": "alive"}))
}

pub async fn ready(State(api): State<Api>) -> Response {
    let health = api.store().health();
    let reason = if api.is_stopping() {
        Some("the collector is shutting down".to_string())
    } else if !health.failing_collections.is_empty() {
        Some(format!(
            "writes fail and retrying will not help: {}",
            health.failing_collections.join("; ")
        ))
    } else if health.reachable {
        None
    } else {
        match api.inner.outbox_cap {
            Some(cap) if health.outbox_bytes < cap => None,
            Some(cap) => Some(format!(
                "MongoDB is unreachable and the outbox is full ({} of {cap} bytes)",
                health.outbox_bytes
            )),
            None => Some(format!(
                "the {} store is not writable (its last write failed)",
                health.kind
            )),
        }
    };
    let budget = &api.inner.memory;
    let (intake, saturated) = intake(budget.saturation(), budget.used(), budget.limit());
    let reason = reason.or(saturated);
    let mut body = json!({
        "success": reason.is_none(),
        "ready": reason.is_none(),
        "store": health,
        "intake": intake,
    });
    if let Some(reason) = &reason {
        body["error"] = serde_json::Value::from(reason.as_str());
    }
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn waiting_for_memory_is_reported_at_once_and_is_a_503_reason_only_after_a_minute() {
        assert_eq!(intake(None, 10, 100).0["saturated"], false);
        let now = SystemTime::now();
        let short = Saturation {
            since: now - Duration::from_secs(5),
            waiting: 3,
        };
        let (v, reason) = intake(Some(short), 100, 100);
        assert_eq!((v["saturated"].as_bool(), v["waiting"].as_u64()), (Some(true), Some(3)));
        assert!(v["since"].as_str().unwrap().ends_with('Z'));
        assert_eq!(reason, None);
        let long = Saturation {
            since: now - SATURATED_FOR,
            waiting: 1,
        };
        let reason = intake(Some(long), 100, 100).1.unwrap();
        assert!(reason.starts_with("intake is saturated since "), "{reason}");
    }
}
