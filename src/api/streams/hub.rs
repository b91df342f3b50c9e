//! A hub per streamed collection: while it has clients, it formats each stored batch once into its
//! SSE text and rebroadcasts it, so the client count does not multiply the formatting; and the
//! streams' own low-priority runtime.

use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::broadcast;

use crate::shutdown::CancellationToken;

use super::{sse, STREAMS};
use crate::api::Api;
use crate::event::{Body, Collection, Event, Level};
use crate::pipeline::memory::MemoryBudget;
use crate::pipeline::tap::Stored;
use crate::store::query::Position;

/// One stored event of a formatted batch, with what the filters look at.
pub(crate) struct Line {
    /// The event in the batch's SSE text: `id: <time_ms>_<_id>`, `data: <JSON>`.
    pub(super) block: Range<usize>,
    pub(super) position: Position,
    pub(super) level: Option<Level>,
    pub(super) module: Option<String>,
    pub(super) model: Option<String>,
    pub(super) status: Option<&'static str>,
    /// Logs only: the text `q` searches.
    pub(super) message: Option<String>,
}

/// A stored batch of one collection, formatted once for every client.
pub(crate) struct Formatted {
    /// The tap's sequence of the batch's first event.
    pub(super) seq: u64,
    /// Every event as SSE: what a client without filters sends as it is.
    pub(super) sse: Bytes,
    pub(super) lines: Vec<Line>,
}

impl Formatted {
    pub(super) fn of(seq: u64, events: &[Event], host: &str) -> Formatted {
        let mut sse = Vec::with_capacity(events.len() * 320);
        let mut id = Vec::with_capacity(40);
        let lines = events
            .iter()
            .map(|e| {
                let start = sse.len();
                id.clear();
                let _ = write!(id, "{}_", e.time.as_millis());
                e.id.write_hex(&mut id);
                sse::write_event(&mut sse, "", Some(&id), |out| sse::write_shaped(e, host, out));
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
    memory: MemoryBudget,
}

/// Formatted batches a hub keeps for clients that are behind.
const HUB_BATCHES: usize = 16;
/// While sources wait for memory, a hub holds a batch back at most this long: under sustained
/// full-speed ingest, a watcher still sees a batch this often (and `lagged` for the rest).
const YIELD_AT_MOST: Duration = Duration::from_millis(250);
/// How often a hub that yields looks at the budget again.
const YIELD_CHECK: Duration = Duration::from_millis(10);

impl Hubs {
    pub fn new(memory: MemoryBudget) -> Hubs {
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
    pub(super) fn subscribe(&self, collection: Collection, api: &Api) -> broadcast::Receiver<Arc<Formatted>> {
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
        memory: MemoryBudget,
        stopping: CancellationToken,
    ) {
        loop {
            let received = tokio::select! {
                biased;
                _ = stopping.cancelled() => break,
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
                        _ = stopping.cancelled() => break,
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
async fn yield_to_ingest(memory: &MemoryBudget) {
    let until = tokio::time::Instant::now() + YIELD_AT_MOST;
    while memory.is_short() && tokio::time::Instant::now() < until {
        tokio::time::sleep(YIELD_CHECK).await;
    }
}

/// Where the streams' tasks run.
pub(super) fn stream_tasks(api: &Api) -> tokio::runtime::Handle {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;
    use crate::pipeline::tap::Tap;

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
        let memory = MemoryBudget::new(1 << 20);
        let tap = Tap::new(Vec::new(), 16);
        let hub = Arc::new(Hub {
            collection: Collection::Logs,
            out: broadcast::channel(HUB_BATCHES).0,
            running: std::sync::Mutex::new(true),
        });
        let mut formatted = hub.out.subscribe();
        let stopping = CancellationToken::new();
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
