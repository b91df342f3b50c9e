//! Statistics: cost per model (the original `get_model_cost_stats`) or per hour or day of the
//! configured time zone, error rates (`get_error_rate_stats`) overall, per model and per minute,
//! and response-time percentiles.
//!
//! The store answers in fixed buckets (15 minutes for cost, a minute for requests); hours and days
//! of any time zone are whole buckets, combined here. Percentiles need the raw response times,
//! fetched up to [`MAX_SAMPLES`] (the answer says when they were cut).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::params::{Params, RawQuery};
use super::{Api, ApiError};
use crate::event::{Currency, Timestamp};
use crate::store::query::{bucket_start, Query, RequestBucket, ResponseTime, TimeRange, REQUEST_BUCKET_MS};

const DAY_MS: i64 = 86_400_000;
/// Response times fetched for percentiles at most (about 100 bytes each while the answer is made).
pub const MAX_SAMPLES: usize = 200_000;
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
    let buckets = api.timed(api.store().request_buckets(range)).await?;
    let (overall, by_model, by_minute) = sum_calls(buckets.iter(), series);
    let mut answer = json!({
        "success": true,
        "start_time": rfc3339(range.from),
        "end_time": rfc3339(range.to.map(|t| Timestamp(t.0 - 1))),
    });
    merge(&mut answer, overall.error_stats());
    answer["by_model"] = by_model
        .into_iter()
        .map(|(model, c)| {
            let mut row = json!({ "model": model });
            merge(&mut row, c.error_stats());
            row
        })
        .collect();
    if series {
        answer["series"] = by_minute
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
    let (buckets, times) = tokio::try_join!(
        api.timed(api.store().request_buckets(range)),
        api.timed(api.store().response_times(range, model.clone(), MAX_SAMPLES)),
    )?;
    let buckets: Vec<&RequestBucket> = buckets.iter().filter(|b| model.is_none() || b.model == model).collect();
    let (overall, by_model, by_minute) = sum_calls(buckets.iter().copied(), series);
    let mut samples_by_model: BTreeMap<Option<&str>, Vec<f64>> = BTreeMap::new();
    let mut samples_by_minute: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut all: Vec<f64> = Vec::with_capacity(times.samples.len());
    for ResponseTime {
        time_ms,
        model,
        seconds,
    } in &times.samples
    {
        all.push(*seconds);
        samples_by_model.entry(model.as_deref()).or_default().push(*seconds);
        if series {
            samples_by_minute
                .entry(bucket_start(*time_ms, REQUEST_BUCKET_MS))
                .or_default()
                .push(*seconds);
        }
    }
    let mut answer = json!({
        "success": true,
        "start_time": rfc3339(range.from),
        "end_time": rfc3339(range.to.map(|t| Timestamp(t.0 - 1))),
        "unit": "seconds",
        "percentiles_from_samples": times.samples.len(),
        "percentiles_truncated": times.truncated,
    });
    merge(&mut answer, overall.performance_stats(&mut all));
    answer["by_model"] = by_model
        .iter()
        .map(|(m, c)| {
            let mut samples = samples_by_model.remove(&m.as_deref()).unwrap_or_default();
            let mut row = json!({ "model": m });
            merge(&mut row, c.performance_stats(&mut samples));
            row
        })
        .collect();
    if series {
        answer["series"] = by_minute
            .iter()
            .map(|(minute, c)| {
                let mut samples = samples_by_minute.remove(minute).unwrap_or_default();
                let mut row = json!({ "minute": rfc3339(Some(Timestamp(*minute))) });
                merge(&mut row, c.performance_stats(&mut samples));
                row
            })
            .collect();
    }
    Ok(Json(answer))
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

/// Request counts and sums of some buckets.
#[derive(Default)]
struct Calls {
    calls: u64,
    errors: u64,
    response_time_sum: f64,
    first_chunk_sum: f64,
    first_chunk_count: u64,
}

impl Calls {
    fn add(&mut self, b: &RequestBucket) {
        self.calls += b.calls;
        self.errors += b.errors;
        self.response_time_sum += b.response_time_sum;
        self.first_chunk_sum += b.first_chunk_sum;
        self.first_chunk_count += b.first_chunk_count;
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

    fn performance_stats(&self, samples: &mut [f64]) -> Value {
        samples.sort_by(f64::total_cmp);
        json!({
            "calls": self.calls,
            "error_calls": self.errors,
            "avg_response_time": (self.calls > 0).then(|| self.response_time_sum / self.calls as f64),
            "p50_response_time": percentile(samples, 50.0),
            "p95_response_time": percentile(samples, 95.0),
            "p99_response_time": percentile(samples, 99.0),
            "avg_first_chunk_time": (self.first_chunk_count > 0).then(|| self.first_chunk_sum / self.first_chunk_count as f64),
        })
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
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

/// Calls overall, per model, and (with `series`) per minute.
type CallSums = (Calls, BTreeMap<Option<String>, Calls>, BTreeMap<i64, Calls>);

fn sum_calls<'a>(buckets: impl Iterator<Item = &'a RequestBucket>, series: bool) -> CallSums {
    let mut overall = Calls::default();
    let mut by_model: BTreeMap<Option<String>, Calls> = BTreeMap::new();
    let mut by_minute: BTreeMap<i64, Calls> = BTreeMap::new();
    for b in buckets {
        overall.add(b);
        by_model.entry(b.model.clone()).or_default().add(b);
        if series {
            by_minute.entry(b.start_ms).or_default().add(b);
        }
    }
    (overall, by_model, by_minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

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
