//! The alert lifecycle: a condition that holds for `for` evaluations fires; while it lasts its
//! current value is noted at every evaluation, it is sent again every `repeat_interval`, and if its
//! severity rises (a budget alert passing its next step) it escalates — the same occurrence, sent
//! as an update, not a new alert; when it is clearly gone (past the hysteresis, for `for`
//! evaluations) it resolves, and that is sent once.
//!
//! Every step is claimed in the store first ([`AlertStore`]): the collector whose conditional write
//! succeeds sends the notification, the others adopt the state. So several collectors on one
//! MongoDB send a shared alert (the budget) once, and a restart neither fires an alert a second time
//! nor forgets to resolve it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::rules::Condition;
use super::vocabulary::Severity;
use super::vocabulary::{AlertState, Language};
use crate::event::Timestamp;
use crate::store::alerts::{AlertRecord, AlertStore, Claim, Fired, Measured};
use crate::telemetry::RateLimited;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    Firing,
    /// The n-th repeat while it lasts.
    Repeat(u32),
    /// Its severity rose from this one (to the record's): the same occurrence, worse.
    Escalated(Severity),
    Resolved,
}

/// One notification-worthy step of an alert.
#[derive(Debug, Clone)]
pub struct Transition {
    pub kind: TransitionKind,
    pub record: AlertRecord,
}

impl Transition {
    /// Unique per alert occurrence and step: receivers drop repeats of it.
    pub fn id(&self) -> String {
        let step = match self.kind {
            TransitionKind::Firing => "firing".to_string(),
            TransitionKind::Repeat(n) => format!("repeat-{n}"),
            TransitionKind::Escalated(_) => format!("escalated-{}", self.record.severity.name()),
            TransitionKind::Resolved => "resolved".to_string(),
        };
        format!("{}@{}:{step}", self.record.key, self.record.started_at.as_millis())
    }
}

pub type Delivering<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where claimed notifications go: the webhook queues, and the daemon's own log.
pub trait AlertSink: Send + Sync + 'static {
    /// Returns once the notification is durable in the delivery queue.
    fn deliver(&self, t: Transition) -> Delivering<'_>;
}

/// Logs every alert, as the original `send_alert` did ("告警: …" on `lngpt.alert`), with its
/// severity's one word.
pub struct LogSink(pub Language);

impl AlertSink for LogSink {
    fn deliver(&self, t: Transition) -> Delivering<'_> {
        Box::pin(async move {
            let r = &t.record;
            let (severity, word) = (r.severity.name(), r.severity.word(self.0));
            match t.kind {
                TransitionKind::Resolved => tracing::info!(
                    alert = %r.key, severity, "alert resolved: [{word}] {}", r.title
                ),
                TransitionKind::Escalated(from) => tracing::warn!(
                    alert = %r.key, severity, "告警 alert escalated from {}: [{word}] {} — {}", from.word(self.0), r.title, r.message
                ),
                _ => tracing::warn!(
                    alert = %r.key, severity, "告警 alert: [{word}] {} — {}", r.title, r.message
                ),
            }
            Ok(())
        })
    }
}

/// Sends to several sinks; each must take it.
pub struct Fanout(pub Vec<Arc<dyn AlertSink>>);

impl AlertSink for Fanout {
    fn deliver(&self, t: Transition) -> Delivering<'_> {
        Box::pin(async move {
            for sink in &self.0 {
                sink.deliver(t.clone()).await?;
            }
            Ok(())
        })
    }
}

/// The webhooks: a transition becomes a notification in every matching receiver's durable queue.
impl AlertSink for crate::notify::Notifier {
    fn deliver(&self, t: Transition) -> Delivering<'_> {
        Box::pin(async move {
            let id = t.id();
            let escalated_from = match t.kind {
                TransitionKind::Escalated(from) => Some(from),
                _ => None,
            };
            let r = t.record;
            let current = r.current_value();
            self.enqueue(crate::notify::Notification {
                id,
                alert_key: r.key,
                rule: r.rule,
                severity: r.severity,
                escalated_from,
                state: r.state,
                title: r.title,
                message: r.message,
                value: r.value,
                current,
                unit: r.unit,
                threshold: r.threshold,
                labels: r.labels,
                starts_at: r.started_at,
                ends_at: r.ended_at,
            })
            .await
        })
    }
}

