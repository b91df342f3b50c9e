//! Listings: `GET /api/logs` in the original's shape (`{success, logs, pagination}` with `page`,
//! `per_page`, `total`, `pages`), and the same over the other collections. Keyset paging
//! (`cursor` → `next_cursor`) is added for deep pages; `page` stays for compatibility.
//!
//! A collection's listing is one entry in [`LISTINGS`]: its path, the key its documents go under,
//! and the fields it filters on (each one its descriptor keeps as a column).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::params::{Params, RawQuery};
use super::{Api, ApiError};
use crate::event::Collection;
use crate::store::query::{Cursor, Filter, FindQuery, Query};

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
    move |State(api), query| Box::pin(async move { answer(&api, listing, query).await.map(Json) })
}

type ListFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Json<Value>, ApiError>> + Send>>;

async fn answer(api: &Api, listing: &Listing, query: RawQuery) -> Result<Value, ApiError> {
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
    let found = api.timed(api.store().find(q)).await?;
    let (total, exact) = found.total.map_or((0, true), |c| (c.n, c.exact));
    Ok(json!({
        "success": true,
        listing.key: found.docs,
        "pagination": {
            "page": page,
            "per_page": per_page,
            "total": total,
            "pages": total.div_ceil(per_page),
            "total_is_lower_bound": !exact,
            "next_cursor": found.next.map(|c| c.encode()),
        },
    }))
}
