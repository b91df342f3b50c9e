//! The wire format's parser: one JSON line to one [`Event`], or a [`Reject`] that says why.
//!
//! Fields are parsed into slots ([`fields`](super::fields)) in one pass; the kind comes from `type`
//! or from the fields present; times, numbers and counts are checked with reasons that name the
//! field; everything is redacted before it leaves here.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::fields::{Fields, ParseError};
use super::*;
use crate::redact::Redactor;

/// `max_clock_skew`'s default: five minutes.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 300_000;

/// Turns lines into events. Cheap to clone; one per source task.
#[derive(Clone)]
pub struct Parser {
    redactor: Arc<Redactor>,
    /// How times without an offset are read (`naive_timezone`).
    naive: Arc<NaiveZone>,
    /// How far ahead of its arrival an event's time is believed (`max_clock_skew`).
    max_ahead_ms: i64,
}

impl Parser {
    pub fn new(redactor: Arc<Redactor>) -> Parser {
        Parser {
            redactor,
            naive: Arc::new(NaiveZone::Utc),
            max_ahead_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }

    /// Believes an event's time up to `ms` ahead of its arrival (see [`Event::check_clock`]).
    pub fn with_max_clock_skew(self, ms: i64) -> Parser {
        Parser {
            max_ahead_ms: ms,
            ..self
        }
    }

    pub fn max_clock_skew_ms(&self) -> i64 {
        self.max_ahead_ms
    }

    /// Reads times without an offset in `zone` instead of UTC.
    pub fn with_naive_timezone(self, zone: Arc<NaiveZone>) -> Parser {
        Parser { naive: zone, ..self }
    }

    /// How times without an offset are read: sources that read times themselves (a text log's
    /// `asctime`) read them alike.
    pub fn naive_timezone(&self) -> &Arc<NaiveZone> {
        &self.naive
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// One line (without its newline) → one event or one reject. Never fails, never panics.
    pub fn parse(&self, line: &[u8], source: &Source, received: Timestamp, id: EventId) -> Event {
        match self.parse_body(line, received) {
            Ok((time, body)) => Event {
                id,
                time,
                source: source.clone(),
                body,
                received: None,
                held_bytes: 0,
            },
            Err(reason) => Event::reject(id, source.clone(), received, reason, line, line.len(), &self.redactor),
        }
    }

    fn parse_body(&self, line: &[u8], received: Timestamp) -> Result<(Timestamp, Body), String> {
        let line = encoding::strip_utf8_bom(line);
        let text = std::str::from_utf8(line).map_err(|e| {
            encoding::diagnose(line).unwrap_or_else(|| {
                format!(
                    "line is not valid UTF-8 (bad byte at offset {}); send UTF-8 encoded JSON",
                    e.valid_up_to()
                )
            })
        })?;
        let mut map = Fields::new();
        match map.parse(text) {
            Ok(()) => {}
            Err(ParseError::Duplicate(path)) => return Err(format!("field `{path}` appears twice; send it once")),
            // Rare: say precisely what is wrong, at the cost of parsing once more.
            Err(ParseError::Json) => match serde_json::from_str::<Value>(text) {
                Err(e) => return Err(encoding::diagnose(line).unwrap_or_else(|| format!("not valid JSON: {e}"))),
                Ok(value) => {
                    return Err(format!(
                        "expected a JSON object per line, got {}",
                        kind_of(&self.redactor, &value)
                    ))
                }
            },
        }
        let kind = event_kind(&self.redactor, &mut map)?;
        let time = take_time(&self.redactor, &self.naive, &mut map, received)?.unwrap_or(received);
        let body = match kind {
            Kind::Log => Body::Log(self.log(&mut map)?),
            Kind::Cost => Body::Cost(self.cost(&mut map)?),
            Kind::Performance => Body::Performance(self.performance(&mut map)?),
        };
        Ok((time, body))
    }

    fn log(&self, m: &mut Fields) -> Result<Log, String> {
        let level = match take_str(&self.redactor, m, &["level", "levelname"])? {
            None => Level::Info,
            Some((name, s)) => Level::parse(&s).ok_or_else(|| {
                format!(
                    "`{name}` {} is not a log level; expected DEBUG, INFO, WARNING, ERROR or CRITICAL",
                    snippet(&self.redactor, &s)
                )
            })?,
        };
        let message = self
            .take_text(m, &["message", "msg"])?
            .ok_or("log record has no `message` (or `msg`) field")?;
        let module = self.take_text(m, &["module"])?;
        let function = self.take_text(m, &["function", "funcName"])?;
        let line = take_int(&self.redactor, m, &["line", "lineno"], i64::MIN)?.map(|(_, v)| v);
        let logger = self.take_text(m, &["logger", "name"])?;
        let traceback = self.take_text(m, &["traceback", "exc_text"])?;
        Ok(Log {
            level,
            message,
            module,
            function,
            line,
            logger,
            traceback,
            extra: self.extra(m)?,
        })
    }

    fn cost(&self, m: &mut Fields) -> Result<Cost, String> {
        let model = self.take_text(m, MODEL)?.ok_or("cost record has no `model` field")?;
        let reported = take_number(&self.redactor, m, &["cost"])?.map(|(_, c)| c);
        let currency = match take_str(&self.redactor, m, &["currency_symbol", "currency"])? {
            None => Currency::Usd,
            Some((name, s)) => Currency::parse(&s).ok_or_else(|| {
                format!(
                    "`{name}` {} is not a known currency; expected \"$\" (USD) or \"￥\" (CNY, RMB)",
                    snippet(&self.redactor, &s)
                )
            })?,
        };
        let input_tokens = take_count(
            &self.redactor,
            m,
            &[
                "input_tokens",
                "gen_ai.usage.input_tokens",
                "prompt_tokens",
                "gen_ai.usage.prompt_tokens",
            ],
        )?;
        let output_tokens = take_count(
            &self.redactor,
            m,
            &[
                "output_tokens",
                "gen_ai.usage.output_tokens",
                "completion_tokens",
                "gen_ai.usage.completion_tokens",
            ],
        )?;
        let total_tokens = match take_count(&self.redactor, m, &["total_tokens"])? {
            Some((_, total)) => Some(total),
            None => match (input_tokens, output_tokens) {
                (None, None) => None,
                (Some((_, one)), None) | (None, Some((_, one))) => Some(one),
                (Some((input_name, input)), Some((output_name, output))) => Some(
                    input
                        .checked_add(output)
                        .filter(|&total| total <= i64::MAX as u64)
                        .ok_or_else(|| {
                            format!(
                                "`{input_name}` + `{output_name}` ({input} + {output}) is over {}, the largest count stored; send `total_tokens` within range or smaller counts",
                                i64::MAX
                            )
                        })?,
                ),
            },
        };
        let cached_input_tokens = take_count(
            &self.redactor,
            m,
            &["cached_input_tokens", "gen_ai.usage.cache_read_input_tokens"],
        )?
        .map(|(_, n)| n);
        // Without an amount the tokens are priced from `[prices]` (see `Pricing`); without tokens
        // either, there is nothing to go on.
        let (cost, source) =
            match reported {
                Some(c) => (c, CostSource::Reported),
                None if input_tokens.is_some() || output_tokens.is_some() => (0.0, CostSource::Unpriced),
                None => return Err(
                    "cost record has no `cost` field (the amount, a number ≥ 0) and no token counts to price it from"
                        .into(),
                ),
            };
        let provider = self.take_text(m, PROVIDER)?;
        let request_id = self.take_text(m, &["request_id"])?;
        Ok(Cost {
            model,
            cost,
            currency,
            source,
            cached_input_tokens,
            input_tokens: input_tokens.map(|(_, n)| n),
            output_tokens: output_tokens.map(|(_, n)| n),
            total_tokens,
            provider,
            request_id,
            extra: self.extra(m)?,
        })
    }

    fn performance(&self, m: &mut Fields) -> Result<Performance, String> {
        let response_time = match take_number(&self.redactor, m, &["response_time", "duration"])? {
            Some((_, secs)) => secs,
            None => take_number(&self.redactor, m, &["duration_ms"])?
                .map(|(_, ms)| ms / 1000.0)
                .ok_or("performance record has no `response_time` field (seconds; or `duration`, `duration_ms`)")?,
        };
        let status = match take_str(&self.redactor, m, &["status"])? {
            Some((_, s)) => match s.to_ascii_lowercase().as_str() {
                "success" | "ok" => Status::Success,
                "error" | "failure" | "failed" => Status::Error,
                _ => {
                    return Err(format!(
                        "`status` {} is not a status; expected \"success\" or \"error\"",
                        snippet(&self.redactor, &s)
                    ))
                }
            },
            None => match m.remove("ok") {
                Some(Value::Bool(true)) => Status::Success,
                Some(Value::Bool(false)) => Status::Error,
                Some(other) => {
                    return Err(format!(
                        "`ok` must be true or false, got {}",
                        kind_of(&self.redactor, &other)
                    ))
                }
                None => {
                    return Err(
                        "performance record has no `status` field (\"success\" or \"error\"; or a boolean `ok`)".into(),
                    )
                }
            },
        };
        Ok(Performance {
            response_time,
            status,
            error: self.take_text(m, &["error"])?,
            model: self.take_text(m, MODEL)?,
            provider: self.take_text(m, PROVIDER)?,
            request_id: self.take_text(m, &["request_id"])?,
            first_chunk_time: take_number(&self.redactor, m, &["first_chunk_time"])?.map(|v| v.1),
            chunk_count: take_count(&self.redactor, m, &["chunk_count"])?.map(|(_, n)| n),
            extra: self.extra(m)?,
        })
    }

    /// A string field as stored: with any secret in it masked.
    fn take_text(&self, m: &mut Fields, names: &[&str]) -> Result<Option<String>, String> {
        let mut text = take_str(&self.redactor, m, names)?.map(|(_, s)| s);
        if let Some(s) = text.as_mut() {
            self.redactor.string_in_place(s);
        }
        Ok(text)
    }

    /// `extra` as sent, plus every field the kind does not know, redacted.
    ///
    /// A top-level field whose name is also inside `extra` is kept once when both values are
    /// equal (a logging adapter that copies context to both places); with different values the
    /// line is rejected, as for a repeated field: renaming one would only move the collision.
    fn extra(&self, rest: &mut Fields) -> Result<Map<String, Value>, String> {
        let mut extra = match rest.remove("extra") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(e)) => e,
            Some(other) => {
                return Err(format!(
                    "`extra` must be an object, got {}",
                    kind_of(&self.redactor, &other)
                ))
            }
        };
        for (k, v) in rest.take_rest() {
            match extra.get(&k) {
                None => {
                    extra.insert(k, v);
                }
                Some(inside) if *inside == v => {}
                Some(_) => {
                    return Err(format!(
                        "`{k}` is sent both at the top level and inside `extra`, with different values; send it once"
                    ))
                }
            }
        }
        self.redactor.map(&mut extra);
        Ok(extra)
    }
}

