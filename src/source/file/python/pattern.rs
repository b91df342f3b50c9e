//! The `%`-style format string of a `logging.Formatter` (`%(asctime)s - %(name)s - …`), compiled
//! once into literals and fields and matched against each line without a regular expression.
//!
//! A field ends where its shape ends (a time, digits, a level name) or, for free text, at the
//! first occurrence of the literal after it: logger and module names do not contain the
//! separators people put between fields. `%(message)s` is the exception, since a message can
//! contain anything: it takes the rest of the line, up to the last place where the fields after it
//! (if any) match through to the end of the line.

use memchr::memmem;

use super::datefmt::{Civil, DateFormat};
use crate::event::Level;

/// Fields a pattern may hold; more is surely a mistake (logging has about 20 attributes).
pub const MAX_FIELDS: usize = 24;

/// How many places for the literal after `%(message)s` are tried, from the right, before the
/// fields after it are taken as absent: bounds the work on a line full of that literal.
const SUFFIX_TRIES: usize = 16;

/// The `LogRecord` attributes the event has a place for; any other goes into `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Asctime,
    Created,
    Msecs,
    Name,
    Levelname,
    Levelno,
    Module,
    FuncName,
    Lineno,
    Message,
    Extra,
}

/// What a field's text looks like, which is also how its end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Time,
    Integer,
    Number,
    Level,
    Text,
}

/// What comes right after a field in the pattern.
#[derive(Debug, Clone)]
enum Next {
    /// A literal, with its searcher built once (it is looked for on every line).
    Literal(Box<memmem::Finder<'static>>),
    Field,
    End,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub attr: Attr,
    /// The attribute's name as written (`process`, `request_id`): its key in `extra`.
    pub name: Box<str>,
    pub shape: Shape,
    /// Minimum width (`%(levelname)-8s`), padded with spaces; 0 for none.
    width: usize,
    /// Left-justified (`-`): padding follows the value.
    left: bool,
    /// `.N`: the value was cut to N characters.
    precision: Option<usize>,
    next: Next,
    /// A level name logging does not define is accepted (and rejected later, with a reason) only
    /// after a time field: without that anchor, `ValueError: x` in a traceback would look like a
    /// record of level `ValueError` under a `%(levelname)s: %(message)s` pattern.
    any_level: bool,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(Box<str>),
    Field(usize),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: Box<str>,
    pieces: Vec<Piece>,
    fields: Vec<Field>,
    /// Index in `pieces` of `%(message)s`.
    message: usize,
    date: DateFormat,
}

/// What a line held, field by field (indexes of [`Pattern::fields`]).
#[derive(Clone, Copy)]
pub struct Captures<'a> {
    values: [&'a str; MAX_FIELDS],
    found: u32,
    /// The time `%(asctime)s` held, read.
    pub civil: Option<Civil>,
    /// Set for a level name logging defines; a level field without it holds another name.
    pub level: Option<Level>,
    /// The fields after `%(message)s` did not match this line: a message with newlines has them
    /// at the end of its last line.
    pub suffix_missing: bool,
}

impl<'a> Captures<'a> {
    fn new() -> Captures<'a> {
        Captures {
            values: [""; MAX_FIELDS],
            found: 0,
            civil: None,
            level: None,
            suffix_missing: false,
        }
    }

    fn set(&mut self, i: usize, value: &'a str) {
        self.values[i] = value;
        self.found |= 1 << i;
    }

    pub fn get(&self, i: usize) -> Option<&'a str> {
        (self.found & (1 << i) != 0).then(|| self.values[i])
    }
}

/// Level names logging defines, longest first so that a prefix match takes the whole name.
const LEVELS: [(&str, Level); 7] = [
    ("CRITICAL", Level::Critical),
    ("WARNING", Level::Warning),
    ("ERROR", Level::Error),
    ("DEBUG", Level::Debug),
    ("FATAL", Level::Critical),
    ("INFO", Level::Info),
    ("WARN", Level::Warning),
];

impl Pattern {
    /// Compiles `pattern`, with `datefmt` for `%(asctime)s` (logging's default without one). The
    /// error is (`pattern` or `datefmt`, what is wrong and what to write).
    pub fn compile(pattern: &str, datefmt: Option<&str>) -> Result<Pattern, (&'static str, String)> {
        let date = match datefmt {
            Some(f) => DateFormat::compile(f).map_err(|e| ("datefmt", e))?,
            None => DateFormat::logging_default(),
        };
        let (pieces, fields) = parse(pattern).map_err(|e| ("pattern", e))?;
        Pattern::assemble(pattern, pieces, fields, date).map_err(|e| ("pattern", e))
    }