#[derive(Default)]
struct Tracked {
    /// Consecutive evaluations over the threshold.
    over: u32,
    /// Consecutive evaluations clearly under it.
    clear: u32,
    episode: Option<Episode>,
}

#[derive(Clone)]
struct Episode {
    record: AlertRecord,
    last_sent: Timestamp,
    /// False for an alert that fired while the store could not record it: it was sent anyway
    /// (silence about an outage is worse than a rare duplicate), and is recorded once the store
    /// answers.
    recorded: bool,
}

pub struct Lifecycle<S> {
    store: S,
    sink: Arc<dyn AlertSink>,
    tracked: HashMap<String, Tracked>,
    repeat_interval: Duration,
    /// This installation, recorded with each claim.
    me: String,
    store_errors: RateLimited,
    /// Alerts that fired and resolved while the store could not record them, oldest first: written
    /// to its history once it answers (at most `UNRECORDED_HISTORY`; the oldest go first).
    unrecorded_history: VecDeque<AlertRecord>,
}

/// How many occurrences an outage may leave to record afterwards.
const UNRECORDED_HISTORY: usize = 1000;

impl<S: AlertStore> Lifecycle<S> {
    pub fn new(store: S, sink: Arc<dyn AlertSink>, repeat_interval: Duration, me: String) -> Lifecycle<S> {
        Lifecycle {
            store,
            sink,
            tracked: HashMap::new(),
            repeat_interval,
            me,
            store_errors: RateLimited::new(Duration::from_secs(60)),
            unrecorded_history: VecDeque::new(),
        }
    }

    pub fn set_repeat_interval(&mut self, d: Duration) {
        self.repeat_interval = d;
    }

    /// Takes up the alerts that fire in the store: no second "firing" for them, and a "resolved"
    /// still follows. A claim of ours that a crash kept from reaching the queue is queued now.
    pub async fn load(&mut self) -> Result<usize, crate::store::StoreError> {
        let firing = self.store.firing().await?;
        let n = firing.len();
        for record in firing {
            if record.claimed_by == self.me && !record.queued {
                let kind = match record.repeats {
                    0 => TransitionKind::Firing,
                    n => TransitionKind::Repeat(n),
                };
                self.send(Transition {
                    kind,
                    record: record.clone(),
                })
                .await;
            }
            let last_sent = record.sent_at.unwrap_or(record.started_at);
            self.tracked.insert(
                record.key.clone(),
                Tracked {
                    over: 0,
                    clear: 0,
                    episode: Some(Episode {
                        record,
                        last_sent,
                        recorded: true,
                    }),
                },
            );
        }
        Ok(n)
    }

