//! The daemon's own logs and counters.
//!
//! Logs go to stderr (journald picks them up under systemd), human-readable or JSON. Counters are
//! bumped once per chunk or batch, not per event, and a summary line is logged once per interval
//! when something happened, so an idle daemon stays quiet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Collection, Event};
use crate::problems::Problems;
use crate::shutdown::Shutdown;
use crate::units::HumanDuration;

/// Rejects logged one by one per minute; the rest are only counted (and said in the summary).
const REJECT_WARNINGS_PER_MINUTE: u32 = 10;

/// `[log]`: the daemon's own logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`debug`, `info`, `warning`, …, Python's names included) or a filter such as
    /// `info,lngpt_collector=debug`. `LOG_LEVEL` overrides.
    pub level: String,
    pub format: LogFormat,
    /// `auto`: the journal when systemd runs the daemon with its output connected to it
    /// (`JOURNAL_STREAM`), else stderr; or `stderr`, or `journald`.
    pub target: LogTarget,
    /// How often a summary line is logged when events arrived; `"0"` switches it off.
    pub summary_interval: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    Auto,
    Stderr,
    Journald,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// For log shippers.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            target: LogTarget::Auto,
            summary_interval: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl LogConfig {
    pub fn validate(&self, p: &mut Problems) {
        if let Err(problem) = filter_directives(&self.level) {
            p.add("log.level", problem);
        }
        if !self.summary_interval.0.is_zero() && self.summary_interval.0 < Duration::from_millis(100) {
            p.add(
                "log.summary_interval",
                format!(
                    "is {}; expected \"0\" (off) or at least \"100ms\"",
                    self.summary_interval
                ),
            );
        }
    }
}

/// The names a level may be given by: Rust's, and Python's (which the novel app's `LOG_LEVEL` uses).
fn level_name(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// Turns `log.level` into `tracing` filter directives: a level name alone, or a comma-separated list
/// of `level` and `target=level`. Anything else is refused, since a filter that matches nothing would
/// silence the daemon, fatal errors included.
pub fn filter_directives(level: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected trace, debug, info, warning (warn), error, critical or off, or a filter such as \"info,lngpt_collector=debug\"";
    let mut out = Vec::new();
    for part in level.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let directive = match part.split_once('=') {
            None => level_name(part).map(str::to_string),
            Some((target, lvl)) => {
                let target_ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                level_name(lvl).filter(|_| target_ok).map(|l| format!("{target}={l}"))
            }
        };
        match directive {
            Some(d) => out.push(d),
            None => return Err(format!("is {level:?}: {part:?} is not a level; {EXPECTED}")),
        }
    }
    if out.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    Ok(out.join(","))
}

/// Changes the log level of the running daemon (SIGHUP), once logging is set up.
type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

pub fn init_logging(cfg: &LogConfig) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let directives = filter_directives(&cfg.level).unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = SET_LEVEL.set(Box::new(move |level: &str| {
        let directives = filter_directives(level)?;
        let filter = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));
    let registry = tracing_subscriber::registry().with(filter);
    if wants_journal(cfg.target) {
        // Structured fields go to the journal as they are (`EVENT_COUNT`, …), with the priority
        // of the level; the identifier is the service's.
        match tracing_journald::layer() {
            Ok(journal) => {
                // Levels map to syslog priorities as syslog names them (INFO is 6, not 5).
                let priorities = tracing_journald::PriorityMappings {
                    error: tracing_journald::Priority::Error,
                    warn: tracing_journald::Priority::Warning,
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    trace: tracing_journald::Priority::Debug,
                };
                let journal = journal
                    .with_field_prefix(None)
                    .with_priority_mappings(priorities)
                    .with_syslog_identifier("lngpt-collector".into());
                if let Err(e) = registry.with(journal).try_init() {
                    eprintln!("lngpt-collector: logging was already set up: {e}");
                }
                return;
            }
            Err(e) => eprintln!("lngpt-collector: the journal cannot be reached ({e}); logging to stderr"),
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match cfg.format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
    if let Err(e) = result {
        eprintln!("lngpt-collector: logging was already set up: {e}");
    }
}

/// `auto` means the journal when stderr is the journal's stream, as systemd documents it:
/// `JOURNAL_STREAM` holds the device and inode of that stream.
fn wants_journal(target: LogTarget) -> bool {
    match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => {
            use std::os::fd::AsRawFd;
            let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
                return false;
            };
            let Some((dev, ino)) = stream.split_once(':') else {
                return false;
            };
            match nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) {
                Ok(st) => dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino),
                Err(_) => false,
            }
        }
    }
}

