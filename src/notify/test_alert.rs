//! `lngpt-collector alert test`: one test alert to each receiver, sent directly (no queue, no
//! filters, no retries), and what each answered.

use std::collections::BTreeMap;

use super::{formats, http, FormatKind, Notification, WebhookConfig};
use crate::event::Timestamp;
use crate::monitor::vocabulary::{AlertState, Language, Severity};

/// What one receiver answered to the test alert.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub receiver: String,
    pub format: FormatKind,
    /// The URL, keys masked.
    pub url: String,
    pub signature: String,
    /// `HTTP 200: {"errcode":0,"errmsg":"ok"}`, or the network error.
    pub answer: String,
    pub status: Option<u16>,
    pub ok: bool,
    /// When not ok: why, as the delivery loop would judge it.
    pub problem: Option<String>,
}

/// Sends a test alert to every receiver of `receivers`, or only to the one named `only`.
pub async fn send_test_alerts(
    receivers: &[WebhookConfig],
    only: Option<&str>,
    speech: crate::notify::render::Speech,
) -> Result<Vec<TestOutcome>, String> {
    if receivers.is_empty() {
        return Err("the configuration has no [[webhook]] entry; add one (see config.example.toml)".into());
    }
    let chosen: Vec<&WebhookConfig> = match only {
        None => receivers.iter().collect(),
        Some(name) => {
            let found: Vec<&WebhookConfig> = receivers.iter().filter(|r| r.name == name).collect();
            if found.is_empty() {
                let names: Vec<&str> = receivers.iter().map(|r| r.name.as_str()).collect();
                return Err(format!(
                    "no [[webhook]] is named {name:?}; the configured ones are: {}",
                    names.join(", ")
                ));
            }
            found
        }
    };
    let client = http::client()?;
    let mut outcomes = Vec::new();
    for cfg in chosen {
        let format = formats::build(cfg, speech.clone())?;
        let note = test_notification(cfg, speech.lang);
        let out = format.build(&note.id, std::slice::from_ref(&note), &[], Timestamp::now());
        let answer = http::send(&client, out, cfg.timeout.0).await;
        let verdict = http::judge(format.as_ref(), &answer, cfg.rate_window.0);
        let described = answer.describe();
        // The verdict's reason, when it says more than the answer itself.
        let reason = |why: String, then: &str| {
            if why == described {
                then.to_string()
            } else {
                format!("{why} ({then})")
            }
        };
        let problem = match verdict {
            http::Verdict::Delivered => None,
            http::Verdict::Retry { why, .. } => Some(reason(why, "the daemon would retry this")),
            http::Verdict::GiveUp(why) => Some(reason(why, "the daemon would give this up")),
        };
        outcomes.push(TestOutcome {
            receiver: cfg.name.clone(),
            format: cfg.format,
            url: cfg.masked_url(),
            signature: format.signature_scheme().to_string(),
            answer: described,
            status: answer.status,
            ok: problem.is_none(),
            problem,
        });
    }
    Ok(outcomes)
}

fn test_notification(cfg: &WebhookConfig, lang: Language) -> Notification {
    let now = Timestamp::now();
    let id = format!("test_{:016x}", getrandom::u64().unwrap_or(now.as_millis() as u64));
    let (title, message) = match lang {
        Language::Zh => (
            "测试告警：webhook 连通性测试".to_string(),
            format!(
                "这是 lngpt-collector 发送的测试告警（alert test），用于确认 webhook「{}」的地址、签名和格式配置正确。收到即表示配置成功，无需处理。",
                cfg.name
            ),
        ),
        Language::En => (
            "Test alert: webhook connectivity".to_string(),
            format!(
                "A test alert from `lngpt-collector alert test`, checking the URL, signature and format of webhook \"{}\". Receiving it means the configuration works; nothing to do.",
                cfg.name
            ),
        ),
    };
    let mut labels = BTreeMap::new();
    labels.insert("host".to_string(), crate::store::document::hostname());
    labels.insert("receiver".to_string(), cfg.name.clone());
    // Alertmanager keeps a firing alert until it is resolved: this one ends by itself in 5 minutes.
    let (state, ends_at) = if cfg.format == FormatKind::Alertmanager {
        (AlertState::Resolved, Some(Timestamp(now.as_millis() + 300_000)))
    } else {
        (AlertState::Firing, None)
    };
    Notification {
        id,
        alert_key: format!("alert_test:{}", cfg.name),
        rule: "alert_test".to_string(),
        severity: Severity::Info,
        escalated_from: None,
        state,
        title,
        message,
        value: 1.0,
        current: 1.0,
        unit: crate::monitor::vocabulary::Unit::Count,
        threshold: 1.0,
        labels,
        starts_at: now,
        ends_at,
    }
}
