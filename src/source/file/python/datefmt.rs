//! `%(asctime)s`: the `time.strftime` directives logging writes times with, compiled into a
//! matcher that reads them back, and the conversion of the local times it reads to UTC.
//!
//! Logging formats `asctime` with `time.strftime(datefmt, time.localtime(created))` in the C locale,
//! and without a `datefmt` with `%Y-%m-%d %H:%M:%S` followed by `,` and the milliseconds. Every
//! directive writes a fixed shape (zero-padded digits, English names), so a compiled list of items
//! reads it back without a regular expression. Locale-dependent directives (`%c`, `%x`, `%X`) and
//! ones strftime does not have (`%f`) are refused when the configuration is loaded.

use std::sync::Arc;

use crate::event::{NaiveZone, Timestamp};

/// What a directive reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Year,
    /// `%y`: 69–99 are 1969–1999, 00–68 are 2000–2068 (Python's rule).
    Year2,
    Month,
    Day,
    DayOfYear,
    Hour,
    Hour12,
    Minute,
    Second,
    Millis,
    /// Seconds since the epoch (`%s`, a glibc extension).
    Epoch,
    /// Read and checked for shape, not used (`%u`, `%U`, …: implied by the date).
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Literal(Box<str>),
    /// `min..=max` digits; `space_padded` allows leading spaces instead of zeros (`%e`).
    Digits {
        unit: Unit,
        min: usize,
        max: usize,
        space_padded: bool,
    },
    /// One of the C locale's names; the index is the value (months from 1, weekdays ignored).
    Name {
        month: bool,
        names: &'static [&'static str],
    },
    AmPm,
    /// `%z`: `+0800`.
    Offset,
    /// `%Z`: a zone abbreviation (`CST`, `UTC`), read and not used: abbreviations are ambiguous.
    ZoneName,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_ABBR: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const DAYS_ABBR: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A compiled `datefmt` (or logging's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    items: Vec<Item>,
}

/// The fields of a time as read, before they are checked and converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Civil {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    day_of_year: Option<i64>,
    hour: i64,
    hour12: Option<i64>,
    pm: Option<bool>,
    minute: i64,
    second: i64,
    pub millis: Option<i64>,
    /// Seconds east of UTC, from `%z`.
    offset: Option<i64>,
    epoch: Option<i64>,
}

impl DateFormat {
    /// Logging's own: `%Y-%m-%d %H:%M:%S,mmm`.
    pub fn logging_default() -> DateFormat {
        let digits = |unit, n| Item::Digits {
            unit,
            min: n,
            max: n,
            space_padded: false,
        };
        let lit = |s: &str| Item::Literal(s.into());
        DateFormat {
            items: vec![
                digits(Unit::Year, 4),
                lit("-"),
                digits(Unit::Month, 2),
                lit("-"),
                digits(Unit::Day, 2),
                lit(" "),
                digits(Unit::Hour, 2),
                lit(":"),
                digits(Unit::Minute, 2),
                lit(":"),
                digits(Unit::Second, 2),
                lit(","),
                digits(Unit::Millis, 3),
            ],
        }
    }

    /// Compiles a `time.strftime` format. The error says which directive and what to write.
    pub fn compile(datefmt: &str) -> Result<DateFormat, String> {
        let items = DateFormat::items_of(datefmt)?;
        DateFormat::check_complete(&items)?;
        Ok(DateFormat { items })
    }

