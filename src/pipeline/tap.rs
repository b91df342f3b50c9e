//! What the rest of the daemon sees of the event stream: events once they are durable, never before.
//!
//! Two ways to watch. An [`Observer`] is called synchronously by the writer for every stored batch;
//! it must be quick (the monitor adds the batch to its in-memory windows). The live feed is a lossy
//! broadcast for streams to browsers: a reader that falls behind is cut off with a count of what it
//! missed, so a slow client never slows ingest or grows memory. And the last few stored log batches
//! stay in memory (bounded in events and bytes), for a page whose store cannot answer: its live
//! tail still opens with the newest entries the daemon holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::event::{Collection, Event};
use crate::store::query::Position;

/// Sees every stored event, in the writer's task.
pub trait Observer: Send + Sync {
    fn stored(&self, collection: Collection, events: &[Event]);
}

/// One stored batch, shared by every live reader.
#[derive(Debug)]
pub struct Stored {
    pub collection: Collection,
    /// Events of this collection stored before this batch: a reader that lagged learns from the
    /// gap how many events (not batches) it missed.
    pub seq: u64,
    pub events: Vec<Event>,
}

/// How far the live feed of a collection has come: a stream opened now gets the batches from
/// `stored` on live, and finds everything up to `newest` in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// Events shown so far (the next batch's [`Stored::seq`]).
    pub stored: u64,
    /// The latest position among them; None before the first.
    pub newest: Option<Position>,
}

#[derive(Clone)]
pub struct Tap {
    observers: Arc<[Arc<dyn Observer>]>,
    live: broadcast::Sender<Arc<Stored>>,
    /// Per collection. Batches are written concurrently: numbering and sending under one lock
    /// keeps the live feed in sequence order, so a reader's gap is exactly what it missed.
    marks: Arc<Mutex<[Mark; Collection::COUNT]>>,
    /// The latest log batches, newest last, within [`RECENT_EVENTS`] and [`RECENT_BYTES`].
    recent: Arc<Mutex<Recent>>,
}

/// The newest stored log batches, with what they add up to.
#[derive(Default)]
struct Recent {
    batches: VecDeque<Arc<Stored>>,
    events: usize,
    bytes: usize,
}

impl Recent {
    fn size(batch: &Stored) -> (usize, usize) {
        (
            batch.events.len(),
            batch.events.iter().map(|e| e.held_bytes as usize).sum(),
        )
    }

    /// Adds the newest batch, which stays whatever its size; older ones go while over either bound.
    fn keep(&mut self, batch: Arc<Stored>) {
        let (n, b) = Recent::size(&batch);
        self.events += n;
        self.bytes += b;
        self.batches.push_back(batch);
        while self.batches.len() > 1 && (self.events > RECENT_EVENTS || self.bytes > RECENT_BYTES) {
            if let Some(old) = self.batches.pop_front() {
                let (n, b) = Recent::size(&old);
                self.events -= n;
                self.bytes -= b;
            }
        }
    }
}

/// The recent log events kept in memory: a page's worth, and never more than a few of the largest.
pub const RECENT_EVENTS: usize = 500;
pub const RECENT_BYTES: usize = 1 << 20;

impl Tap {
    /// `live_batches`: how many stored batches the live feed keeps for readers that are behind.
    pub fn new(observers: Vec<Arc<dyn Observer>>, live_batches: usize) -> Tap {
        let (live, _) = broadcast::channel(live_batches.max(1));
        Tap {
            observers: observers.into(),
            live,
            marks: Arc::default(),
            recent: Arc::default(),
        }
    }

    /// A tap that nobody watches.
    pub fn none() -> Tap {
        Tap::new(Vec::new(), 1)
    }

    /// A new reader of the live feed, starting with the next stored batch.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Stored>> {
        self.live.subscribe()
    }

    /// Where the live feed of `collection` stands.
    pub fn mark(&self, collection: Collection) -> Mark {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())[collection.index()]
    }

    /// The newest stored log batches the daemon still holds, oldest first.
    pub fn recent_logs(&self) -> Vec<Arc<Stored>> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .batches
            .iter()
            .cloned()
            .collect()
    }

    pub fn live_readers(&self) -> usize {
        self.live.receiver_count()
    }

    /// Called by the writer once `events` are durable.
    pub(crate) fn stored(&self, collection: Collection, events: Vec<Event>) {
        for o in self.observers.iter() {
            o.stored(collection, &events);
        }
        let newest = events.iter().map(|e| Position::of(e.time, e.id)).max();
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let mark = &mut marks[collection.index()];
        let seq = mark.stored;
        mark.stored += events.len() as u64;
        mark.newest = mark.newest.max(newest);
        // Without readers, nothing is kept (but the recent logs).
        let readers = self.live.receiver_count() > 0;
        if readers || collection == Collection::Logs {
            let batch = Arc::new(Stored {
                collection,
                seq,
                events,
            });
            if collection == Collection::Logs {
                self.keep_recent(batch.clone());
            }
            if readers {
                let _ = self.live.send(batch);
            }
        }
    }

    fn keep_recent(&self, batch: Arc<Stored>) {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).keep(batch);
    }
}
