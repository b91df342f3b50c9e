//! Sources turn bytes from outside into events and queue them. They only produce: they never
//! look at the store, and the pipeline's budget is the only thing that slows them.

mod answers;
pub mod client;
pub mod file;
pub mod lines;
pub mod socket;

use std::sync::Arc;

use crate::event::{Event, EventId, Parser, Source, Timestamp};
use crate::pipeline::ack::Ack;
use crate::pipeline::memory::{held_bytes_for_line, MemoryBudget, Reservation};
use crate::pipeline::{Chunk, Closed, PipelineSender};
use crate::telemetry::Counters;
use lines::Frame;

/// What every source needs to turn a line into a queued event. One per connection or file.
#[derive(Clone)]
pub struct Ingest {
    parser: Parser,
    /// `[prices]`, for cost records without an amount; swapped whole on SIGHUP.
    prices: Arc<arc_swap::ArcSwap<crate::event::prices::PriceTable>>,
    pipeline: PipelineSender,
    counters: Arc<Counters>,
    source: Source,
    max_line: usize,
}

/// Lines handed over by one source connection so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub events: u64,
    pub rejected: u64,
}

/// A client's request to be told once everything it sent before is durable:
/// `{"type":"sync","id":"…"}` on its own line. Only the socket answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(rename = "type")]
    kind: SyncType,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum SyncType {
    Sync,
}

impl SyncRequest {
    /// A sync marker, if this line is one. Cheap for every other line: one substring search.
    pub fn parse(line: &[u8]) -> Option<SyncRequest> {
        // Built once: `memmem::find` builds its searcher on every call (measured ~1 % of the CPU
        // of socket ingest, every line goes through here).
        static SYNC_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"sync\""));
        SYNC_KEY.find(line)?;
        serde_json::from_slice(line).ok()
    }
}

impl Ingest {
    pub fn new(
        parser: Parser,
        prices: Arc<arc_swap::ArcSwap<crate::event::prices::PriceTable>>,
        pipeline: PipelineSender,
        counters: Arc<Counters>,
        source: Source,
        max_line: usize,
    ) -> Ingest {
        Ingest {
            parser,
            prices,
            pipeline,
            counters,
            source,
            max_line,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    pub fn memory(&self) -> &MemoryBudget {
        self.pipeline.memory()
    }

    pub fn redactor(&self) -> &crate::redact::Redactor {
        self.parser.redactor()
    }

    /// `naive_timezone`, for sources that read times themselves.
    pub fn naive_timezone(&self) -> &Arc<crate::event::NaiveZone> {
        self.parser.naive_timezone()
    }

    /// The same ingest for another source name (each tailed file is its own source).
    pub fn with_source(&self, source: Source) -> Ingest {
        Ingest { source, ..self.clone() }
    }

    /// Parses one frame into `out`: an event, or a reject that says why.
    pub fn push(&self, out: &mut Vec<Event>, frame: Frame<'_>, received: Timestamp, id: EventId) {
        let (event, len) = match frame {
            Frame::Line(line) => {
                let mut event = self.parser.parse(line, &self.source, received, id);
                self.check_clock(&mut event, received);
                (event, line.len())
            }
            Frame::TooLong { head, len } => (
                Event::reject(
                    id,
                    self.source.clone(),
                    received,
                    format!(
                        "line is {len} bytes, over the limit of {} bytes (max_line_bytes); its first 64 KiB are kept",
                        self.max_line
                    ),
                    head,
                    len,
                    self.parser.redactor(),
                ),
                head.len(),
            ),
        };
        self.push_event(out, event, len);
    }

    /// Checks an event's time against its arrival (see [`Event::check_clock`]), counting and
    /// reporting (once per source) the ones that cannot be believed.
    pub fn check_clock(&self, event: &mut Event, received: Timestamp) {
        let check = event.check_clock(received, self.parser.max_clock_skew_ms());
        self.counters.clock(&self.source, check);
    }

    /// Adds an event made from `len` bytes of input (a text record, for one) to `out`, as `push`
    /// does: its share of the budget set, a reject logged within the rate limit.
    pub fn push_event(&self, out: &mut Vec<Event>, mut event: Event, len: usize) {
        event.held_bytes = held_bytes_for_line(len);
        if let crate::event::Body::Reject(r) = &event.body {
            if self.counters.may_log_reject() {
                tracing::warn!(source = &*self.source, "rejected a line: {}", r.reason);
            }
        }
        out.push(event);
    }

    /// Queues what `push` gathered, with `reservation` (the read that produced it) resized to what
    /// the events hold; adds them to `tally`. `ack` runs once they are all durable.
    pub async fn submit(
        &self,
        events: &mut Vec<Event>,
        ack: Option<Ack>,
        mut reservation: Reservation,
        tally: &mut Tally,
    ) -> Result<(), Closed> {
        if events.is_empty() {
            return Ok(());
        }
        let mut events = std::mem::take(events);
        crate::event::prices::price(&self.prices.load(), &mut events);
        let total = events.len() as u64;
        self.counters.received(&self.source, &events);
        reservation.resize(events.iter().map(|e| e.held_bytes as usize).sum());
        let rejected = self
            .pipeline
            .send(Chunk {
                events,
                ack,
                reservation,
            })
            .await?;
        tally.events += total - rejected;
        tally.rejected += rejected;
        Ok(())
    }
}
