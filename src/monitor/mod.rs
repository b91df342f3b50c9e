//! The monitor: the original RealTimeMonitor, cost limits and AlertSystem, as a task of the daemon.
//!
//! It sees events once they are stored (an [`Observer`] on the pipeline's tap), never slowing
//! ingest: the observer only adds them to in-memory windows ([`windows`]) and to the budget's
//! running totals ([`budget`]). Every `evaluate_every` the monitor task writes finished windows to
//! `api_metrics` (through the pipeline, like any event), turns the figures into conditions
//! ([`rules`]) and runs them through the alert lifecycle ([`alerts`]), which claims each step in
//! `api_alerts` before it is sent. Beside that, every `budget.refresh`, it reads the budget's totals
//! from the store; a slow store delays neither.
//!
//! A restart resets nothing: recent windows are rebuilt from the store, budget totals always come
//! from it, and firing alerts are taken up again.

pub mod alerts;
pub mod budget;
pub mod liveness;
mod messages;
pub mod rollup;
pub mod rules;
pub mod silences;
pub mod sketch;
pub mod vocabulary;
pub mod windows;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::{Body, Collection, Event, EventId, MinuteMetrics, Source, Timestamp};
use crate::pipeline::tap::Observer;
use crate::pipeline::{Chunk, PipelineSender};
use crate::shutdown::Shutdown;
use crate::store::alerts::{AlertRecord, AlertStore};
use crate::store::heartbeats::{Beat, Heartbeats};
use crate::store::query::{budget_buckets, Query, StoreHealth, TimeRange, REQUEST_BUCKET_MS};
use crate::units::HumanDuration;
use alerts::{AlertSink, Lifecycle};
use budget::{BudgetConfig, BudgetStatus, BudgetTracker, BudgetWindow, Period};
use liveness::{CollectorView, Liveness};
use messages::Text;
use rules::{Condition, MonitorConfig, RuleConfig};
use vocabulary::Severity;
use windows::Windows;

/// The monitor's state, shared by the observer (writer's task), the evaluation task and the API.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    host: String,
    /// One budget reading at a time: the monitor's refresh and `/api/budget` both read, and two
    /// readings planned alike would each add the same closed buckets to the ledger.
    budget_reading: tokio::sync::Mutex<()>,
}

struct State {
    cfg: MonitorConfig,
    windows: Windows,
    budget: BudgetTracker,
    /// When (wall clock) an event was last stored.
    last_event_ms: i64,
    started_ms: i64,
    /// Whether the windows were refilled from the store at start (widths of whole minutes): if not,
    /// the first window is only part of what happened, and no alert may resolve on it.
    rebuilt: bool,
    /// Since when the store has been unreachable.
    unreachable_since: Option<i64>,
    outbox_dropped_seen: u64,
    firing: Vec<AlertRecord>,
    /// The collectors sharing the store, from their heartbeats.
    liveness: Liveness,
    /// Window documents sent to the store and not seen stored yet: the statistics find them here
    /// until the store has them.
    in_flight: std::collections::HashMap<EventId, (i64, MinuteMetrics)>,
}

impl Observer for Monitor {
    fn stored(&self, collection: Collection, events: &[Event]) {
        let mut s = self.lock();
        if collection == Collection::Metrics {
            for e in events {
                s.in_flight.remove(&e.id);
            }
            return;
        }
        let budget = s.budget.config().clone();
        s.windows.add(events, |cost, currency| budget.to_rmb(cost, currency));
        s.budget.saw(events);
        s.last_event_ms = Timestamp::now().as_millis();
    }
}

impl Monitor {
    pub fn new(cfg: MonitorConfig, budget: BudgetConfig, host: String) -> Monitor {
        let windows = windows_for(&cfg);
        Monitor {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    windows,
                    budget: BudgetTracker::new(budget),
                    cfg,
                    last_event_ms: Timestamp::now().as_millis(),
                    started_ms: Timestamp::now().as_millis(),
                    rebuilt: false,
                    unreachable_since: None,
                    outbox_dropped_seen: 0,
                    firing: Vec::new(),
                    liveness: Liveness::default(),
                    in_flight: std::collections::HashMap::new(),
                }),
                host,
                budget_reading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spend against the limits now, from memory: what `/api/budget` answers.
    pub fn budget_status(&self) -> BudgetStatus {
        self.lock().budget.status(Timestamp::now())
    }

