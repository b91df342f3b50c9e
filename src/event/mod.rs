//! Events: what a line becomes once checked, normalized and redacted.
//!
//! One JSON object per line. `type` selects the kind (`log`, `cost`, `performance`/`perf`); without
//! it a `cost` field means cost, a `response_time` field performance, a `message`/`msg` field a log.
//! Python `logging` attribute names and OpenTelemetry GenAI names are accepted as aliases; fields the
//! kind does not know are kept under `extra`, never dropped. A line that cannot become an event
//! becomes a [`Reject`] that says why, so every non-empty line yields exactly one [`Event`].

mod encoding;
mod fields;
mod id;
mod metric;
pub mod parser;
pub mod prices;
mod time;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use id::EventId;
pub use metric::MinuteMetrics;
pub use parser::Parser;
pub(crate) use time::{days_from_civil, days_in_month, is_leap as is_leap_year, MAX_MS as MAX_TIMESTAMP_MS};
pub use time::{NaiveZone, TimeError, Timestamp};

use crate::redact::Redactor;

/// Rejected lines keep at most this much of the raw text.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// Where an event came from: `socket`, a file path, `http`. Shared by all events of a source.
pub type Source = Arc<str>;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    /// `timestamp` of logs and performance records, `created_at` of costs, `received_at` of rejects.
    pub time: Timestamp,
    pub source: Source,
    pub body: Body,
    /// The collector's clock when the event arrived, kept only for an event whose own time is more
    /// than `max_clock_skew` ahead of it (a naive local time read as UTC, a clock set wrong): it is
    /// stored with its own time, flagged, and counted at its arrival by the monitor and the budget.
    pub received: Option<Timestamp>,
    /// Bytes of the memory budget this event holds until stored (see `pipeline::memory`).
    pub held_bytes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Log(Log),
    Cost(Cost),
    Performance(Performance),
    Reject(Reject),
    /// One finished window of the monitor (`api_metrics`): made by the daemon, not received.
    Metric(Box<MinuteMetrics>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: Level,
    pub message: String,
    pub module: Option<String>,
    pub function: Option<String>,
    pub line: Option<i64>,
    /// The Python logger's name (`lngpt.api`).
    pub logger: Option<String>,
    /// The exception's traceback (or `stack_info`) a record carries, as Python formatted it:
    /// kept apart from the message so that the message stays one readable line.
    pub traceback: Option<String>,
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub model: String,
    /// In `currency`; 0 while `source` is `Unpriced`.
    pub cost: f64,
    pub currency: Currency,
    pub source: CostSource,
    pub input_tokens: Option<u64>,
    /// Of the input tokens, those served from the provider's prompt cache (priced lower).
    pub cached_input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub provider: Option<String>,
    pub request_id: Option<String>,
    pub extra: Map<String, Value>,
}

/// Where a cost came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CostSource {
    /// The app sent the amount.
    Reported,
    /// Computed from the tokens and `[prices]`.
    PriceTable,
    /// Tokens but no amount, and the model has no price: stored with cost 0, counted and alerted,
    /// never silently taken as free.
    Unpriced,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Reported => "reported",
            CostSource::PriceTable => "price_table",
            CostSource::Unpriced => "unpriced",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Performance {
    /// Seconds.
    pub response_time: f64,
    pub status: Status,
    pub error: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub request_id: Option<String>,
    pub first_chunk_time: Option<f64>,
    pub chunk_count: Option<u64>,
    pub extra: Map<String, Value>,
}

/// A line that could not become an event, kept with the reason so nothing vanishes silently.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: String,
    /// The line as received (invalid UTF-8 replaced, secrets masked), cut at [`MAX_RAW_BYTES`].
    pub raw: String,
    /// Length in bytes of the whole line as received.
    pub raw_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] = [Level::Debug, Level::Info, Level::Warning, Level::Error, Level::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// Case-insensitive; `WARN` and `FATAL` are Python's own aliases.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "WARNING" | "WARN" => Level::Warning,
            "ERROR" => Level::Error,
            "CRITICAL" | "FATAL" => Level::Critical,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    Usd,
    Cny,
}

impl Currency {
    pub fn symbol(self) -> &'static str {
        match self {
            Currency::Usd => "$",
            Currency::Cny => "￥",
        }
    }

    /// `$`, `￥`/`¥`, or a code (USD, CNY, RMB).
    pub fn parse(s: &str) -> Option<Currency> {
        match s.trim() {
            "$" => Some(Currency::Usd),
            "￥" | "¥" => Some(Currency::Cny),
            code => match code.to_ascii_uppercase().as_str() {
                "USD" => Some(Currency::Usd),
                "CNY" | "RMB" => Some(Currency::Cny),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
        }
    }
}

