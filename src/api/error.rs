//! One error shape for every route: `{"success": false, "error": "…"}` with a status that says
//! whose fault it is, and a message that names the parameter and what was expected.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A bad query parameter: `name` was `value`, `expected` says what would do.
    pub fn param(name: &str, value: &str, expected: impl std::fmt::Display) -> ApiError {
        let shown: String = value.chars().take(100).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("parameter `{name}` is {shown:?}; expected {expected}"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_transient() {
            ApiError::unavailable(format!("the store cannot answer right now: {e}"))
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the store failed: {e}"))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"success": false, "error": self.message}));
        (self.status, body).into_response()
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {}; the API serves the page at /, /api/logs, /api/cost, /api/performance, /api/rejects, /api/alerts, /api/metrics/minutes (and /stream of the first three), /api/stats/cost, /api/stats/errors, /api/stats/performance, /api/budget, /api/alerts/active, /api/alerts/silences, /api/config/monitor, POST /api/events, /healthz, /readyz and /metrics",
            uri.path()
        ),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let allowed = match uri.path() {
        "/api/events" => "POST",
        "/api/alerts/silences" => "GET or POST",
        p if p.starts_with("/api/alerts/silences/") => "DELETE",
        _ => "GET",
    };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}; use {allowed}", uri.path()),
    )
}
