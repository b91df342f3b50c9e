//! One client's stream: the replay from the store (a resume or a tail), then the live batches from
//! the hub, in chunks handed to the connection; a client that falls behind is told how many it
//! missed rather than waited for.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::shutdown::CancellationToken;

use super::hub::Formatted;
use super::{sse, LiveFilter, Stream};
use crate::api::{Api, ApiError};
use crate::event::{EventId, Timestamp};
use crate::pipeline::tap::Mark;
use crate::store::query::{Filter, FindQuery, Found, Position, Query, TimeRange};

/// Events go to the connection in chunks of about this many bytes: one write for many events.
const CHUNK_BYTES: usize = 32 * 1024;
/// A shared batch smaller than this is copied into the client's chunk (with what else is pending)
/// rather than sent as a chunk of its own.
const SHARE_FROM_BYTES: usize = 4 * 1024;
const REPLAY_PAGE: usize = 1000;
/// How often a replay waiting for the outbox to drain looks again.
const OUTBOX_CHECK: Duration = Duration::from_millis(20);

/// One client's stream: replay, then live events, until the client leaves or the daemon stops.
pub(super) struct Feed {
    pub(super) api: Api,
    pub(super) stream: &'static Stream,
    pub(super) filter: LiveFilter,
    pub(super) tx: mpsc::Sender<Bytes>,
    /// Events formatted and not yet handed to the connection.
    pub(super) chunk: Vec<u8>,
    /// When something last went to the connection: an idle stream gets a keep-alive.
    pub(super) last_sent: tokio::time::Instant,
    pub(super) keep_alive: std::time::Duration,
    pub(super) stopping: CancellationToken,
}

/// Why a feed ends.
struct Ended;

/// A replay's query, read in the heavy reads' turn.
async fn replay_query(api: Api, q: FindQuery) -> Result<Found, ApiError> {
    let _turn = api.inner.reads.query_turn().await;
    api.timed(api.store().find(q)).await
}

