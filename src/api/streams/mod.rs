//! Live streams (Server-Sent Events) of stored events: `GET /api/logs/stream` in the original's
//! shape (`{timestamp, level, message, module, extra}`), and the same for cost and performance.
//!
//! `?tail=N` opens a stream with the newest N stored events (as `tail -f` shows the last lines)
//! before it goes live, divided from the live part the same way as a resume.
//!
//! Each event carries `id: <time_ms>_<_id>`. A browser that reconnects sends it back as
//! `Last-Event-ID`, and the stream first replays from the store what matches after that position
//! (time, then `_id`; at most `api.max_replay` events, the rest counted), then continues live
//! without repeating what it replayed. The tap's [`Mark`] taken when the stream opens divides the
//! two: the replay reaches up to the newest event shown by then, the live part starts with the next
//! batch, so events stored meanwhile are neither lost nor counted twice. Replay assumes events are
//! stored roughly in time order: one timed before the last event seen and stored after the
//! disconnect is not replayed.
//!
//! Live events come from the tap's bounded broadcast through one [`Hub`] per collection: while it
//! has clients, a hub formats each stored batch once into its SSE text (the client count does not
//! multiply the formatting) and rebroadcasts it, bounded too. A client without filters sends that
//! text as it is, shared with the others, not copied; a filtered one copies the events it wants.
//! A client that does not read is not waited for: its place in the broadcast is overtaken, and
//! when it reads again it gets `event: lagged` with the number of events it missed, from the
//! tap's per-collection sequence (it may reconnect with `Last-Event-ID` to fetch them). Each
//! client holds at most one formatted batch and its connection's queue (a few chunks, of its own
//! or shared batches), so a stalled client costs neither ingest speed nor memory.
//!
//! Ingest comes first. While sources wait for memory, a hub holds its next batch back (at most
//! [`YIELD_AT_MOST`]): the clients' reading, often on the same cores, would otherwise take as much
//! CPU as ingest itself during a burst. And the hubs, the clients' tasks and their connections run
//! on a runtime of their own, one thread at a lower CPU priority (`api.stream_nice`): when the
//! cores are short, ingest and the other endpoints go on at their pace and the streams lag (a hub
//! that falls behind the tap skips batches, which its clients learn of as `lagged`).

mod feed;
mod hub;
mod sse;

use std::convert::Infallible;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tokio::sync::mpsc;

use super::params::{Params, RawQuery};
use super::serve::Lane;
use super::{Api, ApiError};
use crate::event::{Collection, Level};
use crate::store::query::{Filter, Position};
use feed::Feed;
use hub::Line;

pub(crate) use hub::{Hubs, StreamRuntime};

/// Chunks of events waiting for a client's connection (which buffers some more itself): a chunk
/// may be a whole shared batch, which a stalled client keeps in memory.
const CLIENT_QUEUE: usize = 2;
/// The most events `?tail=` asks for.
const MAX_TAIL: u64 = 1000;

pub struct Stream {
    pub path: &'static str,
    pub collection: Collection,
    /// Exact-match filters, each named like the stored field.
    pub filters: &'static [&'static str],
    /// Whether `level` (that level and above) and `q` (text in the message) apply.
    pub logs: bool,
}

pub const STREAMS: &[Stream] = &[
    Stream {
        path: "/api/logs/stream",
        collection: Collection::Logs,
        filters: &["module"],
        logs: true,
    },
    Stream {
        path: "/api/cost/stream",
        collection: Collection::Cost,
        filters: &["model"],
        logs: false,
    },
    Stream {
        path: "/api/performance/stream",
        collection: Collection::Performance,
        filters: &["model", "status"],
        logs: false,
    },
];

type StreamFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// The handler of one stream.
pub fn subscribe(
    stream: &'static Stream,
) -> impl Fn(State<Api>, Option<Extension<Lane>>, HeaderMap, RawQuery) -> StreamFuture + Clone + Send + Sync + 'static {
    move |State(api), lane, headers, query| {
        Box::pin(async move {
            match open(api, stream, &headers, query) {
                Ok(response) => {
                    // Its writes go with the streams' other work (see `serve`).
                    if let Some(Extension(lane)) = lane {
                        lane.to_streams();
                    }
                    response
                }
                Err(e) => e.into_response(),
            }
        })
    }
}

