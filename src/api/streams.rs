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

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::pipeline::budget::Budget;
use crate::pipeline::tap::Stored;

use super::params::{Params, RawQuery};
use super::serve::Lane;
use super::{Api, ApiError};
use crate::event::{Body, Collection, Event, EventId, Level, Timestamp};
use crate::pipeline::tap::Mark;
use crate::store::query::{Filter, FindQuery, Position, Query, TimeRange};

/// Chunks of events waiting for a client's connection (which buffers some more itself): a chunk
/// may be a whole shared batch, which a stalled client keeps in memory.
const CLIENT_QUEUE: usize = 2;
/// Events go to the connection in chunks of about this many bytes: one write for many events.
const CHUNK_BYTES: usize = 32 * 1024;
/// A shared batch smaller than this is copied into the client's chunk (with what else is pending)
/// rather than sent as a chunk of its own.
const SHARE_FROM_BYTES: usize = 4 * 1024;
const REPLAY_PAGE: usize = 1000;
/// The most events `?tail=` asks for.
const MAX_TAIL: u64 = 1000;
/// How often a replay waiting for the outbox to drain looks again.
const OUTBOX_CHECK: Duration = Duration::from_millis(20);

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
    let mark = api.inner.tap.mark(stream.collection);
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
    stream_tasks(&feed.api).spawn(async move {
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

/// One client's stream: replay, then live events, until the client leaves or the daemon stops.
struct Feed {
    api: Api,
    stream: &'static Stream,
    filter: LiveFilter,
    tx: mpsc::Sender<Bytes>,
    /// Events formatted and not yet handed to the connection.
    chunk: Vec<u8>,
    /// When something last went to the connection: an idle stream gets a keep-alive.
    last_sent: tokio::time::Instant,
    keep_alive: std::time::Duration,
    stopping: watch::Receiver<bool>,
}

/// Why a feed ends.
struct Ended;

/// What a stream sends from the store before it goes live.
#[derive(Clone, Copy)]
enum Replay {
    /// Everything after the client's `Last-Event-ID`.
    Resume(Position),
    /// The newest N events.
    Tail(usize),
}

/// What a replay sent: live events it already covered are not sent again. (Only events stored out
/// of their time order can be both in the replay and live.)
#[derive(Default)]
struct Replayed {
    ids: HashSet<EventId>,
    newest: Option<Position>,
}

impl Feed {
    /// A resume (`Last-Event-ID`) replays what the client missed; otherwise `tail` events, the
    /// newest stored, come first.
    async fn run(
        mut self,
        resume: Option<Position>,
        tail: usize,
        live: broadcast::Receiver<Arc<Formatted>>,
        mark: Mark,
    ) {
        let mut replayed = Replayed::default();
        let from_store = match resume {
            Some(after) => Some(Replay::Resume(after)),
            None if tail > 0 => Some(Replay::Tail(tail)),
            None => None,
        };
        if let Some(replay) = from_store {
            match self.replay(replay, mark.newest, &mut replayed).await {
                Ok(()) => {}
                Err(Ended) => return,
            }
        }
        let _ = self.follow(live, mark.stored, replayed).await;
    }

    /// Sends what the store holds after the resume position (or the newest `tail`) and up to
    /// `through` (the newest event shown before the stream opened: later ones come live). A resume
    /// sends at most `api.max_replay`, the newest, and counts the rest in the same bounds, so
    /// whatever is stored meanwhile, each event is either replayed, counted, or sent live.
    async fn replay(&mut self, replay: Replay, through: Option<Position>, sent: &mut Replayed) -> Result<(), Ended> {
        let waiting = self.outbox_drained().await?;
        if waiting > 0 {
            let data = json!({"error": format!(
                "{waiting} events wait in the outbox until MongoDB takes them (see /readyz); this replay cannot include them"
            )});
            self.push("error", None, &data.to_string());
        }
        let (after, cap) = match replay {
            Replay::Resume(after) => (Some(after), self.api.config().max_replay),
            Replay::Tail(n) => (None, n),
        };
        let collection = self.stream.collection;
        let mut q = FindQuery::new(collection);
        q.range = TimeRange {
            from: after.map(|a| Timestamp(a.time_ms)),
            to: through.map(|t| Timestamp(t.time_ms.saturating_add(1))),
        };
        q.filters = self.filter.store_filters();
        q.filters.extend(after.map(Filter::After));
        q.filters.extend(through.map(Filter::AtOrBefore));
        q.limit = REPLAY_PAGE.min(cap.max(1));
        // Newest first.
        let mut newer: Vec<(Position, Value)> = Vec::new();
        let more = loop {
            let page = match self.find(q.clone()).await {
                Ok(page) => page,
                Err(e) => return self.replay_failed(e).await,
            };
            newer.extend(
                page.docs
                    .into_iter()
                    .filter_map(|doc| Position::of_doc(collection, &doc).map(|p| (p, doc))),
            );
            match page.next {
                Some(next) if newer.len() < cap => q.after = Some(next),
                next => break next.is_some() || newer.len() > cap,
            }
        };
        if more && after.is_none() {
            // A tail: the newest `cap` are what was asked for.
            newer.truncate(cap);
        } else if more {
            // Counted in the same bounds (up to the newest read, if the tap had shown nothing
            // yet): what is stored meanwhile falls outside them, so it is not counted too.
            let mut count = q.clone();
            count.after = None;
            count.limit = 1;
            count.count_up_to = (cap as u64).saturating_mul(10).max(1);
            if through.is_none() {
                count
                    .filters
                    .extend(newer.iter().map(|(p, _)| *p).max().map(Filter::AtOrBefore));
            }
            let total = match self.find(count).await {
                Ok(found) => found.total.map_or(0, |t| t.n),
                Err(e) => return self.replay_failed(e).await,
            };
            newer.truncate(cap);
            let skipped = total.saturating_sub(cap as u64);
            let data = json!({"skipped": skipped, "reason": "more events than api.max_replay since Last-Event-ID; the oldest were not replayed"});
            self.push("lagged", None, &data.to_string());
        }
        // Oldest first, so that the last one sent is where a client resumes from next time.
        newer.sort_by_key(|(p, _)| *p);
        sent.newest = newer.last().map(|(p, _)| *p);
        for (position, doc) in newer {
            let data = self.shape_doc(doc);
            self.push("", Some(&position.encode()), &data);
            sent.ids.insert(position.id);
            self.flush_if_full().await?;
        }
        self.flush().await
    }

    /// Events stored while MongoDB was away wait in the outbox until it takes them, and only then
    /// can a query find them: a replay waits for them, at most `api.query_timeout`. Returns how
    /// many still wait.
    async fn outbox_drained(&mut self) -> Result<u64, Ended> {
        let until = tokio::time::Instant::now() + self.api.config().query_timeout.0;
        loop {
            let waiting = self.api.store().waiting(self.stream.collection);
            if waiting == 0 || tokio::time::Instant::now() >= until {
                return Ok(waiting);
            }
            tokio::select! {
                _ = self.stopping.wait_for(|s| *s) => return Err(Ended),
                _ = self.tx.closed() => return Err(Ended),
                _ = tokio::time::sleep(OUTBOX_CHECK) => {}
            }
        }
    }

    /// A query for the replay, on the server's runtime, at the daemon's priority, as other queries.
    async fn find(&self, q: FindQuery) -> Result<crate::store::query::Found, ApiError> {
        let api = self.api.clone();
        let found = self
            .api
            .inner
            .main
            .spawn(async move { api.timed(api.store().find(q)).await });
        found.await.unwrap_or_else(|e| {
            Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("the query failed: {e}"),
            ))
        })
    }

    async fn replay_failed(&mut self, e: ApiError) -> Result<(), Ended> {
        let data = json!({"error": format!("cannot replay from Last-Event-ID: {}", e.message)});
        self.push("error", None, &data.to_string());
        self.flush().await
    }

    /// Sends the live batches from `from_seq` on (earlier ones were shown before the stream
    /// opened: the store had them, and a resume replayed or counted them).
    async fn follow(
        &mut self,
        mut live: broadcast::Receiver<Arc<Formatted>>,
        from_seq: u64,
        mut replayed: Replayed,
    ) -> Result<(), Ended> {
        let unfiltered = self.filter.is_empty();
        let mut next_seq = from_seq;
        loop {
            let received = tokio::select! {
                biased;
                _ = self.stopping.wait_for(|s| *s) => return Err(Ended),
                _ = self.tx.closed() => return Err(Ended),
                r = live.recv() => Some(r),
                _ = tokio::time::sleep_until(self.last_sent + self.keep_alive) => None,
            };
            let Some(received) = received else {
                // A comment: proxies and browsers keep an idle stream open.
                self.chunk.extend_from_slice(b":\n\n");
                self.flush().await?;
                continue;
            };
            let batch = match received {
                Ok(batch) => batch,
                // The gap in the sequence says how many events were missed.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Err(Ended),
            };
            if batch.seq < from_seq {
                continue;
            }
            if batch.seq > next_seq {
                let data = json!({"skipped": batch.seq - next_seq});
                self.push("lagged", None, &data.to_string());
            }
            next_seq = next_seq.max(batch.seq + batch.lines.len() as u64);
            if unfiltered && replayed.ids.is_empty() {
                self.send_shared(&batch.sse).await?;
                continue;
            }
            for line in &batch.lines {
                if replayed.ids.contains(&line.position.id) {
                    continue;
                }
                if !self.filter.matches(line) {
                    continue;
                }
                self.chunk.extend_from_slice(&batch.sse[line.block.clone()]);
                self.flush_if_full().await?;
            }
            self.flush().await?;
            // Events arrive in about the order of their positions: once a batch lies wholly past
            // the replay, no later one overlaps it.
            if !replayed.ids.is_empty() && batch.lines.iter().all(|l| Some(l.position) > replayed.newest) {
                replayed = Replayed::default();
            }
        }
    }

    /// Sends a batch every unfiltered client sends: a large one as the hub's bytes (no copy),
    /// after what is pending; a small one with what is pending.
    async fn send_shared(&mut self, sse: &Bytes) -> Result<(), Ended> {
        if sse.len() < SHARE_FROM_BYTES {
            self.chunk.extend_from_slice(sse);
            return self.flush().await;
        }
        self.flush().await?;
        self.send(sse.clone()).await
    }

    /// Adds one event to the chunk: `event:` (unless empty), `id:` (if any), `data:`. The data is
    /// compact JSON, so it is one line.
    fn push(&mut self, event: &str, id: Option<&str>, data: &str) {
        if !event.is_empty() {
            self.chunk.extend_from_slice(b"event: ");
            self.chunk.extend_from_slice(event.as_bytes());
            self.chunk.push(b'\n');
        }
        if let Some(id) = id {
            self.chunk.extend_from_slice(b"id: ");
            self.chunk.extend_from_slice(id.as_bytes());
            self.chunk.push(b'\n');
        }
        self.chunk.extend_from_slice(b"data: ");
        self.chunk.extend_from_slice(data.as_bytes());
        self.chunk.extend_from_slice(b"\n\n");
    }

    async fn flush_if_full(&mut self) -> Result<(), Ended> {
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands the chunk to the connection, waiting while the client is behind (the live feed
    /// goes on without it meanwhile).
    async fn flush(&mut self) -> Result<(), Ended> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES)));
        self.send(chunk).await
    }

    async fn send(&mut self, chunk: Bytes) -> Result<(), Ended> {
        tokio::select! {
            sent = self.tx.send(chunk) => sent.map_err(|_| Ended)?,
            _ = self.stopping.wait_for(|s| *s) => return Err(Ended),
        }
        self.last_sent = tokio::time::Instant::now();
        Ok(())
    }

    /// A stored document in the stream's shape (the same as [`write_shaped`] gives).
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

