//! The delivery loop of one receiver: forms deliveries from its queue (after `group_wait`), sends
//! one at a time in order, waits out backoff, `Retry-After` and the rate limit, and records every
//! outcome in the queue before it moves on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::formats::{self, MAX_GROUP};
use super::http::{self, Verdict};
use super::limiter::Limiter;
use super::queue::{Batch, Outcome, Row};
use super::{FormatKind, Notification, Receiver, Shared};
use crate::event::Timestamp;
use crate::retry::Backoff;
use crate::telemetry::RateLimited;
use crate::units::HumanDuration;

/// How long an attempt in flight at shutdown may take to finish (so that its answer is recorded
/// and it is not sent again on the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failure of the queue itself (a full disk), before trying again.
const QUEUE_TROUBLE_PAUSE: Duration = Duration::from_secs(1);

/// A running delivery loop.
pub struct Running {
    pub receiver: Arc<Receiver>,
    /// Cancels the loop's token when dropped, so a `Running` that is dropped without
    /// [`Running::stop`] stops its loop too.
    stop: DropGuard,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops the loop and waits for it (an attempt in flight gets [`SHUTDOWN_GRACE`]).
    pub async fn stop(self) {
        drop(self.stop);
        if let Err(e) = self.task.await {
            tracing::error!("webhook {}: the delivery loop failed: {e}", self.receiver.config.name);
        }
    }
}

pub fn start(receiver: Arc<Receiver>, shared: Arc<Shared>) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Loop {
            receiver: receiver.clone(),
            shared,
            stop: stop.clone(),
            limiter: None,
            resend_at: Instant::now(),
            warnings: RateLimited::new(Duration::from_secs(10)),
        }
        .run(),
    );
    Running {
        receiver,
        stop: stop.drop_guard(),
        task,
    }
}

enum Step {
    Continue,
    Stop,
}

struct Loop {
    receiver: Arc<Receiver>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// Seeded from the posts recorded in the queue, so that a restart keeps the vendor's limit.
    limiter: Option<Limiter>,
    /// Alertmanager: when the firing alerts are due to be posted again (at once after a start).
    resend_at: Instant,
    warnings: RateLimited,
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

impl Loop {
    async fn run(mut self) {
        let window = self.receiver.config.rate_window.0;
        let since = now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
        let recent = match self.shared.queue.posts_since(self.name(), since).await {
            Ok(posts) => posts,
            Err(e) => {
                tracing::warn!("webhook {}: {e}; its rate limit starts afresh", self.name());
                Vec::new()
            }
        };
        self.limiter = Some(Limiter::new(self.receiver.config.max_posts(), window, recent));
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if let Step::Stop = self.step().await {
                return;
            }
        }
    }

    fn name(&self) -> &str {
        &self.receiver.config.name
    }

    fn limiter(&mut self) -> &mut Limiter {
        let cfg = &self.receiver.config;
        self.limiter
            .get_or_insert_with(|| Limiter::new(cfg.max_posts(), cfg.rate_window.0, Vec::new()))
    }