    /// [`Monitor::budget_status`], narrowed to one model's own limits when `model` is given.
    pub fn budget_status_for(&self, model: Option<&str>) -> BudgetStatus {
        let s = self.lock();
        match model {
            Some(m) => s.budget.status_of_model(Timestamp::now(), m),
            None => s.budget.status(Timestamp::now()),
        }
    }

    /// `[budget]` as last (re)loaded, and its time zone.
    pub fn budget_config_and_zone(&self) -> (BudgetConfig, jiff::tz::TimeZone) {
        let s = self.lock();
        (s.budget.config().clone(), s.budget.time_zone().clone())
    }

    /// The window documents of `[from, to)` that only memory holds now (windows not written yet,
    /// late figures, documents sent and not yet stored), with their ids: the store's copies of
    /// those ids are not to be counted again.
    pub fn rollups(&self, from_ms: i64, to_ms: i64) -> Vec<rollup::Rollup> {
        let s = self.lock();
        let width = s.windows.width_ms();
        let inside = |start: i64| start + width > from_ms && start < to_ms;
        let mut out: Vec<rollup::Rollup> = s
            .in_flight
            .iter()
            .filter(|(_, (start, _))| inside(*start))
            .map(|(id, (start, m))| rollup::Rollup::from_metrics(*id, *start, m))
            .collect();
        for w in s.windows.iter().filter(|w| !w.written && inside(w.start_ms)) {
            out.extend(
                window_docs(w, width, false)
                    .into_iter()
                    .map(|(id, start, m)| rollup::Rollup::from_metrics(id, start, &m)),
            );
        }
        for late in s.windows.pending_late().filter(|w| inside(w.start_ms)) {
            out.extend(window_docs(late, width, true).into_iter().map(|(_, start, m)| {
                let mut r = rollup::Rollup::from_metrics(EventId::new(), start, &m);
                r.id = None;
                r
            }));
        }
        out
    }

    /// Whether the budget's totals have been read from the store since the start.
    pub fn budget_read(&self) -> bool {
        self.lock().budget.has_reading()
    }

    /// The windows held in memory, as `/api/stats/performance` shapes its answer: totals, per model,
    /// and a series per minute; `model` narrows it to one model's figures.
    pub fn recent_performance(&self, model: Option<&str>) -> serde_json::Value {
        use serde_json::json;
        let s = self.lock();
        let width = s.windows.width_ms();
        let figures = |c: &windows::Cell| {
            json!({
                "calls": c.requests, "error_calls": c.errors,
                "error_rate": c.error_rate(), "avg_response_time": c.avg_duration(),
                "p50_response_time": c.quantile(0.5), "p95_response_time": c.quantile(0.95),
                "p99_response_time": c.quantile(0.99), "avg_first_chunk_time": c.avg_first_chunk(),
            })
        };
        let pick = |w: &windows::Window| -> Option<windows::Cell> {
            match model {
                Some(m) => w.models.get(m).cloned(),
                None => Some(w.overall.clone()),
            }
        };
        let mut total = windows::Cell::default();
        let mut by_model: BTreeMap<String, windows::Cell> = BTreeMap::new();
        // Per minute, as the stored series is, whatever the window's width.
        let mut minutes: BTreeMap<i64, windows::Cell> = BTreeMap::new();
        for w in s.windows.iter() {
            let Some(cell) = pick(w) else { continue };
            total.merge(&cell);
            for (m, c) in &w.models {
                if model.is_none_or(|want| want == m) {
                    by_model.entry(m.clone()).or_default().merge(c);
                }
            }
            if cell.requests > 0 {
                let minute = w.start_ms - w.start_ms.rem_euclid(60_000);
                minutes.entry(minute).or_default().merge(&cell);
            }
        }
        let series: Vec<serde_json::Value> = minutes
            .iter()
            .map(|(minute, cell)| {
                let mut point = figures(cell);
                point["minute"] = json!(Timestamp(*minute).to_string());
                point
            })
            .collect();
        let mut body = figures(&total);
        body["by_model"] = json!(by_model
            .iter()
            .map(|(m, c)| {
                let mut v = figures(c);
                v["model"] = json!(m);
                v
            })
            .collect::<Vec<_>>());
        body["series"] = json!(series);
        body["window_ms"] = json!(width);
        body["from_memory"] = json!(true);
        body
    }

