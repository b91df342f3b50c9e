//! Spend against the hourly and daily limits in RMB, as the original `check_cost_limits()` had it:
//! dollars converted at `usd_to_rmb_rate`, a limit reached when the spend is at or over it.
//!
//! Totals come from the store, so that several collectors sharing one MongoDB see one spend: every
//! `refresh` the tracker asks the store for the exact totals of the current windows (with MongoDB,
//! what waits in the outbox counts too), and adds the cost events it has seen stored since. The
//! answer to "may the app spend?" is then read from memory.
//!
//! Windows are either sliding (the last hour, the last 24 hours: the original's) or the calendar
//! hour and day in `timezone` (Asia/Shanghai by default).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Body, Currency, Event, Timestamp};
use crate::problems::Problems;
use crate::store::query::{CostBucket, COST_BUCKET_MS};
use crate::units::HumanDuration;

/// `[budget]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// `API_HOURLY_LIMIT_RMB` (the app's name) overrides; 0 switches the hourly limit off.
    pub hourly_limit_rmb: f64,
    /// `API_DAILY_LIMIT_RMB` overrides; 0 switches the daily limit off.
    pub daily_limit_rmb: f64,
    /// `API_USD_TO_RMB_RATE` overrides.
    pub usd_to_rmb_rate: f64,
    pub window: BudgetWindow,
    /// An IANA time zone: where calendar hours and days begin, and how times are shown.
    pub timezone: String,
    /// Fractions of a limit at which a warning fires (once per window each).
    pub warn_at: Vec<f64>,
    /// How often totals are read again from the store.
    pub refresh: HumanDuration,
    /// The recent stretch whose rate projects when a limit will be reached.
    pub projection_window: HumanDuration,
    /// Optional limits per model: `[budget.models."gpt-4o"] daily_limit_rmb = 50`.
    pub models: BTreeMap<String, ModelLimits>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelLimits {
    pub hourly_limit_rmb: f64,
    pub daily_limit_rmb: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetWindow {
    /// The last hour and the last 24 hours.
    Sliding,
    /// This hour and this day in `timezone`.
    Calendar,
}

impl Default for BudgetConfig {
    /// The original app's limits.
    fn default() -> Self {
        BudgetConfig {
            hourly_limit_rmb: 100.0,
            daily_limit_rmb: 500.0,
            usd_to_rmb_rate: 7.0,
            window: BudgetWindow::Sliding,
            timezone: "Asia/Shanghai".into(),
            warn_at: vec![0.5, 0.8, 1.0],
            refresh: HumanDuration(Duration::from_secs(5)),
            projection_window: HumanDuration(Duration::from_secs(15 * 60)),
            models: BTreeMap::new(),
        }
    }
}

impl BudgetConfig {
    pub fn validate(&self, p: &mut Problems) {
        let limit_ok = |v: f64| v.is_finite() && v >= 0.0;
        if !limit_ok(self.hourly_limit_rmb) {
            p.add(
                "budget.hourly_limit_rmb",
                format!("is {}; expected an amount ≥ 0 (0: no limit)", self.hourly_limit_rmb),
            );
        }
        if !limit_ok(self.daily_limit_rmb) {
            p.add(
                "budget.daily_limit_rmb",
                format!("is {}; expected an amount ≥ 0 (0: no limit)", self.daily_limit_rmb),
            );
        }
        if !(self.usd_to_rmb_rate.is_finite() && self.usd_to_rmb_rate > 0.0 && self.usd_to_rmb_rate < 1000.0) {
            p.add(
                "budget.usd_to_rmb_rate",
                format!(
                    "is {}; expected how many RMB a dollar buys, such as 7.2",
                    self.usd_to_rmb_rate
                ),
            );
        }
        if let Err(e) = time_zone(&self.timezone) {
            p.add("budget.timezone", e);
        }
        if self.warn_at.is_empty() || self.warn_at.iter().any(|f| !(f.is_finite() && *f > 0.0 && *f <= 10.0)) {
            p.add(
                "budget.warn_at",
                format!(
                    "is {:?}; expected fractions of the limit above 0, such as [0.5, 0.8, 1.0]",
                    self.warn_at
                ),
            );
        }
        p.duration_in(
            "budget.refresh",
            self.refresh,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        p.duration_in(
            "budget.projection_window",
            self.projection_window,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        );
        for (model, m) in &self.models {
            if !limit_ok(m.hourly_limit_rmb) || !limit_ok(m.daily_limit_rmb) {
                p.add(
                    &format!("budget.models.{model}"),
                    "limits must be amounts ≥ 0 (0: no limit)",
                );
            }
        }
    }

    pub fn to_rmb(&self, amount: f64, currency: Currency) -> f64 {
        match currency {
            Currency::Usd => amount * self.usd_to_rmb_rate,
            Currency::Cny => amount,
        }
    }
}

/// An IANA zone by name (the system's database, else the one built in).
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|e| format!("is {name:?}, which is not a known time zone ({e}); expected an IANA name such as \"Asia/Shanghai\" or \"UTC\""))
}

