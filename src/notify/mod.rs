//! Alert notifications to webhooks: durable, retried, rate-limited, grouped.
//!
//! **Durable.** [`Notifier::enqueue`] commits a notification to one queue per receiver (rows of
//! the `notify_queue` table in the state directory's SQLite file) before it returns. Delivery
//! reads the queue, so a receiver that is down, or a daemon killed mid-send, delays a notification
//! and never loses it; a send whose answer was lost is sent again with the same idempotency key.
//!
//! **Grouped.** Per receiver, the first notification of a burst waits `group_wait` for others; all
//! that are waiting then go out as one message (a *delivery*). A delivery's members are frozen once
//! it is first tried, so every retry carries the same delivery id (`webhook-id`).
//!
//! **Retried, not hammered.** One delivery in flight per receiver, in order. Failures are retried
//! with exponential backoff and jitter; `Retry-After` (429, 503) is honoured; other 4xx answers and
//! vendors' configuration errors are given up, kept in the table with the answer, and counted.
//! Each receiver has a sliding-window limit of posts (`max_per_minute`; the vendors' 20 a minute
//! for DingTalk and WeCom) that retries count against too.
//!
//! **Alertmanager** receivers also keep the firing alerts (`notify_active`) and post them again
//! every `resend_interval`, so Alertmanager does not resolve them on its own.
//!
//! Wiring (the app): `Notifier::open(&config.database_path(), &config.webhook, options)`, spawn
//! [`Notifier::run`] with a background shutdown listener, hand clones to the monitor (which calls
//! [`Notifier::enqueue`]), call [`Notifier::reload`] on SIGHUP and read [`Notifier::stats`] for
//! `/metrics`.

mod config;
mod delivery;
mod formats;
mod http;
mod limiter;
pub mod mask;
mod queue;
pub mod render;
mod signing;
mod test_alert;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use config::{validate_all, FormatKind, WebhookConfig};
pub use test_alert::{send_test_alerts, TestOutcome};

use crate::event::Timestamp;
use crate::monitor::vocabulary::{AlertState, Severity, Unit};
use crate::store::sqlite::Synchronous;

/// One change of an alert (fired, repeated, resolved), as the monitor hands it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Idempotency key, unique per (alert, state change or repeat); receivers dedupe on it.
    pub id: String,
    /// The alert's fingerprint (rule + labels).
    pub alert_key: String,
    /// E.g. `error_rate`, `budget`.
    pub rule: String,
    pub severity: Severity,
    /// Set on an escalation: the severity it rose from (the same alert, worse).
    #[serde(default)]
    pub escalated_from: Option<Severity>,
    pub state: AlertState,
    /// Already rendered in the configured language.
    pub title: String,
    /// What happened: value, threshold, window, what to do.
    pub message: String,
    /// The value when it fired, and now (at the end, for a resolution).
    pub value: f64,
    #[serde(default)]
    pub current: f64,
    #[serde(default)]
    pub unit: Unit,
    pub threshold: f64,
    pub labels: BTreeMap<String, String>,
    pub starts_at: Timestamp,
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
}

/// What the notifier takes besides its receivers.
#[derive(Debug, Clone)]
pub struct Options {
    /// The language and display time zone of the words around each alert.
    pub speech: render::Speech,
    /// The SQLite file's `synchronous` (`[embedded] synchronous`).
    pub synchronous: Synchronous,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            speech: render::Speech::default(),
            synchronous: Synchronous::Normal,
        }
    }
}

/// Delivery counts of one receiver since start, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverStats {
    pub name: String,
    pub format: FormatKind,
    /// Notifications delivered.
    pub delivered: u64,
    /// Notifications given up (a 4xx answer or a vendor's refusal); kept in `notify_queue`.
    pub failed: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
    /// HTTP requests made (Alertmanager re-posts included).
    pub posts: u64,
    /// Notifications waiting now.
    pub pending: u64,
    /// The last failure's answer or error, URL masked.
    pub last_error: Option<String>,
}

/// Handle to the notifier; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

struct Shared {
    queue: queue::Queue,
    client: reqwest::Client,
    options: Options,
    receivers: Mutex<BTreeMap<String, Arc<Receiver>>>,
    /// Counters by receiver name, kept across reloads.
    counters: Mutex<HashMap<String, Arc<Counters>>>,
    /// Wakes `run` after a reload.
    changed: Notify,
}

/// One configured receiver, as its delivery loop sees it.
struct Receiver {
    config: WebhookConfig,
    format: Box<dyn formats::Format>,
    counters: Arc<Counters>,
    /// Something was enqueued for it.
    wake: Notify,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    posts: AtomicU64,
    pending: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

impl Notifier {
    /// Opens the durable per-receiver queues (tables in the SQLite file at `db_path`, created if
    /// missing) for `receivers`.
    pub fn open(db_path: &Path, receivers: &[WebhookConfig], options: Options) -> Result<Notifier, String> {
        let queue = queue::Queue::open(db_path, options.synchronous)?;
        let shared = Arc::new(Shared {
            queue,
            client: http::client()?,
            options,
            receivers: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        });
        let notifier = Notifier { shared };
        notifier.reload(receivers)?;
        Ok(notifier)
    }