    fn assemble(text: &str, pieces: Vec<Piece>, mut fields: Vec<Field>, date: DateFormat) -> Result<Pattern, String> {
        let message = pieces
            .iter()
            .position(|p| matches!(p, Piece::Field(i) if fields[*i].attr == Attr::Message))
            .ok_or_else(|| {
                if text.contains("{message}") || text.contains("$message") {
                    "has no `%(message)s`; only logging's default `%` style is read (style=\"{\" and \"$\" formats are not): write the fields as `%(name)s`".to_string()
                } else {
                    "has no `%(message)s`, so a record's message could not be found; add it, as in \"%(asctime)s - %(name)s - %(levelname)s - %(message)s\"".to_string()
                }
            })?;
        let mut seen_time = false;
        for (k, piece) in pieces.iter().enumerate() {
            let Piece::Field(i) = piece else { continue };
            let next = match pieces.get(k + 1) {
                Some(Piece::Literal(l)) => Next::Literal(Box::new(memmem::Finder::new(l.as_bytes()).into_owned())),
                Some(Piece::Field(j)) => {
                    let f = &fields[*i];
                    if f.shape == Shape::Text || f.attr == Attr::Message {
                        return Err(format!(
                            "has `%({})…` followed directly by `%({})…`, so where one ends cannot be told; put a separator between them, such as \" - \"",
                            f.name, fields[*j].name
                        ));
                    }
                    Next::Field
                }
                None => Next::End,
            };
            let f = &mut fields[*i];
            f.any_level = f.shape == Shape::Level && seen_time && matches!(next, Next::Literal(_));
            seen_time |= f.shape == Shape::Time || f.attr == Attr::Created;
            f.next = next;
        }
        Ok(Pattern {
            text: text.into(),
            pieces,
            fields,
            message,
            date,
        })
    }

    /// The pattern as configured, for reasons.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The index of `%(message)s` among the fields.
    pub fn message_field(&self) -> usize {
        match self.pieces[self.message] {
            Piece::Field(i) => i,
            Piece::Literal(_) => 0,
        }
    }