/// Which of the two limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
        }
    }
}

/// Spend in one window against its limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spend {
    pub spent_rmb: f64,
    /// 0 when there is no limit.
    pub limit_rmb: f64,
    pub remaining_rmb: f64,
    /// spent / limit (0 without a limit).
    pub fraction: f64,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
}

impl Spend {
    fn new(spent: f64, limit: f64, window: (i64, i64)) -> Spend {
        Spend {
            spent_rmb: round_cents(spent),
            limit_rmb: limit,
            remaining_rmb: if limit > 0.0 {
                round_cents((limit - spent).max(0.0))
            } else {
                0.0
            },
            fraction: if limit > 0.0 { spent / limit } else { 0.0 },
            window_start: Timestamp(window.0),
            window_end: Timestamp(window.1),
        }
    }

    pub fn reached(&self) -> bool {
        self.limit_rmb > 0.0 && self.spent_rmb >= self.limit_rmb
    }
}

fn bucket_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(COST_BUCKET_MS)
}

fn bucket_ceil(ms: i64) -> i64 {
    bucket_floor(ms.saturating_add(COST_BUCKET_MS - 1))
}

fn round_cents(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpend {
    pub model: String,
    pub hour: Spend,
    pub day: Spend,
}

/// Where the hourly and daily limits are headed at the recent rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// RMB per hour over `projection_window`.
    pub rate_rmb_per_hour: f64,
    pub hour: Reach,
    pub day: Reach,
    /// `day.at`, kept for clients of earlier versions.
    pub daily_limit_at: Option<Timestamp>,
    pub daily_limit_at_local: Option<String>,
}

/// Whether and when one limit is reached if spending goes on at the recent rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reach {
    pub verdict: Verdict,
    /// When, for `Verdict::At`.
    pub at: Option<Timestamp>,
    /// `at` in the configured zone: "21:40", or "2026-12-08 03:10" on another day.
    pub at_local: Option<String>,
    /// Sliding windows: what the window settles at if the rate holds (rate × its length).
    pub steady_rmb: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No limit set.
    NoLimit,
    /// Already at or over it.
    Reached,
    /// Reached at `at`.
    At,
    /// Nothing spent recently.
    NoSpend,
    /// A calendar window ends first.
    NotBeforeWindowEnds,
    /// A sliding window settles under the limit at this rate: spend leaving it keeps pace.
    NeverAtThisRate,
}

impl Reach {
    pub fn verdict(verdict: Verdict) -> Reach {
        Reach {
            verdict,
            at: None,
            at_local: None,
            steady_rmb: None,
        }
    }
}

/// Everything `/api/budget` and the budget rules need, computed in memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub window: BudgetWindow,
    pub timezone: String,
    pub usd_to_rmb_rate: f64,
    pub hour: Spend,
    pub day: Spend,
    /// Whether a new API call is within the limits (the original raised once a limit was reached).
    pub allowed: bool,
    pub projection: Projection,
    pub models: Vec<ModelSpend>,
    /// When the store was last read; None before the first successful read.
    pub as_of: Option<Timestamp>,
    /// Why the last read failed, if it did (the totals then hold what was last known plus what
    /// was seen since).
    pub store_error: Option<String>,
}

/// Totals read from the store for one window, per model, in RMB.
#[derive(Debug, Clone, Default)]
struct Totals {
    all: f64,
    models: BTreeMap<String, f64>,
}

impl Totals {
    fn from_buckets(buckets: &[CostBucket], cfg: &BudgetConfig) -> Totals {
        let mut t = Totals::default();
        for b in buckets {
            let rmb = cfg.to_rmb(b.cost, b.currency);
            t.all += rmb;
            *t.models.entry(b.model.clone()).or_default() += rmb;
        }
        t
    }
}

/// What one read of the store gave: hour, day and projection windows.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub hour: Vec<CostBucket>,
    pub day: Vec<CostBucket>,
    pub recent: Vec<CostBucket>,
}

/// The cost events seen stored between two readings' starts, kept until a reading covers them:
/// summed per model and second of event time, so that memory follows the models and seconds seen,
/// not the events (one entry per event held 20 MiB at 35,000 cost events a second between two
/// 5-second readings). A second counts in a window if its latest event does: up to one second of
/// spend before a window's start may be counted until the next reading, which errs towards
/// stopping the app a little early, never late.
#[derive(Default)]
struct SeenGroup {
    /// The sequence number of the group's last event.
    last_seq: u64,
    /// Model → second of event time → spend.
    sums: BTreeMap<String, BTreeMap<i64, SeenSum>>,
}

#[derive(Clone, Copy, Default)]
struct SeenSum {
    rmb: f64,
    /// The latest event time of the second, in milliseconds.
    last_ms: i64,
}

