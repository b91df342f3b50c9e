//! Alert rules: the original AlertSystem's three (error rate, average duration, request count per
//! window) with its thresholds, and the ones a sidecar needs besides: p95 latency, error rate per
//! model, "no events" (the app or its socket is dead), the collector's own health, and the budget.
//!
//! A rule turns the current figures into [`Condition`]s: one per alert key, saying whether it is
//! over its threshold, and — with hysteresis — whether it is clearly back under it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::units::HumanDuration;

use super::vocabulary::{Language, Severity, Unit};

/// One rule's switch and thresholds. Which unit `threshold` has depends on the rule (see
/// `config.example.toml`). Keys left out of the file keep the rule's own defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleConfig {
    pub enabled: bool,
    pub threshold: f64,
    pub severity: Severity,
    /// Below this many requests in the window the rule stays quiet (one failure out of one call is
    /// not a 100 % error rate).
    pub min_requests: u64,
    /// Consecutive evaluations the condition must hold before the alert fires (and be clear
    /// before it resolves).
    #[serde(rename = "for")]
    pub for_evaluations: u32,
    /// How far under the threshold (a fraction of it) the value must fall before the alert
    /// resolves, so that a value hovering at the threshold does not flap.
    pub hysteresis: f64,
}

impl RuleConfig {
    fn new(threshold: f64, severity: Severity) -> RuleConfig {
        RuleConfig {
            enabled: true,
            threshold,
            severity,
            min_requests: 1,
            for_evaluations: 1,
            hysteresis: 0.1,
        }
    }

    fn min_requests(mut self, n: u64) -> RuleConfig {
        self.min_requests = n;
        self
    }

    fn off(mut self) -> RuleConfig {
        self.enabled = false;
        self
    }

    fn validate(&self, key: &str, p: &mut Problems) {
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            p.add(
                &format!("{key}.threshold"),
                format!("is {}; expected a number ≥ 0", self.threshold),
            );
        }
        p.in_range(&format!("{key}.for"), self.for_evaluations, 1..=1000);
        if !(0.0..1.0).contains(&self.hysteresis) {
            p.add(
                &format!("{key}.hysteresis"),
                format!(
                    "is {}; expected a fraction from 0 to below 1, such as 0.1",
                    self.hysteresis
                ),
            );
        }
    }
}

/// `[monitor.rules]`: every rule, with the original's thresholds where it had them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesConfig {
    /// Percent of failed calls in the last window (the original: > 10 %, high).
    pub error_rate: RuleConfig,
    /// Seconds, average response time in the last window (the original: > 5 s, medium).
    pub avg_duration: RuleConfig,
    /// Calls in the last window (the original: > 1000 a minute, medium).
    pub request_count: RuleConfig,
    /// Seconds, 95th percentile of response times in the last window.
    pub p95_duration: RuleConfig,
    /// Percent of failed calls of one model in the last window.
    pub model_error_rate: RuleConfig,
    /// Seconds without any stored event from this host: the app or its socket is dead.
    pub no_events: RuleConfig,
    /// Seconds MongoDB has been unreachable.
    pub store_unreachable: RuleConfig,
    /// Events dropped by the outbox cap since start (any is an alert).
    pub outbox_dropping: RuleConfig,
    /// Rejected lines in the last window.
    pub rejects: RuleConfig,
    /// The budget's warning fractions (`[budget] warn_at`); this severity is for reaching a limit,
    /// warnings below it are one step lower.
    pub budget: RuleConfig,
    /// Cost records in the last window whose model has no price in `[prices]` (stored at 0).
    pub unpriced: RuleConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            error_rate: RuleConfig::new(10.0, Severity::High).min_requests(5),
            avg_duration: RuleConfig::new(5.0, Severity::Warning).min_requests(3),
            request_count: RuleConfig::new(1000.0, Severity::Warning),
            p95_duration: RuleConfig::new(15.0, Severity::Warning).min_requests(20),
            model_error_rate: RuleConfig::new(20.0, Severity::High).min_requests(10),
            no_events: RuleConfig::new(600.0, Severity::High).off(),
            store_unreachable: RuleConfig::new(300.0, Severity::High),
            outbox_dropping: RuleConfig::new(0.0, Severity::Critical),
            rejects: RuleConfig::new(100.0, Severity::Warning),
            budget: RuleConfig::new(1.0, Severity::Critical),
            unpriced: RuleConfig::new(0.0, Severity::Warning),
        }
    }
}

