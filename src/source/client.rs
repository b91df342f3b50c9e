//! One client's byte stream of JSON lines, as the socket and `POST /api/events` both take it: lines
//! decoded into events, queued under the memory budget, and counted so that the answer can wait
//! until everything queued is durable.

use std::sync::Arc;

use super::lines::{Frame, LineDecoder};
use super::{Ingest, SyncRequest, Tally};
use crate::event::{Event, EventId, Timestamp};
use crate::pipeline::ack::Delivery;
use crate::pipeline::budget::Reservation;

pub struct ClientLines {
    ingest: Ingest,
    decoder: LineDecoder,
    /// The budget held by the partial line the decoder keeps.
    partial: Reservation,
    delivery: Arc<Delivery>,
    /// Lines taken: events and rejects.
    tally: Tally,
    /// Events queued so far (`tally` counts lines; this counts what the delivery waits for).
    queued: usize,
}

impl ClientLines {
    pub fn new(ingest: Ingest) -> ClientLines {
        ClientLines {
            decoder: LineDecoder::new(ingest.max_line()),
            partial: ingest.budget().partial(),
            ingest,
            delivery: Arc::new(Delivery::default()),
            tally: Tally::default(),
            queued: 0,
        }
    }

    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Decodes `bytes` into events. Sync lines (`{"sync": …}`) go to `syncs` with the number of
    /// events before each, when the caller answers them; otherwise they are ordinary lines.
    pub fn decode(&mut self, bytes: &[u8], mut syncs: Option<&mut Vec<(usize, SyncRequest)>>) -> Vec<Event> {
        let received = Timestamp::now();
        let mut events = Vec::new();
        let ingest = &self.ingest;
        self.decoder.feed(bytes, &mut |frame| {
            if let (Some(syncs), Frame::Line(line)) = (syncs.as_deref_mut(), &frame) {
                if let Some(sync) = SyncRequest::parse(line) {
                    syncs.push((events.len(), sync));
                    return;
                }
            }
            ingest.push(&mut events, frame, received, EventId::new())
        });
        self.partial.resize(self.decoder.held_bytes());
        events
    }

    /// Bytes of memory the partial line holds.
    pub fn partial_bytes(&self) -> usize {
        self.decoder.held_bytes()
    }

    /// Whether a partial line is held that grows as more of it comes.
    pub fn line_growing(&self) -> bool {
        self.decoder.line_growing()
    }

    /// Gives up the partial line now, while others wait for the memory it holds and its client
    /// sends no more of it: it is kept as a reject (its first 64 KiB, with `why`), its memory comes
    /// back, and the rest of it is skipped when it comes. Nothing is lost silently: the client's
    /// answer counts it as rejected.
    pub async fn cut_partial(&mut self, why: &str) {
        let Some((head, len)) = self.decoder.cut() else {
            return;
        };
        self.partial.resize(0);
        let event = crate::event::Event::reject(
            EventId::new(),
            self.ingest.source().clone(),
            Timestamp::now(),
            format!("the line was cut after {len} bytes: {why}; its first 64 KiB are kept and the rest of the line is skipped. Send each line whole"),
            &head,
            len,
            self.ingest.redactor(),
        );
        let mut events = Vec::new();
        self.ingest.push_event(&mut events, event, head.len());
        let reservation = self.ingest.budget().force(events.iter().map(|e| e.cost as usize).sum());
        let _ = self.submit(&mut events, reservation).await;
    }

    /// Queues `events` (draining it) under `reservation`; Err when the pipeline is gone.
    pub async fn submit(&mut self, events: &mut Vec<Event>, reservation: Reservation) -> Result<(), ()> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        let ack = self.delivery.ack(n);
        self.ingest
            .submit(events, Some(ack), reservation, &mut self.tally)
            .await
            .map_err(|_| ())?;
        self.queued += n;
        Ok(())
    }

    /// A last line without a newline still counts (a client wrote and closed, or went idle).
    pub async fn finish_partial_line(&mut self) {
        let received = Timestamp::now();
        let mut events = Vec::new();
        let ingest = &self.ingest;
        self.decoder
            .finish(&mut |frame| ingest.push(&mut events, frame, received, EventId::new()));
        self.partial.resize(0);
        let cost = events.iter().map(|e| e.cost as usize).sum();
        let reservation = self.ingest.budget().force(cost);
        let _ = self.submit(&mut events, reservation).await;
    }

    /// Returns once everything queued so far is durable.
    pub async fn durable(&self) {
        self.delivery.durable(self.queued).await;
    }
}