    /// Reads `line` as the first line of a record. None if it is not one (a continuation line).
    pub fn header<'a>(&self, line: &'a str) -> Option<Captures<'a>> {
        let mut caps = Captures::new();
        let pos = self.run(&self.pieces[..self.message], line, 0, &mut caps)?;
        let message = self.message_field();
        if self.message + 1 == self.pieces.len() {
            caps.set(message, &line[pos..]);
            return Some(caps);
        }
        match self.suffix(line, pos, &mut caps) {
            Some(cut) => caps.set(message, &line[pos..cut]),
            // With something before the message to recognize a record by, the fields after it
            // may be on a later line (a message with newlines).
            None if self.message > 0 => {
                caps.set(message, &line[pos..]);
                caps.suffix_missing = true;
            }
            None => return None,
        }
        Some(caps)
    }

    /// The fields after `%(message)s` at the end of `text` (the last line of a message with
    /// newlines): where they begin, and what they hold.
    pub fn trailing<'a>(&self, text: &'a str) -> Option<(usize, Captures<'a>)> {
        if self.message + 1 == self.pieces.len() {
            return None;
        }
        let mut caps = Captures::new();
        self.suffix(text, 0, &mut caps).map(|cut| (cut, caps))
    }

    /// Matches the pieces after the message so that they end exactly at the end of `line`,
    /// trying the places of their first literal from the right. Returns where they begin.
    fn suffix<'a>(&self, line: &'a str, from: usize, caps: &mut Captures<'a>) -> Option<usize> {
        let suffix = &self.pieces[self.message + 1..];
        let Some(Piece::Literal(first)) = suffix.first() else {
            return None;
        };
        let hay = &line.as_bytes()[from..];
        for at in memmem::rfind_iter(hay, first.as_bytes()).take(SUFFIX_TRIES) {
            let mut trial = *caps;
            if self.run(suffix, line, from + at, &mut trial) == Some(line.len()) {
                *caps = trial;
                return Some(from + at);
            }
        }
        None
    }

    fn run<'a>(&self, pieces: &[Piece], line: &'a str, mut pos: usize, caps: &mut Captures<'a>) -> Option<usize> {
        for piece in pieces {
            match piece {
                Piece::Literal(l) => {
                    if !line.as_bytes()[pos..].starts_with(l.as_bytes()) {
                        return None;
                    }
                    pos += l.len();
                }
                Piece::Field(i) => pos = self.field(*i, line, pos, caps)?,
            }
        }
        Some(pos)
    }

    /// Reads field `i` at `pos`; returns where it ends, padding included.
    fn field<'a>(&self, i: usize, line: &'a str, begin: usize, caps: &mut Captures<'a>) -> Option<usize> {
        let f = &self.fields[i];
        let b = line.as_bytes();
        let mut pos = begin;
        if f.width > 0 && !f.left {
            while b.get(pos) == Some(&b' ') {
                pos += 1;
            }
        }
        // Free text ends at the literal after it; a left-justified field fills at least its width,
        // so that literal is looked for past the padding (which may be made of its characters).
        let delimited = |pos: usize| -> Option<usize> {
            let from = if f.left && f.width > 0 {
                line[pos..]
                    .char_indices()
                    .nth(f.width)
                    .map_or(b.len(), |(n, _)| pos + n)
            } else {
                pos
            };
            match &f.next {
                Next::Literal(finder) => finder.find(&b[from..]).map(|at| from + at),
                Next::End => Some(b.len()),
                Next::Field => None,
            }
        };
        let end = match f.shape {
            Shape::Time => {
                let (civil, n) = self.date.read(&line[pos..])?;
                caps.civil = Some(civil);
                pos + n
            }
            Shape::Integer => number_end(b, pos, false)?,
            Shape::Number => number_end(b, pos, true)?,
            Shape::Level => match &f.next {
                Next::Literal(_) => {
                    let end = delimited(pos)?;
                    let name = line[pos..end].trim_end_matches(' ');
                    match LEVELS.iter().find(|(known, _)| truncated(known, f.precision) == name) {
                        Some((_, level)) => caps.level = Some(*level),
                        None if f.any_level && !name.is_empty() && !name.contains(' ') => {}
                        None => return None,
                    }
                    end
                }
                _ => {
                    let (known, level) = LEVELS.iter().find_map(|(known, level)| {
                        let known = truncated(known, f.precision);
                        b[pos..].starts_with(known.as_bytes()).then_some((known, *level))
                    })?;
                    caps.level = Some(level);
                    pos + known.len()
                }
            },
            Shape::Text => delimited(pos)?,
        };
        let value = &line[pos..end];
        caps.set(
            i,
            if f.width > 0 && f.left {
                value.trim_end_matches(' ')
            } else {
                value
            },
        );
        // Padding after a value whose end its shape found (free text took its padding along).
        let mut end = end;
        let padded_after = match f.shape {
            Shape::Text => false,
            Shape::Level => !matches!(f.next, Next::Literal(_)),
            Shape::Time | Shape::Integer | Shape::Number => true,
        };
        if f.width > 0 && f.left && padded_after {
            while end - begin < f.width && b.get(end) == Some(&b' ') {
                end += 1;
            }
        }
        Some(end)
    }
}

/// `name` cut to `precision` characters (level names are ASCII).
fn truncated(name: &str, precision: Option<usize>) -> &str {
    match precision {
        Some(p) if p < name.len() => &name[..p],
        _ => name,
    }
}

/// Where a number that starts at `pos` ends: a sign, digits, and for `fraction` a decimal part and
/// an exponent. None if there are no digits.
fn number_end(b: &[u8], mut pos: usize, fraction: bool) -> Option<usize> {
    if matches!(b.get(pos), Some(b'-' | b'+')) {
        pos += 1;
    }
    let digits = |mut p: usize| {
        while b.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        p
    };
    let int_end = digits(pos);
    if int_end == pos {
        return None;
    }
    let mut end = int_end;
    if fraction {
        if b.get(end) == Some(&b'.') {
            end = digits(end + 1);
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let mut p = end + 1;
            if matches!(b.get(p), Some(b'-' | b'+')) {
                p += 1;
            }
            let e_end = digits(p);
            if e_end > p {
                end = e_end;
            }
        }
    }
    Some(end)
}

