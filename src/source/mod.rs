//! Sources turn bytes from outside into events and queue them. They only produce: they never
//! look at the store, and the pipeline's back-pressure is the only thing that slows them.

pub mod file;
pub mod lines;
pub mod socket;

use std::sync::Arc;

use crate::event::{Event, EventId, Parser, Source, Timestamp};
use crate::pipeline::{Closed, PipelineSender};
use crate::telemetry::Counters;
use lines::Frame;

/// What every source needs to turn a line into a queued event. One per connection or file.
#[derive(Clone)]
pub struct Ingest {
    parser: Parser,
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

impl Ingest {
    pub fn new(
        parser: Parser,
        pipeline: PipelineSender,
        counters: Arc<Counters>,
        source: Source,
        max_line: usize,
    ) -> Ingest {
        Ingest {
            parser,
            pipeline,
            counters,
            source,
            max_line,
        }
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The same ingest for another source name (each tailed file is its own source).
    pub fn with_source(&self, source: Source) -> Ingest {
        Ingest { source, ..self.clone() }
    }

    /// Parses one frame into `out`: an event, or a reject that says why.
    pub fn push(&self, out: &mut Vec<Event>, frame: Frame<'_>, received: Timestamp, id: EventId) {
        let event = match frame {
            Frame::Line(line) => self.parser.parse(line, &self.source, received, id),
            Frame::TooLong { head, len } => Event::reject(
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
        };
        if let crate::event::Body::Reject(r) = &event.body {
            if self.counters.may_log_reject() {
                tracing::warn!(source = &*self.source, "rejected a line: {}", r.reason);
            }
        }
        out.push(event);
    }

    /// Queues what `push` gathered, waiting while the queue is full; adds it to `tally`.
    pub async fn submit(&self, events: &mut Vec<Event>, tally: &mut Tally) -> Result<(), Closed> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(events);
        let total = batch.len() as u64;
        let rejected = self.pipeline.send(batch).await?;
        tally.events += total - rejected;
        tally.rejected += rejected;
        Ok(())
    }
}
