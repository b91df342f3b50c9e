//! Lines → records: a header line starts a record, the lines after it that are not headers (a
//! traceback, a message with newlines) belong to it, and the record is complete when the next
//! header comes, when the file has had no new data for `multiline_timeout`, or when the file was
//! rotated away and read to its end (the tailer says so: [`Records::complete_open`]).
//!
//! **Exactly once.** A record's id is derived from the offset of its first line, and while a record
//! is open the offset the tailer may checkpoint is that first line's ([`Records::committed`]): a
//! crash or a stop with a record half read reads it again whole, under the same id.
//!
//! **Lines that continue nothing** (the first lines of a file that a rotation cut inside a record,
//! a line after a record completed by the timeout, text in another format) are gathered, while
//! they follow one another, into one reject that names the pattern.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::pattern::{Attr, Captures, Shape};
use super::TextFormat;
use crate::event::{Body as EventBody, Event, EventId, Level, Log, Timestamp, MAX_RAW_BYTES};
use crate::source::lines::Frame;
use crate::source::Ingest;

use super::datefmt::ZoneCache;

/// Where completed records go: the events of the chunk being read.
pub struct Out<'a> {
    pub ingest: &'a Ingest,
    pub events: &'a mut Vec<Event>,
    pub received: Timestamp,
    /// The file's fingerprint, for the ids.
    pub fingerprint: u64,
}

/// The record assembly of one file.
pub struct Records {
    format: Arc<TextFormat>,
    zone: ZoneCache,
    /// Reading began at the file's beginning and no line but blank ones came yet: lines that
    /// continue nothing now are the file's first.
    at_file_start: bool,
    open: Option<Open>,
    /// When the file last had new data: the open record is complete `multiline_timeout` after.
    last_data: Option<Instant>,
}

struct Open {
    /// Offset of the first line: the id, and the checkpoint while the record is open.
    start: u64,
    /// Bytes of its lines as written, newlines between them counted.
    bytes: usize,
    lines: usize,
    body: Body,
}

enum Body {
    Record(Box<Partial>),
    /// Becomes a reject: the lines as read (cut at [`MAX_RAW_BYTES`]) and why.
    Raw {
        why: Why,
        text: String,
    },
}

enum Why {
    /// The header's values are wrong (an unknown level, an impossible date).
    Invalid(String),
    /// Lines that are no header and follow no record.
    Orphan { first_in_file: bool },
}

/// A record being assembled: the event's fields, its message growing line by line.
#[derive(Default)]
struct Partial {
    time: Option<Timestamp>,
    level: Option<Level>,
    logger: Option<String>,
    module: Option<String>,
    function: Option<String>,
    line: Option<i64>,
    extra: Map<String, Value>,
    message: String,
    traceback: Option<String>,
    /// The fields after `%(message)s` were not on the first line (see [`Records::complete`]).
    suffix_missing: bool,
    /// Bytes past `max_line_bytes` (or of a line over it) that are not kept.
    cut: usize,
}

impl Records {
    /// `from_start`: reading begins at the file's first line (not where an earlier reading stopped).
    pub fn new(format: Arc<TextFormat>, from_start: bool) -> Records {
        let zone = ZoneCache::new(format.zone.clone());
        Records {
            format,
            zone,
            at_file_start: from_start,
            open: None,
            last_data: None,
        }
    }

    /// Bytes arrived from the file (complete lines or not): the open record waits on.
    pub fn data_arrived(&mut self, now: Instant) {
        self.last_data = Some(now);
    }

    /// Where reading may resume without losing or repeating a record: the first line of the open
    /// record, or `decoded` (past the last complete line) when none is open.
    pub fn committed(&self, decoded: u64) -> u64 {
        self.open.as_ref().map_or(decoded, |o| o.start)
    }

