//! Who may call and how much they may send: the bearer token (compared in constant time), the
//! query-string limit, and CORS for the origins configured (none by default).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{ApiConfig, ApiError};

/// What every request is checked against before its route runs.
#[derive(Clone)]
pub struct Limits {
    /// `Bearer <token>`, the whole header value expected.
    expected: Option<Arc<[u8]>>,
    max_query_bytes: usize,
}

impl Limits {
    pub fn new(config: &ApiConfig) -> Limits {
        Limits {
            expected: config.token().map(|t| format!("Bearer {t}").into_bytes().into()),
            max_query_bytes: config.max_query_bytes,
        }
    }
}

pub async fn check(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    // Preflights carry no credentials; the CORS layer (outside this one) answers them.
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    if let Some(expected) = &limits.expected {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(given.ct_eq(expected)) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                if given.is_empty() {
                    "this API needs a token: send the header `Authorization: Bearer <api.token>`"
                } else {
                    "the token is not right: send the header `Authorization: Bearer <api.token>`"
                },
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let query_len = request.uri().query().map_or(0, str::len);
    if query_len > limits.max_query_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the query string is {query_len} bytes, over api.max_query_bytes ({})",
                limits.max_query_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The CORS layer for `cors_origins`, or None when none are configured.
pub fn cors(config: &ApiConfig) -> Option<CorsLayer> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let origin = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ]),
    )
}
