//! What the rest of the daemon sees of the event stream: events once they are durable, never before.
//!
//! Two ways to watch. An [`Observer`] is called synchronously by the writer for every stored batch;
//! it must be quick (the monitor adds the batch to its in-memory windows). The live feed is a lossy
//! broadcast for streams to browsers: a reader that falls behind is cut off with a count of what it
//! missed, so a slow client never slows ingest or grows memory.

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
}

impl Tap {
    /// `live_batches`: how many stored batches the live feed keeps for readers that are behind.
    pub fn new(observers: Vec<Arc<dyn Observer>>, live_batches: usize) -> Tap {
        let (live, _) = broadcast::channel(live_batches.max(1));
        Tap {
            observers: observers.into(),
            live,
            marks: Arc::default(),
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
        // Without readers, nothing is kept.
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(Stored {
                collection,
                seq,
                events,
            }));
        }
    }
}
