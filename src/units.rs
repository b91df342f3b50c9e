//! The units configuration values are written in: durations (`"200ms"`, `"30d"`) and sizes
//! (`"16MiB"`). A leaf module: every section's config takes them, so they depend on nothing here.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration any key takes: a century, far past any retention anyone means, and far
/// from the overflows of `Instant` and millisecond arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A duration written the way people write them: `"200ms"`, `"15s"`, `"5m"`, `"1h"`, `"30d"`, `"0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration; expected a number and a unit, such as \"200ms\", \"15s\", \"5m\", \"1h\" or \"30d\""))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86_400.0,
            _ => {
                return Err(format!(
                    "{s:?} has no known unit; expected ms, s, m, h or d, such as \"200ms\" or \"30d\""
                ))
            }
        };
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if d <= MAX_DURATION => Ok(d),
            _ => Err(format!("{s:?} is too long; at most \"36500d\" (100 years)")),
        }
    }

    /// Milliseconds, for time arithmetic on [`crate::event::Timestamp`]s; never overflows, since
    /// every parsed duration is at most [`MAX_DURATION`].
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = match ms {
            0 => return f.write_str("0"),
            _ if ms % 86_400_000 == 0 => (ms / 86_400_000, "d"),
            _ if ms % 3_600_000 == 0 => (ms / 3_600_000, "h"),
            _ if ms % 60_000 == 0 => (ms / 60_000, "m"),
            _ if ms % 1000 == 0 => (ms / 1000, "s"),
            _ => (ms, "ms"),
        };
        write!(f, "{n}{unit}")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"200ms\", \"15s\" or \"30d\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(s).map(HumanDuration).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                match n {
                    0 => Ok(HumanDuration(Duration::ZERO)),
                    _ => Err(E::custom(format!(
                        "{n} has no unit; write it as a string with one, such as \"{n}s\" or \"{n}ms\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, written as a number or with a unit: `1048576`, `"64KiB"`, `"16MiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// The largest size any key takes (1 TiB): keeps byte arithmetic far from overflow.
pub const MAX_BYTES: u64 = 1 << 40;

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("{s:?} is not a size; expected bytes, or a number and a unit such as \"64KiB\" or \"16MiB\"")
        })?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(format!("{s:?} has no known unit; expected B, KiB, MiB or GiB")),
        };
        match n.checked_mul(scale) {
            Some(b) if b <= MAX_BYTES => Ok(b),
            _ => Err(format!("{s:?} is too large; at most \"1024GiB\"")),
        }
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        match b {
            0 => f.write_str("0"),
            _ if b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            _ if b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            _ if b % (1 << 10) == 0 => write!(f, "{}KiB", b >> 10),
            _ => write!(f, "{b}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1048576 or \"16MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                match u64::try_from(n) {
                    Ok(b) if b <= MAX_BYTES => Ok(ByteSize(b)),
                    _ => Err(E::custom(format!("{n} is not a size from 0 to 1099511627776 (1 TiB)"))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                if n <= MAX_BYTES {
                    Ok(ByteSize(n))
                } else {
                    Err(E::custom(format!("{n} is not a size from 0 to 1099511627776 (1 TiB)")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_back_the_way_they_parse() {
        for s in ["200ms", "15s", "5m", "1h", "30d", "0"] {
            assert_eq!(HumanDuration(HumanDuration::parse(s).unwrap()).to_string(), s);
        }
    }

    #[test]
    fn sizes_parse_with_units_and_refuse_overflow() {
        assert_eq!(ByteSize::parse("16MiB"), Ok(16 << 20));
        assert!(ByteSize::parse("99999999999999GiB").unwrap_err().contains("too large"));
    }
}