const MODEL: &[&str] = &["model", "gen_ai.request.model", "gen_ai.response.model"];
const PROVIDER: &[&str] = &["provider", "gen_ai.provider.name", "gen_ai.system"];

enum Kind {
    Log,
    Cost,
    Performance,
}

fn event_kind(r: &Redactor, m: &mut Fields) -> Result<Kind, String> {
    match m.remove("type") {
        Some(Value::String(t)) => match t.to_ascii_lowercase().as_str() {
            "log" => Ok(Kind::Log),
            "cost" => Ok(Kind::Cost),
            "performance" | "perf" => Ok(Kind::Performance),
            _ => Err(format!(
                "unknown event `type` {}; expected \"log\", \"cost\" or \"performance\"",
                snippet(r, &t)
            )),
        },
        Some(other) => Err(format!(
            "event `type` must be a string (\"log\", \"cost\" or \"performance\"), got {}",
            kind_of(r, &other)
        )),
        None if m.contains_key("cost") => Ok(Kind::Cost),
        None if m.contains_key("response_time") => Ok(Kind::Performance),
        None if m.contains_key("message") || m.contains_key("msg") => Ok(Kind::Log),
        // Without a message, a duration can only be a performance record.
        None if m.contains_key("duration") || m.contains_key("duration_ms") => Ok(Kind::Performance),
        None => Err(
            "cannot tell the kind of event: no `type` field, and none of `message`, `cost` or `response_time`".into(),
        ),
    }
}