    /// The items a format is made of, before it is checked for a full date (`%F`, `%T`… expand to
    /// parts that lack one).
    fn items_of(datefmt: &str) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        let mut literal = String::new();
        let mut chars = datefmt.char_indices();
        while let Some((at, c)) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let mut directive = chars
                .next()
                .map(|(_, d)| d)
                .ok_or_else(|| format!("ends with a lone `%` at byte {at}; write `%%` for a percent sign"))?;
            // glibc's `%-d` (no padding): one or two digits.
            let unpadded = directive == '-';
            if unpadded {
                directive = chars
                    .next()
                    .map(|(_, d)| d)
                    .ok_or_else(|| format!("ends with `%-` at byte {at}"))?;
            }
            let digits = |unit, min, max| Item::Digits {
                unit,
                min: if unpadded { 1 } else { min },
                max,
                space_padded: false,
            };
            let expanded: &[Item] = &match directive {
                '%' => {
                    literal.push('%');
                    continue;
                }
                'Y' => vec![digits(Unit::Year, 4, 4)],
                'y' => vec![digits(Unit::Year2, 2, 2)],
                'm' => vec![digits(Unit::Month, 2, 2)],
                'd' => vec![digits(Unit::Day, 2, 2)],
                'e' => vec![Item::Digits {
                    unit: Unit::Day,
                    min: 1,
                    max: 2,
                    space_padded: true,
                }],
                'j' => vec![digits(Unit::DayOfYear, 3, 3)],
                'H' => vec![digits(Unit::Hour, 2, 2)],
                'I' => vec![digits(Unit::Hour12, 2, 2)],
                'M' => vec![digits(Unit::Minute, 2, 2)],
                'S' => vec![digits(Unit::Second, 2, 2)],
                's' => vec![digits(Unit::Epoch, 1, 12)],
                'u' | 'w' => vec![digits(Unit::Ignored, 1, 1)],
                'U' | 'W' | 'V' => vec![digits(Unit::Ignored, 2, 2)],
                'G' => vec![digits(Unit::Ignored, 4, 4)],
                'g' => vec![digits(Unit::Ignored, 2, 2)],
                'b' | 'h' => vec![Item::Name {
                    month: true,
                    names: &MONTHS_ABBR,
                }],
                'B' => vec![Item::Name {
                    month: true,
                    names: &MONTHS,
                }],
                'a' => vec![Item::Name {
                    month: false,
                    names: &DAYS_ABBR,
                }],
                'A' => vec![Item::Name {
                    month: false,
                    names: &DAYS,
                }],
                'p' => vec![Item::AmPm],
                'z' => vec![Item::Offset],
                'Z' => vec![Item::ZoneName],
                'F' => DateFormat::items_of("%Y-%m-%d")?,
                'T' => DateFormat::items_of("%H:%M:%S")?,
                'R' => DateFormat::items_of("%H:%M")?,
                'D' => DateFormat::items_of("%m/%d/%y")?,
                'f' => {
                    return Err(format!(
                        "has `%f` at byte {at}, which time.strftime (what logging formats asctime with) does not write; \
                         use `%(msecs)03d` in the pattern for milliseconds, as in pattern = \"%(asctime)s.%(msecs)03d …\""
                    ))
                }
                'c' | 'x' | 'X' | 'r' => {
                    return Err(format!(
                        "has `%{directive}` at byte {at}, whose text depends on the locale; spell the fields out, such as \"%Y-%m-%d %H:%M:%S\""
                    ))
                }
                other => {
                    return Err(format!(
                        "has `%{other}` at byte {at}, which is not a supported strftime directive; expected %Y %y %m %d %e %j %H %I %M %S %p %b %B %a %A %z %Z %s %F %T %R %D or %%"
                    ))
                }
            };
            if !literal.is_empty() {
                items.push(Item::Literal(std::mem::take(&mut literal).into()));
            }
            items.extend_from_slice(expanded);
        }
        if !literal.is_empty() {
            items.push(Item::Literal(literal.into()));
        }
        Ok(items)
    }

    /// Refuses a format that does not name a day: a time of day alone cannot be stored.
    fn check_complete(items: &[Item]) -> Result<(), String> {
        let has = |unit: Unit| {
            items
                .iter()
                .any(|i| matches!(i, Item::Digits { unit: u, .. } if *u == unit))
        };
        let month_name = items.iter().any(|i| matches!(i, Item::Name { month: true, .. }));
        if !has(Unit::Epoch) {
            let year = has(Unit::Year) || has(Unit::Year2);
            let day = ((has(Unit::Month) || month_name) && has(Unit::Day)) || has(Unit::DayOfYear);
            if !year || !day {
                return Err(
                    "has no full date (a year with %Y or %y, and %m or %b with %d, or %j); the time of day alone cannot be stored"
                        .into(),
                );
            }
        }
        if has(Unit::Hour12) && !items.iter().any(|i| matches!(i, Item::AmPm)) {
            return Err("has %I (12-hour clock) without %p (AM or PM); use %H, or add %p".into());
        }
        Ok(())
    }

    /// Reads a time at the start of `s`: its fields and how many bytes it took. None if `s` does
    /// not start with one of this shape.
    pub fn read(&self, s: &str) -> Option<(Civil, usize)> {
        let b = s.as_bytes();
        let mut pos = 0;
        let mut c = Civil::default();
        for item in &self.items {
            match item {
                Item::Literal(l) => {
                    if !b[pos..].starts_with(l.as_bytes()) {
                        return None;
                    }
                    pos += l.len();
                }
                &Item::Digits {
                    unit,
                    min,
                    max,
                    space_padded,
                } => {
                    let begin = pos;
                    if space_padded {
                        while pos < b.len() && b[pos] == b' ' && pos - begin < max - 1 {
                            pos += 1;
                        }
                    }
                    let digits_at = pos;
                    let mut v: i64 = 0;
                    while pos < b.len() && b[pos].is_ascii_digit() && pos - begin < max {
                        v = v * 10 + i64::from(b[pos] - b'0');
                        pos += 1;
                    }
                    if pos == digits_at || pos - begin < min {
                        return None;
                    }
                    match unit {
                        Unit::Year => c.year = Some(v),
                        Unit::Year2 => c.year = Some(if v >= 69 { 1900 + v } else { 2000 + v }),
                        Unit::Month => c.month = Some(v),
                        Unit::Day => c.day = Some(v),
                        Unit::DayOfYear => c.day_of_year = Some(v),
                        Unit::Hour => c.hour = v,
                        Unit::Hour12 => c.hour12 = Some(v),
                        Unit::Minute => c.minute = v,
                        Unit::Second => c.second = v,
                        Unit::Millis => c.millis = Some(v),
                        Unit::Epoch => c.epoch = Some(v),
                        Unit::Ignored => {}
                    }
                }
                Item::Name { month, names } => {
                    let rest = &b[pos..];
                    let (i, name) = names.iter().enumerate().find(|(_, n)| rest.starts_with(n.as_bytes()))?;
                    if *month {
                        c.month = Some(i as i64 + 1);
                    }
                    pos += name.len();
                }
                Item::AmPm => {
                    let rest = &b[pos..];
                    c.pm = Some(if rest.starts_with(b"PM") {
                        true
                    } else if rest.starts_with(b"AM") {
                        false
                    } else {
                        return None;
                    });
                    pos += 2;
                }
                Item::Offset => {
                    let rest = b.get(pos..pos + 5)?;
                    let sign = match rest[0] {
                        b'+' => 1,
                        b'-' => -1,
                        _ => return None,
                    };
                    if !rest[1..].iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    let n = |i: usize| i64::from(rest[i] - b'0');
                    let (h, m) = (n(1) * 10 + n(2), n(3) * 10 + n(4));
                    c.offset = Some(sign * (h * 3600 + m * 60));
                    pos += 5;
                }
                Item::ZoneName => {
                    let n = b[pos..]
                        .iter()
                        .take_while(|x| x.is_ascii_alphanumeric() || matches!(x, b'+' | b'-'))
                        .count();
                    if n == 0 {
                        return None;
                    }
                    pos += n;
                }
            }
        }
        Some((c, pos))
    }
}

