//! Deletes documents older than each collection's retention, on a schedule.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::event::{Collection, Timestamp};
use crate::problems::Problems;
use crate::shutdown::Shutdown;
use crate::units::HumanDuration;

/// `[retention]`: how long each collection keeps its documents; `"0"` keeps them forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub api_logs: HumanDuration,
    pub api_cost: HumanDuration,
    pub api_performance: HumanDuration,
    pub api_rejects: HumanDuration,
    pub api_metrics: HumanDuration,
    pub api_alerts: HumanDuration,
    /// How often expired documents are deleted (the embedded store; MongoDB uses TTL indexes).
    pub interval: HumanDuration,
    /// MongoDB: documents the app wrote itself before the collector (months of its history, which
    /// a TTL index would delete within a minute of the first start) are `"kept"`: a collection
    /// holding such documents older than its retention gets no TTL, and the start says so; or
    /// `"expire"`d like the collector's own.
    pub app_history: AppHistory,
}

/// What retention does to the app's own history in MongoDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppHistory {
    #[default]
    Keep,
    Expire,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |d: u64| HumanDuration(Duration::from_secs(d * 86_400));
        RetentionConfig {
            api_logs: days(30),
            api_cost: days(30),
            api_performance: days(30),
            api_rejects: days(7),
            api_metrics: days(30),
            api_alerts: days(90),
            interval: HumanDuration(Duration::from_secs(3600)),
            app_history: AppHistory::Keep,
        }
    }
}

impl RetentionConfig {
    /// How long `collection` keeps documents; zero keeps them forever.
    pub fn keep(&self, collection: Collection) -> HumanDuration {
        match collection {
            Collection::Logs => self.api_logs,
            Collection::Cost => self.api_cost,
            Collection::Performance => self.api_performance,
            Collection::Rejects => self.api_rejects,
            Collection::Metrics => self.api_metrics,
            Collection::Alerts => self.api_alerts,
        }
    }

    pub fn validate(&self, p: &mut Problems) {
        // A retention shorter than a minute would delete what was just written.
        for c in Collection::ALL {
            let keep = self.keep(c);
            if !keep.0.is_zero() && keep.0 < Duration::from_secs(60) {
                p.add(
                    &format!("retention.{}", c.name()),
                    format!("is {keep}; expected \"0\" (keep forever) or at least \"1m\""),
                );
            }
        }
        p.duration_in(
            "retention.interval",
            self.interval,
            Duration::from_millis(10),
            Duration::from_secs(7 * 86_400),
        );
    }
}

/// Runs at start-up and then every `interval`; a failed run is logged and tried again next time.
pub async fn run<S: Store>(store: S, cfg: RetentionConfig, mut shutdown: Shutdown) {
    let interval = cfg.interval.0;
    loop {
        for c in Collection::ALL {
            let keep_for = cfg.keep(c);
            if keep_for.0.is_zero() {
                continue;
            }
            // Durations are capped at a century, so this cannot wrap; a cutoff before 1970 deletes nothing.
            let cutoff = Timestamp(Timestamp::now().as_millis().saturating_sub(keep_for.as_millis_i64()));
            let mut deleted = 0u64;
            let outcome = loop {
                match store.prune(c, cutoff).await {
                    // A full chunk: there may be more; give the writer (and shutdown) a turn first.
                    Ok(n) if n >= super::embedded::prune_chunk() => {
                        deleted += n;
                        if shutdown.is_stopping() {
                            break Ok(deleted);
                        }
                        tokio::task::yield_now().await;
                    }
                    Ok(n) => break Ok(deleted + n),
                    Err(e) => break Err(e),
                }
            };
            match outcome {
                Ok(0) => {}
                Ok(n) => tracing::info!("retention: deleted {n} {} documents older than {cutoff}", c.name()),
                Err(e) => tracing::warn!(
                    "retention: cannot delete old {} documents, will try again: {e}",
                    c.name()
                ),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.recv() => return,
        }
    }
}