/// How far ahead of its arrival an event's time may be: a century. Further ahead, no record of an
/// LLM call can be meant (a year 9999 from a bad default, epoch milliseconds read as seconds), and
/// the event would sit at the top of every listing for ever, out of retention's reach. A year 2099
/// from a clock set wrong is within it: stored as it is, flagged and counted at arrival
/// (`max_clock_skew`, see [`crate::event::Event::check_clock`]).
pub const MAX_AHEAD_MS: i64 = 100 * YEAR_MS;

/// 365.25 days.
const YEAR_MS: i64 = 36_525 * 86_400_000 / 100;

/// The first of `timestamp`, `created_at`, `created` present; the others stay for `extra`. A time
/// more than [`MAX_AHEAD_MS`] after `received` is refused.
fn take_time(
    r: &Redactor,
    naive: &NaiveZone,
    m: &mut Fields,
    received: Timestamp,
) -> Result<Option<Timestamp>, String> {
    let Some(name) = ["timestamp", "created_at", "created"]
        .into_iter()
        .find(|k| m.get(k).is_some_and(|v| !v.is_null()))
    else {
        return Ok(None);
    };
    let parsed = match m.remove(name) {
        Some(Value::String(s)) => {
            Timestamp::parse_rfc3339_in(&s, naive).map_err(|e| format!("`{name}` {} {e}", snippet(r, &s)))?
        }
        Some(Value::Number(n)) => {
            Timestamp::from_epoch_seconds(n.as_f64().unwrap_or(f64::NAN)).map_err(|e| format!("`{name}` {n} {e}"))?
        }
        Some(other) => {
            return Err(format!(
                "`{name}` must be an RFC 3339 string or epoch seconds, got {}",
                kind_of(r, &other)
            ))
        }
        None => return Ok(None),
    };
    let ahead = parsed.as_millis().saturating_sub(received.as_millis());
    if ahead > MAX_AHEAD_MS {
        return Err(format!(
            "`{name}` {} is {} years ahead of the collector's clock; times more than 100 years ahead are refused (they would top every listing for ever, past retention). Check the sender's clock, or the field's unit (epoch seconds, not milliseconds)",
            parsed,
            ahead / YEAR_MS,
        ));
    }
    Ok(Some(parsed))
}

