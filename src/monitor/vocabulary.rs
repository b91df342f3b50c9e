//! The words of an alert — its severity, its state, the language it speaks and the unit of its
//! values — owned by the monitor and used as they are by the store, the webhooks, the API and the
//! page, so that each idea has one name and one word per language everywhere: `[严重·告警]` in a
//! chat title, `严重` on the page's badge, `severity="high"` for Alertmanager.
//!
//! A leaf: it imports nothing else of the crate, so that the store (which keeps alert records) and
//! the notifier may use it without reaching into the rest of the monitor.

use serde::{Deserialize, Serialize};

/// How urgent an alert is; ordered, so that `min_severity` filters and a budget alert escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    /// Earlier versions called it `medium`, which configurations and stored alerts may still say.
    #[default]
    #[serde(alias = "medium")]
    Warning,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Info, Severity::Warning, Severity::High, Severity::Critical];

    /// The machine name: configuration, the API, stored documents, Alertmanager's `severity` label.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The word people read, the same in every title, badge and message.
    pub fn word(self, language: Language) -> &'static str {
        match (language, self) {
            (Language::Zh, Severity::Info) => "提示",
            (Language::Zh, Severity::Warning) => "警告",
            (Language::Zh, Severity::High) => "严重",
            (Language::Zh, Severity::Critical) => "紧急",
            (Language::En, s) => s.name(),
        }
    }

    /// A stored or typed name (`medium` too); None for anything else.
    pub fn parse(name: &str) -> Option<Severity> {
        match name.to_ascii_lowercase().as_str() {
            "info" => Some(Severity::Info),
            "warning" | "medium" => Some(Severity::Warning),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Where an occurrence of an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(name: &str) -> Option<AlertState> {
        match name {
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }

    pub fn word(self, language: Language) -> &'static str {
        match (language, self) {
            (Language::Zh, AlertState::Firing) => "告警",
            (Language::Zh, AlertState::Resolved) => "已恢复",
            (Language::En, AlertState::Firing) => "FIRING",
            (Language::En, AlertState::Resolved) => "RESOLVED",
        }
    }
}

/// The language alerts are written in (`monitor.language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Zh,
    En,
}

/// What an alert's value counts, so that every place shows it with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// A percentage (error rates).
    Percent,
    /// Seconds (durations, how long something has lasted).
    Seconds,
    /// Money in RMB (the budget).
    Rmb,
    /// A count in the rule's window (calls, rejects, records).
    #[default]
    Count,
}

impl Unit {
    /// `50.0%`, `3.20 s`, `¥39.00`, `1200`.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Percent => format!("{value:.1}%"),
            Unit::Seconds if value >= 100.0 => format!("{value:.0} s"),
            Unit::Seconds => format!("{value:.2} s"),
            Unit::Rmb => format!("¥{value:.2}"),
            Unit::Count if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
            Unit::Count => format!("{value:.1}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_per_severity_and_the_old_name_still_reads() {
        let zh: Vec<&str> = Severity::ALL.iter().map(|s| s.word(Language::Zh)).collect();
        assert_eq!(zh, ["提示", "警告", "严重", "紧急"]);
        assert_eq!(Severity::parse("medium"), Some(Severity::Warning));
        let stored: Severity = serde_json::from_str("\"medium\"").unwrap();
        assert_eq!(stored, Severity::Warning);
        assert_eq!(serde_json::to_string(&Severity::Warning).unwrap(), "\"warning\"");
        assert!(Severity::Critical > Severity::High && Severity::High > Severity::Warning);
    }

    #[test]
    fn values_carry_their_unit() {
        assert_eq!(Unit::Percent.format(50.0), "50.0%");
        assert_eq!(Unit::Seconds.format(3.2), "3.20 s");
        assert_eq!(Unit::Seconds.format(600.0), "600 s");
        assert_eq!(Unit::Rmb.format(39.0), "¥39.00");
        assert_eq!(Unit::Count.format(1200.0), "1200");
    }
}