/// Splits a pattern into literals and fields, each field with its conversion checked.
fn parse(pattern: &str) -> Result<(Vec<Piece>, Vec<Field>), String> {
    let mut pieces = Vec::new();
    let mut fields: Vec<Field> = Vec::new();
    let mut literal = String::new();
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(rel) = memchr::memchr(b'%', &b[i..]) else {
            literal.push_str(&pattern[i..]);
            break;
        };
        literal.push_str(&pattern[i..i + rel]);
        let at = i + rel;
        i = at + 1;
        match b.get(i) {
            Some(b'%') => {
                literal.push('%');
                i += 1;
                continue;
            }
            Some(b'(') => {}
            Some(_) => {
                let end = (i + 1).min(b.len());
                return Err(format!(
                    "has `%{}` at byte {at} without an attribute name; logging patterns name each field, as in `%(message)s` (write `%%` for a percent sign)",
                    String::from_utf8_lossy(&b[i..end])
                ));
            }
            None => {
                return Err(format!(
                    "ends with a lone `%` at byte {at}; write `%%` for a percent sign"
                ))
            }
        }
        let close = memchr::memchr(b')', &b[i..])
            .map(|c| i + c)
            .ok_or_else(|| format!("has `%(` at byte {at} without its closing `)`"))?;
        let name = &pattern[i + 1..close];
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!(
                "has `%({name})` at byte {at}: expected a LogRecord attribute such as `asctime`, `name`, `levelname` or `message`"
            ));
        }
        i = close + 1;
        let mut left = false;
        while let Some(&flag @ (b'-' | b'0' | b' ' | b'+' | b'#')) = b.get(i) {
            left |= flag == b'-';
            i += 1;
        }
        let mut width = 0usize;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            width = width.saturating_mul(10).saturating_add(usize::from(d - b'0'));
            i += 1;
        }
        let mut precision = None;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let mut p = 0usize;
            while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                p = p.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                i += 1;
            }
            precision = Some(p);
        }
        while matches!(b.get(i), Some(b'h' | b'l' | b'L')) {
            i += 1;
        }
        let Some(&conversion) = b.get(i).filter(|c| c.is_ascii()) else {
            return Err(format!(
                "has `%({name})` at byte {at} without a conversion after it; write `%({name})s`"
            ));
        };
        i += 1;
        let spelled = &pattern[at..i];
        let field = field(name, conversion as char, spelled, width, left, precision)?;
        if fields.iter().any(|f| f.name == field.name) {
            return Err(format!("has `%({name})` twice; each attribute can be read once"));
        }
        if fields.len() == MAX_FIELDS {
            return Err(format!("has more than {MAX_FIELDS} fields"));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
        }
        pieces.push(Piece::Field(fields.len()));
        fields.push(field);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal.into()));
    }
    Ok((pieces, fields))
}