/// What a file says about one rule; the rest stays as that rule's default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulePatch {
    enabled: Option<bool>,
    threshold: Option<f64>,
    severity: Option<Severity>,
    min_requests: Option<u64>,
    #[serde(rename = "for")]
    for_evaluations: Option<u32>,
    hysteresis: Option<f64>,
}

impl<'de> Deserialize<'de> for RulesConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let patches: BTreeMap<String, RulePatch> = BTreeMap::deserialize(d)?;
        let mut rules = RulesConfig::default();
        for (name, p) in patches {
            let rule = rules
                .get_mut(&name)
                .ok_or_else(|| serde::de::Error::custom(format!("there is no rule named {name:?}")))?;
            rule.enabled = p.enabled.unwrap_or(rule.enabled);
            rule.threshold = p.threshold.unwrap_or(rule.threshold);
            rule.severity = p.severity.unwrap_or(rule.severity);
            rule.min_requests = p.min_requests.unwrap_or(rule.min_requests);
            rule.for_evaluations = p.for_evaluations.unwrap_or(rule.for_evaluations);
            rule.hysteresis = p.hysteresis.unwrap_or(rule.hysteresis);
        }
        Ok(rules)
    }
}

/// Every rule's name, as `[monitor.rules.<name>]`, alerts' `rule` and webhooks' `rules` spell it.
pub const RULE_NAMES: [&str; 11] = [
    "error_rate",
    "avg_duration",
    "request_count",
    "p95_duration",
    "model_error_rate",
    "no_events",
    "store_unreachable",
    "outbox_dropping",
    "rejects",
    "budget",
    "unpriced",
];

impl RulesConfig {
    fn get_mut(&mut self, name: &str) -> Option<&mut RuleConfig> {
        Some(match name {
            "error_rate" => &mut self.error_rate,
            "avg_duration" => &mut self.avg_duration,
            "request_count" => &mut self.request_count,
            "p95_duration" => &mut self.p95_duration,
            "model_error_rate" => &mut self.model_error_rate,
            "no_events" => &mut self.no_events,
            "store_unreachable" => &mut self.store_unreachable,
            "outbox_dropping" => &mut self.outbox_dropping,
            "rejects" => &mut self.rejects,
            "budget" => &mut self.budget,
            "unpriced" => &mut self.unpriced,
            _ => return None,
        })
    }

    pub fn validate(&self, p: &mut Problems) {
        for (name, rule) in self.all() {
            rule.validate(&format!("monitor.rules.{name}"), p);
        }
    }

    pub fn all(&self) -> [(&'static str, &RuleConfig); 11] {
        [
            ("error_rate", &self.error_rate),
            ("avg_duration", &self.avg_duration),
            ("request_count", &self.request_count),
            ("p95_duration", &self.p95_duration),
            ("model_error_rate", &self.model_error_rate),
            ("no_events", &self.no_events),
            ("store_unreachable", &self.store_unreachable),
            ("outbox_dropping", &self.outbox_dropping),
            ("rejects", &self.rejects),
            ("budget", &self.budget),
            ("unpriced", &self.unpriced),
        ]
    }
}

/// A rule's verdict on one alert key at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The fingerprint: the rule and its labels, readable (`model_error_rate{model=gpt-4o}`).
    pub key: String,
    pub rule: &'static str,
    pub labels: BTreeMap<String, String>,
    pub severity: Severity,
    pub value: f64,
    pub unit: Unit,
    pub threshold: f64,
    /// Over the threshold now.
    pub over: bool,
    /// Clearly under it (past the hysteresis), or no longer measurable.
    pub clear: bool,
    /// Evaluations needed (from the rule's `for`).
    pub for_evaluations: u32,
    pub title: String,
    pub message: String,
}