impl Civil {
    /// The time with `millis` added if it has none of its own (`%(msecs)03d` beside a `datefmt`).
    pub fn with_millis(mut self, millis: Option<i64>) -> Civil {
        if self.millis.is_none() {
            self.millis = millis;
        }
        self
    }

    /// The instant this time means, local times read in `zone`. The error says what is wrong with it.
    pub fn to_timestamp(self, zone: &mut ZoneCache) -> Result<Timestamp, String> {
        let millis = self.millis.unwrap_or(0);
        if let Some(epoch) = self.epoch {
            return Timestamp::from_epoch_seconds(epoch as f64)
                .map(|t| Timestamp(t.0 + millis))
                .map_err(|e| e.to_string());
        }
        let year = self.year.unwrap_or(1970);
        if !(1970..=9999).contains(&year) {
            return Err(format!("has the year {year}, outside 1970 to 9999"));
        }
        let (month, day) = match (self.month, self.day, self.day_of_year) {
            (Some(m), Some(d), _) => (m, d),
            (_, _, Some(doy)) => {
                let days = if crate::event::is_leap_year(year) { 366 } else { 365 };
                if !(1..=days).contains(&doy) {
                    return Err(format!("has day {doy} of a year of {days} days"));
                }
                let mut rest = doy;
                let mut m = 1;
                while rest > crate::event::days_in_month(year, m) {
                    rest -= crate::event::days_in_month(year, m);
                    m += 1;
                }
                (m, rest)
            }
            _ => (1, 1),
        };
        if !(1..=12).contains(&month) || day < 1 || day > crate::event::days_in_month(year, month) {
            return Err(format!("has no such date: {year}-{month:02}-{day:02}"));
        }
        let hour = match (self.hour12, self.pm) {
            (Some(h), Some(pm)) if (1..=12).contains(&h) => h % 12 + if pm { 12 } else { 0 },
            (Some(h), _) => return Err(format!("has the hour {h} on a 12-hour clock")),
            (None, _) => self.hour,
        };
        if hour > 23 || self.minute > 59 || self.second > 61 {
            return Err(format!(
                "has no such time of day: {hour:02}:{:02}:{:02}",
                self.minute, self.second
            ));
        }
        let days = crate::event::days_from_civil(year, month, day);
        // A leap second (60, 61 in strftime's range) is taken as the last second of its minute.
        let local = (days * 86_400 + hour * 3600 + self.minute * 60 + self.second.min(59)) * 1000 + millis;
        let utc = match self.offset {
            Some(east) => local - east * 1000,
            None => local - zone.offset_ms(days * 1440 + hour * 60 + self.minute)?,
        };
        if !(0..=crate::event::MAX_TIMESTAMP_MS).contains(&utc) {
            return Err("is outside the years 1970 to 9999".into());
        }
        Ok(Timestamp(utc))
    }
}

