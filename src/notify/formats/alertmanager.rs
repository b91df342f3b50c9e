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
use crate::notify::{render, AlertState, Language, Notification};

pub struct Alertmanager {
    url: reqwest::Url,
    generator_url: String,
    lang: Language,
}

impl Alertmanager {
    pub fn new(mut url: reqwest::Url, generator_url: &str, lang: Language) -> Alertmanager {
        if !url.path().ends_with("/api/v2/alerts") {
            let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        Alertmanager {
            url,
            generator_url: generator_url.to_string(),
            lang,
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
                "value": render::number(n.value),
                "threshold": render::number(n.threshold),
                "notification_id": n.id,
                "alert_key": n.alert_key,
                "language": match self.lang { Language::Zh => "zh", Language::En => "en" },
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
        let am = Alertmanager::new(reqwest::Url::parse("http://am:9093/").unwrap(), "", Language::Zh);
        assert_eq!(am.url.as_str(), "http://am:9093/api/v2/alerts");
        let am = Alertmanager::new(
            reqwest::Url::parse("http://h/prefix/api/v2/alerts").unwrap(),
            "",
            Language::Zh,
        );
        assert_eq!(am.url.as_str(), "http://h/prefix/api/v2/alerts");
        assert_eq!(label_name("gen_ai.model"), "gen_ai_model");
        assert_eq!(label_name("1x"), "_1x");
    }
}