/// One stored event of a formatted batch, with what the filters look at.
pub(crate) struct Line {
    /// The event in the batch's SSE text: `id: <time_ms>_<_id>`, `data: <JSON>`.
    block: Range<usize>,
    position: Position,
    level: Option<Level>,
    module: Option<String>,
    model: Option<String>,
    status: Option<&'static str>,
    /// Logs only: the text `q` searches.
    message: Option<String>,
}

/// A stored batch of one collection, formatted once for every client.
pub(crate) struct Formatted {
    /// The tap's sequence of the batch's first event.
    seq: u64,
    /// Every event as SSE: what a client without filters sends as it is.
    sse: Bytes,
    lines: Vec<Line>,
}

impl Formatted {
    fn of(seq: u64, events: &[Event], host: &str) -> Formatted {
        let mut sse = Vec::with_capacity(events.len() * 320);
        let lines = events
            .iter()
            .map(|e| {
                let start = sse.len();
                let _ = write!(sse, "id: {}_", e.time.as_millis());
                e.id.write_hex(&mut sse);
                sse.extend_from_slice(b"\ndata: ");
                write_shaped(e, host, &mut sse);
                sse.extend_from_slice(b"\n\n");
                let (level, module, model, status, message) = match &e.body {
                    Body::Log(l) => (Some(l.level), l.module.clone(), None, None, Some(l.message.clone())),
                    Body::Cost(c) => (None, None, Some(c.model.clone()), None, None),
                    Body::Performance(p) => (None, None, p.model.clone(), Some(p.status.as_str()), None),
                    Body::Metric(m) => (None, None, m.model.clone(), None, None),
                    Body::Reject(_) => (None, None, None, None, None),
                };
                Line {
                    block: start..sse.len(),
                    position: Position::of(e.time, e.id),
                    level,
                    module,
                    model,
                    status,
                    message,
                }
            })
            .collect();
        Formatted {
            seq,
            sse: Bytes::from(sse),
            lines,
        }
    }
}

