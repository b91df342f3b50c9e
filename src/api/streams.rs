//! Live streams (Server-Sent Events) of stored events: `GET /api/logs/stream` in the original's
//! shape (`{timestamp, level, message, module, extra}`), and the same for cost and performance.
//!
//! Each event carries `id: <time_ms>_<_id>`. A browser that reconnects sends it back as
//! `Last-Event-ID`, and the stream first replays from the store what matches after that position
//! (time, then `_id`; at most `api.max_replay` events), then continues live without repeating what
//! it replayed. Replay assumes events are stored roughly in time order: one timed before the last
//! event seen and stored after the disconnect is not replayed.
//!
//! Live events come from the tap's bounded broadcast. A client that does not read is not waited
//! for: its place in the broadcast is overtaken, and when it reads again it gets `event: lagged`
//! with the number of events it missed (it may reconnect with `Last-Event-ID` to fetch them). Each
//! client holds at most one stored batch and a few formatted events, so a stalled client costs
//! neither ingest speed nor memory.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::params::{Params, RawQuery};
use super::{Api, ApiError};
use crate::event::{Body, Collection, Event, Level, Timestamp};
use crate::pipeline::tap::Stored;
use crate::store::query::{Filter, FindQuery, Query, TimeRange};

/// Formatted events waiting for a client's connection, beyond the batch being formatted.
const CLIENT_QUEUE: usize = 16;
const REPLAY_PAGE: usize = 1000;

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
) -> impl Fn(State<Api>, HeaderMap, RawQuery) -> StreamFuture + Clone + Send + Sync + 'static {
    move |State(api), headers, query| {
        Box::pin(async move {
            match open(api, stream, &headers, query) {
                Ok(response) => response,
                Err(e) => e.into_response(),
            }
        })
    }
}

fn open(api: Api, stream: &'static Stream, headers: &HeaderMap, query: RawQuery) -> Result<Response, ApiError> {
    let mut known: Vec<&str> = stream.filters.to_vec();
    if stream.logs {
        known.extend(["level", "q"]);
    }
    let params = Params::new(query, &known)?;
    let filter = LiveFilter::new(stream, &params)?;
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
    let next_seq = api.inner.tap.stored_events(stream.collection);
    let live = api.inner.tap.subscribe();
    let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
    let keep_alive = api.config().keep_alive.0;
    let feed = Feed {
        stopping: api.inner.stopping.clone(),
        api,
        stream,
        filter,
        tx,
    };
    tokio::spawn(async move {
        feed.run(resume, live, next_seq).await;
        drop(permit);
    });
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// Where a client is in a stream: the last event's time and `_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    time_ms: i64,
    id: String,
}

impl Position {
    fn encode(&self) -> String {
        format!("{}_{}", self.time_ms, self.id)
    }

