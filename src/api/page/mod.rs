//! The log viewer page at `/`: one HTML file, a script, a style sheet and an icon, embedded in the
//! binary (no CDN, no network at run time, no build step). The page itself holds no data, so it is
//! served without the token; everything it shows comes from the API, which the script calls with
//! the token the user enters (kept in the browser's session storage).
//!
//! Assets are served under names that carry a hash of their content (`/assets/app.3f…e1.js`), so
//! browsers may keep them for ever (`immutable`); `/` itself is revalidated on every load (`no-cache`
//! with an `ETag`), and so picks up a new binary's assets at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// The name the page refers to (`app.js`), replaced in `index.html` by the hashed name.
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX: &str = include_str!("assets/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        body: include_bytes!("assets/app.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "app.css",
        body: include_bytes!("assets/app.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        name: "icon.svg",
        body: include_bytes!("assets/icon.svg"),
        content_type: "image/svg+xml",
    },
];

/// Served for a year and never revalidated: the name changes with the content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page loads only what it serves itself and talks only to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Built {
    index: String,
    index_etag: String,
    /// (hashed name, asset)
    assets: Vec<(String, &'static Asset)>,
}

static BUILT: LazyLock<Built> = LazyLock::new(|| {
    let mut index = INDEX.to_string();
    let mut assets = Vec::with_capacity(ASSETS.len());
    for asset in ASSETS {
        let hash = hex(&Sha256::digest(asset.body)[..6]);
        let hashed = match asset.name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
            None => format!("{}.{hash}", asset.name),
        };
        index = index.replace(&format!("/assets/{}", asset.name), &format!("/assets/{hashed}"));
        assets.push((hashed, asset));
    }
    let index_etag = format!("\"{}\"", hex(&Sha256::digest(index.as_bytes())[..8]));
    Built {
        index,
        index_etag,
        assets,
    }
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The page's routes; they sit outside the token check (see the module docs).
pub fn router() -> Router {
    Router::new().route("/", get(index)).route("/assets/{file}", get(asset))
}

fn common_headers(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

async fn index(request: HeaderMap) -> Response {
    let built = &*BUILT;
    let mut h = HeaderMap::new();
    common_headers(&mut h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&built.index_etag) {
        h.insert(header::ETAG, etag);
    }
    if matches(&request, &built.index_etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    (h, built.index.clone()).into_response()
}

/// Whether `If-None-Match` names `etag`.
fn matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn asset(Path(file): Path<String>, request: HeaderMap) -> Response {
    let built = &*BUILT;
    let found = built
        .assets
        .iter()
        .find(|(hashed, _)| *hashed == file)
        .map(|(hashed, a)| (true, hashed.as_str(), *a))
        .or_else(|| {
            // The plain name too (no-cache), for whoever types it.
            built
                .assets
                .iter()
                .find(|(_, a)| a.name == file)
                .map(|(hashed, a)| (false, hashed.as_str(), *a))
        });
    let Some((immutable, hashed, asset)) = found else {
        return super::ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no asset {file:?}; the page at / names the ones it needs"),
        )
        .into_response();
    };
    let mut h = HeaderMap::new();
    common_headers(&mut h);
    let etag = format!("\"{hashed}\"");
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable { IMMUTABLE } else { "no-cache" }),
    );
    if matches(&request, &etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (h, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of the page's own files (index and every asset).
    fn embedded_bytes() -> usize {
        BUILT.index.len() + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
    }

    #[test]
    fn the_index_refers_to_every_asset_by_its_hashed_name() {
        let built = &*BUILT;
        for (hashed, asset) in &built.assets {
            assert!(built.index.contains(&format!("/assets/{hashed}")), "{}", asset.name);
            assert!(!built.index.contains(&format!("/assets/{}\"", asset.name)));
        }
        assert!(embedded_bytes() < 300 * 1024, "{}", embedded_bytes());
    }
}