/// The stores' collections (MongoDB) and tables (embedded store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    Logs,
    Cost,
    Performance,
    Rejects,
    /// The monitor's finished windows, one document per window and model (and one for all).
    Metrics,
    /// Alerts as they fire, repeat and resolve; written by the monitor, not by the pipeline.
    Alerts,
}

impl Collection {
    pub const ALL: [Collection; 6] = [
        Collection::Logs,
        Collection::Cost,
        Collection::Performance,
        Collection::Rejects,
        Collection::Metrics,
        Collection::Alerts,
    ];

    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Collection::Logs => "api_logs",
            Collection::Cost => "api_cost",
            Collection::Performance => "api_performance",
            Collection::Rejects => "api_rejects",
            Collection::Metrics => "api_metrics",
            Collection::Alerts => "api_alerts",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The document field that holds the event's time.
    pub fn time_field(self) -> &'static str {
        match self {
            Collection::Logs | Collection::Performance => "timestamp",
            Collection::Cost => "created_at",
            Collection::Rejects => "received_at",
            Collection::Metrics => "minute",
            Collection::Alerts => "started_at",
        }
    }
}

impl Event {
    pub fn collection(&self) -> Collection {
        match self.body {
            Body::Log(_) => Collection::Logs,
            Body::Cost(_) => Collection::Cost,
            Body::Performance(_) => Collection::Performance,
            Body::Reject(_) => Collection::Rejects,
            Body::Metric(_) => Collection::Metrics,
        }
    }

    pub fn is_reject(&self) -> bool {
        matches!(self.body, Body::Reject(_))
    }

    /// When the monitor and the budget count the event: its own time, or its arrival when that
    /// time was too far ahead to be believed.
    pub fn counted_at(&self) -> Timestamp {
        self.received.unwrap_or(self.time)
    }

    /// The fields the sender gave besides the known ones, for kinds that keep them.
    pub fn extra_mut(&mut self) -> Option<&mut Map<String, Value>> {
        match &mut self.body {
            Body::Log(l) => Some(&mut l.extra),
            Body::Cost(c) => Some(&mut c.extra),
            Body::Performance(p) => Some(&mut p.extra),
            Body::Reject(_) | Body::Metric(_) => None,
        }
    }

    /// Checks the event's own time against its arrival (`received`, the collector's clock): one
    /// more than `max_ahead_ms` ahead is flagged (`extra.clock_skew_ms`) and counted at arrival;
    /// one more than [`LATE_MS`] behind is only reported (a replayed spool, or a file read late,
    /// are late for good reasons, and count in their own time).
    pub fn check_clock(&mut self, received: Timestamp, max_ahead_ms: i64) -> ClockCheck {
        if self.is_reject() || matches!(self.body, Body::Metric(_)) {
            return ClockCheck::Believable;
        }
        let skew = self.time.as_millis().saturating_sub(received.as_millis());
        if skew > max_ahead_ms {
            self.received = Some(received);
            if let Some(extra) = self.extra_mut() {
                extra.insert("clock_skew_ms".into(), Value::from(skew));
            }
            ClockCheck::Ahead(skew)
        } else if skew < -LATE_MS {
            ClockCheck::Behind(-skew)
        } else {
            ClockCheck::Believable
        }
    }
}

/// How far behind its arrival an event's time may be before it is reported as late.
pub const LATE_MS: i64 = 3_600_000;

/// What [`Event::check_clock`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockCheck {
    Believable,
    /// Ahead of the collector's clock by this many ms: counted at arrival.
    Ahead(i64),
    /// Behind by this many ms (more than [`LATE_MS`]): counted in its own time.
    Behind(i64),
}

impl Event {
    /// A reject for a line that never became an event, e.g. one over `max_line_bytes`.
    pub fn reject(
        id: EventId,
        source: Source,
        received: Timestamp,
        reason: String,
        raw: &[u8],
        raw_len: usize,
        redactor: &Redactor,
    ) -> Event {
        let cut = &raw[..raw.len().min(MAX_RAW_BYTES)];
        let text = String::from_utf8_lossy(cut);
        let text = trim_partial_char(&text);
        Event {
            id,
            time: received,
            source,
            body: Body::Reject(Reject {
                reason: redactor.text(&reason).into_owned(),
                raw: redactor.raw_line(text).into_owned(),
                raw_len,
            }),
            received: None,
            held_bytes: 0,
        }
    }
}

/// A cut in the middle of a multi-byte character shows up as U+FFFD at the end; drop it.
fn trim_partial_char(s: &str) -> &str {
    s.strip_suffix('\u{FFFD}').unwrap_or(s)
}
