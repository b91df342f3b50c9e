//! Who may call and how much they may send: the `Host` the request names, the bearer token
//! (compared in constant time), where a state-changing request comes from, the query-string limit,
//! and CORS for the origins configured (none by default).
//!
//! A browser is the attacker here, not a client of ours: a page on another site can make the
//! visitor's browser send requests to `127.0.0.1:8787`. Three rules close what it could do
//! (issue 20):
//! - **`Host`** must name this collector (its listen addresses, `localhost`, `127.0.0.1`, `[::1]`, or
//!   `api.allowed_hosts`), else 421: a page that rebinds its own name to 127.0.0.1 sends its own
//!   name, so it cannot read the logs. Requests over the API's Unix socket are not checked: no
//!   browser reaches it, and its file mode says who can.
//! - **`POST`** without the token must be `Content-Type: application/json` (uploads may also say
//!   `application/x-ndjson` or `application/jsonl`), else 415: those types make a browser ask
//!   first (a CORS preflight), which fails for any origin not configured; `text/plain`, forms and
//!   `multipart` do not, so a cross-site form could otherwise add a silence or a $1,000,000 cost.
//!   `DELETE` always needs a preflight, so it needs no type.
//! - **`Origin`**, when a state-changing request carries one, must be this collector's own (the page
//!   at `/`) or one of `api.cors_origins`, else 403.
//!
//! These rules, the token and the query limit are read through an [`Access`] that SIGHUP swaps,
//! so a leaked token is rotated by a reload.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::serve::Transport;
use super::{ApiConfig, ApiError, Listen};

/// The rules in force; swapped whole on SIGHUP.
struct Rules {
    /// The token, as bytes; None: no token needed.
    token: Option<Vec<u8>>,
    /// Host names and addresses `Host` may give (lower case, without port; IPv6 in brackets).
    hosts: Vec<String>,
    cors_origins: Vec<String>,
    any_origin: bool,
    max_query_bytes: usize,
}

impl Rules {
    fn new(config: &ApiConfig, listening: &[Listen]) -> Rules {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec();
        for on in listening {
            if let Listen::Tcp(addr) = on {
                hosts.push(host_of_ip(addr.ip()));
            }
        }
        hosts.extend(config.allowed_hosts.iter().map(|h| normalize_host(h)));
        Rules {
            token: config.token().map(|t| t.as_bytes().to_vec()),
            hosts,
            cors_origins: config.cors_origins.clone(),
            any_origin: config.cors_origins.iter().any(|o| o == "*"),
            max_query_bytes: config.max_query_bytes,
        }
    }

    fn host_allowed(&self, host: &str, local: Option<SocketAddr>) -> bool {
        let host = normalize_host(strip_port(host));
        // The address the connection came in on (a wildcard listen address names no host).
        let local = local.map(|a| host_of_ip(a.ip()));
        self.hosts.contains(&host) || local.is_some_and(|l| l == host)
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any_origin || self.cors_origins.iter().any(|o| o == origin) {
            return true;
        }
        // The page at `/`, calling the API of the collector that served it.
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((own, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
    }
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
    }
}

/// `Host` without its port: `[::1]:8787` → `[::1]`, `example:80` → `example`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    // A bare IPv6 address in the configuration: compare in brackets, as `Host` gives it.
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    }
}

/// The access rules every request is checked against before its route runs; cheap to clone.
#[derive(Clone)]
pub struct Access {
    rules: Arc<ArcSwap<Rules>>,
    /// The addresses served, for the `Host` list on reload.
    listening: Arc<[Listen]>,
}

impl Access {
    pub fn new(config: &ApiConfig, listening: &[Listen]) -> Access {
        Access {
            rules: Arc::new(ArcSwap::from_pointee(Rules::new(config, listening))),
            listening: listening.into(),
        }
    }

    /// SIGHUP: the token, `allowed_hosts`, `cors_origins` and `max_query_bytes` of `config` apply
    /// from the next request on.
    pub fn reload(&self, config: &ApiConfig) {
        self.rules.store(Arc::new(Rules::new(config, &self.listening)));
    }
}

/// The token in `Authorization`, if the header is `Bearer <token>` (the scheme in any case, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii_start())
}

/// Whether a `POST`'s type is one a browser must ask before sending cross-site.
fn json_type(headers: &HeaderMap, path: &str) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || (path == "/api/events"
            && matches!(
                essence.as_str(),
                "application/x-ndjson" | "application/jsonl" | "application/json-lines" | "application/jsonlines"
            ))
}

