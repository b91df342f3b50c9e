//! Listings: `GET /api/logs` in the original's shape (`{success, logs, pagination}` with `page`,
//! `per_page`, `total`, `pages`), and the same over the other collections. Keyset paging
//! (`cursor` → `next_cursor`) is added for deep pages; `page` stays for compatibility.
//!
//! A collection's listing is one entry in [`LISTINGS`]: its path, the key its documents go under,
//! and the fields it filters on (each one its descriptor keeps as a column).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::params::{Params, RawQuery};
use super::reads::ReadMemory;
use super::{Api, ApiError};
use crate::event::Collection;
use crate::store::query::{Cursor, Filter, FindQuery, Found, Shape};

/// Largest page.
pub const MAX_PER_PAGE: u64 = 1000;
const DEFAULT_PER_PAGE: u64 = 50;
/// Deepest `page`: further is what `cursor` is for.
const MAX_PAGE: u64 = 1_000_000;

pub struct Listing {
    pub path: &'static str,
    pub collection: Collection,
    /// The answer's key for the documents (`logs` in the original).
    pub key: &'static str,
    /// Exact-match filters; each parameter is named like the stored field.
    pub filters: &'static [&'static str],
    /// Whether `q` (text in the message or reason) and `min_level` apply.
    pub text: bool,
    pub levels: bool,
}

pub const LISTINGS: &[Listing] = &[
    Listing {
        path: "/api/logs",
        collection: Collection::Logs,
        key: "logs",
        filters: &["level", "module", "logger", "request_id"],
        text: true,
        levels: true,
    },
    Listing {
        path: "/api/cost",
        collection: Collection::Cost,
        key: "cost",
        filters: &["model", "request_id"],
        text: false,
        levels: false,
    },
    Listing {
        path: "/api/performance",
        collection: Collection::Performance,
        key: "performance",
        filters: &["model", "status", "request_id"],
        text: false,
        levels: false,
    },
    Listing {
        path: "/api/alerts",
        collection: Collection::Alerts,
        key: "alerts",
        filters: &["state", "rule", "severity", "key"],
        text: false,
        levels: false,
    },
    Listing {
        path: "/api/metrics/minutes",
        collection: Collection::Metrics,
        key: "metrics",
        filters: &["model"],
        text: false,
        levels: false,
    },
    Listing {
        path: "/api/rejects",
        collection: Collection::Rejects,
        key: "rejects",
        filters: &["source"],
        text: true,
        levels: false,
    },
];

impl Listing {
    fn known_params(&self) -> Vec<&'static str> {
        let mut known = vec!["start_time", "end_time", "page", "per_page", "cursor"];
        known.extend_from_slice(self.filters);
        if self.text {
            known.push("q");
        }
        if self.levels {
            known.push("min_level");
        }
        known
    }

    /// The store filters the parameters ask for.
    pub fn filters(&self, params: &Params) -> Result<Vec<Filter>, ApiError> {
        let mut out = Vec::new();
        for &field in self.filters {
            let Some(value) = params.string(field, 1024)? else {
                continue;
            };
            let value = match field {
                // The original stores upper-case names; accept `warning` or `warn` too.
                "level" => params.level(field)?.map_or(value, |l| l.as_str().to_string()),
                "status" if value != "success" && value != "error" => {
                    return Err(ApiError::param(field, &value, "success or error"))
                }
                "state" if value != "firing" && value != "resolved" => {
                    return Err(ApiError::param(field, &value, "firing or resolved"))
                }
                _ => value,
            };
            out.push(Filter::Eq(field, value));
        }
        if self.levels {
            if let Some(min) = params.level("min_level")? {
                out.push(Filter::LevelAtLeast(min));
            }
        }
        if self.text {
            if let Some(q) = params.string("q", 1024)? {
                out.push(Filter::Contains(q));
            }
        }
        Ok(out)
    }
}

/// Whether `cursor`'s key is one this store makes (SQLite's rowid, MongoDB's ObjectId): a forged
/// or mangled one is the caller's mistake (400), not the store's failure (500).
fn cursor_fits(store: &crate::store::AnyStore, cursor: &Cursor) -> bool {
    match store {
        crate::store::AnyStore::Embedded(_) => cursor.key.parse::<i64>().is_ok(),
        crate::store::AnyStore::Mongo(_) => cursor.key.len() == 24 && cursor.key.bytes().all(|b| b.is_ascii_hexdigit()),
    }
}