/// Sets the level of the daemon's own log (`log.level` syntax).
pub fn set_level(level: &str) -> Result<(), String> {
    match SET_LEVEL.get() {
        Some(set) => set(level),
        None => Err("logging is not set up".into()),
    }
}

#[derive(Default)]
pub struct Counters {
    events: AtomicU64,
    rejected: AtomicU64,
    stored: [AtomicU64; Collection::COUNT],
    duplicates: AtomicU64,
    deferred: AtomicU64,
    /// Documents the daemon made itself (the monitor's windows), queued like events.
    own: AtomicU64,
    reject_warnings: AtomicU32,
    /// The minute (since the epoch) `reject_warnings` counts for.
    reject_minute: AtomicU64,
    /// Rejects not logged one by one since the last summary.
    rejects_unlogged: AtomicU64,
    /// Events accepted per (source, collection), rejects under `api_rejects`; for `/metrics`.
    by_source: Mutex<BTreeMap<(Arc<str>, Collection), u64>>,
    /// Events whose time could not be believed, per source: (ahead, behind).
    clock: Mutex<BTreeMap<Arc<str>, (u64, u64)>>,
    /// How long successful batch writes took.
    pub write_latency: LatencyHistogram,
}

/// Write latencies in fixed buckets (seconds), kept in atomics so the writer never waits.
pub struct LatencyHistogram {
    counts: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Upper bounds of the write-latency buckets, in seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// (sum in seconds, count, cumulative (upper bound, count) per bucket).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let buckets = LATENCY_BOUNDS
            .iter()
            .zip(&self.counts)
            .map(|(bound, c)| {
                cumulative += c.load(Relaxed);
                (*bound, cumulative)
            })
            .collect();
        let count = self.count.load(Relaxed);
        (self.sum_micros.load(Relaxed) as f64 / 1e6, count, buckets)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub events: u64,
    pub rejected: u64,
    pub stored: [u64; Collection::COUNT],
    pub duplicates: u64,
    pub deferred: u64,
    pub own: u64,
}

impl Snapshot {
    /// What the summary line is about: events received and stored, not the daemon's own documents.
    fn received_or_stored(&self) -> [u64; 8] {
        let s = &self.stored;
        [
            self.events,
            self.rejected,
            s[0],
            s[1],
            s[2],
            s[3],
            self.duplicates,
            self.deferred,
        ]
    }

    /// Accepted events (and rejects) the store has not confirmed yet.
    pub fn accepted_not_stored(&self) -> u64 {
        let done = self.stored.iter().sum::<u64>() + self.duplicates + self.deferred;
        (self.events + self.rejected + self.own).saturating_sub(done)
    }
}

/// A time span as people say it: `8 h 0 min`, `12 min 5 s`, `73 days`.
fn span(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    match s {
        _ if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        _ if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{s} s"),
    }
}

impl Counters {
    pub fn accepted(&self, events: u64, rejects: u64) {
        self.events.fetch_add(events, Relaxed);
        if rejects > 0 {
            self.rejected.fetch_add(rejects, Relaxed);
        }
    }

    /// Counts one chunk's events by collection for its source: one lock per chunk, not per event.
    pub fn received(&self, source: &Arc<str>, events: &[Event]) {
        let mut per = [0u64; Collection::COUNT];
        for e in events {
            per[e.collection().index()] += 1;
        }
        let Ok(mut map) = self.by_source.lock() else { return };
        for c in Collection::ALL {
            if per[c.index()] > 0 {
                *map.entry((source.clone(), c)).or_default() += per[c.index()];
            }
        }
    }

    /// Counts an event whose time is far from its arrival; the first of each kind per source is
    /// logged, with the likely cause.
    pub fn clock(&self, source: &Arc<str>, check: crate::event::ClockCheck) {
        use crate::event::ClockCheck;
        if check == ClockCheck::Believable {
            return;
        }
        let Ok(mut map) = self.clock.lock() else { return };
        let (ahead, behind) = map.entry(source.clone()).or_default();
        match check {
            ClockCheck::Ahead(ms) => {
                *ahead += 1;
                if *ahead == 1 {
                    tracing::warn!(
                        source = &**source,
                        "events from {source} are timestamped {} ahead of the collector's clock: a naive time read as UTC? set naive_timezone (or fix the sender's clock). They are stored with their own time, flagged with extra.clock_skew_ms, and counted at arrival by the monitor and the budget",
                        span(ms)
                    );
                }
            }
            ClockCheck::Behind(ms) => {
                *behind += 1;
                if *behind == 1 {
                    tracing::warn!(
                        source = &**source,
                        "events from {source} arrive {} after their own time: a replayed spool or a file read late, or a naive time read as UTC (set naive_timezone)? They are stored and counted in their own time",
                        span(ms)
                    );
                }
            }
            ClockCheck::Believable => {}
        }
    }