    async fn step(&mut self) -> Step {
        let queue = self.shared.queue.clone();
        let batch = match queue.open_batch(self.name()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                return match queue.oldest_unbatched(self.name()).await {
                    Ok(Some(oldest)) => {
                        let due = oldest + self.receiver.config.group_wait.as_millis_i64();
                        let now = now_ms();
                        if due > now {
                            self.sleep(Duration::from_millis((due - now) as u64)).await
                        } else {
                            self.form().await
                        }
                    }
                    Ok(None) => self.idle().await,
                    Err(e) => self.queue_trouble(e).await,
                };
            }
            Err(e) => return self.queue_trouble(e).await,
        };
        let now = now_ms();
        if batch.next_ms > now {
            return self.sleep(Duration::from_millis((batch.next_ms - now) as u64)).await;
        }
        if let Some(wait) = self.limiter().wait(now) {
            return self.sleep(wait).await;
        }
        self.attempt(batch).await
    }

    /// Nothing queued: waits for an enqueue, the next Alertmanager re-post, or the stop.
    async fn idle(&mut self) -> Step {
        let resend_due = self.receiver.config.format == FormatKind::Alertmanager;
        let receiver = self.receiver.clone();
        tokio::select! {
            _ = receiver.wake.notified() => Step::Continue,
            _ = tokio::time::sleep_until(self.resend_at), if resend_due => self.resend().await,
            _ = self.stop.cancelled() => Step::Stop,
        }
    }

    /// Freezes the oldest waiting notifications (as many as fit one message) into a delivery.
    async fn form(&mut self) -> Step {
        let rows = match self.shared.queue.unbatched(self.name(), MAX_GROUP).await {
            Ok(rows) => rows,
            Err(e) => return self.queue_trouble(e).await,
        };
        let (readable, damaged): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.notification.is_ok());
        if !damaged.is_empty() {
            let why = damaged
                .iter()
                .find_map(|r| r.notification.as_ref().err().cloned())
                .unwrap_or_default();
            tracing::error!(
                "webhook {}: {} queued notifications are lost: {why}",
                self.name(),
                damaged.len()
            );
            let seqs = damaged.iter().map(|r| r.seq).collect();
            if let Err(e) = self.shared.queue.fail_rows(self.name(), seqs, &why).await {
                return self.queue_trouble(e).await;
            }
            self.finished(damaged.len() as u64, false);
        }
        if readable.is_empty() {
            return Step::Continue;
        }
        let items: Vec<Notification> = readable.iter().filter_map(|r| r.notification.clone().ok()).collect();
        let n = formats::fitting(self.receiver.format.as_ref(), &items);
        let chosen = &readable[..n];
        let id = delivery_id(chosen);
        match self.shared.queue.form_batch(self.name(), &id, chosen).await {
            Ok(()) => Step::Continue,
            Err(e) => self.queue_trouble(e).await,
        }
    }

    async fn attempt(&mut self, batch: Batch) -> Step {
        let items: Vec<Notification> = batch.rows.iter().filter_map(|r| r.notification.clone().ok()).collect();
        let damaged: Vec<i64> = batch
            .rows
            .iter()
            .filter(|r| r.notification.is_err())
            .map(|r| r.seq)
            .collect();
        if !damaged.is_empty() {
            let count = damaged.len() as u64;
            tracing::error!(
                "webhook {}: {count} queued notifications are lost: damaged on disk",
                self.name()
            );
            if let Err(e) = self
                .shared
                .queue
                .fail_rows(self.name(), damaged, "damaged on disk")
                .await
            {
                return self.queue_trouble(e).await;
            }
            self.finished(count, false);
            return Step::Continue;
        }
        let active = self.active().await;
        let out = self.receiver.format.build(&batch.id, &items, &active, Timestamp::now());
        let Some(answer) = self.send(out).await else {
            return Step::Stop;
        };
        let verdict = http::judge(
            self.receiver.format.as_ref(),
            &answer,
            self.receiver.config.rate_window.0,
        );
        let count = items.len() as u64;
        let ids = ids_of(&items);
        let (outcome_answer, step) = (answer.describe(), Step::Continue);
        let recorded = match &verdict {
            Verdict::Delivered => {
                self.resend_at = Instant::now() + self.receiver.config.resend_interval.0;
                let tries = batch.attempts + 1;
                if tries > 1 {
                    tracing::info!(
                        "webhook {}: delivered {count} notifications ({ids}) at attempt {tries}",
                        self.name()
                    );
                } else {
                    tracing::debug!("webhook {}: delivered {count} notifications ({ids})", self.name());
                }
                self.shared
                    .queue
                    .record(self.name(), &batch.id, Outcome::Delivered(&outcome_answer))
                    .await
                    .map(|()| self.finished(count, true))
            }
            Verdict::Retry { after, why } => {
                let attempts = batch.attempts + 1;
                let delay = after.unwrap_or_else(|| backoff(&self.receiver.config, attempts));
                let next_ms = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
                self.receiver.counters.retried.fetch_add(1, Relaxed);
                self.receiver.counters.set_error(Some(why.clone()));
                if let Some(held) = self.warnings.ready() {
                    tracing::warn!(
                        "webhook {} ({}): attempt {attempts} at {count} notifications failed: {why}; trying again in {}{}",
                        self.name(),
                        self.receiver.config.masked_url(),
                        HumanDuration(Duration::from_millis(delay.as_millis() as u64)),
                        RateLimited::note(held)
                    );
                }
                self.shared
                    .queue
                    .record(self.name(), &batch.id, Outcome::Retry { next_ms, answer: why })
                    .await
            }
            Verdict::GiveUp(why) => {
                self.receiver.counters.set_error(Some(why.clone()));
                tracing::error!(
                    "webhook {} ({}) refused {count} notifications ({ids}): {why}; given up (they stay in notify_queue with this answer); fix the receiver or its [[webhook]] entry",
                    self.name(),
                    self.receiver.config.masked_url()
                );
                self.shared
                    .queue
                    .record(self.name(), &batch.id, Outcome::Failed(why))
                    .await
                    .map(|()| self.finished(count, false))
            }
        };
        match recorded {
            Ok(()) => step,
            Err(e) => self.queue_trouble(e).await,
        }
    }

    /// Alertmanager: posts the firing alerts again, so that it does not resolve them on its own.
    async fn resend(&mut self) -> Step {
        let interval = self.receiver.config.resend_interval.0;
        let active = self.active().await;
        if active.is_empty() {
            self.resend_at = Instant::now() + interval;
            return Step::Continue;
        }
        if let Some(wait) = self.limiter().wait(now_ms()) {
            return self.sleep(wait).await;
        }
        let out = self.receiver.format.build("resend", &[], &active, Timestamp::now());
        let Some(answer) = self.send(out).await else {
            return Step::Stop;
        };
        self.resend_at = Instant::now() + interval;
        match http::judge(
            self.receiver.format.as_ref(),
            &answer,
            self.receiver.config.rate_window.0,
        ) {
            Verdict::Delivered => {}
            Verdict::Retry { why, .. } | Verdict::GiveUp(why) => {
                self.receiver.counters.set_error(Some(why.clone()));
                if let Some(held) = self.warnings.ready() {
                    tracing::warn!(
                        "webhook {} ({}): re-posting {} firing alerts failed: {why}; trying again in {}{}",
                        self.name(),
                        self.receiver.config.masked_url(),
                        active.len(),
                        HumanDuration(interval),
                        RateLimited::note(held)
                    );
                }
            }
        }
        Step::Continue
    }

    async fn active(&self) -> Vec<Notification> {
        if self.receiver.config.format != FormatKind::Alertmanager {
            return Vec::new();
        }
        match self.shared.queue.active(self.name()).await {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!("webhook {}: cannot read the firing alerts: {e}", self.name());
                Vec::new()
            }
        }
    }

    /// Sends one request and records it against the rate limit; `None` when stopped meanwhile and
    /// the request did not finish within [`SHUTDOWN_GRACE`].
    async fn send(&mut self, out: formats::Outgoing) -> Option<http::Answer> {
        self.receiver.counters.posts.fetch_add(1, Relaxed);
        let shared = self.shared.clone();
        let send = http::send(&shared.client, out, self.receiver.config.timeout.0);
        tokio::pin!(send);
        let answer = tokio::select! {
            answer = &mut send => answer,
            _ = self.stop.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, &mut send).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::info!(
                        "webhook {}: stopping with a delivery unanswered; it is sent again (same id) on the next start",
                        self.name()
                    );
                    return None;
                }
            },
        };
        let at = now_ms();
        self.limiter().record(at);
        let forget_before = at - self.limiter().window_ms();
        if let Err(e) = self.shared.queue.record_post(self.name(), at, forget_before).await {
            tracing::debug!("webhook {}: cannot record a post for the rate limit: {e}", self.name());
        }
        Some(answer)
    }

    /// `count` notifications left the queue.
    fn finished(&self, count: u64, delivered: bool) {
        let c = &self.receiver.counters;
        if delivered {
            c.delivered.fetch_add(count, Relaxed);
        } else {
            c.failed.fetch_add(count, Relaxed);
        }
        let _ = c
            .pending
            .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(count)));
    }

    async fn queue_trouble(&mut self, e: String) -> Step {
        if let Some(held) = self.warnings.ready() {
            tracing::error!(
                "webhook {}: {e}; notifications wait until the queue works again{}",
                self.name(),
                RateLimited::note(held)
            );
        }
        self.sleep(QUEUE_TROUBLE_PAUSE).await
    }

    async fn sleep(&mut self, d: Duration) -> Step {
        tokio::select! {
            _ = tokio::time::sleep(d) => Step::Continue,
            _ = self.stop.cancelled() => Step::Stop,
        }
    }
}