/// The handler of one listing.
pub fn list(listing: &'static Listing) -> impl Fn(State<Api>, RawQuery) -> ListFuture + Clone + Send + Sync + 'static {
    move |State(api), query| Box::pin(async move { answer(api, listing, query).await })
}

type ListFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, ApiError>> + Send>>;

/// A page is read and sent in pieces of at most [`PIECE_BYTES`](super::reads::PIECE_BYTES), each
/// read when the connection has taken the one before (so a slow client holds one piece), and stops
/// once its documents reach `api.max_response_bytes`: shorter than `per_page`, with `next_cursor`.
/// The first piece (and the count) is read before the answer starts, so that a bad cursor or a
/// store that cannot answer still gets its status; a store failing later cuts the answer short
/// (the client sees an incomplete body, never a wrong one).
async fn answer(api: Api, listing: &'static Listing, query: RawQuery) -> Result<Response, ApiError> {
    let params = Params::new(query, &listing.known_params())?.with_naive_timezone(&api.inner.naive);
    let per_page = params.number("per_page", 1, MAX_PER_PAGE, DEFAULT_PER_PAGE)?;
    let page = params.number("page", 1, MAX_PAGE, 1)?;
    let after = match params.str("cursor") {
        None => None,
        Some(c) => Some(
            Cursor::decode(c)
                .filter(|cursor| cursor_fits(api.store(), cursor))
                .ok_or_else(|| ApiError::param("cursor", c, "the `next_cursor` of a previous answer, unchanged"))?,
        ),
    };
    if after.is_some() && page > 1 {
        return Err(ApiError::bad_request(
            "parameters `cursor` and `page` are both given; expected one: `cursor` (from `next_cursor`) or `page`",
        ));
    }
    let mut q = FindQuery::new(listing.collection);
    q.range = params.range()?;
    q.filters = listing.filters(&params)?;
    q.limit = per_page as usize;
    q.after = after;
    q.skip = (page - 1) * per_page;
    q.count_up_to = api.config().count_limit;
    q.shape = Shape::Text;
    let cap = api.config().max_response_bytes.0 as usize;
    q.max_bytes = cap;
    let (first, memory) = api.read_piece(q.clone()).await?;
    let (total, exact) = first.total.map_or((0, true), |c| (c.n, c.exact));
    let page = Paging {
        api,
        q,
        docs_left: per_page as usize,
        bytes_left: cap,
        head: Some(format!(r#"{{"success":true,"{}":["#, listing.key)),
        first: Some((first, memory)),
        tail: json!({
            "page": page,
            "per_page": per_page,
            "total": total,
            "pages": total.div_ceil(per_page),
            "total_is_lower_bound": !exact,
        }),
        any: false,
        done: false,
    };
    let body = futures_util::stream::unfold(page, |mut page| async move {
        let chunk = page.next_chunk().await?;
        Some((chunk, page))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

/// A listing's answer while it is sent.
struct Paging {
    api: Api,
    /// The next piece's query.
    q: FindQuery,
    docs_left: usize,
    bytes_left: usize,
    head: Option<String>,
    first: Option<(Found, ReadMemory)>,
    /// `pagination` without `next_cursor`.
    tail: Value,
    /// Whether a document was written (the next needs a comma).
    any: bool,
    done: bool,
}

impl Paging {
    /// The next bytes of the answer; None once it is complete. An error ends the body early.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        let (found, memory) = match self.first.take() {
            Some(first) => first,
            None => {
                let mut q = self.q.clone();
                q.limit = self.docs_left;
                q.max_bytes = self.bytes_left;
                q.count_up_to = 0;
                match self.api.read_piece(q).await {
                    Ok(piece) => piece,
                    Err(e) => {
                        self.done = true;
                        tracing::debug!("a listing was cut short: {}", e.message);
                        return Some(Err(std::io::Error::other(e.message)));
                    }
                }
            }
        };
        let mut buf = Vec::with_capacity(found.bytes + found.texts.len() + 512);
        if let Some(head) = self.head.take() {
            buf.extend_from_slice(head.as_bytes());
        }
        for text in &found.texts {
            if self.any {
                buf.push(b',');
            }
            buf.extend_from_slice(text.as_bytes());
            self.any = true;
        }
        self.docs_left = self.docs_left.saturating_sub(found.texts.len());
        self.bytes_left = self.bytes_left.saturating_sub(found.bytes);
        let more = found.next.is_some();
        drop(found.texts);
        if more && self.docs_left > 0 && self.bytes_left > 0 {
            self.q.after = found.next;
            self.q.skip = 0;
        } else {
            let mut tail = std::mem::take(&mut self.tail);
            tail["next_cursor"] = found.next.map_or(Value::Null, |c| Value::from(c.encode()));
            buf.extend_from_slice(b"],\"pagination\":");
            buf.extend_from_slice(tail.to_string().as_bytes());
            buf.push(b'}');
            self.done = true;
        }
        Some(Ok(memory.into_bytes(buf)))
    }
}
