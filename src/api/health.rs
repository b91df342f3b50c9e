//! Probes: `/healthz` says the process serves; `/readyz` says whether events can be kept now (the
//! store answers, or with MongoDB away, the outbox still takes them).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Api;
use crate::store::query::Query;

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
    let mut body = json!({
        "success": reason.is_none(),
        "ready": reason.is_none(),
        "store": health,
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