    /// The alerts firing now, as this collector knows them.
    pub fn firing(&self) -> Vec<AlertRecord> {
        let mut out: Vec<AlertRecord> = self
            .tracked
            .values()
            .filter_map(|t| t.episode.as_ref().map(|e| e.record.clone()))
            .collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.started_at));
        out
    }

    /// One evaluation: every condition measured now. With `complete`, keys not among them count
    /// as clear (their rule saw nothing to measure: a quiet window); without it (the monitor does
    /// not have a whole window yet, after a restart) they are left as they are.
    pub async fn step(&mut self, conditions: Vec<Condition>, complete: bool, now: Timestamp) {
        self.record_unrecorded().await;
        let measured: std::collections::HashSet<String> = conditions.iter().map(|c| c.key.clone()).collect();
        let gone: Vec<String> = self
            .tracked
            .keys()
            .filter(|k| complete && !measured.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            let resolve = match self.tracked.get_mut(&key) {
                Some(t) => {
                    t.over = 0;
                    t.clear += 1;
                    t.episode.clone()
                }
                None => None,
            };
            match resolve {
                Some(ep) => self.resolve(&key, ep, None, now).await,
                None => {
                    self.tracked.remove(&key);
                }
            }
        }
        for c in conditions {
            let t = self.tracked.entry(c.key.clone()).or_default();
            if c.over {
                t.over += 1;
                t.clear = 0;
            } else {
                t.over = 0;
                t.clear = if c.clear { t.clear + 1 } else { 0 };
            }
            let (over, clear, episode) = (t.over, t.clear, t.episode.clone());
            match episode {
                None if over >= c.for_evaluations => self.fire(&c, now).await,
                None => {
                    if over == 0 {
                        self.tracked.remove(&c.key);
                    }
                }
                Some(ep) if clear >= c.for_evaluations => self.resolve(&c.key, ep, Some(&c), now).await,
                Some(ep) if c.over && c.severity > ep.record.severity => self.escalate(&c, ep, now).await,
                Some(ep)
                    if !c.clear
                        && now.as_millis() - ep.last_sent.as_millis() >= self.repeat_interval.as_millis() as i64 =>
                {
                    self.repeat(&c, ep, now).await
                }
                Some(ep) => self.refresh(&c, ep, now).await,
            }
        }
    }

    async fn fire(&mut self, c: &Condition, now: Timestamp) {
        let record = AlertRecord {
            key: c.key.clone(),
            rule: c.rule.to_string(),
            severity: c.severity,
            state: AlertState::Firing,
            title: c.title.clone(),
            message: c.message.clone(),
            value: c.value,
            current: Some(c.value),
            unit: c.unit,
            threshold: c.threshold,
            labels: c.labels.clone(),
            started_at: now,
            ended_at: None,
            updated_at: Some(now),
            sent_at: Some(now),
            repeats: 0,
            claimed_by: self.me.clone(),
            queued: false,
        };
        match self.store.fire(record.clone()).await {
            Ok(Fired::Claimed) => {
                self.remember(&c.key, record.clone(), now, true);
                self.send(Transition {
                    kind: TransitionKind::Firing,
                    record,
                })
                .await;
            }
            Ok(Fired::AlreadyFiring(existing)) => {
                let last_sent = existing.sent_at.unwrap_or(existing.started_at);
                self.remember(&c.key, *existing, last_sent, true);
            }
            Err(e) => {
                // The store is down or hangs (perhaps the very thing this alert is about): send
                // it now and record it when the store answers. Sharing collectors may then each
                // send it once; that is the price of not staying silent.
                tracing::warn!(
                    "cannot record alert {} in the store ({e}); sending it anyway, recorded once the store answers",
                    c.key
                );
                self.remember(&c.key, record.clone(), now, false);
                self.send(Transition {
                    kind: TransitionKind::Firing,
                    record,
                })
                .await;
            }
        }
    }

    /// Records the alerts sent while the store could not take them: first the occurrences that
    /// also ended meanwhile, then those still firing. One that another collector recorded
    /// meanwhile is adopted.
    async fn record_unrecorded(&mut self) {
        if self.record_unrecorded_history().await.is_err() {
            return;
        }
        let unrecorded: Vec<AlertRecord> = self
            .tracked
            .values()
            .filter_map(|t| t.episode.as_ref().filter(|e| !e.recorded).map(|e| e.record.clone()))
            .collect();
        for record in unrecorded {
            let key = record.key.clone();
            match self.store.fire(record.clone()).await {
                Ok(Fired::Claimed) => {
                    if let Some(ep) = self.tracked.get_mut(&key).and_then(|t| t.episode.as_mut()) {
                        ep.recorded = true;
                    }
                    // Its notification is in the queue already.
                    if let Err(e) = self.store.mark_queued(key.clone(), record.started_at).await {
                        tracing::debug!("cannot mark alert {key} as queued: {e}");
                    }
                    tracing::info!("alert {key}, sent while the store was unavailable, is recorded now");
                }
                Ok(Fired::AlreadyFiring(existing)) => {
                    let last_sent = existing.sent_at.unwrap_or(existing.started_at);
                    self.remember(&key, *existing, last_sent, true);
                }
                // Still unavailable: at the next evaluation.
                Err(_) => return,
            }
        }
    }

    /// Writes the occurrences that fired and resolved during an outage as they happened: started,
    /// (marked queued, so that a crash before the next step sends nothing again), then ended. Err
    /// while the store is still unavailable; what is left waits for the next evaluation.
    async fn record_unrecorded_history(&mut self) -> Result<(), crate::store::StoreError> {
        while let Some(ended) = self.unrecorded_history.front() {
            let (key, started_at) = (ended.key.clone(), ended.started_at);
            let mut started = ended.clone();
            started.state = AlertState::Firing;
            started.ended_at = None;
            let ours = match self.store.fire(started).await? {
                Fired::Claimed => {
                    self.store.mark_queued(key.clone(), started_at).await?;
                    true
                }
                // Started by an earlier try whose end did not go through.
                Fired::AlreadyFiring(r) if r.started_at == started_at && r.claimed_by == self.me => true,
                // Another occurrence fires there now (another collector's): it keeps the place.
                Fired::AlreadyFiring(_) => false,
            };
            if ours {
                let (value, ended_at) = (ended.current_value(), ended.ended_at.unwrap_or(started_at));
                let claim = Claim {
                    key: key.clone(),
                    started_at,
                    now: ended_at,
                    by: self.me.clone(),
                };
                self.store.resolve(claim, value).await?;
                tracing::info!(
                    "alert {key}, which fired and resolved while the store was unavailable, is recorded now"
                );
            } else {
                tracing::info!("alert {key} fired and resolved while the store was unavailable; not recorded, as it fires again elsewhere");
            }
            self.unrecorded_history.pop_front();
        }
        Ok(())
    }

    fn claim(&self, r: &AlertRecord, now: Timestamp) -> Claim {
        Claim {
            key: r.key.clone(),
            started_at: r.started_at,
            now,
            by: self.me.clone(),
        }
    }

    async fn repeat(&mut self, c: &Condition, ep: Episode, now: Timestamp) {
        // Not recorded (the store is still unavailable): nothing to claim against; this
        // collector sent the firing, so it sends the repeat.
        let claimed = if ep.recorded {
            let claim = self.claim(&ep.record, now);
            self.store
                .repeat(claim, ep.record.repeats, measured(c, ep.record.severity))
                .await
        } else {
            Ok(true)
        };
        match claimed {
            Ok(won) => {
                let mut record = ep.record.clone();
                record.repeats += 1;
                note(&mut record, c, now);
                record.sent_at = Some(now);
                self.remember(&c.key, record.clone(), now, ep.recorded);
                if won {
                    let n = record.repeats;
                    self.send(Transition {
                        kind: TransitionKind::Repeat(n),
                        record,
                    })
                    .await;
                }
            }
            Err(e) => self.store_failed("repeat", &c.key, &e),
        }
    }

    /// The condition is worse than when the occurrence fired (a budget alert past its next
    /// step): raise its severity and send that, as the same alert.
    async fn escalate(&mut self, c: &Condition, ep: Episode, now: Timestamp) {
        let from = ep.record.severity;
        let claimed = if ep.recorded {
            let claim = self.claim(&ep.record, now);
            self.store.escalate(claim, from, measured(c, c.severity)).await
        } else {
            Ok(true)
        };
        match claimed {
            Ok(won) => {
                let mut record = ep.record.clone();
                record.severity = c.severity;
                note(&mut record, c, now);
                record.sent_at = Some(now);
                self.remember(&c.key, record.clone(), now, ep.recorded);
                if won {
                    self.send(Transition {
                        kind: TransitionKind::Escalated(from),
                        record,
                    })
                    .await;
                }
            }
            Err(e) => self.store_failed("escalate", &c.key, &e),
        }
    }

    /// Notes the latest value (and words) of a firing alert, in memory and in the store, so that
    /// the API, the page and the next repeat show what is true now.
    async fn refresh(&mut self, c: &Condition, ep: Episode, now: Timestamp) {
        let changed = ep.record.current != Some(c.value) || ep.record.message != c.message;
        let mut record = ep.record.clone();
        note(&mut record, c, now);
        self.remember(&c.key, record, ep.last_sent, ep.recorded);
        if changed && ep.recorded {
            let m = measured(c, ep.record.severity);
            if let Err(e) = self.store.refresh(c.key.clone(), ep.record.started_at, now, m).await {
                self.store_failed("note the value of", &c.key, &e);
            }
        }
    }

    async fn resolve(&mut self, key: &str, ep: Episode, c: Option<&Condition>, now: Timestamp) {
        let r = &ep.record;
        let value = c.map_or(r.current_value(), |c| c.value);
        // An alert the store never recorded resolves here alone, and goes to its history later.
        let resolved = if ep.recorded {
            self.store.resolve(self.claim(r, now), value).await
        } else {
            Ok(true)
        };
        match resolved {
            Ok(won) => {
                self.tracked.remove(key);
                if won {
                    let mut record = ep.record;
                    record.state = AlertState::Resolved;
                    record.current = Some(value);
                    record.updated_at = Some(now);
                    record.ended_at = Some(now);
                    record.sent_at = Some(now);
                    if !ep.recorded {
                        if self.unrecorded_history.len() == UNRECORDED_HISTORY {
                            self.unrecorded_history.pop_front();
                        }
                        self.unrecorded_history.push_back(record.clone());
                    }
                    self.send(Transition {
                        kind: TransitionKind::Resolved,
                        record,
                    })
                    .await;
                }
            }
            Err(e) => self.store_failed("resolve", key, &e),
        }
    }

    fn remember(&mut self, key: &str, record: AlertRecord, last_sent: Timestamp, recorded: bool) {
        let t = self.tracked.entry(key.to_string()).or_default();
        t.episode = Some(Episode {
            record,
            last_sent,
            recorded,
        });
    }

    async fn send(&mut self, t: Transition) {
        let (key, started_at) = (t.record.key.clone(), t.record.started_at);
        match self.sink.deliver(t).await {
            Ok(()) => {
                if let Err(e) = self.store.mark_queued(key.clone(), started_at).await {
                    // Queued twice at the next start at worst; receivers drop the repeat by its id.
                    tracing::debug!("cannot mark alert {key} as queued: {e}");
                }
            }
            Err(e) => {
                tracing::error!("cannot queue the notification for alert {key}: {e}; it is queued at the next start")
            }
        }
    }

    fn store_failed(&mut self, doing: &str, key: &str, e: &crate::store::StoreError) {
        if let Some(suppressed) = self.store_errors.ready() {
            tracing::warn!(
                "cannot {doing} alert {key} in the store, will try at the next evaluation: {e}{}",
                RateLimited::note(suppressed)
            );
        }
    }
}