    /// Whether a record is open (the file must stay open and be read until it completes).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Memory the open record holds, for the budget.
    pub fn held(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.bytes.min(self.format.max_bytes))
    }

    /// When the open record is complete if no more data comes.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref()?;
        Some(self.last_data? + self.format.timeout)
    }

    /// One line of the file, from the decoder (blank lines included).
    pub fn line(&mut self, frame: Frame<'_>, start: u64, out: &mut Out<'_>) {
        let (bytes, len) = match frame {
            Frame::Line(line) => (line, line.len()),
            // The decoder keeps up to `max_line_bytes` of it; a character cut in two at the end is
            // not kept (it would read as U+FFFD) but counted as cut.
            Frame::TooLong { head, len } => (whole_characters(head), len),
        };
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        if let Some(caps) = self.format.pattern.header(text) {
            self.at_file_start = false;
            self.complete(out);
            let body = match self.read_header(&caps) {
                Ok(mut p) => {
                    p.cut = len - bytes.len();
                    Body::Record(p)
                }
                Err(reason) => Body::Raw {
                    why: Why::Invalid(reason),
                    text: cut_raw(text, 0).to_string(),
                },
            };
            self.open = Some(Open {
                start,
                bytes: len,
                lines: 1,
                body,
            });
            return;
        }
        let max = self.format.max_bytes;
        match &mut self.open {
            Some(open) => open.add(text, len, len - bytes.len(), max),
            None if text.bytes().all(|b| b.is_ascii_whitespace()) => {} // between records
            None => {
                let first_in_file = std::mem::replace(&mut self.at_file_start, false);
                self.open = Some(Open {
                    start,
                    bytes: len,
                    lines: 1,
                    body: Body::Raw {
                        why: Why::Orphan { first_in_file },
                        text: cut_raw(text, 0).to_string(),
                    },
                })
            }
        }
    }

    /// Completes the open record if the file has had no new data for `multiline_timeout`.
    pub fn complete_if_due(&mut self, now: Instant, out: &mut Out<'_>) -> bool {
        if self.deadline().is_some_and(|d| now >= d) {
            self.complete(out);
            return true;
        }
        false
    }

    /// Completes the open record, if any, whatever the time: its file ended between two records
    /// (rotated away). Returns whether there was one.
    pub fn complete_open(&mut self, out: &mut Out<'_>) -> bool {
        let open = self.open.is_some();
        self.complete(out);
        open
    }

    /// Turns the open record, if any, into its event (or reject) in `out`.
    pub fn complete(&mut self, out: &mut Out<'_>) {
        let Some(open) = self.open.take() else { return };
        let id = EventId::derived(out.fingerprint, open.start);
        let (ingest, received) = (out.ingest, out.received);
        let event = match open.body {
            Body::Record(p) => self.event(*p, id, received, ingest),
            Body::Raw { why, text } => {
                let reason = match why {
                    Why::Invalid(reason) => reason,
                    Why::Orphan { first_in_file } => self.orphan_reason(open.lines, first_in_file),
                };
                Event::reject(
                    id,
                    ingest.source().clone(),
                    received,
                    reason,
                    text.as_bytes(),
                    open.bytes,
                    ingest.redactor(),
                )
            }
        };
        ingest.push_event(out.events, event, open.bytes);
    }

    fn orphan_reason(&self, lines: usize, first_in_file: bool) -> String {
        let what = if lines == 1 {
            "line does not match".to_string()
        } else {
            format!("{lines} lines do not match")
        };
        let why = if first_in_file {
            "they begin the file, so there is no record they could continue (the end of a record that a rotation cut, or text in another format)"
        } else {
            "they follow no record they could continue (the one before was taken as complete after multiline_timeout without more data, or this is text in another format)"
        };
        format!(
            "{what} the pattern `{}` (format = \"python\"), and {why}",
            self.format.pattern.text()
        )
    }

    /// The fields of a header line.
    fn read_header(&mut self, caps: &Captures<'_>) -> Result<Box<Partial>, String> {
        let mut p = Box::<Partial>::default();
        self.apply(&mut p, caps, true)?;
        p.suffix_missing = caps.suffix_missing;
        Ok(p)
    }

    /// Puts what `caps` holds into `p`: named fields into theirs, the others into `extra`.
    fn apply(&mut self, p: &mut Partial, caps: &Captures<'_>, header: bool) -> Result<(), String> {
        let pattern = &self.format.pattern;
        let (mut msecs, mut created, mut levelno, mut asctime) = (None, None, None, None);
        for (i, f) in pattern.fields().iter().enumerate() {
            let Some(v) = caps.get(i) else { continue };
            match f.attr {
                Attr::Asctime => asctime = Some(v),
                Attr::Created => created = Some(v),
                Attr::Msecs => msecs = Some(v),
                Attr::Levelno => levelno = Some(v),
                Attr::Name => p.logger = Some(v.to_string()),
                Attr::Module => p.module = Some(v.to_string()),
                Attr::FuncName => p.function = Some(v.to_string()),
                Attr::Levelname => match caps.level {
                    Some(level) => p.level = Some(level),
                    None => {
                        return Err(format!(
                            "`levelname` {} is not a log level; expected DEBUG, INFO, WARNING, ERROR or CRITICAL",
                            quote(v)
                        ))
                    }
                },
                Attr::Lineno => {
                    p.line = Some(v.parse().map_err(|_| {
                        format!(
                            "`lineno` {} is out of range; expected a whole number within 64 bits",
                            quote(v)
                        )
                    })?)
                }
                Attr::Message => {
                    if header {
                        p.message = v.to_string();
                    }
                }
                Attr::Extra => {
                    p.extra.insert(f.name.to_string(), value_of(f.shape, v));
                }
            }
        }
        if p.level.is_none() {
            if let Some(n) = levelno {
                p.level = Some(level_of_number(n).ok_or_else(|| format!("`levelno` {} is not a number", quote(n)))?);
            }
        }
        let millis = match msecs {
            None => None,
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|m| (0.0..1000.0).contains(m))
                    .map(|m| m as i64)
                    .ok_or_else(|| format!("`msecs` {} is not a number of milliseconds from 0 to 999", quote(v)))?,
            ),
        };
        if let Some(civil) = caps.civil {
            let shown = asctime.unwrap_or_default();
            p.time = Some(
                civil
                    .with_millis(millis)
                    .to_timestamp(&mut self.zone)
                    .map_err(|e| format!("`asctime` {} {e}", quote(shown)))?,
            );
        } else if let Some(v) = created {
            let secs: f64 = v
                .parse()
                .map_err(|_| format!("`created` {} is not a number", quote(v)))?;
            p.time = Some(Timestamp::from_epoch_seconds(secs).map_err(|e| format!("`created` {v} {e}"))?);
        }
        Ok(())
    }

    /// The log event of a complete record.
    fn event(&mut self, mut p: Partial, id: EventId, received: Timestamp, ingest: &Ingest) -> Event {
        if p.suffix_missing {
            self.read_trailing_fields(&mut p);
        }
        if p.cut > 0 {
            p.extra.insert("cut_bytes".into(), Value::from(p.cut as u64));
        }
        let r = ingest.redactor();
        for s in [&mut p.logger, &mut p.module, &mut p.function, &mut p.traceback]
            .into_iter()
            .flatten()
        {
            r.string_in_place(s);
        }
        r.string_in_place(&mut p.message);
        r.map(&mut p.extra);
        let mut event = Event {
            id,
            time: p.time.unwrap_or(received),
            source: ingest.source().clone(),
            body: EventBody::Log(Log {
                level: p.level.unwrap_or(Level::Info),
                message: p.message,
                module: p.module,
                function: p.function,
                line: p.line,
                logger: p.logger,
                traceback: p.traceback,
                extra: p.extra,
            }),
            received: None,
            held_bytes: 0,
        };
        ingest.check_clock(&mut event, received);
        event
    }

    /// A message with newlines has the pattern's fields after `%(message)s` at the end of its last
    /// line (Python formats the message, then appends the traceback): read them from there.
    fn read_trailing_fields(&mut self, p: &mut Partial) {
        let Some(nl) = p.message.rfind('\n') else { return };
        let message = std::mem::take(&mut p.message);
        let mut fields = Partial::default();
        let found = match self.format.pattern.trailing(&message[nl + 1..]) {
            Some((cut, caps)) => self.apply(&mut fields, &caps, false).is_ok().then_some(cut),
            None => None,
        };
        p.message = message;
        if let Some(cut) = found {
            p.message.truncate(nl + 1 + cut);
            p.logger = fields.logger.or(p.logger.take());
            p.module = fields.module.or(p.module.take());
            p.function = fields.function.or(p.function.take());
            p.line = fields.line.or(p.line);
            p.level = fields.level.or(p.level);
            p.time = fields.time.or(p.time);
            p.extra.extend(fields.extra);
        }
    }
}