/// What a stream sends from the store before it goes live.
#[derive(Clone, Copy)]
pub(super) enum Replay {
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
    pub(super) async fn run(
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
                Err(Ended) => {
                    if self.tx.is_closed() {
                        // Its client left: nothing more of the replay was read.
                        self.api.inner.reads.abandoned_one();
                    }
                    return;
                }
            }
        }
        let _ = self.follow(live, mark.stored, replayed).await;
    }

    /// Sends what the store holds after the resume position (or the newest `tail`) and up to
    /// `through` (the newest event shown before the stream opened: later ones come live). A resume
    /// sends at most `api.max_replay` events and `api.max_response_bytes` of them, the newest, and
    /// counts the rest in the same bounds, so whatever is stored meanwhile, each event is either
    /// replayed, counted, or sent live. Its queries are given up as soon as the client goes.
    async fn replay(&mut self, replay: Replay, through: Option<Position>, sent: &mut Replayed) -> Result<(), Ended> {
        // A store known to be unreachable would only make the client wait for its timeouts.
        let health = self.api.store().health();
        if !health.reachable && health.kind == "mongodb" {
            let e = ApiError::from(crate::store::StoreError::transient(
                health.last_error.unwrap_or_else(|| "MongoDB is unreachable".into()),
            ));
            return self.replay_failed(e, replay, through, sent).await;
        }
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
        // What one replay holds: at most `api.max_response_bytes` of documents (and one page more).
        let byte_cap = self.api.config().max_response_bytes.0 as usize;
        q.max_bytes = byte_cap;
        let mut bytes = 0usize;
        // Newest first.
        let mut newer: Vec<(Position, Value)> = Vec::new();
        let more = loop {
            let page = match self.find(q.clone()).await? {
                Ok(page) => page,
                Err(e) => return self.replay_failed(e, replay, through, sent).await,
            };
            bytes += page.bytes;
            newer.extend(
                page.docs
                    .into_iter()
                    .filter_map(|doc| Position::of_doc(collection, &doc).map(|p| (p, doc))),
            );
            match page.next {
                Some(next) if newer.len() < cap && bytes < byte_cap => {
                    q.after = Some(next);
                    q.max_bytes = byte_cap - bytes;
                }
                next => break next.is_some() || newer.len() > cap,
            }
        };
        newer.truncate(cap);
        if more && after.is_some() {
            // Counted in the same bounds (up to the newest read, if the tap had shown nothing
            // yet): what is stored meanwhile falls outside them, so it is not counted too.
            let mut count = q.clone();
            count.after = None;
            count.limit = 1;
            count.max_bytes = usize::MAX;
            count.count_up_to = (cap as u64).saturating_mul(10).max(1);
            if through.is_none() {
                count
                    .filters
                    .extend(newer.iter().map(|(p, _)| *p).max().map(Filter::AtOrBefore));
            }
            let total = match self.find(count).await? {
                Ok(found) => found.total.map_or(0, |t| t.n),
                Err(e) => return self.replay_failed(e, replay, through, sent).await,
            };
            let skipped = total.saturating_sub(newer.len() as u64);
            let data = json!({"skipped": skipped, "reason": "more events than api.max_replay (or api.max_response_bytes) since Last-Event-ID; the oldest were not replayed"});
            self.push("lagged", None, &data.to_string());
        }
        // Oldest first, so that the last one sent is where a client resumes from next time.
        newer.sort_by_key(|(p, _)| *p);
        sent.newest = newer.last().map(|(p, _)| *p);
        for (position, doc) in newer {
            let data = sse::shape_doc(self.stream.collection, doc);
            self.push("", Some(&position.encode()), &data);
            sent.ids.insert(position.id);
            self.flush_if_full().await?;
        }
        self.flush().await
    }

    /// `f`, given up as soon as the client has gone or the daemon stops (dropping a store query
    /// interrupts it).
    async fn cancellable<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, Ended> {
        tokio::select! {
            r = f => Ok(r),
            _ = self.tx.closed() => Err(Ended),
            _ = self.stopping.cancelled() => Err(Ended),
        }
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
                _ = self.stopping.cancelled() => return Err(Ended),
                _ = self.tx.closed() => return Err(Ended),
                _ = tokio::time::sleep(OUTBOX_CHECK) => {}
            }
        }
    }

    /// A query of the replay, in the heavy reads' turn; given up (`Err(Ended)`) when the client
    /// goes or the daemon stops.
    async fn find(&self, q: FindQuery) -> Result<Result<Found, ApiError>, Ended> {
        self.cancellable(replay_query(self.api.clone(), q)).await
    }

    /// The store cannot answer: say so (its own words under `details`), then send what the daemon
    /// still holds in memory of what was asked — the newest log entries, after the resume point —
    /// so that a page opened during an outage is not empty. `sent` then covers them.
    async fn replay_failed(
        &mut self,
        e: ApiError,
        replay: Replay,
        through: Option<Position>,
        sent: &mut Replayed,
    ) -> Result<(), Ended> {
        let held = self.held_in_memory(replay, through);
        let data = json!({
            "error": format!("cannot read the stored events: {}", e.message),
            "code": e.code,
            "details": e.details,
            "from_memory": held.len(),
        });
        self.push("error", None, &data.to_string());
        for (position, block) in held {
            // A replay cut short half-way has sent some of them already.
            if !sent.ids.insert(position.id) {
                continue;
            }
            sent.newest = sent.newest.max(Some(position));
            self.push_block(&block);
            self.flush_if_full().await?;
        }
        self.flush().await
    }

    /// The recent log events the tap holds that this replay asked for, oldest first, as SSE.
    fn held_in_memory(&self, replay: Replay, through: Option<Position>) -> Vec<(Position, Vec<u8>)> {
        if self.stream.collection != crate::event::Collection::Logs {
            return Vec::new();
        }
        let (after, cap) = match replay {
            Replay::Resume(after) => (Some(after), self.api.config().max_replay),
            Replay::Tail(n) => (None, n),
        };
        let host = self.api.inner.host.clone();
        let mut held: Vec<(Position, Vec<u8>)> = Vec::new();
        for batch in self.api.inner.tap.recent_logs() {
            let formatted = super::hub::Formatted::of(batch.seq, &batch.events, &host);
            for line in &formatted.lines {
                let inside = after.is_none_or(|a| line.position > a) && through.is_none_or(|t| line.position <= t);
                if inside && self.filter.matches(line) {
                    held.push((line.position, formatted.sse[line.block.clone()].to_vec()));
                }
            }
        }
        held.sort_by_key(|(p, _)| *p);
        let skip = held.len().saturating_sub(cap);
        held.drain(..skip);
        held
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
                _ = self.stopping.cancelled() => return Err(Ended),
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

    /// Adds one event already framed as SSE.
    fn push_block(&mut self, block: &[u8]) {
        self.chunk.extend_from_slice(block);
    }

    /// Adds one event to the chunk (the data is compact JSON, so one line).
    fn push(&mut self, event: &str, id: Option<&str>, data: &str) {
        sse::write_event(&mut self.chunk, event, id.map(str::as_bytes), |out| {
            out.extend_from_slice(data.as_bytes())
        });
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
            _ = self.stopping.cancelled() => return Err(Ended),
        }
        self.last_sent = tokio::time::Instant::now();
        Ok(())
    }
}