    /// Commits `n` to the queue of every receiver whose `min_severity` and `rules` match, and returns
    /// once it is committed. Enqueuing an id a receiver already has is a no-op for that receiver.
    pub async fn enqueue(&self, n: Notification) -> Result<(), String> {
        let targets: Vec<Arc<Receiver>> = self
            .receivers()
            .into_values()
            .filter(|r| r.config.wants(n.severity, &n.rule))
            .collect();
        if targets.is_empty() {
            tracing::debug!("alert {} ({}) goes to no webhook receiver", n.id, n.rule);
            return Ok(());
        }
        let names: Vec<queue::Target> = targets
            .iter()
            .map(|r| queue::Target {
                receiver: r.config.name.clone(),
                keeps_active: r.config.format == FormatKind::Alertmanager,
            })
            .collect();
        let added = self.shared.queue.enqueue(n, names).await?;
        for r in targets.iter().filter(|r| added.contains(&r.config.name)) {
            r.counters.pending.fetch_add(1, Relaxed);
            r.wake.notify_one();
        }
        Ok(())
    }

    /// Delivery loops, one per receiver, until `shutdown`. An attempt in flight at shutdown gets a
    /// moment to finish; one that does not stays queued and is sent again on the next start.
    pub async fn run(self, mut shutdown: crate::shutdown::Shutdown) {
        let mut loops: HashMap<String, delivery::Running> = HashMap::new();
        loop {
            let current = self.receivers();
            // Stop loops of receivers removed or changed; start those missing.
            let stale: Vec<String> = loops
                .iter()
                .filter(|(name, running)| current.get(*name).is_none_or(|r| !Arc::ptr_eq(r, &running.receiver)))
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                if let Some(running) = loops.remove(&name) {
                    running.stop().await;
                }
            }
            for (name, receiver) in current {
                if let std::collections::hash_map::Entry::Vacant(slot) = loops.entry(name) {
                    slot.insert(delivery::start(receiver, self.shared.clone()));
                }
            }
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = self.shared.changed.notified() => {}
            }
        }
        let stops = loops.into_values().map(|r| r.stop());
        futures_util::future::join_all(stops).await;
    }

    /// SIGHUP: takes a new receiver list. Queues of receivers that remain (by name) are kept; a
    /// removed receiver's queue stays in the file, undelivered, until it comes back.
    pub fn reload(&self, receivers: &[WebhookConfig]) -> Result<(), String> {
        let mut built = BTreeMap::new();
        for cfg in receivers {
            let format = formats::build(cfg, self.shared.options.speech.clone())
                .map_err(|e| format!("webhook {:?}: {e}", cfg.name))?;
            built.insert(cfg.name.clone(), (cfg.clone(), format));
        }
        let mut current = self.shared.receivers.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for (name, (cfg, format)) in built {
            match current.get(&name) {
                // Unchanged: keep it (and its running loop).
                Some(existing) if existing.config == cfg => {
                    next.insert(name, existing.clone());
                }
                _ => {
                    let counters = self.counters_of(&name);
                    counters
                        .pending
                        .store(self.shared.queue.pending_count_blocking(&name).unwrap_or(0), Relaxed);
                    if !current.contains_key(&name) {
                        tracing::info!(
                            "webhook {name}: {} notifications to {} ({})",
                            cfg.format.name(),
                            cfg.masked_url(),
                            describe_filter(&cfg)
                        );
                    }
                    next.insert(
                        name,
                        Arc::new(Receiver {
                            config: cfg,
                            format,
                            counters,
                            wake: Notify::new(),
                        }),
                    );
                }
            }
        }
        for name in current.keys().filter(|n| !next.contains_key(*n)) {
            let waiting = self.shared.queue.pending_count_blocking(name).unwrap_or(0);
            tracing::info!(
                "webhook {name} removed from the configuration; {waiting} notifications stay in its queue until a receiver of that name comes back"
            );
        }
        *current = next;
        drop(current);
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Per-receiver delivery counts, for `/metrics`.
    pub fn stats(&self) -> Vec<ReceiverStats> {
        self.receivers()
            .into_values()
            .map(|r| {
                let c = &r.counters;
                ReceiverStats {
                    name: r.config.name.clone(),
                    format: r.config.format,
                    delivered: c.delivered.load(Relaxed),
                    failed: c.failed.load(Relaxed),
                    retried: c.retried.load(Relaxed),
                    posts: c.posts.load(Relaxed),
                    pending: c.pending.load(Relaxed),
                    last_error: c.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                }
            })
            .collect()
    }

    fn receivers(&self) -> BTreeMap<String, Arc<Receiver>> {
        self.shared.receivers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn counters_of(&self, name: &str) -> Arc<Counters> {
        self.shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

fn describe_filter(cfg: &WebhookConfig) -> String {
    let rules = if cfg.rules.is_empty() {
        "every rule".to_string()
    } else {
        format!("rules {}", cfg.rules.join(", "))
    };
    format!("severity {} and up, {rules}", cfg.min_severity.name())
}