impl Open {
    /// A continuation line of `len` bytes, of which `dropped` did not reach `text` (a line over
    /// `max_line_bytes` comes as its first `max_line_bytes`). A record keeps its lines up to `max`
    /// bytes as written, newlines included: the line that crosses it keeps the part that fits.
    fn add(&mut self, text: &str, len: usize, dropped: usize, max: usize) {
        let before = self.bytes;
        self.bytes += len + 1;
        self.lines += 1;
        match &mut self.body {
            Body::Record(p) => {
                let room = max.saturating_sub(before + 1);
                if p.cut > 0 || room == 0 {
                    p.cut += len + 1;
                    return;
                }
                let text = if text.len() > room {
                    let kept = floor_char_boundary(text, room);
                    p.cut += len - kept;
                    &text[..kept]
                } else {
                    p.cut += dropped;
                    text
                };
                match &mut p.traceback {
                    Some(tb) => {
                        tb.push('\n');
                        tb.push_str(text);
                    }
                    None if starts_traceback(text) => p.traceback = Some(text.to_string()),
                    None => {
                        p.message.push('\n');
                        p.message.push_str(text);
                    }
                }
            }
            Body::Raw { text: raw, .. } => {
                if raw.len() < MAX_RAW_BYTES {
                    raw.push('\n');
                    let room = MAX_RAW_BYTES - raw.len();
                    raw.push_str(cut_raw(text, room));
                }
            }
        }
    }
}