/// What `c` measured, at `severity` (the occurrence's, unless it escalates).
fn measured(c: &Condition, severity: Severity) -> Measured {
    Measured {
        value: c.value,
        severity,
        title: c.title.clone(),
        message: c.message.clone(),
    }
}

/// Notes `c`'s latest value and words in the record.
fn note(record: &mut AlertRecord, c: &Condition, now: Timestamp) {
    record.current = Some(c.value);
    record.title = c.title.clone();
    record.message = c.message.clone();
    record.updated_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::sqlite::Synchronous;
    use crate::store::StoreError;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// The embedded store, switched off at will.
    #[derive(Clone)]
    struct Switchable {
        store: EmbeddedStore,
        down: Arc<AtomicBool>,
    }

    impl Switchable {
        fn check(&self) -> Result<(), StoreError> {
            match self.down.load(Ordering::SeqCst) {
                true => Err(StoreError::transient("down")),
                false => Ok(()),
            }
        }
    }

    impl AlertStore for Switchable {
        async fn fire(&self, record: AlertRecord) -> Result<Fired, StoreError> {
            self.check()?;
            self.store.fire(record).await
        }
        async fn repeat(&self, claim: Claim, repeats_seen: u32, now: Measured) -> Result<bool, StoreError> {
            self.check()?;
            self.store.repeat(claim, repeats_seen, now).await
        }
        async fn escalate(&self, claim: Claim, from: Severity, to: Measured) -> Result<bool, StoreError> {
            self.check()?;
            self.store.escalate(claim, from, to).await
        }
        async fn refresh(
            &self,
            key: String,
            started_at: Timestamp,
            now: Timestamp,
            measured: Measured,
        ) -> Result<(), StoreError> {
            self.check()?;
            self.store.refresh(key, started_at, now, measured).await
        }
        async fn resolve(&self, claim: Claim, value: f64) -> Result<bool, StoreError> {
            self.check()?;
            self.store.resolve(claim, value).await
        }
        async fn mark_queued(&self, key: String, started_at: Timestamp) -> Result<(), StoreError> {
            self.check()?;
            self.store.mark_queued(key, started_at).await
        }
        async fn firing(&self) -> Result<Vec<AlertRecord>, StoreError> {
            self.check()?;
            self.store.firing().await
        }
    }

    #[derive(Default)]
    struct Sent(Mutex<Vec<TransitionKind>>);

    impl AlertSink for Sent {
        fn deliver(&self, t: Transition) -> Delivering<'_> {
            self.0.lock().unwrap().push(t.kind);
            Box::pin(async { Ok(()) })
        }
    }

    fn condition(over: bool) -> Condition {
        Condition {
            key: "store_unreachable{host=h}".into(),
            rule: "store_unreachable",
            labels: Default::default(),
            severity: Severity::High,
            value: if over { 10.0 } else { 0.0 },
            unit: crate::monitor::vocabulary::Unit::Seconds,
            threshold: 5.0,
            over,
            clear: !over,
            for_evaluations: 1,
            title: "t".into(),
            message: "m".into(),
        }
    }

    /// A store that starts down, and a lifecycle over it that repeats hourly.
    fn down_store() -> (tempfile::TempDir, Switchable, Arc<Sent>, Lifecycle<Switchable>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Switchable {
            store: EmbeddedStore::open(&dir.path().join("c.db"), Synchronous::Normal).unwrap(),
            down: Arc::new(AtomicBool::new(true)),
        };
        let sent = Arc::new(Sent::default());
        let lifecycle = Lifecycle::new(store.clone(), sent.clone(), Duration::from_secs(3600), "me".into());
        (dir, store, sent, lifecycle)
    }

    /// `s` seconds into the test.
    fn t(s: i64) -> Timestamp {
        Timestamp(1_795_680_000_000 + s * 1000)
    }

    #[tokio::test]
    async fn an_alert_the_store_cannot_take_is_sent_anyway_and_recorded_once_it_answers() {
        let (_dir, store, sent, mut lifecycle) = down_store();
        let hour = Duration::from_secs(3600);

        // Down: fired and repeated here alone.
        lifecycle.step(vec![condition(true)], true, t(0)).await;
        lifecycle.set_repeat_interval(Duration::ZERO);
        lifecycle.step(vec![condition(true)], true, t(1)).await;
        assert_eq!(
            *sent.0.lock().unwrap(),
            vec![TransitionKind::Firing, TransitionKind::Repeat(1)]
        );

        // Back: recorded as it stands (queued, nothing sent again), then the store's again.
        store.down.store(false, Ordering::SeqCst);
        lifecycle.set_repeat_interval(hour);
        lifecycle.step(vec![condition(true)], true, t(2)).await;
        let firing = store.store.firing().await.unwrap();
        assert_eq!(firing.len(), 1);
        assert_eq!(
            (firing[0].repeats, firing[0].queued, firing[0].started_at),
            (1, true, t(0))
        );
        assert_eq!(sent.0.lock().unwrap().len(), 2);
        lifecycle.step(vec![condition(false)], true, t(3)).await;
        assert!(store.store.firing().await.unwrap().is_empty(), "resolved in the store");
        assert_eq!(sent.0.lock().unwrap().last(), Some(&TransitionKind::Resolved));
        assert_eq!(sent.0.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn an_alert_that_fired_and_resolved_during_an_outage_goes_to_the_history_once_the_store_answers() {
        use crate::event::Collection;
        use crate::store::query::{FindQuery, Query};
        let (_dir, store, sent, mut lifecycle) = down_store();

        // Down: fires, resolves, and fires again.
        lifecycle.step(vec![condition(true)], true, t(0)).await;
        lifecycle.step(vec![condition(false)], true, t(1)).await;
        lifecycle.step(vec![condition(true)], true, t(2)).await;
        let kinds = vec![TransitionKind::Firing, TransitionKind::Resolved, TransitionKind::Firing];
        assert_eq!(*sent.0.lock().unwrap(), kinds);

        // Back: the ended occurrence is in the history, the new one fires; nothing is sent again.
        store.down.store(false, Ordering::SeqCst);
        lifecycle.step(vec![condition(true)], true, t(3)).await;
        let mut q = FindQuery::new(Collection::Alerts);
        q.limit = 10;
        let docs = store.store.find(q).await.unwrap().docs;
        let mut occurrences: Vec<(String, Option<String>)> = docs
            .iter()
            .map(|d| {
                (
                    d["state"].as_str().unwrap().to_string(),
                    d["ended_at"].as_str().map(String::from),
                )
            })
            .collect();
        occurrences.sort();
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(occurrences[0].0, "firing");
        assert_eq!(occurrences[1].0, "resolved");
        assert!(occurrences[1].1.is_some(), "{docs:?}");
        let firing = store.store.firing().await.unwrap();
        assert_eq!((firing.len(), firing[0].started_at), (1, t(2)));
        assert_eq!(*sent.0.lock().unwrap(), kinds);
    }
}