/// The first present, non-null alias; removes it from the map.
fn take<'n>(m: &mut Fields, names: &[&'n str]) -> Option<(&'n str, Value)> {
    for &name in names {
        match m.remove(name) {
            None | Some(Value::Null) => continue,
            Some(v) => return Some((name, v)),
        }
    }
    None
}

fn take_str<'n>(r: &Redactor, m: &mut Fields, names: &[&'n str]) -> Result<Option<(&'n str, String)>, String> {
    match take(m, names) {
        None => Ok(None),
        Some((name, Value::String(s))) => Ok(Some((name, s))),
        Some((name, other)) => Err(format!("`{name}` must be a string, got {}", kind_of(r, &other))),
    }
}

fn take_number<'n>(r: &Redactor, m: &mut Fields, names: &[&'n str]) -> Result<Option<(&'n str, f64)>, String> {
    match take(m, names) {
        None => Ok(None),
        Some((name, Value::Number(n))) => match n.as_f64() {
            Some(x) if x >= 0.0 && x.is_finite() => Ok(Some((name, x))),
            _ => Err(format!("`{name}` must be a number ≥ 0, got {n}")),
        },
        Some((name, other)) => Err(format!("`{name}` must be a number ≥ 0, got {}", kind_of(r, &other))),
    }
}

