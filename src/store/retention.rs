//! Deletes documents older than each collection's retention, on a schedule.

use std::time::Duration;

use super::Store;
use crate::config::RetentionConfig;
use crate::event::{Collection, Timestamp};
use crate::shutdown::Shutdown;

/// Runs at start-up and then every `interval`; a failed run is logged and tried again next time.
pub async fn run<S: Store>(store: S, cfg: RetentionConfig, mut shutdown: Shutdown) {
    let keep = |c: Collection| match c {
        Collection::Logs => cfg.api_logs.0,
        Collection::Cost => cfg.api_cost.0,
        Collection::Performance => cfg.api_performance.0,
        Collection::Rejects => cfg.api_rejects.0,
    };
    let interval = if cfg.interval.0.is_zero() {
        Duration::from_secs(3600)
    } else {
        cfg.interval.0
    };
    loop {
        for c in Collection::ALL {
            let keep_for = keep(c);
            if keep_for.is_zero() {
                continue;
            }
            let cutoff = Timestamp(Timestamp::now().as_millis() - keep_for.as_millis() as i64);
            match store.prune(c, cutoff).await {
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