/// A 15-minute bucket is closed this long after it ends: what was in flight is stored by then.
const SETTLE_MS: i64 = 2 * 60_000;
/// Closed buckets are read again this often, for what other collectors sharing one MongoDB (or
/// a late replay) stored in them since.
const REREAD_EVERY_MS: i64 = 5 * 60_000;

/// The closed 15-minute buckets of spend already read: a refresh reads only what is still open
/// (since the last closed bucket, and each window's first, partial, bucket), not the whole day.
/// Cost events this collector stores into a closed bucket later are added to it from the events
/// seen; everything is read again every [`REREAD_EVERY_MS`].
#[derive(Default)]
struct Ledger {
    /// Bucket start → its buckets (per model and currency), and the reading (its start's sequence
    /// number) that read it.
    closed: BTreeMap<i64, (Vec<CostBucket>, u64)>,
    /// Closed buckets are known in `[first, through)`.
    first: i64,
    through: i64,
    /// When the closed buckets were last all read again.
    since_ms: i64,
}

/// What a refresh reads: closed buckets not read yet, and the open stretch of each window.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPlan {
    /// Closed buckets to read and keep: `[from, to)`.
    pub closed: Option<(i64, i64)>,
    /// Hour, day and projection windows: each `(from, aligned)` partial first bucket read afresh
    /// (empty when aligned), closed buckets from `aligned` to `settled`, then `[settled, now]`
    /// afresh (or the whole window afresh when it begins after `settled`).
    pub windows: [(i64, i64); 3],
    pub settled: i64,
    pub now: i64,
}

/// What a refresh read for a [`ReadPlan`].
#[derive(Debug, Clone, Default)]
pub struct PlanRead {
    pub closed: Vec<CostBucket>,
    /// Per window: its partial first bucket (or all of it, when it begins after `settled`).
    pub partial: [Vec<CostBucket>; 3],
    /// `[settled, now]`.
    pub open: Vec<CostBucket>,
}

pub struct BudgetTracker {
    cfg: BudgetConfig,
    tz: jiff::tz::TimeZone,
    ledger: Ledger,
    /// The last reading, with the sequence number of the first event it may not include.
    base: Option<(Reading, u64, Timestamp)>,
    seen: VecDeque<SeenGroup>,
    /// Whether the last group takes more events (no reading began since it started).
    open: bool,
    seq: u64,
    store_error: Option<String>,
}

