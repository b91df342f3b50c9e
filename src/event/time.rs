//! Timestamps as milliseconds since the Unix epoch (UTC).
//!
//! Every event carries one, MongoDB stores them as BSON Dates (millisecond precision) and the
//! embedded store indexes them as integers, so milliseconds are the one representation. Parsing and
//! formatting are hand-written because they run for every event and the formats are fixed.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time, milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// How a time written without an offset is read.
#[derive(Debug, Clone, Default)]
pub enum NaiveZone {
    #[default]
    Utc,
    Zone(jiff::tz::TimeZone),
}

impl NaiveZone {
    /// `"UTC"`, `"local"` (the host's zone: `TZ`, else `/etc/localtime`), or an IANA name.
    pub fn named(name: &str) -> Result<NaiveZone, String> {
        match name {
            "UTC" | "utc" | "Etc/UTC" => Ok(NaiveZone::Utc),
            "local" => Ok(NaiveZone::Zone(jiff::tz::TimeZone::system())),
            _ => jiff::tz::TimeZone::get(name).map(NaiveZone::Zone).map_err(|e| {
                format!("is {name:?}, which is not a known time zone ({e}); expected \"local\", \"UTC\" or an IANA name such as \"Asia/Shanghai\"")
            }),
        }
    }

    /// The instant of a wall-clock time (given as milliseconds as if it were UTC). A time that
    /// occurs twice or not at all at a daylight-saving change is taken as jiff's "compatible" does:
    /// the earlier of the two, or the offset after the gap.
    pub(crate) fn to_utc(&self, wall_ms: i64) -> Result<Timestamp, TimeError> {
        let NaiveZone::Zone(tz) = self else {
            return Ok(Timestamp(wall_ms));
        };
        let wall = jiff::Timestamp::from_millisecond(wall_ms)
            .map_err(|_| TimeError::OutOfRange)?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .datetime();
        let ms = wall
            .to_zoned(tz.clone())
            .map_err(|_| TimeError::OutOfRange)?
            .timestamp()
            .as_millisecond();
        if (MIN_MS..=MAX_MS).contains(&ms) {
            Ok(Timestamp(ms))
        } else {
            Err(TimeError::OutOfRange)
        }
    }
}

/// Earliest and latest accepted instants: years 1970 through 9999, which RFC 3339 can write.
const MIN_MS: i64 = 0;
pub(crate) const MAX_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Epoch seconds as Python's `time.time()` / `LogRecord.created` give them.
    pub fn from_epoch_seconds(secs: f64) -> Result<Timestamp, TimeError> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(TimeError::OutOfRange);
        }
        if secs >= 1e11 {
            // 1e11 s is the year 5138; such a number is almost surely milliseconds.
            return Err(TimeError::LooksLikeMillis);
        }
        Ok(Timestamp((secs * 1000.0).round() as i64))
    }

    /// Parses RFC 3339 (`2026-11-26T08:00:00.536Z`, `…+08:00`, a space instead of `T`).
    /// A time without an offset is taken as UTC.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimeError> {
        Self::parse_rfc3339_in(s, &NaiveZone::Utc)
    }

    /// Like [`Timestamp::parse_rfc3339`], with a time without an offset read in `naive`: the
    /// original app stores `datetime.now()`, a naive *local* time.
    pub fn parse_rfc3339_in(s: &str, naive: &NaiveZone) -> Result<Timestamp, TimeError> {
        match Self::parse_parts(s)? {
            (ms, true) => Ok(Timestamp(ms)),
            (ms, false) => naive.to_utc(ms),
        }
    }

    /// The time as if its clock were UTC, and whether it said its offset.
    fn parse_parts(s: &str) -> Result<(i64, bool), TimeError> {
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimeError> {
            let digits = b.get(range).ok_or(TimeError::Syntax)?;
            digits.iter().try_fold(0i64, |acc, &d| {
                if d.is_ascii_digit() {
                    Ok(acc * 10 + i64::from(d - b'0'))
                } else {
                    Err(TimeError::Syntax)
                }
            })
        };
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return Err(TimeError::Syntax);
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimeError::Syntax);
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(TimeError::OutOfRange);
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            match i - start {
                0 => return Err(TimeError::Syntax),
                1 => millis *= 100,
                2 => millis *= 10,
                _ => {}
            }
        }
        let has_offset = b.get(i).is_some();
        let offset_minutes = match b.get(i) {
            None => 0,
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
                let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if h > 23 || m > 59 {
                    return Err(TimeError::OutOfRange);
                }
                let total = h * 60 + m;
                if sign == b'+' {
                    total
                } else {
                    -total
                }
            }
            _ => return Err(TimeError::Syntax),
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_minutes * 60;
        let ms = secs * 1000 + millis;
        if !(MIN_MS..=MAX_MS).contains(&ms) {
            return Err(TimeError::OutOfRange);
        }
        Ok((ms, has_offset))
    }

    /// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ`: fixed width, so stored strings sort by time.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let ms = self.0.clamp(MIN_MS, MAX_MS);
        let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for k in (0..width).rev() {
                buf[at + k] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, mo);
        put(8, 2, d);
        put(11, 2, h);
        put(14, 2, mi);
        put(17, 2, s);
        put(20, 3, milli);
        out.extend_from_slice(&buf);
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.write_rfc3339(&mut v);
        f.write_str(std::str::from_utf8(&v).map_err(|_| fmt::Error)?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    Syntax,
    OutOfRange,
    LooksLikeMillis,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeError::Syntax => "is not an RFC 3339 date-time (like 2026-11-26T08:00:00.536Z) or epoch seconds",
            TimeError::OutOfRange => "is outside the years 1970 to 9999",
            TimeError::LooksLikeMillis => "looks like epoch milliseconds; send epoch seconds (divide by 1000)",
        })
    }
}