    /// The collectors sharing the store, this one first, as their heartbeats show them.
    pub fn collectors(&self) -> Vec<CollectorView> {
        let s = self.lock();
        s.liveness
            .collectors(s.cfg.rules.collector_silent.threshold, Timestamp::now())
    }

    /// Writes this collector's heartbeat and reads everyone's (see [`liveness`]).
    async fn heartbeat<S: Heartbeats>(&self, store: &S, beat: Beat) {
        let every = self.lock().cfg.heartbeat_every.0;
        // A beat or read that hangs must not outlast the next one.
        let beat_and_read = async {
            store.beat(beat).await?;
            store.heartbeats().await
        };
        let read = tokio::time::timeout(every.max(Duration::from_secs(1)), beat_and_read).await;
        let mut s = self.lock();
        match read {
            Ok(Ok(beats)) => s.liveness.observe(beats, Timestamp::now()),
            Ok(Err(_)) | Err(_) => s.liveness.unreadable(),
        }
    }

    /// The alerts firing now.
    pub fn firing(&self) -> Vec<AlertRecord> {
        self.lock().firing.clone()
    }

    /// The rules and budget in force (after any reload): what the page draws thresholds from.
    pub fn config(&self) -> (MonitorConfig, BudgetConfig) {
        let s = self.lock();
        (s.cfg.clone(), s.budget.config().clone())
    }

    /// SIGHUP: new rules and limits take effect at the next evaluation; the windows stay.
    pub fn reconfigure(&self, cfg: MonitorConfig, budget: BudgetConfig) {
        let mut s = self.lock();
        if cfg.window != s.cfg.window || cfg.keep != s.cfg.keep {
            tracing::warn!(
                "monitor.window and monitor.keep take effect after a restart; the other [monitor] keys are reloaded"
            );
        }
        let (window, keep) = (s.cfg.window, s.cfg.keep);
        s.cfg = MonitorConfig { window, keep, ..cfg };
        s.budget.reconfigure(budget);
    }