/// A whole number from `min` up, within the 64-bit range both stores hold (`225.0` counts as 225).
fn take_int<'n>(r: &Redactor, m: &mut Fields, names: &[&'n str], min: i64) -> Result<Option<(&'n str, i64)>, String> {
    let Some((name, value)) = take(m, names) else {
        return Ok(None);
    };
    let Value::Number(n) = &value else {
        return Err(format!("`{name}` must be a whole number, got {}", kind_of(r, &value)));
    };
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    let int = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < TWO_POW_63 => f as i64,
        (None, Some(f)) if f.fract() == 0.0 => {
            let digits = m.exact_digits(name).map_or_else(|| n.to_string(), str::to_string);
            return Err(format!(
                "`{name}` {digits} is out of range; expected a whole number from {min} to {}",
                i64::MAX
            ));
        }
        _ => return Err(format!("`{name}` must be a whole number, got {n}")),
    };
    if int < min {
        return Err(format!("`{name}` must be a whole number ≥ {min}, got {int}"));
    }
    Ok(Some((name, int)))
}

/// A count (tokens, chunks): a whole number from 0 to `i64::MAX`.
fn take_count<'n>(r: &Redactor, m: &mut Fields, names: &[&'n str]) -> Result<Option<(&'n str, u64)>, String> {
    Ok(take_int(r, m, names, 0)?.map(|(name, n)| (name, n as u64)))
}