    /// Events whose time was not believed, per source: (ahead, behind).
    pub fn clock_by_source(&self) -> Vec<(Arc<str>, u64, u64)> {
        self.clock
            .lock()
            .map(|m| m.iter().map(|(s, (a, b))| (s.clone(), *a, *b)).collect())
            .unwrap_or_default()
    }

    /// Events accepted so far per (source, collection).
    pub fn received_by_source(&self) -> Vec<(Arc<str>, Collection, u64)> {
        self.by_source
            .lock()
            .map(|m| m.iter().map(|((s, c), n)| (s.clone(), *c, *n)).collect())
            .unwrap_or_default()
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

    pub fn own(&self, n: u64) {
        if n > 0 {
            self.own.fetch_add(n, Relaxed);
        }
    }

    /// Whether this reject may still be logged on its own in the current interval.
    pub fn may_log_reject(&self) -> bool {
        let minute = crate::event::Timestamp::now().as_millis().max(0) as u64 / 60_000;
        if self.reject_minute.swap(minute, Relaxed) != minute {
            self.reject_warnings.store(0, Relaxed);
        }
        let may = self.reject_warnings.fetch_add(1, Relaxed) < REJECT_WARNINGS_PER_MINUTE;
        if !may {
            self.rejects_unlogged.fetch_add(1, Relaxed);
        }
        may
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            events: self.events.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            stored: std::array::from_fn(|i| self.stored[i].load(Relaxed)),
            duplicates: self.duplicates.load(Relaxed),
            deferred: self.deferred.load(Relaxed),
            own: self.own.load(Relaxed),
        }
    }
}

/// Logs one summary line per interval in which something was received or stored.
pub async fn summarize(
    counters: Arc<Counters>,
    budget_used: impl Fn() -> usize + Send,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    if interval.is_zero() {
        return shutdown.recv().await;
    }
    // The counters start with the process: what the sources took before this task began belongs
    // to the first interval.
    let mut last = Snapshot::default();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let now = counters.snapshot();
        let suppressed = counters.rejects_unlogged.swap(0, Relaxed);
        if now.received_or_stored() != last.received_or_stored() {
            let d = |a: u64, b: u64| a - b;
            tracing::info!(
                event_count = d(now.events, last.events),
                reject_count = d(now.rejected, last.rejected),
                "last {}: received {} events, rejected {} lines{}; stored {} logs, {} cost, {} performance, {} rejects; {} into the outbox; {} of the memory budget in use",
                HumanDuration(interval),
                d(now.events, last.events),
                d(now.rejected, last.rejected),
                if suppressed > 0 { format!(" ({suppressed} not logged one by one)") } else { String::new() },
                d(now.stored[0], last.stored[0]),
                d(now.stored[1], last.stored[1]),
                d(now.stored[2], last.stored[2]),
                d(now.stored[3], last.stored[3]),
                d(now.deferred, last.deferred),
                crate::units::ByteSize(budget_used() as u64),
            );
        }
        last = now;
    }
}

/// Lets a repeated warning through at most once per period, counting what it held back.
pub struct RateLimited {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(count held back since the last one)` when the warning may be logged now.
    pub fn ready(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// The tail of a rate-limited message: "(and N more like it)".
    pub fn note(suppressed: u64) -> String {
        if suppressed == 0 {
            String::new()
        } else {
            format!(" (and {suppressed} more like it since the last such message)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_level_names_are_accepted_and_garbage_is_refused() {
        assert_eq!(filter_directives("WARNING").unwrap(), "warn");
        assert_eq!(filter_directives("CRITICAL").unwrap(), "error");
        assert_eq!(
            filter_directives("info,lngpt_collector=DEBUG").unwrap(),
            "info,lngpt_collector=debug"
        );
        for bad in ["LOUD", "", "info,=debug", "x=loud"] {
            assert!(filter_directives(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