    /// Evaluates until shutdown: writes finished windows, refreshes the budget from the store,
    /// and runs the rules through the alert lifecycle.
    pub async fn run<S: Query + AlertStore + Heartbeats>(
        self,
        store: S,
        metrics: PipelineSender,
        sink: Arc<dyn AlertSink>,
        installation: String,
        mut shutdown: Shutdown,
    ) {
        let repeat = self.lock().cfg.repeat_interval.0;
        self.lock().liveness = Liveness::new(installation.clone());
        let beat = {
            let started_at = Timestamp::now();
            let every_ms = self.lock().cfg.heartbeat_every.0.as_millis() as u64;
            let (collector, host) = (installation.clone(), self.shared.host.clone());
            move |stopping: bool| Beat {
                collector: collector.clone(),
                host: host.clone(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at,
                at: Timestamp::now(),
                every_ms,
                stopping,
            }
        };
        let mut lifecycle = Lifecycle::new(store.clone(), sink, repeat, installation);
        // A store that hangs at start must not keep the daemon from stopping.
        let started = async {
            self.rebuild(&store).await;
            lifecycle.load().await
        };
        let loaded = tokio::select! {
            loaded = started => loaded,
            _ = shutdown.recv() => return,
        };
        match loaded {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} alerts were firing before the restart; their resolution will follow"),
            Err(e) => tracing::warn!("cannot read the firing alerts from the store: {e}"),
        }
        // Budget readings go on beside the evaluations, so that a store that is slow to answer
        // (or hangs, up to the reading's 30 s) delays neither the alerts nor the windows. The
        // first starts at once: the app may ask for the budget before its first call.
        let budget_readings = async {
            loop {
                self.read_budget(&store).await;
                let refresh = self.lock().budget.config().refresh.0;
                tokio::time::sleep(refresh).await;
            }
        };
        let evaluations = async {
            loop {
                let every = self.lock().cfg.evaluate_every.0;
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.recv() => return,
                }
                let now = Timestamp::now();
                let Evaluation { finished, conditions } = self.evaluate(&store.health(), now);
                let repeat = self.lock().cfg.repeat_interval.0;
                if !finished.is_empty() {
                    let reservation = metrics.memory().force(0);
                    let chunk = Chunk {
                        events: finished,
                        ack: None,
                        reservation,
                    };
                    if metrics.send(chunk).await.is_err() {
                        return;
                    }
                }
                lifecycle.set_repeat_interval(repeat);
                let complete = self.measures_completely(now);
                tokio::select! {
                    _ = lifecycle.step(conditions, complete, now) => {}
                    _ = shutdown.recv() => return,
                }
                self.lock().firing = lifecycle.firing();
            }
        };
        let heartbeats = async {
            loop {
                self.heartbeat(&store, beat(false)).await;
                let every = self.lock().cfg.heartbeat_every.0;
                tokio::time::sleep(every).await;
            }
        };
        // The evaluations end at shutdown (or when the pipeline is gone), and the readings with them.
        tokio::select! {
            _ = budget_readings => {}
            _ = heartbeats => {}
            _ = evaluations => {}
        }
        // A clean stop, said so that the others do not take it for silence (at most a second: a
        // store that does not answer must not hold the stop up; they will then alert, rightly).
        let _ = tokio::time::timeout(Duration::from_secs(1), store.beat(beat(true))).await;
    }

    /// One evaluation at `now`, from memory: the documents of windows whose grace has passed
    /// (marked written) and every rule's verdict.
    pub fn evaluate(&self, health: &StoreHealth, now: Timestamp) -> Evaluation {
        let mut s = self.lock();
        Evaluation {
            finished: finish_windows(&mut s, now),
            conditions: conditions(&mut s, &self.shared.host, health, now),
        }
    }

    /// Whether this evaluation's window holds everything that happened in it: not yet after a start
    /// whose windows could not be refilled from the store, until a window that began after the
    /// start has ended. Until then an alert that fired before the restart is neither resolved nor
    /// fired again for want of figures.
    fn measures_completely(&self, now: Timestamp) -> bool {
        let s = self.lock();
        let width = s.windows.width_ms();
        s.rebuilt || s.windows.start_of(now.as_millis()) - width >= s.started_ms
    }

    /// Reads the current windows' cost totals from the store (every `budget.refresh`): the closed
    /// 15-minute buckets once, what is still open every time (see `budget::Ledger`).
    pub async fn read_budget<S: Query>(&self, store: &S) {
        let _one_at_a_time = self.shared.budget_reading.lock().await;
        let now = Timestamp::now();
        let (plan, started) = {
            let mut s = self.lock();
            (s.budget.plan(now), s.budget.reading_starts())
        };
        let range = |(from, to): (i64, i64)| TimeRange::between(Timestamp(from), Timestamp(to));
        let read = async {
            // By arrival where a cost's own time was too far ahead, as `stored` counted it.
            let mut out = budget::PlanRead::default();
            if let Some(closed) = plan.closed {
                out.closed = budget_buckets(store, range(closed)).await?;
            }
            for (i, (from, aligned)) in plan.windows.iter().copied().enumerate() {
                let to = if from >= plan.settled { plan.now + 1 } else { aligned };
                if to > from {
                    out.partial[i] = budget_buckets(store, range((from, to))).await?;
                }
            }
            out.open = budget_buckets(store, range((plan.settled, plan.now + 1))).await?;
            Ok::<_, crate::store::StoreError>(out)
        };
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(read)) => {
                let mut s = self.lock();
                let reading = s.budget.reading_of(&plan, read, started);
                s.budget.read(reading, started, now);
            }
            Ok(Err(e)) => self.lock().budget.read_failed(e.to_string()),
            Err(_) => self
                .lock()
                .budget
                .read_failed("the store did not answer within 30 s".into()),
        }
    }

    /// Refills the recent windows from the store, so a restart resets nothing. Counts, errors and
    /// durations come back exactly; latency percentiles only for what is stored from now on.
    async fn rebuild<S: Query>(&self, store: &S) {
        let (width, keep) = {
            let s = self.lock();
            (s.windows.width_ms(), s.cfg.keep.as_millis_i64())
        };
        if width % REQUEST_BUCKET_MS != 0 {
            return; // the store sums by the minute; other widths start empty
        }
        let now = Timestamp::now().as_millis();
        let from = now - keep;
        let read = store.request_buckets(TimeRange::between(Timestamp(from), Timestamp(now)));
        let buckets = match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!("cannot rebuild the monitor's windows from the store: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!("cannot rebuild the monitor's windows: the store did not answer within 30 s");
                return;
            }
        };
        let mut s = self.lock();
        s.rebuilt = true;
        let grace = s.cfg.grace.as_millis_i64();
        for b in &buckets {
            let start = s.windows.start_of(b.start_ms);
            let Some(w) = s.windows.window_mut(start) else { continue };
            let cells = std::iter::once(&mut w.overall);
            for cell in cells {
                cell.add_summary(
                    b.calls,
                    b.errors,
                    b.response_time_sum,
                    (b.first_chunk_sum, b.first_chunk_count),
                );
            }
            if let Some(model) = &b.model {
                w.models.entry(model.clone()).or_default().add_summary(
                    b.calls,
                    b.errors,
                    b.response_time_sum,
                    (b.first_chunk_sum, b.first_chunk_count),
                );
            }
        }
        // Windows that ended before this start were written by the run before (and writing
        // them again would store nothing new: their ids are fixed).
        let width = s.windows.width_ms();
        for w in s.windows.finished_unwritten(now - width - grace + 1, 0) {
            w.written = true;
        }
        if !buckets.is_empty() {
            tracing::info!(
                "monitor: rebuilt {} minutes of performance from the store",
                buckets.len()
            );
        }
    }
}