fn kind_of(r: &Redactor, v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({})", snippet(r, s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A value quoted for an error message, cut so that a reason stays one short line. Redacted
/// before it is cut: a cut secret may no longer look like one.
fn snippet(r: &Redactor, s: &str) -> String {
    const MAX: usize = 40;
    let s = r.text(s);
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::RedactConfig;
    use serde_json::json;

    fn parse(line: &str) -> Event {
        let parser = Parser::new(Arc::new(Redactor::new(&RedactConfig::default()).unwrap()));
        parser.parse(line.as_bytes(), &Source::from("test"), Timestamp(1_000), EventId::new())
    }

    fn reason(line: &str) -> String {
        match parse(line).body {
            Body::Reject(r) => r.reason,
            other => panic!("expected a reject for {line}, got {other:?}"),
        }
    }

    #[test]
    fn python_logging_names_map_to_log_fields() {
        let e = parse(
            r#"{"created": 1795680002.171, "levelname": "warn", "msg": "开始API调用", "name": "lngpt.api", "module": "llm_api", "funcName": "stream_chat", "lineno": 225, "request_id": "req-5", "thread": 1}"#,
        );
        assert_eq!(e.time, Timestamp(1_795_680_002_171));
        let Body::Log(log) = e.body else { panic!("not a log") };
        assert_eq!(log.level, Level::Warning);
        assert_eq!(log.message, "开始API调用");
        assert_eq!(log.logger.as_deref(), Some("lngpt.api"));
        assert_eq!(log.function.as_deref(), Some("stream_chat"));
        assert_eq!(log.line, Some(225));
        assert_eq!(Value::Object(log.extra), json!({"request_id": "req-5", "thread": 1}));
        let Body::Log(log) = parse(
            r#"{"msg": "x", "exc_text": "Traceback (most recent call last):\nValueError: token=abcdefgh12345678"}"#,
        )
        .body
        else {
            panic!("not a log")
        };
        assert_eq!(
            log.traceback.as_deref(),
            Some("Traceback (most recent call last):\nValueError: token=***5678"),
            "a traceback is a field of its own, redacted like the message"
        );
    }

    #[test]
    fn cost_aliases_currency_codes_and_total_tokens() {
        let e = parse(
            r#"{"model": "gpt-4o", "cost": 0.5, "currency": "cny", "prompt_tokens": 10, "gen_ai.usage.output_tokens": 5, "gen_ai.provider.name": "openai", "created_at": "2026-11-26T08:00:00Z"}"#,
        );
        let Body::Cost(c) = e.body else { panic!("not a cost") };
        assert_eq!(
            (c.currency, c.input_tokens, c.output_tokens, c.total_tokens),
            (Currency::Cny, Some(10), Some(5), Some(15))
        );
        assert_eq!(c.provider.as_deref(), Some("openai"));
        assert!(c.extra.is_empty());
        let Body::Cost(c) = parse(r#"{"type":"cost","gen_ai.request.model":"m","cost":1,"currency_symbol":"¥"}"#).body
        else {
            panic!()
        };
        assert_eq!(
            (c.model.as_str(), c.currency, c.total_tokens),
            ("m", Currency::Cny, None)
        );
    }

    #[test]
    fn a_time_more_than_a_century_ahead_of_arrival_is_refused_and_2099_is_not() {
        let parser = Parser::new(Arc::new(Redactor::disabled()));
        // Arrival: 2026-12-01.
        let received = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let at = |line: &str| parser.parse(line.as_bytes(), &Source::from("t"), received, EventId::new());
        let far = at(r#"{"message": "m", "timestamp": "9999-12-31T23:59:59Z"}"#);
        let Body::Reject(r) = &far.body else {
            panic!("year 9999 is refused: {far:?}")
        };
        assert!(
            r.reason.contains("`timestamp` 9999-12-31T23:59:59")
                && r.reason.contains("7972 years ahead")
                && r.reason.contains("more than 100 years ahead are refused"),
            "{}",
            r.reason
        );
        // Epoch seconds too, and just past the century.
        assert!(
            at(r#"{"message": "m", "created": 32503680000}"#).is_reject(),
            "year 3000"
        );
        assert!(at(r#"{"message": "m", "timestamp": "2127-01-01T00:00:00Z"}"#).is_reject());
        // A clock set wrong stays an event, its time as sent (flagged later by check_clock).
        let wrong = at(r#"{"message": "m", "timestamp": "2099-01-01T00:00:00Z"}"#);
        assert!(!wrong.is_reject());
        assert_eq!(wrong.time, Timestamp::parse_rfc3339("2099-01-01T00:00:00Z").unwrap());
        assert!(!at(r#"{"message": "m", "timestamp": "2126-11-30T00:00:00Z"}"#).is_reject());
    }

    #[test]
    fn performance_inference_and_units() {
        let Body::Performance(p) =
            parse(r#"{"response_time": 1.5, "ok": false, "error": "Authorization: Bearer abcdefghijklmnop"}"#).body
        else {
            panic!()
        };
        assert_eq!((p.response_time, p.status), (1.5, Status::Error));
        assert_eq!(p.error.as_deref(), Some("Authorization: Bearer ***mnop"));
        let Body::Performance(p) =
            parse(r#"{"type": "perf", "duration_ms": 250, "status": "success", "chunk_count": 3}"#).body
        else {
            panic!()
        };
        assert_eq!((p.response_time, p.chunk_count), (0.25, Some(3)));
        assert!(matches!(
            parse(r#"{"duration": 2, "status": "error"}"#).body,
            Body::Performance(_)
        ));
        assert!(matches!(
            parse(r#"{"message": "done", "duration": 2, "status": "error"}"#).body,
            Body::Log(_)
        ));
    }

    #[test]
    fn unknown_top_level_fields_and_secrets_land_redacted_in_extra() {
        let Body::Log(log) =
            parse(r#"{"message": "x", "api_key": "sk-abcdefghijklmnopqrst", "extra": {"tokens": 5}}"#).body
        else {
            panic!()
        };
        assert_eq!(Value::Object(log.extra), json!({"api_key": "***qrst", "tokens": 5}));
    }

    #[test]
    fn reasons_are_specific() {
        assert!(reason("{").starts_with("not valid JSON"));
        assert_eq!(reason("[1]"), "expected a JSON object per line, got an array");
        assert!(reason(r#"{"type": "metric"}"#).contains("unknown event `type` \"metric\""));
        assert!(reason(r#"{"type": "cost", "model": "m", "cost": -1}"#).contains("`cost` must be a number ≥ 0, got -1"));
        assert!(reason(r#"{"type": "log", "message": "x", "timestamp": 1795680002171}"#).contains("milliseconds"));
        assert!(reason(r#"{"type": "log", "message": "x", "line": "forty"}"#)
            .contains("`line` must be a whole number, got a string"));
        assert!(reason(r#"{"level": "INFO"}"#).contains("cannot tell the kind"));
        assert!(reason(r#"{"message": "x", "extra": [1]}"#).contains("`extra` must be an object"));
        let e = parse("{\"message\": \"\u{00e9}\"}");
        assert!(!e.is_reject());
        let bad = Parser::new(Arc::new(Redactor::disabled())).parse(
            b"{\"message\": \"\xff\"}",
            &Source::from("t"),
            Timestamp(0),
            EventId::new(),
        );
        let Body::Reject(r) = bad.body else { panic!() };
        assert!(r.reason.contains("UTF-8"));
    }

    #[test]
    fn a_field_sent_twice_is_rejected_by_name_at_any_depth() {
        for (line, field) in [
            (r#"{"type": "cost", "model": "m", "cost": -5, "cost": 3}"#, "cost"),
            (
                r#"{"type": "log", "type": "cost", "message": "x", "model": "m", "cost": 1}"#,
                "type",
            ),
            (r#"{"message": "x", "cost": null, "cost": 1}"#, "cost"),
            (r#"{"message": "x", "thread": 1, "thread": 1}"#, "thread"),
            (r#"{"message": "x", "extra": {"a": 1, "a": 2}}"#, "extra.a"),
            (r#"{"message": "x", "ctx": [{"k": 1}, {"k": 1, "k": 2}]}"#, "ctx[1].k"),
        ] {
            assert_eq!(
                reason(line),
                format!("field `{field}` appears twice; send it once"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_top_level_field_also_inside_extra_is_kept_once_if_equal_else_rejected() {
        let Body::Log(log) =
            parse(r#"{"message": "x", "request_id": "r1", "extra": {"request_id": "r1", "n": 1}}"#).body
        else {
            panic!()
        };
        assert_eq!(Value::Object(log.extra), json!({"request_id": "r1", "n": 1}));
        assert_eq!(
            reason(r#"{"message": "x", "request_id": "r1", "extra": {"request_id": "r2"}}"#),
            "`request_id` is sent both at the top level and inside `extra`, with different values; send it once"
        );
        // A known field the kind does not use counts as a top-level field too.
        assert!(
            reason(r#"{"type": "log", "message": "x", "cost": 1, "extra": {"cost": 2}}"#)
                .contains("`cost` is sent both")
        );
    }

    #[test]
    fn integers_beyond_64_bits_are_kept_as_their_exact_digits() {
        let Body::Log(log) = parse(concat!(
            r#"{"type": "log", "message": "x", "top": 123456789012345678901234567890, "cost": 99999999999999999999, "#,
            r#""extra": {"u64": 18446744073709551615, "neg": -9223372036854775809, "max": 9223372036854775807, "#,
            r#""min": -9223372036854775808, "float": 1e20, "list": [1, 36893488147419103232, 2.5]}}"#
        ))
        .body
        else {
            panic!()
        };
        assert_eq!(
            Value::Object(log.extra),
            json!({"top": "123456789012345678901234567890", "cost": "99999999999999999999",
                   "u64": "18446744073709551615", "neg": "-9223372036854775809", "max": i64::MAX, "min": i64::MIN,
                   "float": 1e20, "list": [1, "36893488147419103232", 2.5]})
        );
    }

    #[test]
    fn counts_beyond_64_bits_and_overflowing_token_sums_are_rejected() {
        let r = reason(r#"{"type": "cost", "model": "m", "cost": 1, "input_tokens": 9223372036854775808}"#);
        assert_eq!(
            r,
            "`input_tokens` 9223372036854775808 is out of range; expected a whole number from 0 to 9223372036854775807"
        );
        let r = reason(r#"{"message": "x", "lineno": -99999999999999999999}"#);
        assert!(r.starts_with("`lineno` -99999999999999999999 is out of range"), "{r}");
        let r = reason(r#"{"type": "perf", "response_time": 1, "ok": true, "chunk_count": 1e30}"#);
        assert!(r.starts_with("`chunk_count` 1e+30 is out of range"), "{r}");
        let r = reason(
            r#"{"type": "cost", "model": "m", "cost": 1, "prompt_tokens": 9223372036854775807, "output_tokens": 1}"#,
        );
        assert_eq!(
            r,
            "`prompt_tokens` + `output_tokens` (9223372036854775807 + 1) is over 9223372036854775807, the largest count stored; send `total_tokens` within range or smaller counts"
        );
        let Body::Cost(c) = parse(
            r#"{"type": "cost", "model": "m", "cost": 1, "input_tokens": 9223372036854775000, "output_tokens": 807}"#,
        )
        .body
        else {
            panic!()
        };
        assert_eq!(c.total_tokens, Some(i64::MAX as u64));
    }

    fn reason_of_bytes(line: &[u8]) -> String {
        let parser = Parser::new(Arc::new(Redactor::new(&RedactConfig::default()).unwrap()));
        match parser
            .parse(line, &Source::from("t"), Timestamp(0), EventId::new())
            .body
        {
            Body::Reject(r) => r.reason,
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    #[test]
    fn a_leading_utf8_byte_order_mark_is_skipped() {
        let parser = Parser::new(Arc::new(Redactor::disabled()));
        let e = parser.parse(
            b"\xEF\xBB\xBF{\"message\": \"bom\"}",
            &Source::from("t"),
            Timestamp(0),
            EventId::new(),
        );
        let Body::Log(log) = e.body else { panic!("{e:?}") };
        assert_eq!(log.message, "bom");
    }

    #[test]
    fn utf16_and_stray_byte_order_marks_are_named_in_the_reason() {
        let utf16le: Vec<u8> = "{\"message\": \"x\"}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let utf16be: Vec<u8> = "{\"message\": \"x\"}"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let with_bom = |bom: &[u8], body: &[u8]| [bom, body].concat();
        let r = reason_of_bytes(&with_bom(&[0xFF, 0xFE], &utf16le));
        assert!(
            r.contains("UTF-16") && r.contains("FF FE") && r.contains("write UTF-8"),
            "{r}"
        );
        let r = reason_of_bytes(&with_bom(&[0xFE, 0xFF], &utf16be));
        assert!(
            r.contains("UTF-16") && r.contains("FE FF") && r.contains("write UTF-8"),
            "{r}"
        );
        // Without a mark, as the second line of a UTF-16 file arrives (split at 0A, its 00 left in front).
        for line in [
            &utf16le[..],
            &utf16be[..],
            &[&[0u8][..], &utf16le[..utf16le.len() - 1]].concat()[..],
        ] {
            let r = reason_of_bytes(line);
            assert!(r.contains("UTF-16") && r.contains("write UTF-8"), "{r}");
        }
        let r = reason_of_bytes(b"{\"message\": \"x\"}\xEF\xBB\xBF");
        assert!(r.contains("byte order mark") && r.contains("byte 16"), "{r}");
        // Plain invalid JSON is still described as such.
        assert!(reason_of_bytes(b"{oops").starts_with("not valid JSON"));
    }

    #[test]
    fn rejects_keep_a_redacted_raw_line_cut_at_64_kib() {
        let long = format!(
            r#"{{"message": "Bearer abcdefghijklmnopqrstuvwxyz", "pad": "{}"#,
            "x".repeat(100_000)
        );
        let Body::Reject(r) = parse(&long).body else { panic!() };
        assert_eq!(r.raw_len, long.len());
        assert!(r.raw.len() <= MAX_RAW_BYTES);
        assert!(r.raw.contains("Bearer ***wxyz"), "{}", &r.raw[..60]);
    }
}
