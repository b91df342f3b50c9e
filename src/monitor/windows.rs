//! Tumbling windows (a minute by default) over stored events, overall and per model: request and
//! error counts, durations with a mergeable latency sketch (DDSketch: percentiles within 1 %),
//! time to first chunk, tokens and cost. An event lands in the window of its own timestamp while
//! that window is still kept; memory is bounded by windows kept × models seen, not by events.

use std::collections::{HashMap, VecDeque};

use super::sketch::Sketch;
use crate::event::{Body, Currency, Event, MinuteMetrics, Status};

/// One window's figures, for all models or one.
#[derive(Clone)]
pub struct Cell {
    pub requests: u64,
    pub errors: u64,
    pub total_duration: f64,
    latency: Option<Sketch>,
    pub first_chunk_sum: f64,
    pub first_chunk_count: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_rmb: f64,
    pub cost_calls: u64,
    /// Cost records whose model has no price (stored with cost 0).
    pub unpriced: u64,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            requests: 0,
            errors: 0,
            total_duration: 0.0,
            latency: None,
            first_chunk_sum: 0.0,
            first_chunk_count: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_rmb: 0.0,
            cost_calls: 0,
            unpriced: 0,
        }
    }
}

impl Cell {
    fn add_request(&mut self, seconds: f64, error: bool, first_chunk: Option<f64>) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.total_duration += seconds;
        self.latency.get_or_insert_with(Sketch::new).add(seconds);
        if let Some(fc) = first_chunk {
            self.first_chunk_sum += fc;
            self.first_chunk_count += 1;
        }
    }

    /// Requests of a rebuilt window whose individual durations are not known (counts and sums only).
    pub fn add_summary(&mut self, requests: u64, errors: u64, total_duration: f64, first_chunk: (f64, u64)) {
        self.requests += requests;
        self.errors += errors;
        self.total_duration += total_duration;
        self.first_chunk_sum += first_chunk.0;
        self.first_chunk_count += first_chunk.1;
    }

    fn add_cost(&mut self, rmb: f64, input: u64, output: u64, unpriced: bool) {
        self.cost_rmb += rmb;
        self.cost_calls += 1;
        self.unpriced += u64::from(unpriced);
        self.input_tokens += input;
        self.output_tokens += output;
    }

    pub fn merge(&mut self, o: &Cell) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.total_duration += o.total_duration;
        if let Some(s) = &o.latency {
            self.latency.get_or_insert_with(Sketch::new).merge(s);
        }
        self.first_chunk_sum += o.first_chunk_sum;
        self.first_chunk_count += o.first_chunk_count;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cost_rmb += o.cost_rmb;
        self.cost_calls += o.cost_calls;
        self.unpriced += o.unpriced;
    }

    /// Percent, as the original computed it.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }

    pub fn avg_duration(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.total_duration / self.requests as f64
        }
    }

    /// A latency quantile in seconds, from the requests whose durations were seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.latency.as_ref().and_then(|s| s.quantile(q))
    }

    pub fn avg_first_chunk(&self) -> Option<f64> {
        (self.first_chunk_count > 0).then(|| self.first_chunk_sum / self.first_chunk_count as f64)
    }

    pub fn metrics(&self, window_ms: i64, model: Option<String>) -> MinuteMetrics {
        MinuteMetrics {
            window_ms,
            model,
            request_count: self.requests,
            error_count: self.errors,
            error_rate: self.error_rate(),
            avg_duration: self.avg_duration(),
            total_duration: self.total_duration,
            p50_duration: self.quantile(0.5),
            p95_duration: self.quantile(0.95),
            p99_duration: self.quantile(0.99),
            avg_first_chunk: self.avg_first_chunk(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_rmb: self.cost_rmb,
            cost_calls: self.cost_calls,
            first_chunk_total: self.first_chunk_sum,
            first_chunk_count: self.first_chunk_count,
            latency_sketch: self.latency.as_ref().map(Sketch::encode),
            unmodelled: None,
            late: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.cost_calls == 0
    }
}

#[derive(Clone, Default)]
pub struct Window {
    pub start_ms: i64,
    pub overall: Cell,
    pub models: HashMap<String, Cell>,
    /// Requests without a model (in `overall`, in no model's cell).
    pub unmodelled: Cell,
    /// Events that came after the window was written: written as a document of their own (the
    /// statistics add it to the window's), so `api_metrics` holds every stored event.
    pub late: Option<Box<Window>>,
    /// Lines rejected in this window.
    pub rejects: u64,
    /// Its documents are in `api_metrics` (or were, before a restart).
    pub written: bool,
}

/// The windows kept, oldest first.
pub struct Windows {
    width_ms: i64,
    keep: usize,
    windows: VecDeque<Window>,
    /// Events older than every window kept: stored, but too late for the windows the rules look
    /// at (they still reach `api_metrics`, through `old`).
    pub too_late: u64,
    /// Figures of events older than every window kept, per window start, until written.
    pub old: std::collections::BTreeMap<i64, Window>,
}

impl Windows {
    pub fn new(width_ms: i64, keep: usize) -> Windows {
        Windows {
            width_ms: width_ms.max(1),
            keep: keep.max(1),
            windows: VecDeque::new(),
            too_late: 0,
            old: std::collections::BTreeMap::new(),
        }
    }

    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    pub fn start_of(&self, time_ms: i64) -> i64 {
        time_ms - time_ms.rem_euclid(self.width_ms)
    }

    /// The window starting at `start`, created (with those between) if needed; None when it is
    /// older than every window kept.
    pub fn window_mut(&mut self, start: i64) -> Option<&mut Window> {
        let newest = self.windows.back().map(|w| w.start_ms);
        match newest {
            None => self.windows.push_back(Window {
                start_ms: start,
                ..Window::default()
            }),
            Some(newest) if start > newest => {
                // Gaps stay as empty windows, so "no requests this minute" is a window too; but a
                // jump farther than what is kept starts afresh.
                let mut next = newest + self.width_ms;
                if (start - newest) / self.width_ms > self.keep as i64 {
                    next = start;
                }
                while next <= start {
                    self.windows.push_back(Window {
                        start_ms: next,
                        ..Window::default()
                    });
                    next += self.width_ms;
                }
                while self.windows.len() > self.keep {
                    self.windows.pop_front();
                }
            }
            _ => {}
        }
        let oldest = self.windows.front().map_or(start, |w| w.start_ms);
        if start < oldest {
            return None;
        }
        // After a jump the windows are not contiguous: look the window up, and make it if missing.
        let at = match self.windows.binary_search_by_key(&start, |w| w.start_ms) {
            Ok(i) => i,
            Err(i) => {
                self.windows.insert(
                    i,
                    Window {
                        start_ms: start,
                        ..Window::default()
                    },
                );
                i
            }
        };
        self.windows.get_mut(at)
    }

    /// Adds stored events; `rmb` converts a cost to RMB.
    pub fn add(&mut self, events: &[Event], rmb: impl Fn(f64, Currency) -> f64) {
        for e in events {
            // An event whose own time was too far ahead counts at its arrival: one wrong clock
            // must not move the windows (see `Event::check_clock`).
            let start = self.start_of(e.counted_at().as_millis());
            if matches!(e.body, Body::Reject(_)) {
                if let Some(w) = self.window_mut(start) {
                    w.rejects += 1;
                }
                continue;
            }
            if !matches!(e.body, Body::Performance(_) | Body::Cost(_)) {
                continue;
            }
            match self.window_mut(start) {
                Some(w) => {
                    add_to(w, e, &rmb);
                    if w.written {
                        let late = w.late.get_or_insert_with(|| {
                            Box::new(Window {
                                start_ms: start,
                                ..Window::default()
                            })
                        });
                        add_to(late, e, &rmb);
                    }
                }
                None => {
                    self.too_late += 1;
                    let old = self.old.entry(start).or_insert_with(|| Window {
                        start_ms: start,
                        ..Window::default()
                    });
                    add_to(old, e, &rmb);
                }
            }
        }
    }

    /// Late figures waiting to be written: of kept windows already written, and of older ones.
    pub fn take_late(&mut self) -> Vec<Window> {
        let mut out: Vec<Window> = self
            .windows
            .iter_mut()
            .filter_map(|w| w.late.take().map(|l| *l))
            .collect();
        out.extend(std::mem::take(&mut self.old).into_values());
        out
    }

    /// Late figures not written yet, for the statistics.
    pub fn pending_late(&self) -> impl Iterator<Item = &Window> {
        self.windows
            .iter()
            .filter_map(|w| w.late.as_deref())
            .chain(self.old.values())
    }

    /// Windows that ended at least `grace_ms` before `now_ms` and are not written yet.
    pub fn finished_unwritten(&mut self, now_ms: i64, grace_ms: i64) -> Vec<&mut Window> {
        let width = self.width_ms;
        self.windows
            .iter_mut()
            .filter(|w| !w.written && w.start_ms + width + grace_ms <= now_ms)
            .collect()
    }

    /// The window that ended last by the clock at `now_ms`: what rules look at. None when it saw no
    /// event (a quiet window): a rule measured on it would repeat an older window's figures, so
    /// nothing is measured and its alerts resolve.
    pub fn last_finished(&self, now_ms: i64) -> Option<&Window> {
        let start = self.start_of(now_ms) - self.width_ms;
        self.windows.iter().rev().find(|w| w.start_ms == start)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter()
    }
}

fn add_to(w: &mut Window, e: &Event, rmb: &impl Fn(f64, Currency) -> f64) {
    match &e.body {
        Body::Performance(p) => {
            let error = p.status == Status::Error;
            w.overall.add_request(p.response_time, error, p.first_chunk_time);
            match &p.model {
                Some(model) => model_cell(w, model).add_request(p.response_time, error, p.first_chunk_time),
                None => w.unmodelled.add_request(p.response_time, error, p.first_chunk_time),
            }
        }
        Body::Cost(c) => {
            let cost = rmb(c.cost, c.currency);
            let (input, output) = (c.input_tokens.unwrap_or(0), c.output_tokens.unwrap_or(0));
            let unpriced = c.source == crate::event::CostSource::Unpriced;
            w.overall.add_cost(cost, input, output, unpriced);
            model_cell(w, &c.model).add_cost(cost, input, output, unpriced);
        }
        _ => {}
    }
}

fn model_cell<'a>(w: &'a mut Window, model: &str) -> &'a mut Cell {
    if !w.models.contains_key(model) {
        w.models.insert(model.to_string(), Cell::default());
    }
    w.models
        .get_mut(model)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Parser, Source, Timestamp};
    use std::sync::Arc;

    fn event(line: &str) -> Event {
        let parser = Parser::new(Arc::new(crate::redact::Redactor::disabled()));
        parser.parse(line.as_bytes(), &Source::from("t"), Timestamp(0), EventId::new())
    }

    #[test]
    fn events_land_in_the_window_of_their_own_time_and_late_ones_are_counted() {
        let mut w = Windows::new(60_000, 3);
        let perf = |t: &str, rt: f64, status: &str| {
            event(&format!(
                r#"{{"type":"performance","timestamp":"{t}","response_time":{rt},"status":"{status}","model":"m"}}"#
            ))
        };
        w.add(
            &[
                perf("2026-11-26T08:01:10Z", 1.0, "success"),
                perf("2026-11-26T08:01:50Z", 3.0, "error"),
                perf("2026-11-26T08:03:00Z", 2.0, "success"),
                // Late but inside what is kept: its own minute.
                perf("2026-11-26T08:01:30Z", 2.0, "success"),
            ],
            |c, _| c,
        );
        let minute = |s: &str| Timestamp::parse_rfc3339(s).unwrap().as_millis();
        let first = w.iter().find(|x| x.start_ms == minute("2026-11-26T08:01:00Z")).unwrap();
        assert_eq!((first.overall.requests, first.overall.errors), (3, 1));
        assert!((first.overall.error_rate() - 33.333).abs() < 0.01);
        assert!((first.overall.avg_duration() - 2.0).abs() < 1e-9);
        assert_eq!(first.models["m"].requests, 3);
        let p50 = first.overall.quantile(0.5).unwrap();
        assert!((p50 - 2.0).abs() < 0.05, "{p50}");
        // Far newer: the window moves on, older ones go.
        w.add(&[perf("2026-11-26T09:00:00Z", 1.0, "success")], |c, _| c);
        w.add(&[perf("2026-11-26T08:01:00Z", 1.0, "success")], |c, _| c);
        assert_eq!(w.too_late, 1);
        assert!(w.iter().count() <= 3);
    }
}