fn windows_for(cfg: &MonitorConfig) -> Windows {
    let width = cfg.window.as_millis_i64().max(1);
    let keep = (cfg.keep.as_millis_i64() / width).max(1) as usize;
    Windows::new(width, keep)
}

/// What one evaluation gives.
pub struct Evaluation {
    /// `api_metrics` documents of the windows just finished.
    pub finished: Vec<Event>,
    pub conditions: Vec<Condition>,
}

/// The `api_metrics` documents of windows whose grace has passed, and of events that came late
/// for a window already written (documents of their own, with fresh ids, marked `late`).
fn finish_windows(s: &mut State, now: Timestamp) -> Vec<Event> {
    let now = now.as_millis();
    let (grace, width) = (s.cfg.grace.as_millis_i64(), s.windows.width_ms());
    let source = Source::from("monitor");
    let mut docs: Vec<(EventId, i64, MinuteMetrics)> = Vec::new();
    for w in s.windows.finished_unwritten(now, grace) {
        w.written = true;
        docs.extend(window_docs(w, width, false));
    }
    for late in s.windows.take_late() {
        docs.extend(window_docs(&late, width, true));
    }
    let mut out = Vec::with_capacity(docs.len());
    for (id, start_ms, metrics) in docs {
        s.in_flight.insert(id, (start_ms, metrics.clone()));
        out.push(Event {
            id,
            time: Timestamp(start_ms),
            source: source.clone(),
            body: Body::Metric(Box::new(metrics)),
            received: None,
            held_bytes: 0,
        });
    }
    out
}