/// Formats a collection's stored batches once for all of its stream clients.
struct Hub {
    collection: Collection,
    out: broadcast::Sender<Arc<Formatted>>,
    /// Whether the formatting task runs (it runs only while there are clients).
    running: std::sync::Mutex<bool>,
}

/// The hubs of the streamed collections.
pub(crate) struct Hubs {
    hubs: Vec<Arc<Hub>>,
    /// The pipeline's memory budget: when it runs short, ingest needs every cycle it can get.
    memory: Budget,
}

/// Formatted batches a hub keeps for clients that are behind.
const HUB_BATCHES: usize = 16;
/// While sources wait for memory, a hub holds a batch back at most this long: under sustained
/// full-speed ingest, a watcher still sees a batch this often (and `lagged` for the rest).
const YIELD_AT_MOST: Duration = Duration::from_millis(250);
/// How often a hub that yields looks at the budget again.
const YIELD_CHECK: Duration = Duration::from_millis(10);

impl Hubs {
    pub fn new(memory: Budget) -> Hubs {
        Hubs {
            hubs: STREAMS
                .iter()
                .map(|s| {
                    Arc::new(Hub {
                        collection: s.collection,
                        out: broadcast::channel(HUB_BATCHES).0,
                        running: std::sync::Mutex::new(false),
                    })
                })
                .collect(),
            memory,
        }
    }