fn open(api: Api, stream: &'static Stream, headers: &HeaderMap, query: RawQuery) -> Result<Response, ApiError> {
    let mut known: Vec<&str> = stream.filters.to_vec();
    known.push("tail");
    if stream.logs {
        known.extend(["level", "q"]);
    }
    let params = Params::new(query, &known)?;
    let filter = LiveFilter::new(stream, &params)?;
    let tail = params.number("tail", 0, MAX_TAIL, 0)? as usize;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or_default();
            Some(Position::decode(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "header `Last-Event-ID` is {text:?}; expected the `id` of an event this stream sent"
                ))
            })?)
        }
    };
    if api.is_stopping() {
        return Err(ApiError::unavailable("the collector is shutting down"));
    }
    let permit = api.inner.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(format!(
            "too many stream clients: {} are connected (api.max_stream_clients); try again later",
            api.config().max_stream_clients
        ))
    })?;
    let live = api.inner.hubs.subscribe(stream.collection, &api);
    // Taken after subscribing: each batch shown from now on reaches the client live, and the
    // store holds every one before.
    let mut mark = api.inner.tap.mark(stream.collection);
    // Nothing shown since the daemon started: the store holds only what came before, and all that
    // is stored from now on comes live. Bounded by now, a replay that runs late (on the streams'
    // low-priority runtime, the store busy) cannot also return events that reach the client live,
    // out of order, which would send the client's Last-Event-ID backwards.
    if mark.newest.is_none() {
        mark.newest = Some(crate::store::query::Position {
            time_ms: crate::event::Timestamp::now().as_millis(),
            id: crate::event::EventId([0xff; 12]),
        });
    }
    let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
    let feed = Feed {
        stopping: api.inner.stopping.clone(),
        keep_alive: api.config().keep_alive.0,
        api,
        stream,
        filter,
        tx,
        chunk: Vec::new(),
        last_sent: tokio::time::Instant::now(),
    };
    hub::stream_tasks(&feed.api).spawn(async move {
        feed.run(resume, tail, live, mark).await;
        drop(permit);
    });
    let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok::<_, Infallible>)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Tells nginx not to buffer the stream.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        HttpBody::from_stream(chunks),
    )
        .into_response())
}

/// A stream's filters, applied to live events in memory and to the replay by the store.
struct LiveFilter {
    min_level: Option<Level>,
    eq: Vec<(&'static str, String)>,
    /// Lower-cased (ASCII), as the stores compare.
    contains: Option<String>,
}

impl LiveFilter {
    fn new(stream: &Stream, params: &Params) -> Result<LiveFilter, ApiError> {
        let mut eq = Vec::new();
        for &field in stream.filters {
            if let Some(v) = params.string(field, 1024)? {
                if field == "status" && v != "success" && v != "error" {
                    return Err(ApiError::param(field, &v, "success or error"));
                }
                eq.push((field, v));
            }
        }
        let (min_level, contains) = if stream.logs {
            (
                params.level("level")?,
                params.string("q", 1024)?.map(|q| q.to_ascii_lowercase()),
            )
        } else {
            (None, None)
        };
        Ok(LiveFilter {
            min_level,
            eq,
            contains,
        })
    }

    /// Whether every event passes.
    fn is_empty(&self) -> bool {
        self.eq.is_empty() && self.min_level.is_none() && self.contains.is_none()
    }

    fn store_filters(&self) -> Vec<Filter> {
        let mut out: Vec<Filter> = self.eq.iter().map(|(f, v)| Filter::Eq(f, v.clone())).collect();
        if let Some(l) = self.min_level {
            out.push(Filter::LevelAtLeast(l));
        }
        if let Some(q) = &self.contains {
            out.push(Filter::Contains(q.clone()));
        }
        out
    }

    fn matches(&self, line: &Line) -> bool {
        let field = |name: &str| -> Option<&str> {
            match name {
                "module" => line.module.as_deref(),
                "model" => line.model.as_deref(),
                "status" => line.status,
                _ => None,
            }
        };
        self.eq.iter().all(|(name, v)| field(name) == Some(v.as_str()))
            && self.min_level.is_none_or(|min| line.level.is_some_and(|l| l >= min))
            && self
                .contains
                .as_ref()
                .is_none_or(|q| line.message.as_deref().is_some_and(|m| contains_ascii_ci(m, q)))
    }
}

fn contains_ascii_ci(haystack: &str, lower_needle: &str) -> bool {
    let n = lower_needle.as_bytes();
    n.is_empty()
        || haystack
            .as_bytes()
            .windows(n.len())
            .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    #[test]
    fn positions_round_trip_and_order_by_time_then_id() {
        let p = Position {
            time_ms: 1_795_680_000_123,
            id: EventId::from_hex("65a1b2c3d4e5f60718293a4b").unwrap(),
        };
        assert_eq!(Position::decode(&p.encode()), Some(p));
        assert_eq!(Position::decode("1795680000123_65A1B2C3D4E5F60718293A4B"), Some(p));
        for junk in [
            "",
            "1_",
            "x_65a1b2c3d4e5f60718293a4b",
            "1_65a1b2c3d4e5f60718293a4",
            "1_zz a1b2c3d4e5f60718293a4b",
        ] {
            assert_eq!(Position::decode(junk), None, "{junk}");
        }
        let later_same_ms = Position {
            id: EventId::from_hex("65a1b2c3d4e5f60718293a4c").unwrap(),
            ..p
        };
        assert!(later_same_ms > p);
        assert!(contains_ascii_ci("API Timeout after 30s", "timeout"));
        assert!(!contains_ascii_ci("ok", "timeout"));
    }
}