/// The lines where Python's traceback output begins: an exception's, an exception group's, or
/// `stack_info`'s. Everything from there on is the record's `traceback`.
fn starts_traceback(line: &str) -> bool {
    line.starts_with("Traceback (most recent call last):")
        || line.starts_with("Stack (most recent call last):")
        || line
            .trim_start_matches([' ', '|', '+'])
            .starts_with("Exception Group Traceback (most recent call last):")
}

/// The longest prefix of `bytes` that does not end inside a UTF-8 character.
fn whole_characters(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => &bytes[..e.valid_up_to()],
        _ => bytes,
    }
}

/// The largest character boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut end = at.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// `text` cut to at most `room` bytes (all of [`MAX_RAW_BYTES`] for 0) on a character boundary.
fn cut_raw(text: &str, room: usize) -> &str {
    let room = if room == 0 { MAX_RAW_BYTES } else { room };
    &text[..floor_char_boundary(text, room)]
}

/// An `extra` value as its conversion wrote it: integers and numbers as numbers (a value out of
/// their range stays text, exactly as written).
fn value_of(shape: Shape, v: &str) -> Value {
    match shape {
        Shape::Integer => v.parse::<i64>().map_or_else(|_| Value::from(v), Value::from),
        Shape::Number => v
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::from(v), Value::Number),
        _ => Value::from(v),
    }
}

/// Python's levels are numbers: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL; a custom
/// level counts as the standard one at or below it (25 is INFO).
fn level_of_number(v: &str) -> Option<Level> {
    let n: i64 = v.trim().parse().ok()?;
    Some(if n < 20 {
        Level::Debug
    } else if n < 30 {
        Level::Info
    } else if n < 40 {
        Level::Warning
    } else if n < 50 {
        Level::Error
    } else {
        Level::Critical
    })
}

/// A value quoted for a reason, cut so that the reason stays one short line.
fn quote(v: &str) -> String {
    let cut: String = v.chars().take(40).collect();
    if cut.len() < v.len() {
        format!("{cut:?}…")
    } else {
        format!("{v:?}")
    }
}
