//! `alertmanager`: Prometheus Alertmanager's API v2, `POST /api/v2/alerts` with a JSON array of
//! `{labels, annotations, startsAt, endsAt, generatorURL}` (the `postableAlerts` of
//! <https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml>).
//!
//! An alert is its label set: `alertname` (the rule), `severity` and the notification's labels.
//! A firing alert is sent without `endsAt`, so Alertmanager keeps it for its `resolve_timeout` (5
//! minutes by default); every post therefore re-states all firing alerts (`active`), and one is
//! made every `resend_interval` when nothing else was. A resolved alert is sent with `endsAt`.
//! Alertmanager takes no signature: protect it with its own auth or a proxy.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{json_body, Format, Outgoing};
use crate::event::Timestamp;
use crate::monitor::vocabulary::{AlertState, Language};
use crate::notify::render::Speech;
use crate::notify::{render, Notification};

pub struct Alertmanager {
    url: reqwest::Url,
    generator_url: String,
    speech: Speech,
}

impl Alertmanager {
    pub fn new(mut url: reqwest::Url, generator_url: &str, speech: Speech) -> Alertmanager {
        if !url.path().ends_with("/api/v2/alerts") {
            let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        Alertmanager {
            url,
            generator_url: generator_url.to_string(),
            speech,
        }
    }

    fn alert(&self, n: &Notification, now: Timestamp) -> Value {
        let mut labels = BTreeMap::new();
        for (k, v) in &n.labels {
            labels.insert(label_name(k), v.clone());
        }
        labels.insert("alertname".to_string(), n.rule.clone());
        labels.insert("severity".to_string(), n.severity.name().to_string());
        let mut alert = json!({
            "labels": labels,
            "annotations": {
                "summary": n.title,
                "description": render::message(n),
                "value": n.unit.format(n.current),
                "value_at_firing": n.unit.format(n.value),
                "threshold": n.unit.format(n.threshold),
                "notification_id": n.id,
                "alert_key": n.alert_key,
                "language": match self.speech.lang { Language::Zh => "zh", Language::En => "en" },
            },
            "startsAt": n.starts_at.to_string(),
        });
        if n.state == AlertState::Resolved {
            alert["endsAt"] = Value::String(n.ends_at.unwrap_or(now).to_string());
        }
        if !self.generator_url.is_empty() {
            alert["generatorURL"] = Value::String(self.generator_url.clone());
        }
        alert
    }
}

/// Label names are `[a-zA-Z_][a-zA-Z0-9_]*` in Prometheus and Alertmanager.
fn label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

impl Format for Alertmanager {
    fn build(&self, _delivery_id: &str, items: &[Notification], active: &[Notification], now: Timestamp) -> Outgoing {
        let mut alerts: Vec<Value> = items.iter().map(|n| self.alert(n, now)).collect();
        // An escalation changes the `severity` label, and a label set is an alert to Alertmanager:
        // the lower one ends now, so the higher replaces it rather than standing beside it.
        for n in items {
            if let Some(from) = n.escalated_from {
                let mut lower = n.clone();
                lower.severity = from;
                lower.state = AlertState::Resolved;
                lower.ends_at = Some(now);
                alerts.push(self.alert(&lower, now));
            }
        }
        // The other firing alerts, re-stated; one the delivery itself changes is sent as it says.
        alerts.extend(
            active
                .iter()
                .filter(|a| !items.iter().any(|n| n.alert_key == a.alert_key))
                .map(|a| self.alert(a, now)),
        );
        Outgoing {
            url: self.url.clone(),
            headers: vec![("content-type", "application/json".to_string())],
            body: json_body(&Value::Array(alerts)),
        }
    }

    fn signature_scheme(&self) -> &'static str {
        "none (Alertmanager's API v2 takes no signature)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_completed_and_label_names_are_made_valid() {
        let am = Alertmanager::new(reqwest::Url::parse("http://am:9093/").unwrap(), "", Speech::default());
        assert_eq!(am.url.as_str(), "http://am:9093/api/v2/alerts");
        let am = Alertmanager::new(
            reqwest::Url::parse("http://h/prefix/api/v2/alerts").unwrap(),
            "",
            Speech::default(),
        );
        assert_eq!(am.url.as_str(), "http://h/prefix/api/v2/alerts");
        assert_eq!(label_name("gen_ai.model"), "gen_ai_model");
        assert_eq!(label_name("1x"), "_1x");
    }

    #[test]
    fn an_escalation_replaces_the_lower_severity_rather_than_adding_an_alert() {
        let am = Alertmanager::new(reqwest::Url::parse("http://am:9093/").unwrap(), "", Speech::default());
        let mut n = crate::notify::queue::tests::note("n1", AlertState::Firing);
        n.severity = crate::monitor::vocabulary::Severity::Critical;
        n.escalated_from = Some(crate::monitor::vocabulary::Severity::High);
        let now = Timestamp(1_795_680_060_000);
        let out = am.build("d", std::slice::from_ref(&n), &[], now);
        let alerts: Vec<Value> = serde_json::from_slice(&out.body).unwrap();
        let by_severity = |s: &str| alerts.iter().find(|a| a["labels"]["severity"] == s).cloned().unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(by_severity("critical").get("endsAt").is_none(), "the new one fires");
        assert_eq!(by_severity("high")["endsAt"], now.to_string(), "the lower one ends now");
    }
}