/// The `Host` check, for every route (the page's too).
pub async fn host(State(access): State<Access>, request: Request, next: Next) -> Response {
    let rules = access.rules.load();
    let transport = request
        .extensions()
        .get::<Transport>()
        .copied()
        .unwrap_or(Transport::Tcp(None));
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if let (Transport::Tcp(local), Some(host)) = (transport, host.as_deref()) {
        if !rules.host_allowed(host, local) {
            let shown: String = host.chars().take(100).collect();
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this collector does not answer to Host {shown:?}; it answers to its listen address, localhost, 127.0.0.1 and [::1]: add the name to api.allowed_hosts if clients use it (a web page that points its own name at this machine is refused on purpose)"
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Token, origin, type and size checks, for the API's routes (not the page's).
pub async fn check(State(access): State<Access>, request: Request, next: Next) -> Response {
    let rules = access.rules.load();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    // Preflights carry no credentials; the CORS layer (outside this one) answers them.
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let given = bearer(request.headers());
    if let Some(expected) = &rules.token {
        let ok = given.is_some_and(|g| bool::from(g.ct_eq(expected)));
        if !ok {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                if request.headers().get(header::AUTHORIZATION).is_none() {
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
    let method = request.method().clone();
    if method == Method::POST || method == Method::DELETE || method == Method::PUT || method == Method::PATCH {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !rules.origin_allowed(origin, host.as_deref()) {
                let shown: String = origin.chars().take(100).collect();
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{method} from the web page at {shown:?} is refused: it is not this collector's page; add the origin to api.cors_origins if that site may change things here"
                    ),
                )
                .into_response();
            }
        }
        // With the token checked above, the request cannot come from a page that lacks it.
        let path = request.uri().path();
        if method != Method::DELETE && rules.token.is_none() && !json_type(request.headers(), path) {
            let types = if path == "/api/events" {
                "`Content-Type: application/json` or `application/x-ndjson`"
            } else {
                "`Content-Type: application/json`"
            };
            let given = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map_or("none".to_string(), |v| {
                    format!("{:?}", v.chars().take(100).collect::<String>())
                });
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{method} {path} needs {types} (the type given is {given}): other types can be sent by any web page the browser shows, without asking; with curl add -H 'Content-Type: application/json'"
                ),
            )
            .into_response();
        }
    }
    let query_len = request.uri().query().map_or(0, str::len);
    if query_len > rules.max_query_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the query string is {query_len} bytes, over api.max_query_bytes ({})",
                rules.max_query_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The CORS layer: answers preflights and adds the headers for the origins in `api.cors_origins`
/// as they are now (a reload changes them); none configured, no origin is allowed.
pub fn cors(access: &Access) -> CorsLayer {
    let rules = access.rules.clone();
    let origin = AllowOrigin::predicate(move |origin, _| {
        let rules = rules.load();
        origin
            .to_str()
            .is_ok_and(|o| rules.any_origin || rules.cors_origins.iter().any(|c| c == o))
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allowed: &[&str]) -> Rules {
        let config = ApiConfig {
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            ..ApiConfig::default()
        };
        Rules::new(&config, &[Listen::Tcp("127.0.0.1:8787".parse().unwrap())])
    }

    #[test]
    fn hosts_by_name_address_and_port_and_nothing_else() {
        let r = rules(&["Collector", "::2"]);
        for ok in [
            "127.0.0.1:8787",
            "localhost",
            "LOCALHOST:80",
            "[::1]:8787",
            "collector:8787",
            "collector.",
            "[::2]",
        ] {
            assert!(r.host_allowed(ok, None), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8787",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "[::3]",
            "",
        ] {
            assert!(!r.host_allowed(bad, None), "{bad}");
        }
        assert!(r.host_allowed("10.0.0.5:8787", Some("10.0.0.5:8787".parse().unwrap())));
    }

    #[test]
    fn bearer_in_any_case_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("BEARER abc"));
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        let r = rules(&[]);
        assert!(r.origin_allowed("http://127.0.0.1:8787", Some("127.0.0.1:8787")));
        assert!(!r.origin_allowed("http://evil.example", Some("127.0.0.1:8787")));
        assert!(!r.origin_allowed("null", Some("127.0.0.1:8787")));
    }
}