impl BudgetTracker {
    pub fn new(cfg: BudgetConfig) -> BudgetTracker {
        let tz = time_zone(&cfg.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        BudgetTracker {
            cfg,
            tz,
            ledger: Ledger::default(),
            base: None,
            seen: VecDeque::new(),
            open: false,
            seq: 0,
            store_error: None,
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    pub fn time_zone(&self) -> &jiff::tz::TimeZone {
        &self.tz
    }

    pub fn reconfigure(&mut self, cfg: BudgetConfig) {
        self.tz = time_zone(&cfg.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        self.cfg = cfg;
    }

    /// Notes stored cost events.
    pub fn saw(&mut self, events: &[Event]) {
        for e in events {
            if let Body::Cost(c) = &e.body {
                self.seq += 1;
                if !self.open || self.seen.is_empty() {
                    self.seen.push_back(SeenGroup::default());
                    self.open = true;
                }
                let rmb = self.cfg.to_rmb(c.cost, c.currency);
                let Some(group) = self.seen.back_mut() else {
                    continue;
                };
                group.last_seq = self.seq;
                let seconds = match group.sums.get_mut(c.model.as_str()) {
                    Some(s) => s,
                    None => group.sums.entry(c.model.clone()).or_default(),
                };
                let time_ms = e.counted_at().as_millis();
                let sum = seconds.entry(time_ms.div_euclid(1000)).or_default();
                sum.rmb += rmb;
                sum.last_ms = sum.last_ms.max(time_ms);
            }
        }
    }

    /// The sequence number a reading that starts now covers up to. Events seen from now on go to a
    /// new group, which the reading's end keeps.
    pub fn reading_starts(&mut self) -> u64 {
        self.open = false;
        self.seq
    }

    /// A reading of the store begun when `reading_starts` gave `started_seq`. Events seen after that
    /// may be in it too: they are counted again until the next reading, which errs towards
    /// stopping the app a little early, never late.
    pub fn read(&mut self, reading: Reading, started_seq: u64, at: Timestamp) {
        self.base = Some((reading, started_seq, at));
        self.store_error = None;
        // Events this reading covers are forgotten, but one that fell in a closed bucket read
        // before it was stored is not in this reading: it goes into the bucket.
        let ledger = &mut self.ledger;
        for g in self.seen.iter().filter(|g| g.last_seq <= started_seq) {
            for (model, seconds) in &g.sums {
                for (second, sum) in seconds {
                    let start = bucket_floor(second * 1000);
                    if let Some((buckets, read_seq)) = ledger.closed.get_mut(&start) {
                        if *read_seq < g.last_seq {
                            buckets.push(CostBucket {
                                start_ms: start,
                                model: model.clone(),
                                currency: Currency::Cny,
                                cost: sum.rmb,
                                input_tokens: 0,
                                output_tokens: 0,
                                total_tokens: 0,
                                calls: 0,
                            });
                        }
                    }
                }
            }
        }
        self.seen.retain(|g| g.last_seq > started_seq);
    }

    /// What the next refresh at `now` reads: only closed buckets it has not read (all of them
    /// again every few minutes) and what is still open.
    pub fn plan(&mut self, now: Timestamp) -> ReadPlan {
        let now_ms = now.as_millis();
        let [hour, day] = self.windows(now);
        let recent = (self.projection_start(now), now_ms);
        let settled = bucket_floor(now_ms - SETTLE_MS);
        let first = bucket_ceil(hour.0.min(day.0).min(recent.0));
        let l = &mut self.ledger;
        if now_ms - l.since_ms >= REREAD_EVERY_MS || l.through > settled || first < l.first || l.through < first {
            l.closed.clear();
            l.first = first;
            l.through = first;
            l.since_ms = now_ms;
        }
        // Buckets the windows have left.
        l.closed.retain(|start, _| *start >= first);
        l.first = first;
        let closed = (l.through < settled).then_some((l.through, settled));
        let window = |from: i64| (from, bucket_ceil(from).min(settled).max(from));
        ReadPlan {
            closed,
            windows: [window(hour.0), window(day.0), window(recent.0)],
            settled,
            now: now_ms,
        }
    }

    /// Keeps the closed buckets a refresh read and turns what it read into the windows' reading.
    pub fn reading_of(&mut self, plan: &ReadPlan, read: PlanRead, started_seq: u64) -> Reading {
        if let Some((from, to)) = plan.closed {
            let mut start = from;
            while start < to {
                // Read afresh: what an earlier reading kept of this bucket is replaced, not added to.
                self.ledger.closed.insert(start, (Vec::new(), started_seq));
                start += COST_BUCKET_MS;
            }
            for b in read.closed {
                if let Some((v, _)) = self.ledger.closed.get_mut(&b.start_ms) {
                    v.push(b);
                }
            }
            self.ledger.through = to;
        }
        let [p_hour, p_day, p_recent] = read.partial;
        let assemble = |(from, aligned): (i64, i64), partial: Vec<CostBucket>| -> Vec<CostBucket> {
            let mut out = partial;
            if from >= plan.settled {
                return out;
            }
            out.extend(
                self.ledger
                    .closed
                    .range(aligned..plan.settled)
                    .flat_map(|(_, (v, _))| v.iter().cloned()),
            );
            out.extend(read.open.iter().cloned());
            out
        };
        Reading {
            hour: assemble(plan.windows[0], p_hour),
            day: assemble(plan.windows[1], p_day),
            recent: assemble(plan.windows[2], p_recent),
        }
    }

    pub fn has_reading(&self) -> bool {
        self.base.is_some()
    }

    pub fn read_failed(&mut self, why: String) {
        self.store_error = Some(why);
    }

    /// The windows (start, end) in milliseconds at `now`.
    pub fn windows(&self, now: Timestamp) -> [(i64, i64); 2] {
        let now_ms = now.as_millis();
        match self.cfg.window {
            BudgetWindow::Sliding => [(now_ms - 3_600_000, now_ms), (now_ms - 86_400_000, now_ms)],
            BudgetWindow::Calendar => {
                let hour = calendar_start(now_ms, &self.tz, Period::Hour);
                let day = calendar_start(now_ms, &self.tz, Period::Day);
                [(hour, now_ms), (day, now_ms)]
            }
        }
    }

    pub fn projection_start(&self, now: Timestamp) -> i64 {
        now.as_millis() - self.cfg.projection_window.as_millis_i64()
    }

    pub fn status(&self, now: Timestamp) -> BudgetStatus {
        let [hour_w, day_w] = self.windows(now);
        let proj_from = self.projection_start(now);
        let (mut hour, mut day, mut recent) = match &self.base {
            Some((r, _, _)) => (
                Totals::from_buckets(&r.hour, &self.cfg),
                Totals::from_buckets(&r.day, &self.cfg),
                Totals::from_buckets(&r.recent, &self.cfg).all,
            ),
            None => (Totals::default(), Totals::default(), 0.0),
        };
        for (model, seconds) in self.seen.iter().flat_map(|g| &g.sums) {
            for s in seconds.values() {
                let add = |t: &mut Totals| {
                    t.all += s.rmb;
                    match t.models.get_mut(model.as_str()) {
                        Some(m) => *m += s.rmb,
                        None => {
                            t.models.insert(model.clone(), s.rmb);
                        }
                    }
                };
                if s.last_ms >= hour_w.0 {
                    add(&mut hour);
                }
                if s.last_ms >= day_w.0 {
                    add(&mut day);
                }
                if s.last_ms >= proj_from {
                    recent += s.rmb;
                }
            }
        }
        let hour_spend = Spend::new(hour.all, self.cfg.hourly_limit_rmb, hour_w);
        let day_spend = Spend::new(day.all, self.cfg.daily_limit_rmb, day_w);
        let mut models: Vec<ModelSpend> = day
            .models
            .iter()
            .map(|(model, spent_day)| {
                let limits = self.cfg.models.get(model).cloned().unwrap_or_default();
                let spent_hour = hour.models.get(model).copied().unwrap_or(0.0);
                ModelSpend {
                    model: model.clone(),
                    hour: Spend::new(spent_hour, limits.hourly_limit_rmb, hour_w),
                    day: Spend::new(*spent_day, limits.daily_limit_rmb, day_w),
                }
            })
            .collect();
        models.sort_by(|a, b| b.day.spent_rmb.total_cmp(&a.day.spent_rmb));
        let projection = self.project(now, recent, &hour_spend, &day_spend);
        BudgetStatus {
            window: self.cfg.window,
            timezone: self.cfg.timezone.clone(),
            usd_to_rmb_rate: self.cfg.usd_to_rmb_rate,
            allowed: !hour_spend.reached() && !day_spend.reached(),
            hour: hour_spend,
            day: day_spend,
            projection,
            models,
            as_of: self.base.as_ref().map(|(_, _, at)| *at),
            store_error: self.store_error.clone(),
        }
    }

    /// [`BudgetTracker::status`] narrowed to `model`: its own spend and limits (zero spent if none
    /// yet), and `allowed` only if they are not reached either.
    pub fn status_of_model(&self, now: Timestamp, model: &str) -> BudgetStatus {
        let mut status = self.status(now);
        let own = match status.models.iter().find(|m| m.model == model) {
            Some(m) => m.clone(),
            None => {
                let limits = self.cfg.models.get(model).cloned().unwrap_or_default();
                let window = |s: &Spend| (s.window_start.as_millis(), s.window_end.as_millis());
                ModelSpend {
                    model: model.to_string(),
                    hour: Spend::new(0.0, limits.hourly_limit_rmb, window(&status.hour)),
                    day: Spend::new(0.0, limits.daily_limit_rmb, window(&status.day)),
                }
            }
        };
        status.allowed = status.allowed && !own.hour.reached() && !own.day.reached();
        status.models = vec![own];
        status
    }

    fn project(&self, now: Timestamp, recent_rmb: f64, hour: &Spend, day: &Spend) -> Projection {
        let window_ms = self.cfg.projection_window.as_millis_i64().max(1) as f64;
        let per_hour = recent_rmb / window_ms * 3_600_000.0;
        let leaving = |buckets: Option<&[CostBucket]>| -> Vec<(i64, f64)> {
            // A bucket's spend leaves a sliding window when the bucket's end does: it errs towards
            // reaching the limit early, by at most a bucket's width.
            let mut out: Vec<(i64, f64)> = buckets
                .unwrap_or_default()
                .iter()
                .map(|b| (b.start_ms + COST_BUCKET_MS, self.cfg.to_rmb(b.cost, b.currency)))
                .collect();
            out.sort_by_key(|(end, _)| *end);
            out
        };
        let reading = self.base.as_ref().map(|(r, _, _)| r);
        let (hour_w, day_w) = (3_600_000, 86_400_000);
        let reach = |spend: &Spend, width: i64, buckets: Vec<(i64, f64)>, period: Period| match self.cfg.window {
            BudgetWindow::Sliding => reach_sliding(now.as_millis(), spend, width, &buckets, per_hour),
            BudgetWindow::Calendar => reach_calendar(
                now.as_millis(),
                spend,
                calendar_end_of(now.as_millis(), &self.tz, period),
                per_hour,
            ),
        };
        let mut hour = reach(hour, hour_w, leaving(reading.map(|r| r.hour.as_slice())), Period::Hour);
        let mut day = reach(day, day_w, leaving(reading.map(|r| r.day.as_slice())), Period::Day);
        for r in [&mut hour, &mut day] {
            r.at_local = r.at.map(|t| local_hh_mm(t, &self.tz));
        }
        Projection {
            rate_rmb_per_hour: round_cents(per_hour),
            daily_limit_at: day.at,
            daily_limit_at_local: day.at_local.clone(),
            hour,
            day,
        }
    }
}

/// A sliding window of `width` ms whose spend is `spend` now: at time now + d it holds what is
/// still in it (`leaving`: (when a part leaves, RMB), in order) plus `per_hour` × d. The first d
/// where that reaches the limit, if one comes within a window's length; after that the window holds
/// only new spend, rate × width, which decides for ever after.
pub fn reach_sliding(now_ms: i64, spend: &Spend, width: i64, leaving: &[(i64, f64)], per_hour: f64) -> Reach {
    if spend.limit_rmb <= 0.0 {
        return Reach::verdict(Verdict::NoLimit);
    }
    if spend.spent_rmb >= spend.limit_rmb {
        return Reach::verdict(Verdict::Reached);
    }
    if per_hour <= 0.0 {
        return Reach::verdict(Verdict::NoSpend);
    }
    let per_ms = per_hour / 3_600_000.0;
    let steady = per_ms * width as f64;
    let mut held = spend.spent_rmb;
    let mut from = 0i64; // d, in ms after now
    let mut parts = leaving.iter().map(|(end, rmb)| (end + width - now_ms, *rmb)).peekable();
    while from < width {
        // Parts that left by `from`.
        while let Some((d, rmb)) = parts.peek().copied() {
            if d > from {
                break;
            }
            held -= rmb;
            parts.next();
        }
        let until = parts.peek().map_or(width, |(d, _)| (*d).min(width));
        let needed = (spend.limit_rmb - held) / per_ms;
        let d = from as f64 + needed.max(0.0);
        if d < until as f64 {
            let at = Timestamp(now_ms.saturating_add(d.ceil() as i64));
            return Reach {
                verdict: Verdict::At,
                at: Some(at),
                at_local: None,
                steady_rmb: Some(round_cents(steady)),
            };
        }
        held += per_ms * (until - from) as f64;
        from = until;
    }
    if steady >= spend.limit_rmb {
        // Only new spend is left in the window, and it is enough.
        let at = Timestamp(now_ms.saturating_add(width));
        return Reach {
            verdict: Verdict::At,
            at: Some(at),
            at_local: None,
            steady_rmb: Some(round_cents(steady)),
        };
    }
    Reach {
        verdict: Verdict::NeverAtThisRate,
        at: None,
        at_local: None,
        steady_rmb: Some(round_cents(steady)),
    }
}

/// A calendar window that ends at `end_ms`: reached at the rate if before it ends.
pub fn reach_calendar(now_ms: i64, spend: &Spend, end_ms: i64, per_hour: f64) -> Reach {
    if spend.limit_rmb <= 0.0 {
        return Reach::verdict(Verdict::NoLimit);
    }
    if spend.spent_rmb >= spend.limit_rmb {
        return Reach::verdict(Verdict::Reached);
    }
    if per_hour <= 0.0 {
        return Reach::verdict(Verdict::NoSpend);
    }
    let ms = ((spend.limit_rmb - spend.spent_rmb) / (per_hour / 3_600_000.0)).ceil();
    let when = now_ms.saturating_add(ms.min(1e15) as i64);
    if when < end_ms {
        Reach {
            verdict: Verdict::At,
            at: Some(Timestamp(when)),
            at_local: None,
            steady_rmb: None,
        }
    } else {
        Reach::verdict(Verdict::NotBeforeWindowEnds)
    }
}

/// Where the calendar hour or day containing `ms` ends, in `tz`.
fn calendar_end_of(ms: i64, tz: &jiff::tz::TimeZone, period: Period) -> i64 {
    match period {
        Period::Day => calendar_end(ms, tz),
        Period::Hour => calendar_start(ms, tz, Period::Hour) + 3_600_000,
    }
}

/// Where the calendar hour or day containing `ms` begins, in `tz`.
pub fn calendar_start(ms: i64, tz: &jiff::tz::TimeZone, period: Period) -> i64 {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return ms;
    };
    let zoned = ts.to_zoned(tz.clone());
    let start = match period {
        Period::Day => zoned.start_of_day().ok(),
        Period::Hour => zoned.with().minute(0).second(0).subsec_nanosecond(0).build().ok(),
    };
    start.map_or(ms, |z| z.timestamp().as_millisecond())
}

/// Where the calendar day containing `ms` ends, in `tz`.
fn calendar_end(ms: i64, tz: &jiff::tz::TimeZone) -> i64 {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return i64::MAX;
    };
    ts.to_zoned(tz.clone())
        .tomorrow()
        .and_then(|z| z.start_of_day())
        .map_or(i64::MAX, |z| z.timestamp().as_millisecond())
}

/// "21:40" in `tz` (with the date when it is not today there).
pub fn local_hh_mm(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(t.as_millis()) else {
        return t.to_string();
    };
    let when = ts.to_zoned(tz.clone());
    let today = jiff::Timestamp::now().to_zoned(tz.clone()).date();
    if when.date() == today {
        when.strftime("%H:%M").to_string()
    } else {
        when.strftime("%Y-%m-%d %H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket of the quarter hour before `1_795_680_000_000` (the tests' now): still in every window.
    fn bucket(model: &str, cost: f64, currency: Currency) -> CostBucket {
        CostBucket {
            start_ms: 1_795_680_000_000 - COST_BUCKET_MS,
            model: model.into(),
            currency,
            cost,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            calls: 1,
        }
    }

    #[test]
    fn spend_converts_dollars_and_a_limit_is_reached_at_equality() {
        let mut t = BudgetTracker::new(BudgetConfig {
            hourly_limit_rmb: 10.0,
            daily_limit_rmb: 100.0,
            usd_to_rmb_rate: 7.0,
            ..BudgetConfig::default()
        });
        let now = Timestamp(1_795_680_000_000);
        t.read(
            Reading {
                hour: vec![bucket("gpt-4o", 1.0, Currency::Usd), bucket("glm", 3.0, Currency::Cny)],
                day: vec![bucket("gpt-4o", 1.0, Currency::Usd), bucket("glm", 3.0, Currency::Cny)],
                recent: vec![bucket("glm", 3.0, Currency::Cny)],
            },
            0,
            now,
        );
        let s = t.status(now);
        assert_eq!((s.hour.spent_rmb, s.hour.fraction), (10.0, 1.0));
        assert!(
            s.hour.reached() && !s.allowed,
            "at the limit counts as reached, as the original"
        );
        assert_eq!(s.day.remaining_rmb, 90.0);
        // 3 RMB in 15 minutes: 12 RMB an hour; 90 RMB left: 7.5 hours.
        assert_eq!(s.projection.rate_rmb_per_hour, 12.0);
        assert_eq!(
            s.projection.daily_limit_at,
            Some(Timestamp(now.as_millis() + 27_000_000))
        );
        assert_eq!(s.models[0].model, "gpt-4o");
    }

    #[test]
    fn events_seen_are_summed_per_model_and_second_and_a_reading_forgets_those_it_covers() {
        use crate::event::{EventId, Parser, Source};
        let parser = Parser::new(std::sync::Arc::new(crate::redact::Redactor::disabled()));
        let cost = |ms: i64, model: &str| {
            let mut at = Vec::new();
            Timestamp(ms).write_rfc3339(&mut at);
            let at = String::from_utf8(at).unwrap();
            parser.parse(
                format!(r#"{{"type":"cost","created_at":"{at}","model":"{model}","cost":0.5,"currency_symbol":"￥"}}"#)
                    .as_bytes(),
                &Source::from("t"),
                Timestamp(0),
                EventId::new(),
            )
        };
        let mut t = BudgetTracker::new(BudgetConfig {
            window: BudgetWindow::Sliding,
            ..BudgetConfig::default()
        });
        let now = 1_795_680_000_000;
        // 2,000 events in two seconds of two models: four entries, the same totals.
        let first: Vec<Event> = (0..2_000)
            .map(|i| cost(now - 2_000 + i, ["a", "b"][i as usize % 2]))
            .collect();
        t.saw(&first);
        let entries =
            |t: &BudgetTracker| -> usize { t.seen.iter().flat_map(|g| g.sums.values()).map(|s| s.len()).sum() };
        assert_eq!(entries(&t), 4);
        let s = t.status(Timestamp(now));
        assert_eq!((s.hour.spent_rmb, s.day.spent_rmb), (1_000.0, 1_000.0));
        assert_eq!(s.models.len(), 2);
        // A reading starts, more events come, the reading ends: it covers the first ones only.
        let started = t.reading_starts();
        t.saw(&[cost(now, "a")]);
        t.read(Reading::default(), started, Timestamp(now));
        let s = t.status(Timestamp(now));
        assert_eq!(s.hour.spent_rmb, 0.5, "what the reading may not hold is still counted");
        assert_eq!(entries(&t), 1);
        // An hour later, the event has left the hour and stays in the day.
        let s = t.status(Timestamp(now + 3_600_001));
        assert_eq!((s.hour.spent_rmb, s.day.spent_rmb), (0.0, 0.5));
    }

    #[test]
    fn a_refresh_reads_closed_buckets_once_and_only_what_is_open_again() {
        let mut t = BudgetTracker::new(BudgetConfig::default());
        let now = 1_795_680_000_000 + 14 * 60_000 + 30_000;
        let bucket = |start: i64, cost: f64| CostBucket {
            start_ms: start,
            model: "m".into(),
            currency: Currency::Cny,
            cost,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            calls: 1,
        };
        let plan = t.plan(Timestamp(now));
        let (from, settled) = plan.closed.expect("the day's closed buckets, once");
        assert_eq!(from, bucket_ceil(now - 86_400_000));
        assert_eq!(settled, bucket_floor(now - SETTLE_MS));
        // ¥1 in every closed bucket, ¥5 open, ¥0.5 in the day's partial first bucket.
        let closed: Vec<CostBucket> = (0..(settled - from) / COST_BUCKET_MS)
            .map(|i| bucket(from + i * COST_BUCKET_MS, 1.0))
            .collect();
        let n = closed.len() as f64;
        let read = PlanRead {
            closed,
            partial: [Vec::new(), vec![bucket(from - COST_BUCKET_MS, 0.5)], Vec::new()],
            open: vec![bucket(settled, 5.0)],
        };
        let started = t.reading_starts();
        let reading = t.reading_of(&plan, read, started);
        t.read(reading, started, Timestamp(now));
        assert_eq!(t.status(Timestamp(now)).day.spent_rmb, n + 5.5);
        // Seconds later: nothing closed to read; the same totals from what is kept.
        let plan = t.plan(Timestamp(now + 5_000));
        assert_eq!(plan.closed, None);
        let started = t.reading_starts();
        let read = PlanRead {
            partial: [Vec::new(), vec![bucket(from - COST_BUCKET_MS, 0.5)], Vec::new()],
            open: vec![bucket(settled, 5.0)],
            ..PlanRead::default()
        };
        let reading = t.reading_of(&plan, read, started);
        t.read(reading, started, Timestamp(now + 5_000));
        assert_eq!(t.status(Timestamp(now + 5_000)).day.spent_rmb, n + 5.5);
        // Once the next bucket has closed, it is read alone.
        let plan = t.plan(Timestamp(now + 150_000));
        assert_eq!(plan.closed, Some((settled, settled + COST_BUCKET_MS)));
        // Every few minutes, everything again (for what other collectors stored in closed buckets).
        let plan = t.plan(Timestamp(now + REREAD_EVERY_MS + 1));
        assert_eq!(
            plan.closed.map(|c| c.0),
            Some(bucket_ceil(now + REREAD_EVERY_MS + 1 - 86_400_000))
        );
    }

    #[test]
    fn calendar_hours_and_days_begin_in_the_configured_zone() {
        let tz = time_zone("Asia/Shanghai").unwrap();
        // 2026-11-26T15:37:00Z is 23:37 in Shanghai: the day began at 16:00Z the day before.
        let now = Timestamp::parse_rfc3339("2026-11-26T15:37:00Z").unwrap().as_millis();
        let day = Timestamp::parse_rfc3339("2026-11-25T16:00:00Z").unwrap().as_millis();
        let hour = Timestamp::parse_rfc3339("2026-11-26T15:00:00Z").unwrap().as_millis();
        assert_eq!(calendar_start(now, &tz, Period::Day), day);
        assert_eq!(calendar_start(now, &tz, Period::Hour), hour);
        assert!(time_zone("Mars/Olympus").is_err());
    }

    fn spend(spent: f64, limit: f64) -> Spend {
        Spend::new(spent, limit, (0, 0))
    }

    const H: i64 = 3_600_000;

    #[test]
    fn a_sliding_window_is_reached_when_what_stays_plus_the_rate_reaches_the_limit() {
        let now = 1_795_680_000_000;
        // ¥300 spent 20 hours ago (it leaves the 24 h window in 4 hours) and ¥10 just now.
        let leaving = [(now - 20 * H, 300.0), (now, 10.0)];
        let day = spend(310.0, 500.0);
        // ¥60 an hour: 190 more before the ¥300 leaves, in 3 h 10 min.
        let r = reach_sliding(now, &day, 24 * H, &leaving, 60.0);
        assert_eq!(
            (r.verdict, r.at),
            (Verdict::At, Some(Timestamp(now + 3 * H + 10 * 60_000)))
        );
        // ¥25 an hour: not before 4 h (¥410); then ¥110 held, 390 more: 15.6 h later, 19 h 36 min.
        let r = reach_sliding(now, &day, 24 * H, &leaving, 25.0);
        assert_eq!(
            (r.verdict, r.at),
            (Verdict::At, Some(Timestamp(now + 19 * H + 36 * 60_000)))
        );
        assert_eq!(r.steady_rmb, Some(600.0));
        // ¥5 an hour: the window settles at ¥120 and never reaches ¥500 (the issue's "2026-12-23").
        let r = reach_sliding(now, &day, 24 * H, &leaving, 5.0);
        assert_eq!(
            (r.verdict, r.at, r.steady_rmb),
            (Verdict::NeverAtThisRate, None, Some(120.0))
        );
        // The hour: ¥90 of ¥100 with ¥12 an hour, all of it recent: 50 min.
        let r = reach_sliding(now, &spend(90.0, 100.0), H, &[(now, 90.0)], 12.0);
        assert_eq!((r.verdict, r.at), (Verdict::At, Some(Timestamp(now + 50 * 60_000))));
        assert_eq!(
            reach_sliding(now, &spend(100.0, 100.0), H, &[], 1.0).verdict,
            Verdict::Reached
        );
        assert_eq!(
            reach_sliding(now, &spend(1.0, 100.0), H, &[], 0.0).verdict,
            Verdict::NoSpend
        );
        assert_eq!(
            reach_sliding(now, &spend(1.0, 0.0), H, &[], 1.0).verdict,
            Verdict::NoLimit
        );
    }

    #[test]
    fn a_calendar_window_is_reached_only_before_it_ends() {
        let now = 1_795_680_000_000;
        let end = now + 30 * 60_000;
        let hour = spend(80.0, 100.0);
        assert_eq!(
            reach_calendar(now, &hour, end, 60.0).at,
            Some(Timestamp(now + 20 * 60_000)),
            "¥20 at ¥60 an hour: 20 minutes, before the hour ends"
        );
        assert_eq!(
            reach_calendar(now, &hour, end, 30.0).verdict,
            Verdict::NotBeforeWindowEnds
        );
    }
}
