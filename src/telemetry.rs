//! The daemon's own logs and counters.
//!
//! Logs go to stderr (journald picks them up under systemd), human-readable or JSON. Counters are
//! bumped once per chunk or batch, not per event, and a summary line is logged once per interval
//! when something happened, so an idle daemon stays quiet.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::config::LogConfig;
use crate::event::Collection;
use crate::shutdown::Shutdown;

/// Rejects logged one by one per summary interval; the rest are only counted.
const REJECT_WARNINGS_PER_INTERVAL: u32 = 10;

pub fn init_logging(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = if cfg.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("lngpt-collector: logging was already set up: {e}");
    }
}

#[derive(Default)]
pub struct Counters {
    events: AtomicU64,
    rejected: AtomicU64,
    stored: [AtomicU64; 4],
    duplicates: AtomicU64,
    deferred: AtomicU64,
    reject_warnings: AtomicU32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub events: u64,
    pub rejected: u64,
    pub stored: [u64; 4],
    pub duplicates: u64,
    pub deferred: u64,
}

impl Counters {
    pub fn accepted(&self, events: u64, rejects: u64) {
        self.events.fetch_add(events, Relaxed);
        if rejects > 0 {
            self.rejected.fetch_add(rejects, Relaxed);
        }
    }

    pub fn stored(&self, collection: Collection, inserted: u64, duplicates: u64) {
        self.stored[collection.index()].fetch_add(inserted, Relaxed);
        if duplicates > 0 {
            self.duplicates.fetch_add(duplicates, Relaxed);
        }
    }

    /// Events committed to the outbox instead of the store.
    pub fn deferred(&self, n: u64) {
        if n > 0 {
            self.deferred.fetch_add(n, Relaxed);
        }
    }

    /// Whether this reject may still be logged on its own in the current interval.
    pub fn may_log_reject(&self) -> bool {
        self.reject_warnings.fetch_add(1, Relaxed) < REJECT_WARNINGS_PER_INTERVAL
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            events: self.events.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            stored: std::array::from_fn(|i| self.stored[i].load(Relaxed)),
            duplicates: self.duplicates.load(Relaxed),
            deferred: self.deferred.load(Relaxed),
        }
    }
}

/// Logs one summary line per interval in which something was received or stored.
pub async fn summarize(
    counters: Arc<Counters>,
    queued: impl Fn() -> usize,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    if interval.is_zero() {
        return;
    }
    let mut last = counters.snapshot();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let now = counters.snapshot();
        let suppressed = counters
            .reject_warnings
            .swap(0, Relaxed)
            .saturating_sub(REJECT_WARNINGS_PER_INTERVAL);
        if now != last {
            let d = |a: u64, b: u64| a - b;
            tracing::info!(
                "last {}: received {} events, rejected {} lines{}; stored {} logs, {} cost, {} performance, {} rejects; {} into the outbox; {} queued",
                crate::config::HumanDuration(interval),
                d(now.events, last.events),
                d(now.rejected, last.rejected),
                if suppressed > 0 { format!(" ({suppressed} not logged one by one)") } else { String::new() },
                d(now.stored[0], last.stored[0]),
                d(now.stored[1], last.stored[1]),
                d(now.stored[2], last.stored[2]),
                d(now.stored[3], last.stored[3]),
                d(now.deferred, last.deferred),
                queued(),
            );
        }
        last = now;
    }
}