/// A window's documents: one for all models (with the requests that named none), one per model.
fn window_docs(w: &windows::Window, width: i64, late: bool) -> Vec<(EventId, i64, MinuteMetrics)> {
    let mut out = Vec::new();
    let mut cells = vec![(None, &w.overall)];
    cells.extend(w.models.iter().map(|(m, c)| (Some(m.clone()), c)));
    for (model, cell) in cells {
        if cell.is_empty() && (model.is_some() || late) {
            continue;
        }
        let what = model.clone().unwrap_or_default();
        let id = if late {
            EventId::new()
        } else {
            EventId::for_window(w.start_ms, &what)
        };
        let mut metrics = cell.metrics(width, model.clone());
        metrics.late = late;
        if model.is_none() && w.unmodelled.requests > 0 {
            metrics.unmodelled = Some(Box::new(w.unmodelled.metrics(width, None)));
        }
        out.push((id, w.start_ms, metrics));
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every rule's verdict now.
fn conditions(s: &mut State, host: &str, health: &StoreHealth, now: Timestamp) -> Vec<Condition> {
    let cfg = s.cfg.clone();
    let rules = &cfg.rules;
    let window_words = HumanDuration(cfg.window.0).to_string();
    let text = || Text {
        language: cfg.language,
        window: &window_words,
    };
    let mut out = Vec::new();
    let on = |r: &RuleConfig| r.enabled;
    let host_label = labels(&[("host", host)]);
    // The original three, and p95, over the last finished window.
    if let Some(w) = s.windows.last_finished(now.as_millis()) {
        let c = &w.overall;
        let enough = |r: &RuleConfig| c.requests >= r.min_requests.max(1);
        if on(&rules.error_rate) {
            let r = &rules.error_rate;
            let t = text().error_rate(c.error_rate(), r.threshold, c.requests, None);
            out.push(Condition::measure(
                "error_rate",
                r,
                host_label.clone(),
                c.error_rate(),
                enough(r),
                t,
            ));
        }
        if on(&rules.avg_duration) {
            let r = &rules.avg_duration;
            let t = text().avg_duration(c.avg_duration(), r.threshold);
            out.push(Condition::measure(
                "avg_duration",
                r,
                host_label.clone(),
                c.avg_duration(),
                enough(r),
                t,
            ));
        }
        if on(&rules.request_count) {
            let r = &rules.request_count;
            let v = c.requests as f64;
            let t = text().request_count(v, r.threshold);
            out.push(Condition::measure("request_count", r, host_label.clone(), v, true, t));
        }
        if on(&rules.p95_duration) {
            let r = &rules.p95_duration;
            let p95 = c.quantile(0.95);
            let v = p95.unwrap_or(0.0);
            let t = text().p95_duration(v, r.threshold);
            out.push(Condition::measure(
                "p95_duration",
                r,
                host_label.clone(),
                v,
                enough(r) && p95.is_some(),
                t,
            ));
        }
        if on(&rules.model_error_rate) {
            let r = &rules.model_error_rate;
            for (model, m) in &w.models {
                if m.requests == 0 {
                    continue;
                }
                let t = text().error_rate(m.error_rate(), r.threshold, m.requests, Some(model));
                let enough = m.requests >= r.min_requests.max(1);
                out.push(Condition::measure(
                    "model_error_rate",
                    r,
                    labels(&[("host", host), ("model", model)]),
                    m.error_rate(),
                    enough,
                    t,
                ));
            }
        }
        if on(&rules.unpriced) {
            let r = &rules.unpriced;
            for (model, m) in &w.models {
                if m.unpriced == 0 && m.cost_calls == 0 {
                    continue;
                }
                let v = m.unpriced as f64;
                let t = text().unpriced(model, v);
                out.push(Condition::measure(
                    "unpriced",
                    r,
                    labels(&[("model", model)]),
                    v,
                    true,
                    t,
                ));
            }
        }
        if on(&rules.rejects) {
            let r = &rules.rejects;
            let v = w.rejects as f64;
            let t = text().rejects(v, r.threshold);
            out.push(Condition::measure("rejects", r, host_label.clone(), v, true, t));
        }
    }
    if on(&rules.no_events) {
        let r = &rules.no_events;
        let idle = (now.as_millis() - s.last_event_ms.max(s.started_ms)) as f64 / 1000.0;
        let t = text().no_events(host, idle, r.threshold);
        out.push(Condition::measure("no_events", r, host_label.clone(), idle, true, t));
    }
    if health.kind == "mongodb" {
        let r = &rules.store_unreachable;
        if !health.reachable {
            s.unreachable_since.get_or_insert(now.as_millis());
        } else {
            s.unreachable_since = None;
        }
        if on(r) {
            let down = s
                .unreachable_since
                .map_or(0.0, |since| (now.as_millis() - since) as f64 / 1000.0);
            let t = text().store_unreachable(down, r.threshold, health.outbox_events);
            out.push(Condition::measure(
                "store_unreachable",
                r,
                host_label.clone(),
                down,
                true,
                t,
            ));
            let failing = !health.failing_collections.is_empty();
            let t = text().store_failing(&health.failing_collections.join("; "));
            let mut c = Condition::measure(
                "store_failing",
                r,
                host_label.clone(),
                f64::from(u8::from(failing)),
                true,
                t,
            );
            c.over = failing;
            c.clear = !failing;
            c.threshold = 0.0;
            out.push(c);
        }
        let r = &rules.outbox_dropping;
        let dropped = health.outbox_dropped.saturating_sub(s.outbox_dropped_seen) as f64;
        s.outbox_dropped_seen = health.outbox_dropped;
        if on(r) {
            let t = text().outbox_dropping(dropped);
            out.push(Condition::measure(
                "outbox_dropping",
                r,
                host_label.clone(),
                dropped,
                true,
                t,
            ));
        }
    }
    if on(&rules.budget) {
        out.extend(budget_conditions(&s.budget, &rules.budget, &cfg, now));
    }
    if on(&rules.collector_silent) {
        out.extend(s.liveness.conditions(&rules.collector_silent, &text(), now));
    }
    out
}

/// One condition per limit and warning fraction (and per model with its own limits). Calendar
/// windows put the window's start in the key, so each warning fires once per hour or day.
fn budget_conditions(
    tracker: &BudgetTracker,
    rule: &RuleConfig,
    cfg: &MonitorConfig,
    now: Timestamp,
) -> Vec<Condition> {
    let status = tracker.status(now);
    let budget = tracker.config();
    let sliding = budget.window == BudgetWindow::Sliding;
    let rate = status.projection.rate_rmb_per_hour;
    let mut steps: Vec<f64> = budget.warn_at.clone();
    steps.sort_by(f64::total_cmp);
    let Some(&lowest) = steps.first() else {
        return Vec::new();
    };
    // The top step is the rule's severity; the one under it high; the rest a warning (never above
    // the rule's own).
    let severity_of = |i: usize| match steps.len() - 1 - i {
        0 => rule.severity,
        1 => Severity::High.min(rule.severity),
        _ => Severity::Warning.min(rule.severity),
    };
    let mut spends = vec![
        (None, Period::Hour, status.hour.clone(), Some(&status.projection.hour)),
        (None, Period::Day, status.day.clone(), Some(&status.projection.day)),
    ];
    for m in &status.models {
        spends.push((Some(m.model.clone()), Period::Hour, m.hour.clone(), None));
        spends.push((Some(m.model.clone()), Period::Day, m.day.clone(), None));
    }
    let mut out = Vec::new();
    for (model, period, spend, reach) in spends {
        if spend.limit_rmb <= 0.0 {
            continue;
        }
        let fraction = spend.spent_rmb / spend.limit_rmb;
        // The highest step passed (a limit is reached at equality, as the original had it).
        let passed = steps.iter().rposition(|&s| fraction >= s);
        let step = passed.map_or(lowest, |i| steps[i]);
        let severity = passed.map_or(severity_of(0), severity_of);
        let mut label_pairs = vec![("period", period.as_str())];
        let window_label;
        if !sliding {
            // A calendar window's alert is its own: the next hour or day starts afresh.
            window_label = budget::local_hh_mm(spend.window_start, tracker.time_zone());
            label_pairs.push(("window", window_label.as_str()));
        }
        if let Some(m) = &model {
            label_pairs.push(("model", m));
        }
        // Where the rate leads (for all models; a model's own limits get no projection).
        let reach = match (fraction >= 1.0, reach) {
            (true, _) => budget::Reach::verdict(budget::Verdict::Reached),
            (false, Some(r)) => r.clone(),
            (false, None) => budget::Reach::verdict(budget::Verdict::NoSpend),
        };
        let text = Text {
            language: cfg.language,
            window: "",
        }
        .budget(
            period,
            sliding,
            step,
            spend.spent_rmb,
            spend.limit_rmb,
            model.as_deref(),
            rate,
            &reach,
        );
        let cfg_now = RuleConfig {
            threshold: spend.limit_rmb * lowest,
            severity,
            ..rule.clone()
        };
        let mut c = Condition::measure("budget", &cfg_now, labels(&label_pairs), spend.spent_rmb, true, text);
        // Fires at the lowest step, at equality; the threshold shown is the limit itself.
        c.over = passed.is_some();
        c.threshold = spend.limit_rmb;
        out.push(c);
    }
    out
}