/// One field: its attribute and the shape its conversion writes.
fn field(
    name: &str,
    conversion: char,
    spelled: &str,
    width: usize,
    left: bool,
    precision: Option<usize>,
) -> Result<Field, String> {
    let attr = match name {
        "asctime" => Attr::Asctime,
        "created" => Attr::Created,
        "msecs" => Attr::Msecs,
        "name" => Attr::Name,
        "levelname" => Attr::Levelname,
        "levelno" => Attr::Levelno,
        "module" => Attr::Module,
        "funcName" => Attr::FuncName,
        "lineno" => Attr::Lineno,
        "message" => Attr::Message,
        _ => Attr::Extra,
    };
    let numeric = match conversion {
        'd' | 'i' | 'u' => Some(Shape::Integer),
        'f' | 'F' | 'e' | 'E' | 'g' | 'G' => Some(Shape::Number),
        's' | 'r' | 'a' => None,
        other => {
            return Err(format!(
                "has `{spelled}`: `{other}` is not a conversion logging patterns use; expected s, d or f"
            ))
        }
    };
    let shape = match (attr, numeric) {
        (Attr::Asctime, None) => Shape::Time,
        (Attr::Levelname, None) => Shape::Level,
        (Attr::Asctime | Attr::Levelname | Attr::Name | Attr::Module | Attr::FuncName | Attr::Message, Some(_)) => {
            return Err(format!(
                "has `{spelled}`, but `{name}` is text, which Python cannot format as a number; write `%({name})s`"
            ))
        }
        (_, Some(shape)) => shape,
        (Attr::Lineno | Attr::Levelno, None) => Shape::Integer,
        (Attr::Created | Attr::Msecs, None) => Shape::Number,
        (Attr::Extra, None) => match name {
            "process" | "thread" => Shape::Integer,
            "relativeCreated" => Shape::Number,
            _ => Shape::Text,
        },
        _ => Shape::Text,
    };
    Ok(Field {
        attr,
        name: name.into(),
        shape,
        width,
        left,
        precision,
        next: Next::End,
        any_level: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = "%(asctime)s - %(name)s - %(levelname)s - %(message)s";

    fn values<'a>(p: &Pattern, caps: &Captures<'a>) -> Vec<(String, &'a str)> {
        p.fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| caps.get(i).map(|v| (f.name.to_string(), v)))
            .collect()
    }

    fn read(pattern: &str, datefmt: Option<&str>, line: &str) -> Option<Vec<(String, String)>> {
        let p = Pattern::compile(pattern, datefmt).unwrap();
        let caps = p.header(line)?;
        Some(values(&p, &caps).into_iter().map(|(k, v)| (k, v.to_string())).collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_original_pattern_reads_its_lines_and_a_message_may_hold_the_separator() {
        let p = Pattern::compile(ORIGINAL, None).unwrap();
        let caps = p
            .header("2026-11-26 12:00:00,123 - lngpt.api - WARNING - 开始API调用 - retry 2")
            .unwrap();
        assert_eq!(caps.level, Some(Level::Warning));
        assert!(caps.civil.is_some());
        assert_eq!(
            values(&p, &caps),
            [
                ("asctime".to_string(), "2026-11-26 12:00:00,123"),
                ("name".to_string(), "lngpt.api"),
                ("levelname".to_string(), "WARNING"),
                ("message".to_string(), "开始API调用 - retry 2"),
            ]
        );
        assert_eq!(
            read(ORIGINAL, None, "2026-11-26 12:00:00,123 - lngpt - INFO - ").unwrap()[3].1,
            "",
            "an empty message"
        );
        for not_a_header in [
            "Traceback (most recent call last):",
            "  File \"app.py\", line 3, in <module>",
            "ValueError: 2026-11-26 12:00:00,123 - x - INFO - y",
            "2026-11-26 12:00:00 - lngpt - INFO - no milliseconds",
            "2026-11-26 12:00:00,123 - lngpt - INFO no separator",
        ] {
            assert!(p.header(not_a_header).is_none(), "{not_a_header}");
        }
    }

    #[test]
    fn every_directive_lands_in_its_field() {
        let got = read(
            "%(asctime)s %(levelname)s [%(name)s] %(module)s.%(funcName)s:%(lineno)d pid=%(process)d tid=%(thread)d %(threadName)s %(processName)s %(filename)s %(pathname)s %(levelno)s %(created)f %(relativeCreated)d %(msecs)03d | %(message)s",
            None,
            "2026-11-26 12:00:00,123 ERROR [lngpt.api] llm_api.stream_chat:225 pid=4242 tid=139990 MainThread MainProcess llm_api.py /srv/app/llm_api.py 40 1795680000.123456 5012 123 | boom: x",
        )
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("asctime", "2026-11-26 12:00:00,123"),
                ("levelname", "ERROR"),
                ("name", "lngpt.api"),
                ("module", "llm_api"),
                ("funcName", "stream_chat"),
                ("lineno", "225"),
                ("process", "4242"),
                ("thread", "139990"),
                ("threadName", "MainThread"),
                ("processName", "MainProcess"),
                ("filename", "llm_api.py"),
                ("pathname", "/srv/app/llm_api.py"),
                ("levelno", "40"),
                ("created", "1795680000.123456"),
                ("relativeCreated", "5012"),
                ("msecs", "123"),
                ("message", "boom: x"),
            ])
        );
    }

    #[test]
    fn widths_and_precisions_pad_and_cut_as_python_does() {
        // Left-justified: padding after; right-justified: before; with or without a separator.
        let got = read(
            "%(asctime)s %(levelname)-8s %(name)-12s %(lineno)5d %(message)s",
            None,
            "2026-11-26 12:00:00,123 INFO     lngpt           42 hello",
        )
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("asctime", "2026-11-26 12:00:00,123"),
                ("levelname", "INFO"),
                ("name", "lngpt"),
                ("lineno", "42"),
                ("message", "hello"),
            ])
        );
        let got = read("%(levelname)-8s%(message)s", None, "WARNING something").unwrap();
        assert_eq!(got, pairs(&[("levelname", "WARNING"), ("message", "something")]));
        let got = read("%(levelname)-8s%(message)s", None, "INFO    something").unwrap();
        assert_eq!(got, pairs(&[("levelname", "INFO"), ("message", "something")]));
        let p = Pattern::compile("%(levelname).1s %(asctime)s %(message)s", None).unwrap();
        let caps = p.header("W 2026-11-26 12:00:00,123 x").unwrap();
        assert_eq!(caps.level, Some(Level::Warning));
        let p = Pattern::compile("[%(levelname)8s] %(message)s", None).unwrap();
        assert_eq!(p.header("[    INFO] x").unwrap().level, Some(Level::Info));
        assert_eq!(p.header("[CRITICAL] x").unwrap().level, Some(Level::Critical));
    }

    #[test]
    fn datefmt_and_msecs_read_the_time() {
        let got = read(
            "%(asctime)s.%(msecs)03d %(levelname)s %(message)s",
            Some("%d/%b/%Y:%H:%M:%S"),
            "26/Nov/2026:12:00:00.007 DEBUG x",
        )
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("asctime", "26/Nov/2026:12:00:00"),
                ("msecs", "007"),
                ("levelname", "DEBUG"),
                ("message", "x")
            ])
        );
    }

    #[test]
    fn fields_after_the_message_match_from_the_end_and_may_be_on_a_later_line() {
        let p = Pattern::compile("%(asctime)s %(levelname)s %(message)s [%(filename)s:%(lineno)d]", None).unwrap();
        let caps = p
            .header("2026-11-26 12:00:00,123 INFO list [1, 2] and [a:b] [app.py:12]")
            .unwrap();
        let v = values(&p, &caps);
        assert_eq!(v[2].1, "list [1, 2] and [a:b]");
        assert_eq!((v[3].1, v[4].1), ("app.py", "12"));
        // The first line of a message with newlines: the fields after it come later.
        let caps = p.header("2026-11-26 12:00:00,123 INFO first line").unwrap();
        assert!(caps.suffix_missing);
        let (cut, caps) = p.trailing("last line [app.py:12]").unwrap();
        assert_eq!(cut, 9);
        assert_eq!(caps.get(4), Some("12"));
        // Nothing before the message to recognize a record by: the fields after it are required.
        let p = Pattern::compile("%(message)s (%(name)s)", None).unwrap();
        assert!(p.header("a traceback line").is_none());
        assert!(p.header("hello (lngpt)").is_some());
    }

    #[test]
    fn a_level_name_logging_does_not_define_is_a_header_only_after_a_time() {
        let p = Pattern::compile(ORIGINAL, None).unwrap();
        let caps = p.header("2026-11-26 12:00:00,123 - lngpt - TRACE - x").unwrap();
        assert_eq!((caps.level, caps.get(2)), (None, Some("TRACE")));
        let basic = Pattern::compile("%(levelname)s:%(name)s:%(message)s", None).unwrap();
        assert!(basic.header("KeyError: 'a:b'").is_none());
        assert_eq!(basic.header("INFO:lngpt:x").unwrap().level, Some(Level::Info));
    }

    #[test]
    fn patterns_that_cannot_be_read_say_why_and_what_to_write() {
        for (pattern, datefmt, key, says) in [
            ("%(asctime)s - %(levelname)s", None, "pattern", "no `%(message)s`"),
            ("{asctime} {message}", None, "pattern", "`%` style"),
            ("%(asctime)s %(message", None, "pattern", "closing `)`"),
            ("%(asctime)s %(message)", None, "pattern", "without a conversion"),
            ("%(asctime)s %s", None, "pattern", "without an attribute name"),
            ("%(message)s %", None, "pattern", "lone `%`"),
            ("%(name)s%(message)s", None, "pattern", "followed directly by"),
            (
                "%(asctime)s %(message)s%(lineno)d",
                None,
                "pattern",
                "followed directly by",
            ),
            ("%(name)s %(name)s %(message)s", None, "pattern", "twice"),
            ("%(asctime)s %(message)x", None, "pattern", "not a conversion"),
            ("%(name)d %(message)s", None, "pattern", "cannot format as a number"),
            ("%(a b)s %(message)s", None, "pattern", "LogRecord attribute"),
            ("%(asctime)s %(message)s", Some("%H:%M:%S,%f"), "datefmt", "%(msecs)03d"),
        ] {
            let (k, e) = Pattern::compile(pattern, datefmt).unwrap_err();
            assert_eq!(k, key, "{pattern}: {e}");
            assert!(e.contains(says), "{pattern}: {e}");
        }
        // Self-delimiting fields may touch.
        assert!(Pattern::compile("%(asctime)s%(levelname)s%(lineno)d%(message)s", None).is_ok());
        assert!(Pattern::compile("100%% %(message)s", None).is_ok());
    }
}