/// Delay before retry `attempts` (1 = the first retry): `backoff` doubled per failure, at most
/// `max_backoff`, drawn from its upper half so that receivers coming back are not hit in step.
pub fn backoff(cfg: &super::WebhookConfig, attempts: u32) -> Duration {
    Backoff {
        first: cfg.backoff.0,
        max: cfg.max_backoff.0,
    }
    .delay(attempts.saturating_sub(1))
}

/// The id a delivery carries on every attempt (`webhook-id`): its notification's id when alone
/// (and made of `[A-Za-z0-9_-]`, which the Standard Webhooks signature needs: no `.`), else a
/// digest of its members' ids.
fn delivery_id(rows: &[Row]) -> String {
    if let [one] = rows {
        if let Ok(n) = &one.notification {
            let safe = !n.id.is_empty()
                && n.id.len() <= 128
                && n.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if safe {
                return n.id.clone();
            }
        }
    }
    let mut h = Sha256::new();
    for r in rows {
        match &r.notification {
            Ok(n) => h.update(n.id.as_bytes()),
            Err(_) => h.update(r.seq.to_le_bytes()),
        }
        h.update([0u8]);
    }
    let digest = h.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("dlv_{hex}")
}

fn ids_of(items: &[Notification]) -> String {
    let mut ids: Vec<&str> = items.iter().take(5).map(|n| n.id.as_str()).collect();
    if items.len() > 5 {
        ids.push("…");
    }
    ids.join(", ")
}
