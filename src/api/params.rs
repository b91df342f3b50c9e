//! Query parameters, read one by one with messages that name the parameter and what it takes.
//! Unknown parameters are refused (a misspelt filter must not silently match everything).

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;

use super::ApiError;
use crate::event::{Level, NaiveZone, Timestamp};
use crate::store::query::TimeRange;

/// Parameters every route ignores: a browser cache-buster.
const IGNORED: &[&str] = &["_"];

/// A route's query string as axum hands it over: the pairs, or why they could not be read.
pub type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub struct Params {
    pairs: Vec<(String, String)>,
    /// How a time without an offset is read (`naive_timezone`: the original front end sends the
    /// browser's local time, naive).
    naive: NaiveZone,
}

impl Params {
    /// The request's parameters, if the query string parses and names only `known` ones.
    pub fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        known: &[&str],
    ) -> Result<Params, ApiError> {
        let Query(pairs) = query.map_err(|e| ApiError::bad_request(format!("the query string cannot be read: {e}")))?;
        for (name, _) in &pairs {
            if !known.contains(&name.as_str()) && !IGNORED.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{name}`; this route takes: {}",
                    known.join(", ")
                )));
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in &pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "parameter `{name}` is given more than once"
                )));
            }
            seen.push(name);
        }
        Ok(Params {
            pairs,
            naive: NaiveZone::Utc,
        })
    }

    /// Reads times without an offset (and bare dates) in `zone`.
    pub fn with_naive_timezone(mut self, zone: &NaiveZone) -> Params {
        self.naive = zone.clone();
        self
    }

    /// A parameter's value; an empty one counts as absent (forms send `level=` for "any").
    pub fn str(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, max_len: usize) -> Result<Option<String>, ApiError> {
        match self.str(name) {
            Some(v) if v.len() > max_len => Err(ApiError::param(name, v, format!("at most {max_len} bytes"))),
            other => Ok(other.map(str::to_string)),
        }
    }

    /// A whole number in `min..=max`, `default` when absent.
    pub fn number(&self, name: &str, min: u64, max: u64, default: u64) -> Result<u64, ApiError> {
        let Some(v) = self.str(name) else {
            return Ok(default);
        };
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ApiError::param(name, v, format!("a whole number from {min} to {max}")))
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.str(name) {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(ApiError::param(name, v, "true or false")),
        }
    }

    pub fn level(&self, name: &str) -> Result<Option<Level>, ApiError> {
        self.str(name)
            .map(|v| Level::parse(v).ok_or_else(|| ApiError::param(name, v, "DEBUG, INFO, WARNING, ERROR or CRITICAL")))
            .transpose()
    }

    /// A time: RFC 3339 (`2026-11-26T08:00:00+08:00`; without an offset, in `naive_timezone`), a
    /// date (`2026-11-26`, its midnight in `naive_timezone`), or epoch seconds.
    pub fn time(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        let Some(v) = self.str(name) else {
            return Ok(None);
        };
        parse_time(v, &self.naive).map(Some).ok_or_else(|| {
            ApiError::param(
                name,
                v,
                "a time such as 2026-11-26T08:00:00Z, 2026-11-26T16:00:00+08:00, 2026-11-26, or epoch seconds",
            )
        })
    }

    /// `start_time` to `end_time`, both inclusive as in the original API.
    pub fn range(&self) -> Result<TimeRange, ApiError> {
        let from = self.time("start_time")?;
        let to = self.time("end_time")?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(ApiError::bad_request(format!(
                    "parameter `start_time` is after `end_time`; expected start_time ≤ end_time (got {} and {})",
                    self.str("start_time").unwrap_or_default(),
                    self.str("end_time").unwrap_or_default()
                )));
            }
        }
        Ok(TimeRange {
            from,
            to: to.map(|t| Timestamp(t.0.saturating_add(1))),
        })
    }

    /// [`Params::range`], with the last `default_span` up to now filling what is absent.
    pub fn range_or_last(&self, default_span_ms: i64) -> Result<TimeRange, ApiError> {
        let r = self.range()?;
        let to = r.to.unwrap_or_else(|| Timestamp(Timestamp::now().0 + 1));
        let from = r.from.unwrap_or(Timestamp(to.0 - 1 - default_span_ms));
        Ok(TimeRange::between(from, to))
    }
}

fn parse_time(v: &str, naive: &NaiveZone) -> Option<Timestamp> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Timestamp::from_epoch_seconds(v.parse().ok()?).ok();
    }
    if v.len() == 10 {
        return Timestamp::parse_rfc3339_in(&format!("{v}T00:00:00"), naive).ok();
    }
    // A `+` in a URL query means a space; an offset such as +08:00 arrives as " 08:00".
    let fixed;
    let v = if v.len() > 19 && v.as_bytes().get(v.len() - 6) == Some(&b' ') {
        fixed = format!("{}+{}", &v[..v.len() - 6], &v[v.len() - 5..]);
        fixed.as_str()
    } else {
        v
    };
    Timestamp::parse_rfc3339_in(v, naive).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_the_forms_people_send() {
        let utc = Timestamp::parse_rfc3339("2026-11-26T08:00:00Z").unwrap();
        for v in [
            "2026-11-26T08:00:00Z",
            "2026-11-26T16:00:00+08:00",
            "2026-11-26T16:00:00 08:00",
            "1795680000",
            "2026-11-26T08:00:00",
        ] {
            assert_eq!(parse_time(v, &NaiveZone::Utc), Some(utc), "{v}");
        }
        assert!(parse_time("2026-11-26", &NaiveZone::Utc).is_some());
        // The original front end sends the browser's local time without an offset.
        let shanghai = NaiveZone::named("Asia/Shanghai").unwrap();
        assert_eq!(parse_time("2026-11-26T16:00:00", &shanghai), Some(utc));
        assert_eq!(
            parse_time("2026-11-26T16:00:00Z", &shanghai),
            Some(Timestamp(utc.0 + 8 * 3_600_000))
        );
        assert_eq!(
            parse_time("2026-11-27", &shanghai),
            Some(Timestamp(utc.0 + 8 * 3_600_000))
        );
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "-5"] {
            assert_eq!(parse_time(bad, &NaiveZone::Utc), None, "{bad}");
        }
    }
}
