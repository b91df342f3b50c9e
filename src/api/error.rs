//! One error shape for every route: `{"success": false, "code": "…", "error": "…"}` with a status
//! that says whose fault it is, a stable machine-readable `code` (what a page or a script switches
//! on), and a message that names the parameter and what was expected. A store's own words (a
//! driver's error, with its labels and codes) go apart, in `details`: they help whoever debugs,
//! and would only alarm whoever reads the page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable across releases: `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`,
    /// `too_large`, `too_many`, `store_unavailable`, `store_failed`, `query_timeout`, `unavailable`,
    /// `internal`, …
    pub code: &'static str,
    pub message: String,
    /// What the store (or another component) said, as it said it.
    pub details: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code_of(status),
            message: message.into(),
            details: None,
        }
    }

    /// The same error under a more precise code.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
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

/// The code an error of `status` has unless it says otherwise.
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 | 414 => "too_large",
        415 => "unsupported_media_type",
        421 => "misdirected",
        429 => "too_many",
        503 => "unavailable",
        _ => "internal",
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code, message) = if e.is_transient() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store cannot answer right now; events are still kept (see /readyz for since when and the outbox)",
            )
        } else {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_failed",
                "the store failed to answer this query (see details)",
            )
        };
        ApiError {
            status,
            code,
            message: message.to_string(),
            details: Some(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"success": false, "code": self.code, "error": self.message});
        if let Some(details) = self.details {
            body["details"] = serde_json::Value::String(details);
        }
        (self.status, Json(body)).into_response()
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {}; the API serves the page at /, /api/logs, /api/cost, /api/performance, /api/rejects, /api/alerts, /api/metrics/minutes (and /stream of the first three), /api/stats/cost, /api/stats/errors, /api/stats/performance, /api/stats/recent, /api/budget, /api/alerts/active, /api/collectors, /api/alerts/silences, /api/config/monitor, POST /api/events, /healthz, /readyz and /metrics",
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