    /// A new client's receiver; starts the hub's formatting task if it is not running.
    fn subscribe(&self, collection: Collection, api: &Api) -> broadcast::Receiver<Arc<Formatted>> {
        let Some(hub) = self.hubs.iter().find(|h| h.collection == collection) else {
            // Not a streamed collection: a receiver that never gets anything.
            return broadcast::channel(1).1;
        };
        let mut running = hub.running.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = hub.out.subscribe();
        if !*running {
            *running = true;
            // Subscribed here, not in the task: a batch stored before the task first runs (later
            // still on the niced stream thread of a busy machine) must reach this client too.
            let (hub, stored, host, memory, stopping) = (
                hub.clone(),
                api.inner.tap.subscribe(),
                api.inner.host.clone(),
                self.memory.clone(),
                api.inner.stopping.clone(),
            );
            stream_tasks(api).spawn(hub.format(stored, host, memory, stopping));
        }
        receiver
    }
}

impl Hub {
    /// Formats and rebroadcasts the collection's stored batches until the last client leaves.
    ///
    /// Ingest comes first: while sources wait for memory, the store is what limits ingest, and
    /// every cycle the streams (and their readers, often on the same cores) take is one ingest
    /// loses. The hub then holds the batch back until memory is free again, at most
    /// [`YIELD_AT_MOST`]; batches stored meanwhile wait in the tap's bounded feed, and those that
    /// fall out of it reach the clients as `lagged`. In bursts the streams catch up afterwards.
    async fn format(
        self: Arc<Self>,
        mut stored: broadcast::Receiver<Arc<Stored>>,
        host: String,
        memory: Budget,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            let received = tokio::select! {
                biased;
                _ = stopping.wait_for(|s| *s) => break,
                r = stored.recv() => r,
            };
            match received {
                Ok(batch) if batch.collection == self.collection => {
                    if self.out.receiver_count() == 0 {
                        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                        // Checked again under the lock a new client takes to subscribe.
                        if self.out.receiver_count() == 0 {
                            *running = false;
                            return;
                        }
                    }
                    tokio::select! {
                        biased;
                        _ = stopping.wait_for(|s| *s) => break,
                        _ = yield_to_ingest(&memory) => {}
                    }
                    let _ = self.out.send(Arc::new(Formatted::of(batch.seq, &batch.events, &host)));
                }
                // Missed batches show as a gap in the next one's sequence.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// Returns once the sources no longer wait for memory, or after [`YIELD_AT_MOST`].
async fn yield_to_ingest(memory: &Budget) {
    let until = tokio::time::Instant::now() + YIELD_AT_MOST;
    while memory.is_short() && tokio::time::Instant::now() < until {
        tokio::time::sleep(YIELD_CHECK).await;
    }
}

/// Where the streams' tasks run.
fn stream_tasks(api: &Api) -> tokio::runtime::Handle {
    api.inner.stream_tasks.clone()
}

/// The runtime of the streams' tasks (`api.stream_nice` > 0): one thread, niced, so that under
/// CPU contention the streams lag rather than take cores from ingest and the other endpoints.
pub(crate) struct StreamRuntime(Option<tokio::runtime::Runtime>);

impl StreamRuntime {
    pub fn start(nice: u8) -> std::io::Result<StreamRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("streams")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        Ok(StreamRuntime(Some(runtime)))
    }

    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for StreamRuntime {
    fn drop(&mut self) {
        // Dropped from the server's task: tasks still there (a stalled client) are not waited for.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's CPU priority by `nice` (to 19 at most).
fn lower_priority(nice: u8) {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value is per thread: PRIO_PROCESS with a thread id sets that thread's.
        let tid = nix::unistd::gettid().as_raw() as libc::id_t;
        // SAFETY: plain system calls on this thread's id; no memory is passed.
        let rc = unsafe {
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (current + i32::from(nice)).min(19))
        };
        if rc != 0 {
            tracing::warn!(
                "streams run at the daemon's priority: cannot lower their thread's: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A log in the stream's shape: the original's fields, in its order.
#[derive(Serialize)]
struct LogShape<'a> {
    timestamp: &'a str,
    level: &'a str,
    message: &'a str,
    module: &'a str,
    extra: &'a Map<String, Value>,
}

/// Appends a live event in the stream's shape (compact JSON, one line).
fn write_shaped(e: &Event, host: &str, out: &mut Vec<u8>) {
    let start = out.len();
    let written = match &e.body {
        Body::Log(l) => {
            let mut time = Vec::with_capacity(24);
            e.time.write_rfc3339(&mut time);
            let shape = LogShape {
                timestamp: std::str::from_utf8(&time).unwrap_or_default(),
                level: l.level.as_str(),
                message: &l.message,
                module: l.module.as_deref().unwrap_or("unknown"),
                extra: &l.extra,
            };
            serde_json::to_writer(&mut *out, &shape).map_err(|e| e.to_string())
        }
        _ => crate::store::document::write_json(e, host, out).map_err(|e| e.to_string()),
    };
    if let Err(problem) = written {
        out.truncate(start);
        let data = json!({"error": format!("cannot format the event: {problem}")});
        out.extend_from_slice(data.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tap::Tap;

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

    #[test]
    fn a_batch_is_formatted_as_sse_in_the_original_shape() {
        use crate::event::{EventId, Parser, Source};
        use crate::redact::{RedactConfig, Redactor};
        let redactor = Arc::new(Redactor::new(&RedactConfig::default()).unwrap());
        let parser = Parser::new(redactor);
        let events: Vec<Event> = [
            r#"{"timestamp": 1795680000.123, "level": "ERROR", "message": "API timeout", "extra": {"b": 1, "a": 2}}"#,
            r#"{"timestamp": 1795680000.124, "message": "next", "module": "writer"}"#,
        ]
        .iter()
        .map(|l| parser.parse(l.as_bytes(), &Source::from("t"), Timestamp(0), EventId::new()))
        .collect();
        let batch = Formatted::of(7, &events, "host");
        let text = std::str::from_utf8(&batch.sse).unwrap();
        let blocks: Vec<&str> = batch.lines.iter().map(|l| &text[l.block.clone()]).collect();
        assert_eq!(blocks.concat(), text);
        let mut hex = Vec::new();
        events[0].id.write_hex(&mut hex);
        let hex = String::from_utf8(hex).unwrap();
        assert_eq!(batch.lines[0].position, Position::of(events[0].time, events[0].id));
        assert_eq!(
            blocks[0],
            format!(
                "id: 1795680000123_{hex}\ndata: {{\"timestamp\":\"2026-11-26T08:00:00.123Z\",\"level\":\"ERROR\",\"message\":\"API timeout\",\"module\":\"unknown\",\"extra\":{{\"b\":1,\"a\":2}}}}\n\n"
            )
        );
        assert!(blocks[1].contains(r#""level":"INFO","message":"next","module":"writer","extra":{}}"#));
        assert_eq!(batch.lines[1].module.as_deref(), Some("writer"));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_hub_holds_batches_back_while_sources_wait_for_memory_but_not_for_long() {
        use crate::event::{EventId, Parser, Source};
        let parser = Parser::new(Arc::new(crate::redact::Redactor::disabled()));
        let batch = |n: usize| -> Vec<Event> {
            (0..n)
                .map(|i| {
                    let line = format!(r#"{{"message":"m{i}"}}"#);
                    parser.parse(line.as_bytes(), &Source::from("t"), Timestamp(0), EventId::new())
                })
                .collect()
        };
        let memory = Budget::new(1 << 20);
        let tap = Tap::new(Vec::new(), 16);
        let hub = Arc::new(Hub {
            collection: Collection::Logs,
            out: broadcast::channel(HUB_BATCHES).0,
            running: std::sync::Mutex::new(true),
        });
        let mut formatted = hub.out.subscribe();
        let (_stop, stopping) = watch::channel(false);
        tokio::spawn(
            hub.clone()
                .format(tap.subscribe(), "host".into(), memory.clone(), stopping),
        );

        // Memory is free: the batch goes out at once.
        tap.stored(Collection::Logs, batch(2));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(formatted.try_recv().map(|f| f.seq).ok(), Some(0));

        // Sources wait for memory: held back, and sent as soon as memory is free again.
        let held = memory.force(1 << 20);
        tap.stored(Collection::Logs, batch(3));
        tokio::time::sleep(YIELD_AT_MOST / 2).await;
        assert!(formatted.try_recv().is_err(), "held back while memory is short");
        drop(held);
        tokio::time::sleep(YIELD_CHECK * 2).await;
        assert_eq!(formatted.try_recv().map(|f| f.seq).ok(), Some(2));

        // Memory stays short: the batch still goes out after YIELD_AT_MOST.
        let _held = memory.force(1 << 20);
        tap.stored(Collection::Logs, batch(1));
        tokio::time::sleep(YIELD_AT_MOST - YIELD_CHECK * 2).await;
        assert!(formatted.try_recv().is_err(), "held back while memory is short");
        tokio::time::sleep(YIELD_CHECK * 3).await;
        assert_eq!(formatted.try_recv().map(|f| f.seq).ok(), Some(5));
    }
}