impl Condition {
    /// A condition of `rule` on `value` against its threshold (`above`: alert when the value is
    /// over the threshold; else when it is at least the threshold).
    pub fn measure(
        rule: &'static str,
        cfg: &RuleConfig,
        labels: BTreeMap<String, String>,
        value: f64,
        measurable: bool,
        text: (String, String),
    ) -> Condition {
        let over = measurable && value > cfg.threshold;
        let clear = !measurable || value <= cfg.threshold * (1.0 - cfg.hysteresis);
        Condition {
            key: fingerprint(rule, &labels),
            rule,
            labels,
            severity: cfg.severity,
            value,
            unit: unit_of(rule),
            threshold: cfg.threshold,
            over,
            clear,
            for_evaluations: cfg.for_evaluations,
            title: text.0,
            message: text.1,
        }
    }
}

/// What a rule's values count.
pub fn unit_of(rule: &str) -> Unit {
    match rule {
        "error_rate" | "model_error_rate" => Unit::Percent,
        "avg_duration" | "p95_duration" | "no_events" | "store_unreachable" => Unit::Seconds,
        "budget" => Unit::Rmb,
        _ => Unit::Count,
    }
}

/// `rule{label=value,…}`, labels in order: the same alert gets the same key on every collector.
pub fn fingerprint(rule: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return rule.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{rule}{{{}}}", inner.join(","))
}

/// `[monitor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub enabled: bool,
    /// The tumbling window: per-minute by default.
    pub window: HumanDuration,
    /// How much recent performance stays in memory (and is rebuilt from the store at start).
    pub keep: HumanDuration,
    /// A window is written to `api_metrics` this long after it ends, so late events still land in it.
    pub grace: HumanDuration,
    /// How often rules are evaluated.
    pub evaluate_every: HumanDuration,
    /// While an alert lasts, it is sent again this often.
    pub repeat_interval: HumanDuration,
    pub language: Language,
    pub rules: RulesConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            window: HumanDuration(Duration::from_secs(60)),
            keep: HumanDuration(Duration::from_secs(3600)),
            grace: HumanDuration(Duration::from_secs(5)),
            evaluate_every: HumanDuration(Duration::from_secs(10)),
            repeat_interval: HumanDuration(Duration::from_secs(4 * 3600)),
            language: Language::Zh,
            rules: RulesConfig::default(),
        }
    }
}

impl MonitorConfig {
    pub fn validate(&self, p: &mut Problems) {
        let (ms, day) = (Duration::from_millis(1), Duration::from_secs(86_400));
        p.duration_in(
            "monitor.window",
            self.window,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        p.duration_in(
            "monitor.keep",
            self.keep,
            Duration::from_millis(10),
            Duration::from_secs(7 * 86_400),
        );
        if self.keep.0 < self.window.0 {
            p.add(
                "monitor.keep",
                format!("is {}; expected at least monitor.window ({})", self.keep, self.window),
            );
        } else if self.keep.0.as_millis() / self.window.0.as_millis().max(1) > 20_000 {
            p.add(
                "monitor.keep",
                format!(
                    "is {}: over 20000 windows of {}; keep less or widen the window",
                    self.keep, self.window
                ),
            );
        }
        p.duration_in("monitor.grace", self.grace, Duration::ZERO, Duration::from_secs(3600));
        p.duration_in(
            "monitor.evaluate_every",
            self.evaluate_every,
            ms,
            Duration::from_secs(3600),
        );
        p.duration_in("monitor.repeat_interval", self.repeat_interval, ms, 7 * day);
        self.rules.validate(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_the_rules_in_order() {
        let config = RulesConfig::default();
        let names: Vec<&str> = config.all().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, RULE_NAMES);
        let mut c = RulesConfig::default();
        assert!(RULE_NAMES.iter().all(|n| c.get_mut(n).is_some()));
    }
}