    fn decode(s: &str) -> Option<Position> {
        let (time, id) = s.split_once('_')?;
        let id_ok = id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit());
        id_ok.then_some(())?;
        Some(Position {
            time_ms: time.parse().ok()?,
            id: id.to_ascii_lowercase(),
        })
    }

    fn of_event(e: &Event) -> Position {
        let mut hex = Vec::with_capacity(24);
        e.id.write_hex(&mut hex);
        Position {
            time_ms: e.time.as_millis(),
            id: String::from_utf8_lossy(&hex).into_owned(),
        }
    }

    fn of_doc(collection: Collection, doc: &Value) -> Option<Position> {
        let time = doc.get(collection.time_field())?.as_str()?;
        Some(Position {
            time_ms: Timestamp::parse_rfc3339(time).ok()?.as_millis(),
            id: doc.get("_id")?.as_str()?.to_string(),
        })
    }
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

    fn matches(&self, e: &Event) -> bool {
        let field = |name: &str| -> Option<&str> {
            match (&e.body, name) {
                (Body::Log(l), "module") => l.module.as_deref(),
                (Body::Cost(c), "model") => Some(&c.model),
                (Body::Performance(p), "model") => p.model.as_deref(),
                (Body::Performance(p), "status") => Some(p.status.as_str()),
                _ => None,
            }
        };
        if !self.eq.iter().all(|(name, v)| field(name) == Some(v.as_str())) {
            return false;
        }
        match &e.body {
            Body::Log(l) => {
                self.min_level.is_none_or(|min| l.level >= min)
                    && self.contains.as_ref().is_none_or(|q| contains_ascii_ci(&l.message, q))
            }
            _ => true,
        }
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

/// One client's stream: replay, then live events, until the client leaves or the daemon stops.
struct Feed {
    api: Api,
    stream: &'static Stream,
    filter: LiveFilter,
    tx: mpsc::Sender<SseEvent>,
    stopping: watch::Receiver<bool>,
}

/// Why a feed ends.
struct Ended;

impl Feed {
    async fn run(mut self, resume: Option<Position>, live: broadcast::Receiver<Arc<Stored>>, next_seq: u64) {
        let mut replayed = HashSet::new();
        if let Some(after) = resume {
            match self.replay(&after, &mut replayed).await {
                Ok(()) => {}
                Err(Ended) => return,
            }
        }
        let _ = self.follow(live, next_seq, replayed).await;
    }

    /// Sends what the store holds after `after`; notes the ids sent, so live batches the replay
    /// already covered are not sent twice.
    async fn replay(&mut self, after: &Position, sent: &mut HashSet<String>) -> Result<(), Ended> {
        let cap = self.api.config().max_replay;
        let collection = self.stream.collection;
        let mut q = FindQuery::new(collection);
        q.range = TimeRange {
            from: Some(Timestamp(after.time_ms)),
            to: None,
        };
        q.filters = self.filter.store_filters();
        q.limit = REPLAY_PAGE;
        q.count_up_to = (cap as u64).saturating_mul(10).max(1);
        let mut newer: Vec<(Position, Value)> = Vec::new();
        let mut total = None;
        loop {
            let page = match self.api.timed(self.api.store().find(q.clone())).await {
                Ok(page) => page,
                Err(e) => {
                    let data = json!({"error": format!("cannot replay from Last-Event-ID: {}", e.message)});
                    return self
                        .send(SseEvent::default().event("error").data(data.to_string()))
                        .await;
                }
            };
            total = total.or(page.total);
            for doc in page.docs {
                if let Some(p) = Position::of_doc(collection, &doc).filter(|p| p > after) {
                    newer.push((p, doc));
                }
            }
            match page.next {
                Some(next) if newer.len() < cap => q.after = Some(next),
                _ => break,
            }
        }
        if newer.len() > cap || total.is_some_and(|t| t.n > newer.len() as u64 && newer.len() >= cap) {
            let skipped = total.map_or(0, |t| t.n).saturating_sub(cap as u64);
            newer.truncate(cap);
            let data = json!({"skipped": skipped, "reason": "more events than api.max_replay since Last-Event-ID; the oldest were not replayed"});
            self.send(SseEvent::default().event("lagged").data(data.to_string()))
                .await?;
        }
        newer.sort_by(|a, b| a.0.cmp(&b.0));
        for (position, doc) in newer {
            let data = self.shape_doc(doc);
            self.send(SseEvent::default().id(position.encode()).data(data)).await?;
            sent.insert(position.id);
        }
        Ok(())
    }

    async fn follow(
        &mut self,
        mut live: broadcast::Receiver<Arc<Stored>>,
        mut next_seq: u64,
        mut replayed: HashSet<String>,
    ) -> Result<(), Ended> {
        let mut lagged = false;
        loop {
            let received = tokio::select! {
                biased;
                _ = self.stopping.wait_for(|s| *s) => return Err(Ended),
                _ = self.tx.closed() => return Err(Ended),
                r = live.recv() => r,
            };
            let batch = match received {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    lagged = true;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Ended),
            };
            if batch.collection != self.stream.collection {
                continue;
            }
            if lagged {
                lagged = false;
                let skipped = batch.seq.saturating_sub(next_seq);
                let data = json!({"skipped": skipped});
                self.send(SseEvent::default().event("lagged").data(data.to_string()))
                    .await?;
            }
            next_seq = batch.seq + batch.events.len() as u64;
            let mut overlapped = false;
            for e in &batch.events {
                let position = Position::of_event(e);
                if !replayed.is_empty() && replayed.contains(&position.id) {
                    overlapped = true;
                    continue;
                }
                if !self.filter.matches(e) {
                    continue;
                }
                let data = self.shape_event(e);
                self.send(SseEvent::default().id(position.encode()).data(data)).await?;
            }
            // The store's answer covered a prefix of the writes: once a batch past it arrives,
            // no later one can overlap.
            if !overlapped && !replayed.is_empty() {
                replayed = HashSet::new();
            }
        }
    }

    async fn send(&mut self, event: SseEvent) -> Result<(), Ended> {
        tokio::select! {
            sent = self.tx.send(event) => sent.map_err(|_| Ended),
            _ = self.stopping.wait_for(|s| *s) => Err(Ended),
        }
    }

    /// A live event in the stream's shape.
    fn shape_event(&self, e: &Event) -> String {
        match &e.body {
            Body::Log(l) => {
                let mut time = Vec::with_capacity(24);
                e.time.write_rfc3339(&mut time);
                json!({
                    "timestamp": String::from_utf8_lossy(&time),
                    "level": l.level.as_str(),
                    "message": l.message,
                    "module": l.module.as_deref().unwrap_or("unknown"),
                    "extra": l.extra,
                })
                .to_string()
            }
            _ => {
                let mut out = Vec::new();
                match crate::store::document::write_json(e, &self.api.inner.host, &mut out) {
                    Ok(()) => String::from_utf8_lossy(&out).into_owned(),
                    Err(e) => json!({"error": format!("cannot format the event: {e}")}).to_string(),
                }
            }
        }
    }

    /// A stored document in the stream's shape (the same as [`Feed::shape_event`] gives).
    fn shape_doc(&self, mut doc: Value) -> String {
        if self.stream.collection != Collection::Logs {
            return doc.to_string();
        }
        let mut take = |k: &str| doc.get_mut(k).map(Value::take);
        json!({
            "timestamp": take("timestamp").unwrap_or(Value::Null),
            "level": take("level").unwrap_or(Value::Null),
            "message": take("message").unwrap_or(Value::Null),
            "module": take("module").unwrap_or_else(|| Value::from("unknown")),
            "extra": take("extra").unwrap_or_else(|| json!({})),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_time_then_id() {
        let p = Position {
            time_ms: 1_795_680_000_123,
            id: "65a1b2c3d4e5f60718293a4b".into(),
        };
        assert_eq!(Position::decode(&p.encode()), Some(p.clone()));
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
            id: "65a1b2c3d4e5f60718293a4c".into(),
            ..p.clone()
        };
        assert!(later_same_ms > p);
        assert!(contains_ascii_ci("API Timeout after 30s", "timeout"));
        assert!(!contains_ascii_ci("ok", "timeout"));
    }
}
