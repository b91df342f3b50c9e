//! One client's byte stream of JSON lines, as the socket and `POST /api/events` both take it: lines
//! decoded into events, queued under the memory budget, and counted so that the answer can wait
//! until everything queued is durable.

use std::sync::Arc;

use super::lines::{Frame, LineDecoder};
use super::{Ingest, SyncRequest, Tally};
use crate::event::{Event, EventId, Timestamp};
use crate::pipeline::ack::Delivery;
use crate::pipeline::memory::Reservation;

pub struct ClientLines {
    ingest: Ingest,
    decoder: LineDecoder,
    /// The budget held by the partial line the decoder keeps.
    partial: Reservation,
    delivery: Arc<Delivery>,
    /// Lines taken: events and rejects.
    tally: Tally,
}

/// Everything a client had queued at some point (a sync line, its close): resolves once all of it
/// is durable, whatever was queued after it.
pub struct Mark {
    delivery: Arc<Delivery>,
    chunks: u64,
}

impl Mark {
    /// The first `chunks` chunks of `delivery`.
    #[cfg(test)]
    pub(crate) fn new(delivery: Arc<Delivery>, chunks: u64) -> Mark {
        Mark { delivery, chunks }
    }

    pub fn is_durable(&self) -> bool {
        self.delivery.is_durable(self.chunks)
    }

    pub async fn durable(&self) {
        self.delivery.durable(self.chunks).await;
    }
}

impl ClientLines {
    pub fn new(ingest: Ingest) -> ClientLines {
        ClientLines {
            decoder: LineDecoder::new(ingest.max_line()),
            partial: ingest.memory().partial(),
            ingest,
            delivery: Arc::new(Delivery::default()),
            tally: Tally::default(),
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
        let reservation = self
            .ingest
            .memory()
            .force(events.iter().map(|e| e.held_bytes as usize).sum());
        let _ = self.submit(&mut events, reservation).await;
    }

    /// Queues `events` (draining it) under `reservation`; Err when the pipeline is gone.
    pub async fn submit(&mut self, events: &mut Vec<Event>, reservation: Reservation) -> Result<(), ()> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        let ack = self.delivery.ack(n);
        let queued = self
            .ingest
            .submit(events, Some(ack.clone()), reservation, &mut self.tally)
            .await;
        if queued.is_err() {
            // Never accepted, so never owed (the tally leaves it out too): a mark taken after it
            // must not wait for it for ever.
            ack.acknowledge_n(n);
            return Err(());
        }
        Ok(())
    }

    /// A last line without a newline still counts (a client wrote and closed, or went idle).
    pub async fn finish_partial_line(&mut self) {
        let mut events = self.decode_rest(None);
        let held = events.iter().map(|e| e.held_bytes as usize).sum();
        let reservation = self.ingest.memory().force(held);
        let _ = self.submit(&mut events, reservation).await;
    }

    /// Decodes the partial line as if it had ended (the client closed, or went idle), as
    /// [`ClientLines::decode`] does a read; its memory comes back, and the events hold their own.
    pub fn decode_rest(&mut self, mut syncs: Option<&mut Vec<(usize, SyncRequest)>>) -> Vec<Event> {
        let received = Timestamp::now();
        let mut events = Vec::new();
        let ingest = &self.ingest;
        self.decoder.finish(&mut |frame| {
            if let (Some(syncs), Frame::Line(line)) = (syncs.as_deref_mut(), &frame) {
                if let Some(sync) = SyncRequest::parse(line) {
                    syncs.push((events.len(), sync));
                    return;
                }
            }
            ingest.push(&mut events, frame, received, EventId::new())
        });
        self.partial.resize(0);
        events
    }

    /// What is queued so far, to wait for its durability while more is queued.
    pub fn mark(&self) -> Mark {
        Mark {
            delivery: self.delivery.clone(),
            chunks: self.delivery.queued(),
        }
    }

    /// Returns once everything queued so far is durable.
    pub async fn durable(&self) {
        self.mark().durable().await;
    }
}
