//! One file per receiver format: how a delivery becomes an HTTP request (layout, signature, URL),
//! and what a vendor's `200 OK` body says (they answer 200 with an error code inside).

mod alertmanager;
mod dingtalk;
mod feishu;
mod generic;
mod slack;
mod wecom;

use super::{FormatKind, Notification, WebhookConfig};
use crate::event::Timestamp;
use crate::notify::render::Speech;

/// An HTTP POST, ready to send.
pub struct Outgoing {
    pub url: reqwest::Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What a 2xx answer's body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyVerdict {
    Ok,
    /// The vendor's rate limit: wait a rate window.
    RateLimited(String),
    /// A vendor-side hiccup: retry with backoff.
    Transient(String),
    /// A refusal retrying will not fix (bad signature, keyword, IP list): give up.
    Refused(String),
}

pub trait Format: Send + Sync {
    /// The request for a delivery of `items` (in queue order), signed for `now`. `active` holds the
    /// other firing alerts, for formats that re-state them (Alertmanager); others ignore it.
    fn build(&self, delivery_id: &str, items: &[Notification], active: &[Notification], now: Timestamp) -> Outgoing;

    /// Largest request body the vendor takes.
    fn max_body_bytes(&self) -> usize {
        1 << 20
    }

    /// Judges the body of a 2xx answer.
    fn judge(&self, _body: &[u8]) -> BodyVerdict {
        BodyVerdict::Ok
    }

    /// How requests are signed, for `alert test`.
    fn signature_scheme(&self) -> &'static str;
}

/// The format of a receiver, its URL and secret checked.
pub fn build(cfg: &WebhookConfig, speech: Speech) -> Result<Box<dyn Format>, String> {
    let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("url {} is not a URL: {e}", cfg.masked_url()))?;
    Ok(match cfg.format {
        FormatKind::Generic => Box::new(generic::Generic::new(url, &cfg.secret)?),
        FormatKind::Alertmanager => Box::new(alertmanager::Alertmanager::new(url, &cfg.generator_url, speech)),
        FormatKind::Slack => Box::new(slack::Slack { url, speech }),
        FormatKind::Feishu => Box::new(feishu::Feishu {
            url,
            secret: cfg.secret.clone(),
            speech,
        }),
        FormatKind::Dingtalk => Box::new(dingtalk::Dingtalk {
            url,
            secret: cfg.secret.clone(),
            speech,
        }),
        FormatKind::Wecom => Box::new(wecom::Wecom { url, speech }),
    })
}

/// Most notifications in one message: beyond that a message is too long to read anyway.
pub const MAX_GROUP: usize = 20;

/// How many of `items` (at least one) fit one request of `format`.
pub fn fitting(format: &dyn Format, items: &[Notification]) -> usize {
    let mut n = items.len().min(MAX_GROUP);
    while n > 1 {
        let out = format.build("fit", &items[..n], &[], Timestamp::now());
        if out.body.len() <= format.max_body_bytes() {
            break;
        }
        n /= 2;
    }
    n.max(1)
}

/// The `errcode`/`code` convention of the Chinese vendors: a JSON object whose code is 0 on success.
fn json_code(body: &[u8], fields: &[&str]) -> Result<(i64, String), String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "answer is not JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    let code = fields
        .iter()
        .find_map(|f| v.get(*f).and_then(serde_json::Value::as_i64))
        .ok_or_else(|| format!("answer has no {}: {v}", fields.join(" or ")))?;
    let msg = ["errmsg", "msg", "StatusMessage"]
        .iter()
        .find_map(|f| v.get(*f).and_then(serde_json::Value::as_str))
        .unwrap_or("")
        .to_string();
    Ok((code, msg))
}

/// A JSON body, compact.
fn json_body(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::vocabulary::{AlertState, Severity};

    #[test]
    fn groups_are_cut_to_the_vendors_size_and_a_lone_long_one_still_fits() {
        let cfg = WebhookConfig {
            name: "w".into(),
            url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k".into(),
            format: FormatKind::Wecom,
            ..WebhookConfig::default()
        };
        let format = build(&cfg, Speech::default()).unwrap();
        let n = |i: usize| Notification {
            id: format!("n{i}"),
            alert_key: "k".into(),
            rule: "r".into(),
            severity: Severity::High,
            escalated_from: None,
            state: AlertState::Firing,
            title: "标题".repeat(100),
            message: "很长的消息".repeat(400),
            value: 1.0,
            current: 1.0,
            unit: Default::default(),
            threshold: 2.0,
            labels: Default::default(),
            starts_at: Timestamp(0),
            ends_at: None,
        };
        let items: Vec<Notification> = (0..30).map(n).collect();
        let fit = fitting(format.as_ref(), &items);
        assert!((1..MAX_GROUP).contains(&fit), "{fit}");
        for k in [fit, 1] {
            let out = format.build("d", &items[..k], &[], Timestamp(0));
            let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
            let content = body["markdown"]["content"].as_str().unwrap();
            assert!(content.len() <= 4096, "{k}: {}", content.len());
        }
    }
}
