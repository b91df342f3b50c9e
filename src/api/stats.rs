//! Statistics: cost per model (the original `get_model_cost_stats`) or per hour or day of the
//! configured time zone, error rates (`get_error_rate_stats`) overall, per model and per minute,
//! and response-time percentiles.
//!
//! The store answers cost in fixed buckets (15 minutes); hours and days of any time zone are whole
//! buckets, combined here. Requests come from the monitor's per-minute windows (`api_metrics` and
//! its memory): counts and sums exact, percentiles merged from the windows' sketches (within 1 %),
//! so a call costs the range's windows, not its requests; minutes no window stands for are read
//! from the requests, a bounded batch at a time.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::params::{Params, RawQuery};
use super::{Api, ApiError};
use crate::event::{Collection, Currency, Timestamp};
use crate::monitor::rollup::Rollup;
use crate::monitor::sketch::Sketch;
use crate::store::query::{bucket_start, FindQuery, Query, RequestBucket, ResponseTime, TimeRange, REQUEST_BUCKET_MS};

const DAY_MS: i64 = 86_400_000;
/// Longest range a per-minute series covers.
const MAX_SERIES_MS: i64 = 7 * DAY_MS;

#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupBy {
    Model,
    Hour,
    Day,
}

/// Sums of one (period, model, currency).
#[derive(Default)]
struct CostSum {
    cost: f64,
    input: u64,
    output: u64,
    total: u64,
    calls: u64,
}

/// `GET /api/stats/cost?start_time&end_time&group_by=model|hour|day`
pub async fn cost(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = Params::new(query, &["start_time", "end_time", "group_by"])?.with_naive_timezone(&api.inner.naive);
    let group_by = match params.str("group_by") {
        None | Some("model") => GroupBy::Model,
        Some("hour") => GroupBy::Hour,
        Some("day") => GroupBy::Day,
        Some(other) => return Err(ApiError::param("group_by", other, "model, hour or day")),
    };
    let range = params.range_or_last(DAY_MS)?;
    let buckets = api.timed(api.store().cost_buckets(range)).await?;
    // The monitor's copy of [budget]: SIGHUP reloads the rate and the zone there.
    let (rates, tz) = api.inner.monitor.budget_config_and_zone();
    let (rates, tz) = (&rates, &tz);
    let mut sums: BTreeMap<(Option<i64>, String, &'static str), CostSum> = BTreeMap::new();
    for b in &buckets {
        let period = match group_by {
            GroupBy::Model => None,
            GroupBy::Hour => Some(period_start(b.start_ms, tz, false)),
            GroupBy::Day => Some(period_start(b.start_ms, tz, true)),
        };
        let s = sums.entry((period, b.model.clone(), b.currency.symbol())).or_default();
        s.cost += b.cost;
        s.input += b.input_tokens;
        s.output += b.output_tokens;
        s.total += b.total_tokens;
        s.calls += b.calls;
    }
    let mut total_rmb = 0.0;
    let mut calls = 0;
    let stats: Vec<Value> = sums
        .into_iter()
        .map(|((period, model, symbol), s)| {
            let currency = Currency::parse(symbol).unwrap_or(Currency::Usd);
            let rmb = rates.to_rmb(s.cost, currency);
            total_rmb += rmb;
            calls += s.calls;
            let mut row = json!({
                "model": model,
                "currency_symbol": symbol,
                "total_cost": s.cost,
                "total_tokens": s.total,
                "input_tokens": s.input,
                "output_tokens": s.output,
                "call_count": s.calls,
                "total_rmb": rmb,
            });
            if let Some(start) = period {
                row["period"] = Value::from(format_in(start, tz));
            }
            row
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "group_by": match group_by { GroupBy::Model => "model", GroupBy::Hour => "hour", GroupBy::Day => "day" },
        "timezone": rates.timezone,
        "usd_to_rmb_rate": rates.usd_to_rmb_rate,
        "start_time": rfc3339(range.from),
        "end_time": rfc3339(range.to.map(|t| Timestamp(t.0 - 1))),
        "stats": stats,
        "total_rmb": total_rmb,
        "call_count": calls,
    })))
}

/// `GET /api/stats/errors?start_time&end_time&series=true`
pub async fn errors(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = Params::new(query, &["start_time", "end_time", "series"])?.with_naive_timezone(&api.inner.naive);
    let range = params.range_or_last(DAY_MS)?;
    let series = wants_series(&params, range)?;
    let f = figures(&api, range, None, series, false).await?;
    let mut answer = json!({
        "success": true,
        "start_time": rfc3339(range.from),
        "end_time": rfc3339(range.to.map(|t| Timestamp(t.0 - 1))),
    });
    merge(&mut answer, f.overall.error_stats());
    answer["by_model"] = f
        .by_model
        .into_iter()
        .map(|(model, c)| {
            let mut row = json!({ "model": model });
            merge(&mut row, c.error_stats());
            row
        })
        .collect();
    if series {
        answer["series"] = f
            .by_minute
            .into_iter()
            .map(|(minute, c)| {
                let mut row = json!({ "minute": rfc3339(Some(Timestamp(minute))) });
                merge(&mut row, c.error_stats());
                row
            })
            .collect();
    }
    Ok(Json(answer))
}