/// `naive_timezone`, with the offset of the last minute asked about kept: log times come in
/// order, so the zone's rules are consulted about once a minute, not once a line.
pub struct ZoneCache {
    zone: Arc<NaiveZone>,
    /// (local minute since the epoch, offset in milliseconds) of the last conversion.
    last: Option<(i64, i64)>,
}

impl ZoneCache {
    pub fn new(zone: Arc<NaiveZone>) -> ZoneCache {
        ZoneCache { zone, last: None }
    }

    /// Milliseconds the zone is ahead of UTC at that local minute, as [`NaiveZone`] reads a naive
    /// time: in the hour a clock is set back (which occurs twice), the earlier instant; in the hour
    /// it skips, the offset after the gap. Offsets change on whole minutes, so a minute has one.
    fn offset_ms(&mut self, minute: i64) -> Result<i64, String> {
        if let Some((m, offset)) = self.last {
            if m == minute {
                return Ok(offset);
            }
        }
        let wall = minute * 60_000;
        let utc = self.zone.to_utc(wall).map_err(|e| e.to_string())?;
        let offset = wall - utc.0;
        self.last = Some((minute, offset));
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> ZoneCache {
        zone("UTC")
    }

    fn zone(name: &str) -> ZoneCache {
        ZoneCache::new(Arc::new(NaiveZone::named(name).unwrap()))
    }

    fn at(fmt: &str, text: &str) -> Result<i64, String> {
        let f = DateFormat::compile(fmt)?;
        let (c, n) = f.read(text).ok_or("no match")?;
        assert_eq!(n, text.len(), "{fmt} took {n} of {text:?}");
        c.to_timestamp(&mut utc()).map(|t| t.0)
    }

    #[test]
    fn logging_default_reads_comma_milliseconds() {
        let f = DateFormat::logging_default();
        let (c, n) = f.read("2026-11-26 08:00:00,536 - rest").unwrap();
        assert_eq!(n, 23);
        assert_eq!(c.to_timestamp(&mut utc()).unwrap().0, 1_795_680_000_536);
        assert!(f.read("2026-11-26 08:00:00.536").is_none());
        assert!(f.read("2026-11-26 8:00:00,536").is_none());
    }

    #[test]
    fn each_directive_reads_what_strftime_writes() {
        let base = 1_795_680_000_000; // 2026-11-26 08:00:00 UTC, a Thursday, day 330
        assert_eq!(at("%Y-%m-%d %H:%M:%S", "2026-11-26 08:00:00"), Ok(base));
        assert_eq!(at("%d/%m/%y %H:%M", "26/11/26 08:00"), Ok(base));
        assert_eq!(at("%Y %j %T", "2026 330 08:00:00"), Ok(base));
        assert_eq!(at("%F %R", "2026-11-26 08:00"), Ok(base));
        assert_eq!(at("%D %T", "11/26/26 08:00:00"), Ok(base));
        assert_eq!(at("%a %b %e %H:%M:%S %Y", "Thu Nov 26 08:00:00 2026"), Ok(base));
        assert_eq!(
            at("%a %b %e %H:%M:%S %Y", "Sun Nov  1 08:00:00 2026"),
            Ok(base - 25 * 86_400_000)
        );
        assert_eq!(
            at("%A, %d %B %Y %I:%M:%S %p", "Thursday, 26 November 2026 08:00:00 AM"),
            Ok(base)
        );
        assert_eq!(
            at("%I:%M %p %Y-%m-%d", "12:30 PM 2026-11-26"),
            Ok(base + 4 * 3_600_000 + 1_800_000)
        );
        assert_eq!(
            at("%I:%M %p %Y-%m-%d", "12:30 AM 2026-11-26"),
            Ok(base - 8 * 3_600_000 + 1_800_000)
        );
        assert_eq!(at("%Y-%m-%dT%H:%M:%S%z", "2026-11-26T16:00:00+0800"), Ok(base));
        assert_eq!(at("%Y-%m-%d %H:%M:%S %Z", "2026-11-26 08:00:00 UTC"), Ok(base));
        assert_eq!(at("%s", "1795680000"), Ok(base));
        assert_eq!(at("%Y-%-m-%-d %H:%M:%S", "2026-1-5 08:00:00"), Ok(1_767_600_000_000));
        assert_eq!(at("%Y%m%d %H%M%S %% %u %W", "20261126 080000 % 4 47"), Ok(base));
        assert_eq!(at("%y-%m-%d", "70-01-01"), Ok(0));
    }

    #[test]
    fn impossible_dates_say_what_is_wrong() {
        assert!(at("%Y-%m-%d %H:%M:%S", "2026-02-30 08:00:00")
            .unwrap_err()
            .contains("no such date"));
        assert!(at("%Y-%m-%d %H:%M:%S", "2026-02-10 25:00:00")
            .unwrap_err()
            .contains("no such time"));
        assert!(at("%Y-%m-%d", "1969-12-31").unwrap_err().contains("1970"));
        assert!(at("%Y %j", "2026 366").unwrap_err().contains("366"));
    }

    #[test]
    fn unsupported_or_incomplete_formats_are_refused_with_what_to_write() {
        for (fmt, says) in [
            ("%Y-%m-%d %H:%M:%S.%f", "%(msecs)03d"),
            ("%c", "locale"),
            ("%Y-%m-%d %Q", "`%Q`"),
            ("%H:%M:%S", "no full date"),
            ("%Y-%m-%d %I:%M", "%p"),
            ("%Y-%m-%d %", "lone `%`"),
        ] {
            let e = DateFormat::compile(fmt).unwrap_err();
            assert!(e.contains(says), "{fmt}: {e}");
        }
    }

    #[test]
    fn local_times_are_read_in_the_zone_once_a_minute() {
        let mut shanghai = zone("Asia/Shanghai");
        let f = DateFormat::logging_default();
        let (c, _) = f.read("2026-11-26 16:00:00,536").unwrap();
        assert_eq!(c.to_timestamp(&mut shanghai).unwrap().0, 1_795_680_000_536);
        let (c, _) = f.read("2026-11-26 16:00:59,999").unwrap();
        assert_eq!(c.to_timestamp(&mut shanghai).unwrap().0, 1_795_680_059_999);
        // New York: the hour set back on 2026-11-01 is read as its first pass (EDT, UTC-4); the
        // skipped hour on 2026-03-08 takes the offset after it.
        let mut ny = zone("America/New_York");
        let (c, _) = f.read("2026-11-01 01:30:00,000").unwrap();
        assert_eq!(
            c.to_timestamp(&mut ny).unwrap().0,
            at("%F %T%z", "2026-11-01 01:30:00-0400").unwrap()
        );
        let (c, _) = f.read("2026-11-01 03:00:00,000").unwrap();
        assert_eq!(
            c.to_timestamp(&mut ny).unwrap().0,
            at("%F %T%z", "2026-11-01 03:00:00-0500").unwrap()
        );
        let (c, _) = f.read("2026-03-08 02:30:00,000").unwrap();
        assert_eq!(
            c.to_timestamp(&mut ny).unwrap().0,
            at("%F %T%z", "2026-03-08 03:30:00-0400").unwrap()
        );
    }
}