pub(crate) fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// As a document field: an RFC 3339 string (what the JSON documents hold); also read from epoch
/// milliseconds.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(24);
        self.write_rfc3339(&mut out);
        s.serialize_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 time or epoch milliseconds")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s).map_err(|e| E::custom(format!("{s:?} {e}")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Timestamp, E> {
                Ok(Timestamp(i64::try_from(n).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_times_are_read_in_the_configured_zone_and_offsets_win() {
        let shanghai = NaiveZone::named("Asia/Shanghai").unwrap();
        let utc = Timestamp::parse_rfc3339("2026-11-26T08:00:00.536Z").unwrap();
        assert_eq!(
            Timestamp::parse_rfc3339_in("2026-11-26T16:00:00.536", &shanghai).unwrap(),
            utc
        );
        assert_eq!(
            Timestamp::parse_rfc3339_in("2026-11-26T08:00:00.536Z", &shanghai).unwrap(),
            utc
        );
        assert_eq!(
            Timestamp::parse_rfc3339_in("2026-11-26T08:00:00.536", &NaiveZone::named("UTC").unwrap()).unwrap(),
            utc
        );
        // At a daylight-saving gap the later offset applies (02:30 does not exist in New York that day).
        let ny = NaiveZone::named("America/New_York").unwrap();
        assert_eq!(
            Timestamp::parse_rfc3339_in("2026-03-08T02:30:00", &ny).unwrap(),
            Timestamp::parse_rfc3339("2026-03-08T07:30:00Z").unwrap()
        );
        let err = NaiveZone::named("Mars/Olympus").unwrap_err();
        assert!(err.contains("Asia/Shanghai"), "{err}");
    }

    #[test]
    fn parses_the_forms_apps_send() {
        let utc = Timestamp::parse_rfc3339("2026-11-26T08:00:00.536Z").unwrap();
        assert_eq!(utc.0, 1_795_680_000_536);
        assert_eq!(Timestamp::parse_rfc3339("2026-11-26T16:00:00.536+08:00").unwrap(), utc);
        assert_eq!(Timestamp::parse_rfc3339("2026-11-26 08:00:00.536").unwrap(), utc);
        assert_eq!(Timestamp::parse_rfc3339("2026-11-26T08:00:00.536123Z").unwrap(), utc);
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-26T08:00:00.5Z").unwrap().0,
            1_795_680_000_500
        );
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01T00:00:00Z").unwrap().0, 0);
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-26",
            "2026-11-26T08:00:00.Z",
            "2026-11-26T08:00:00+0800",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(
            Timestamp::from_epoch_seconds(1_795_680_002_171.0),
            Err(TimeError::LooksLikeMillis)
        );
        assert_eq!(Timestamp::from_epoch_seconds(-1.0), Err(TimeError::OutOfRange));
    }

    #[test]
    fn formats_fixed_width_and_round_trips() {
        for ms in [0, 951_782_400_000, 1_795_680_000_536, MAX_MS] {
            let s = Timestamp(ms).to_string();
            assert_eq!(s.len(), 24);
            assert_eq!(Timestamp::parse_rfc3339(&s).unwrap().0, ms, "{s}");
        }
        assert_eq!(Timestamp(1_795_680_000_536).to_string(), "2026-11-26T08:00:00.536Z");
    }
}