/// `GET /api/stats/performance?start_time&end_time&model&series=true`
pub async fn performance(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    let params =
        Params::new(query, &["start_time", "end_time", "model", "series"])?.with_naive_timezone(&api.inner.naive);
    let range = params.range_or_last(DAY_MS)?;
    let series = wants_series(&params, range)?;
    let model = params.string("model", 1024)?;
    let f = figures(&api, range, model, series, true).await?;
    let mut answer = json!({
        "success": true,
        "start_time": rfc3339(range.from),
        "end_time": rfc3339(range.to.map(|t| Timestamp(t.0 - 1))),
        "unit": "seconds",
        "percentiles_from_samples": f.overall.sketch.count(),
        "percentiles_truncated": false,
    });
    merge(&mut answer, f.overall.performance_stats());
    answer["by_model"] = f
        .by_model
        .iter()
        .map(|(m, c)| {
            let mut row = json!({ "model": m });
            merge(&mut row, c.performance_stats());
            row
        })
        .collect();
    if series {
        answer["series"] = f
            .by_minute
            .iter()
            .map(|(minute, c)| {
                let mut row = json!({ "minute": rfc3339(Some(Timestamp(*minute))) });
                merge(&mut row, c.performance_stats());
                row
            })
            .collect();
    }
    Ok(Json(answer))
}

/// Calls of a range: overall, per model (None: records without one) and per minute.
#[derive(Default)]
struct Figures {
    overall: Calls,
    by_model: BTreeMap<Option<String>, Calls>,
    by_minute: BTreeMap<i64, Calls>,
}

impl Figures {
    fn add(&mut self, minute: i64, model: Option<&str>, c: &Calls, series: bool, whole: bool) {
        if whole {
            self.overall.merge(c);
            if series {
                self.by_minute.entry(minute).or_default().merge(c);
            }
        }
        if !whole || model.is_some() {
            match self.by_model.get_mut(&model.map(str::to_string)) {
                Some(m) => m.merge(c),
                None => {
                    let mut m = Calls::default();
                    m.merge(c);
                    self.by_model.insert(model.map(str::to_string), m);
                }
            }
        }
    }
}

