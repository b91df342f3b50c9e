//! What the rest of the daemon sees of the event stream: events once they are durable, never before.
//!
//! Two ways to watch. An [`Observer`] is called synchronously by the writer for every stored batch;
//! it must be quick (the monitor adds the batch to its in-memory windows). The live feed is a lossy
//! broadcast for streams to browsers: a reader that falls behind is cut off with a count of what it
//! missed, so a slow client never slows ingest or grows memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::event::{Collection, Event};

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

#[derive(Clone)]
pub struct Tap {
    observers: Arc<[Arc<dyn Observer>]>,
    live: broadcast::Sender<Arc<Stored>>,
    /// Events stored so far, per collection.
    seq: Arc<[AtomicU64; Collection::COUNT]>,
    /// Batches are written concurrently: numbering and sending under one lock keeps the live feed
    /// in sequence order, so a reader's gap is exactly what it missed.
    in_order: Arc<std::sync::Mutex<()>>,
}

impl Tap {
    /// `live_batches`: how many stored batches the live feed keeps for readers that are behind.
    pub fn new(observers: Vec<Arc<dyn Observer>>, live_batches: usize) -> Tap {
        let (live, _) = broadcast::channel(live_batches.max(1));
        Tap {
            observers: observers.into(),
            live,
            seq: Arc::new(Default::default()),
            in_order: Arc::default(),
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

    /// Events of `collection` stored so far (the next batch's [`Stored::seq`]).
    pub fn stored_events(&self, collection: Collection) -> u64 {
        self.seq[collection.index()].load(Ordering::Relaxed)
    }

    pub fn live_readers(&self) -> usize {
        self.live.receiver_count()
    }

    /// Called by the writer once `events` are durable.
    pub(crate) fn stored(&self, collection: Collection, events: Vec<Event>) {
        for o in self.observers.iter() {
            o.stored(collection, &events);
        }
        let _in_order = self.in_order.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq[collection.index()].fetch_add(events.len() as u64, Ordering::Relaxed);
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
