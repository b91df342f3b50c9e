//! Problems found in a configuration: collected while each section checks itself, then reported
//! at once, each naming where the value came from (the file, or an environment variable), the key,
//! what is wrong and what is expected. A leaf module, like `units`.

use std::fmt;
use std::time::Duration;

use crate::units::{ByteSize, HumanDuration};

/// Where a configuration value went wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file, or the environment variable the value came from.
    pub origin: String,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(origin: &str, key: &str, problem: String) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            key: key.to_string(),
            problem,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.problem)
        } else {
            write!(f, "{}: `{}` {}", self.origin, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration, in the order found; never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects the problems of a configuration while its sections check themselves.
pub struct Problems {
    origin: String,
    /// (key path, environment variable) of every value that came from the environment, so that a
    /// problem with it is blamed on the variable, not the file.
    env: Vec<(String, String)>,
    /// Keys whose wrong value was reported and replaced by the default: later checks that would
    /// blame that default on the user stay silent.
    defaulted: Vec<String>,
    list: Vec<ConfigError>,
}

impl Problems {
    pub fn new(origin: &str) -> Problems {
        Problems {
            origin: origin.to_string(),
            env: Vec::new(),
            defaulted: Vec::new(),
            list: Vec::new(),
        }
    }

    /// Reports `key` (a dotted path such as `pipeline.max_batch` or `file[0].path`) as wrong.
    pub fn add(&mut self, key: &str, problem: impl Into<String>) {
        if self.defaulted.iter().any(|d| d == key) {
            return;
        }
        let origin = self
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map_or(self.origin.clone(), |(_, var)| var.clone());
        self.list.push(ConfigError::new(&origin, key, problem.into()));
    }

    /// Says that `key`'s value was wrong (and reported) and its default stands in.
    pub(crate) fn defaulted(&mut self, key: &str) {
        self.defaulted.push(key.to_string());
    }

    /// Says that `key` came from `origin` (an environment variable), so that a problem found with
    /// its value later is blamed on the variable, not on the file.
    pub(crate) fn came_from(&mut self, key: String, origin: String) {
        self.env.push((key, origin));
    }

    /// Reports a problem that came from one environment variable.
    pub(crate) fn add_env(&mut self, var: &str, key: &str, problem: impl Into<String>) {
        self.list.push(ConfigError::new(var, key, problem.into()));
    }

    /// Checks that a number lies in `range`, saying so with `unit` (e.g. "bytes") if not.
    pub fn in_range<T: PartialOrd + fmt::Display>(&mut self, key: &str, value: T, range: std::ops::RangeInclusive<T>) {
        if !range.contains(&value) {
            self.add(
                key,
                format!(
                    "is {value}; expected a number from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// Checks that a duration lies in `range`.
    pub fn duration_in(&mut self, key: &str, value: HumanDuration, min: Duration, max: Duration) {
        if value.0 < min || value.0 > max {
            self.add(
                key,
                format!(
                    "is {value}; expected a duration from {} to {}",
                    HumanDuration(min),
                    HumanDuration(max)
                ),
            );
        }
    }

    /// Checks that a size lies in `range`.
    pub fn size_in(&mut self, key: &str, value: ByteSize, min: u64, max: u64) {
        if value.0 < min || value.0 > max {
            self.add(
                key,
                format!(
                    "is {value}; expected a size from {} to {}",
                    ByteSize(min),
                    ByteSize(max)
                ),
            );
        }
    }

    /// Every problem once, in the order found.
    pub(crate) fn into_result(mut self) -> Result<(), ConfigErrors> {
        let mut seen = std::collections::HashSet::new();
        self.list
            .retain(|e| seen.insert((e.origin.clone(), e.key.clone(), e.problem.clone())));
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}

/// The candidate closest to `word` in spelling, if one is close enough to be what was meant: a
/// near spelling, or a name the word begins with (`budget_daily` → `budget`).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            let lower = c.to_ascii_lowercase();
            let distance = strsim::damerau_levenshtein(&word, &lower);
            if distance <= 2.max(c.len() / 3) {
                Some((distance, c))
            } else if lower.len() >= 4 && word.starts_with(&lower) {
                Some((word.len() - lower.len(), c))
            } else {
                None
            }
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// serde's "unknown variant `x`, expected one of `a`, `b`" with "; did you mean `a`?" added when
/// one is close.
pub fn with_suggestion(message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown variant `") else {
        return message;
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return message;
    };
    let options: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(given, options) {
        Some(hint) => format!("{message}; did you mean `{hint}`?"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_spellings_are_suggested_and_far_ones_not() {
        assert_eq!(closest("budget_daily", ["budget", "error_rate"]), Some("budget"));
        assert_eq!(closest("eror_rate", ["budget", "error_rate"]), Some("error_rate"));
        assert_eq!(closest("latency", ["budget", "error_rate"]), None);
        let m = with_suggestion("unknown variant `jsno`, expected `text` or `json`".into());
        assert!(m.ends_with("did you mean `json`?"), "{m}");
        let m = with_suggestion("unknown variant `xml`, expected one of `text`, `json`".into());
        assert!(!m.contains("did you mean"), "{m}");
    }
}