/// A range's calls from the monitor's windows in `api_metrics` (and those in its memory), a minute
/// at a time: what a call costs is the range's windows, not its requests. Minutes no window
/// stands for — the edges of a range that does not start or end on a minute, time before the
/// monitor wrote windows (or with `monitor.window` other than a minute), documents of an older
/// release — are read from the requests themselves, a few hours at a time.
async fn figures(
    api: &Api,
    range: TimeRange,
    model: Option<String>,
    series: bool,
    sketches: bool,
) -> Result<Figures, ApiError> {
    let (from, to) = (range.from.map_or(0, |t| t.0), range.to.map_or(i64::MAX, |t| t.0));
    let first_minute = bucket_start(from, REQUEST_BUCKET_MS);
    let mut out = Figures::default();
    // Memory first: a document the store also has by then is counted once, from here.
    let mut held: BTreeMap<i64, Vec<Rollup>> = BTreeMap::new();
    let mut held_ids = std::collections::HashSet::new();
    for r in api.inner.monitor.rollups(first_minute, to) {
        if let Some(id) = r.id {
            held_ids.insert(id);
        }
        held.entry(r.start_ms).or_default().push(r);
    }
    let mut covered: Vec<(i64, i64)> = Vec::new();
    let mut minute_of = |start: i64, docs: Vec<Rollup>, out: &mut Figures| {
        if let Some(c) = use_minute(start, from, to, &docs) {
            for r in &docs {
                fold(out, start, r, model.as_deref(), series, sketches);
            }
            match covered.last_mut() {
                Some(last) if last.0 == c.1 => last.0 = c.0,
                _ => covered.push(c),
            }
        }
    };
    // The store's windows, newest first, a page at a time; a minute is complete once the pages
    // have moved past it.
    let mut q = FindQuery::new(Collection::Metrics);
    q.range = TimeRange::between(Timestamp(first_minute), Timestamp(to));
    q.limit = 1000;
    let mut open: Option<(i64, Vec<Rollup>)> = None;
    loop {
        let page = api.timed(api.store().find(q.clone())).await?;
        for doc in &page.docs {
            let Some(r) = Rollup::from_doc(doc) else { continue };
            if r.id.is_some_and(|id| held_ids.contains(&id)) {
                continue;
            }
            match &mut open {
                Some((start, docs)) if *start == r.start_ms => docs.push(r),
                _ => {
                    if let Some((start, mut docs)) = open.take() {
                        docs.extend(held.remove(&start).unwrap_or_default());
                        minute_of(start, docs, &mut out);
                    }
                    // Memory's newer minutes that the store has nothing of.
                    let newer: Vec<i64> = held.range(r.start_ms + 1..).map(|(k, _)| *k).collect();
                    for start in newer.into_iter().rev() {
                        let docs = held.remove(&start).unwrap_or_default();
                        minute_of(start, docs, &mut out);
                    }
                    open = Some((r.start_ms, vec![r]));
                }
            }
        }
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    if let Some((start, mut docs)) = open.take() {
        docs.extend(held.remove(&start).unwrap_or_default());
        minute_of(start, docs, &mut out);
    }
    for (start, docs) in std::mem::take(&mut held).into_iter().rev() {
        minute_of(start, docs, &mut out);
    }
    // The rest from the requests.
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = from;
    for (a, b) in covered {
        if a > at {
            gaps.push((at, a));
        }
        at = at.max(b);
    }
    if at < to {
        gaps.push((at, to));
    }
    for (a, b) in gaps {
        let mut start = a;
        while start < b {
            let end = b.min(start.saturating_add(RAW_SPAN_MS));
            raw_span(
                api,
                TimeRange::between(Timestamp(start), Timestamp(end)),
                &model,
                series,
                sketches,
                &mut out,
            )
            .await?;
            start = end;
        }
    }
    Ok(out)
}

/// Reads of the requests themselves cover this much at a time.
const RAW_SPAN_MS: i64 = 6 * 3_600_000;
/// Response times read at a time for a sketch.
const RAW_SAMPLES: usize = 50_000;

/// Whether the documents of the minute at `start` stand for it within `[from, to)`: the minute lies
/// wholly inside, its window is a minute wide, and its own document for all models is there, from
/// this release. Returns the span it covers.
fn use_minute(start: i64, from: i64, to: i64, docs: &[Rollup]) -> Option<(i64, i64)> {
    let end = start + REQUEST_BUCKET_MS;
    let whole = start >= from && end <= to;
    let own = docs
        .iter()
        .any(|r| r.model.is_none() && !r.late && r.complete && r.width_ms == REQUEST_BUCKET_MS);
    let all_complete = docs.iter().all(|r| r.complete && r.width_ms == REQUEST_BUCKET_MS);
    (whole && own && all_complete).then_some((start, end))
}

fn fold(out: &mut Figures, minute: i64, r: &Rollup, model: Option<&str>, series: bool, sketches: bool) {
    let calls = |r: &Rollup| Calls {
        calls: r.requests,
        errors: r.errors,
        response_time_sum: r.duration_total,
        first_chunk_sum: r.first_chunk_total,
        first_chunk_count: r.first_chunk_count,
        sketch: if sketches {
            r.sketch.clone().unwrap_or_default()
        } else {
            Sketch::new()
        },
    };
    match (&r.model, model) {
        // All models: the window's own figures, and its requests without a model.
        (None, None) => {
            out.add(minute, None, &calls(r), series, true);
            if let Some(u) = &r.unmodelled {
                out.add(minute, None, &calls(u), series, false);
            }
        }
        (Some(m), None) => out.add(minute, Some(m), &calls(r), series, false),
        // One model: its documents stand for everything.
        (Some(m), Some(want)) if m == want => {
            let c = calls(r);
            out.add(minute, Some(m), &c, series, true);
        }
        _ => {}
    }
}

/// The calls of `range` read from the requests: sums per minute and model, response times a
/// bounded batch at a time.
async fn raw_span(
    api: &Api,
    range: TimeRange,
    model: &Option<String>,
    series: bool,
    sketches: bool,
    out: &mut Figures,
) -> Result<(), ApiError> {
    let buckets = api.timed(api.store().request_buckets(range)).await?;
    let mut minutes: BTreeMap<(i64, Option<String>), Calls> = BTreeMap::new();
    for b in buckets.iter().filter(|b| model.is_none() || b.model == *model) {
        minutes.entry((b.start_ms, b.model.clone())).or_default().add(b);
    }
    if sketches {
        let mut from = range.from.map_or(0, |t| t.0);
        let to = range.to.map_or(i64::MAX, |t| t.0);
        loop {
            let part = TimeRange::between(Timestamp(from), Timestamp(to));
            let times = api
                .timed(api.store().response_times(part, model.clone(), RAW_SAMPLES))
                .await?;
            let last_ms = times.samples.last().map(|s| s.time_ms);
            // Cut short: the last millisecond read may continue in the next batch.
            let through = match (times.truncated, last_ms) {
                (true, Some(l)) if l > from => l,
                _ => i64::MAX,
            };
            for ResponseTime {
                time_ms,
                model: m,
                seconds,
            } in times.samples.iter().filter(|s| s.time_ms < through)
            {
                let minute = bucket_start(*time_ms, REQUEST_BUCKET_MS);
                if let Some(c) = minutes.get_mut(&(minute, m.clone())) {
                    c.sketch.add(*seconds);
                }
            }
            if through == i64::MAX {
                break;
            }
            from = through;
        }
    }
    for ((minute, m), c) in minutes {
        if model.is_some() {
            out.add(minute, m.as_deref(), &c, series, true);
        } else {
            out.add(minute, None, &c, series, true);
            out.add(minute, m.as_deref(), &c, series, false);
        }
    }
    Ok(())
}

/// Whether the per-minute series is asked for (the default) and the range allows it.
fn wants_series(params: &Params, range: TimeRange) -> Result<bool, ApiError> {
    let asked = params.bool("series", true)?;
    let span = match (range.from, range.to) {
        (Some(f), Some(t)) => t.0 - f.0,
        _ => i64::MAX,
    };
    if asked && span > MAX_SERIES_MS {
        if params.str("series").is_some() {
            return Err(ApiError::bad_request(
                "a per-minute series covers at most 7 days; narrow `start_time`/`end_time` or pass series=false",
            ));
        }
        return Ok(false);
    }
    Ok(asked)
}

/// Request counts, sums and response times of some windows or buckets.
#[derive(Default, Clone)]
struct Calls {
    calls: u64,
    errors: u64,
    response_time_sum: f64,
    first_chunk_sum: f64,
    first_chunk_count: u64,
    sketch: Sketch,
}

impl Calls {
    fn add(&mut self, b: &RequestBucket) {
        self.calls += b.calls;
        self.errors += b.errors;
        self.response_time_sum += b.response_time_sum;
        self.first_chunk_sum += b.first_chunk_sum;
        self.first_chunk_count += b.first_chunk_count;
    }

    fn merge(&mut self, o: &Calls) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.response_time_sum += o.response_time_sum;
        self.first_chunk_sum += o.first_chunk_sum;
        self.first_chunk_count += o.first_chunk_count;
        self.sketch.merge(&o.sketch);
    }

    /// The original's fields; `error_rate` in percent.
    fn error_stats(&self) -> Value {
        json!({
            "total_calls": self.calls,
            "error_calls": self.errors,
            "success_calls": self.calls - self.errors.min(self.calls),
            "error_rate": if self.calls > 0 { self.errors as f64 / self.calls as f64 * 100.0 } else { 0.0 },
        })
    }

    /// Percentiles by nearest rank, within 1 % (the windows' sketches).
    fn performance_stats(&self) -> Value {
        json!({
            "calls": self.calls,
            "error_calls": self.errors,
            "avg_response_time": (self.calls > 0).then(|| self.response_time_sum / self.calls as f64),
            "p50_response_time": self.sketch.quantile(0.50),
            "p95_response_time": self.sketch.quantile(0.95),
            "p99_response_time": self.sketch.quantile(0.99),
            "avg_first_chunk_time": (self.first_chunk_count > 0).then(|| self.first_chunk_sum / self.first_chunk_count as f64),
        })
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn rfc3339(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| {
        let mut out = Vec::with_capacity(24);
        t.write_rfc3339(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// The start of the hour (or day) of `tz` that `ms` falls in, as epoch milliseconds.
fn period_start(ms: i64, tz: &jiff::tz::TimeZone, day: bool) -> i64 {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms) else {
        return ms;
    };
    let zoned = t.to_zoned(tz.clone());
    let start = if day {
        zoned.start_of_day().ok()
    } else {
        zoned.with().minute(0).second(0).subsec_nanosecond(0).build().ok()
    };
    start.map_or(ms, |z| z.timestamp().as_millisecond())
}

/// `ms` as local time in `tz` with its offset: `2026-11-26T16:00:00+08:00`.
fn format_in(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_days_follow_the_time_zone() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        // 2026-11-26T15:45:00Z is 23:45 in Shanghai: its day began at 2026-11-25T16:00:00Z.
        let t = Timestamp::parse_rfc3339("2026-11-26T15:45:00Z").unwrap().0;
        let day = period_start(t, &tz, true);
        assert_eq!(format_in(day, &tz), "2026-11-26T00:00:00+08:00");
        assert_eq!(format_in(period_start(t, &tz, false), &tz), "2026-11-26T23:00:00+08:00");
        let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
        assert_eq!(
            format_in(period_start(t, &kolkata, false), &kolkata),
            "2026-11-26T21:00:00+05:30"
        );
    }
}
