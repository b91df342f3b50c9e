//! `[[webhook]]`: one receiver of alert notifications each.
//!
//! A receiver's `name` is the key of its durable queue (and of its environment overrides, e.g.
//! `LNGPT_COLLECTOR_WEBHOOK_OPS_SECRET`), so it must be unique and stable: renaming a receiver
//! starts it on an empty queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signing;
use crate::monitor::vocabulary::Severity;
use crate::problems::Problems;
use crate::units::HumanDuration;

/// How notifications are laid out and signed for a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// Our JSON schema (README), signed as Standard Webhooks specify.
    Generic,
    /// Prometheus Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
    /// Slack incoming webhook.
    Slack,
    /// Feishu (Lark) custom bot.
    Feishu,
    /// DingTalk custom robot.
    Dingtalk,
    /// WeCom (WeChat Work) group robot.
    Wecom,
}

impl FormatKind {
    pub fn name(self) -> &'static str {
        match self {
            FormatKind::Generic => "generic",
            FormatKind::Alertmanager => "alertmanager",
            FormatKind::Slack => "slack",
            FormatKind::Feishu => "feishu",
            FormatKind::Dingtalk => "dingtalk",
            FormatKind::Wecom => "wecom",
        }
    }

    /// Posts per minute the vendor takes from one robot; 0 = no limit of its own.
    ///
    /// DingTalk: 20 a minute, then throttled for 10 minutes
    /// (<https://open.dingtalk.com/document/orgapp/custom-robot-access>, "消息发送频率限制").
    /// WeCom: 20 a minute (<https://developer.work.weixin.qq.com/document/path/91770>, "消息发送频率限制").
    /// Feishu: 100 a minute and 5 a second per bot (<https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>).
    /// Slack: about one a second per incoming webhook (<https://api.slack.com/apis/rate-limits>).
    pub fn default_max_per_minute(self) -> u32 {
        match self {
            FormatKind::Dingtalk | FormatKind::Wecom => 20,
            FormatKind::Feishu => 100,
            FormatKind::Slack => 60,
            FormatKind::Generic | FormatKind::Alertmanager => 0,
        }
    }

    /// Whether the format uses `secret`.
    fn takes_secret(self) -> bool {
        matches!(self, FormatKind::Generic | FormatKind::Feishu | FormatKind::Dingtalk)
    }
}

/// `[[webhook]]`: one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; names the receiver's queue, its log lines and its environment overrides.
    pub name: String,
    /// Where to POST. Vendors' URLs carry their key (`access_token=`, `key=`, a path token): they are
    /// masked in logs and in `check-config`.
    pub url: String,
    pub format: FormatKind,
    /// generic: `whsec_<base64>` (Standard Webhooks); feishu, dingtalk: the robot's signing secret.
    /// Empty: not signed.
    pub secret: String,
    /// Notifications below this severity are not sent here.
    pub min_severity: Severity,
    /// Only these rules (e.g. `["budget"]`, names of `monitor::rules::RULE_NAMES`); empty = every rule.
    pub rules: Vec<String>,
    /// One HTTP attempt, connecting included.
    pub timeout: HumanDuration,
    /// Posts allowed per `rate_window`; 0 = the format's own limit (dingtalk and wecom 20, feishu
    /// 100, slack 60, generic and alertmanager none).
    pub max_per_minute: u32,
    /// The window `max_per_minute` counts over: one minute; shorter only in tests.
    pub rate_window: HumanDuration,
    /// How long the first notification of a burst waits for others to share its message.
    pub group_wait: HumanDuration,
    /// First retry delay; doubles per failed attempt (with jitter) up to `max_backoff`.
    pub backoff: HumanDuration,
    pub max_backoff: HumanDuration,
    /// alertmanager: how often firing alerts are posted again, so that Alertmanager does not resolve
    /// them on its own (its `resolve_timeout`, 5 minutes by default).
    pub resend_interval: HumanDuration,
    /// alertmanager: the link Alertmanager shows as the alert's source (e.g. your dashboard); empty = none.
    pub generator_url: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            format: FormatKind::Generic,
            secret: String::new(),
            min_severity: Severity::Info,
            rules: Vec::new(),
            timeout: HumanDuration(Duration::from_secs(10)),
            max_per_minute: 0,
            rate_window: HumanDuration(Duration::from_secs(60)),
            group_wait: HumanDuration(Duration::from_secs(10)),
            backoff: HumanDuration(Duration::from_secs(1)),
            max_backoff: HumanDuration(Duration::from_secs(300)),
            resend_interval: HumanDuration(Duration::from_secs(60)),
            generator_url: String::new(),
        }
    }
}

impl WebhookConfig {
    /// Posts allowed per `rate_window`, the format's default applied; 0 = unlimited.
    pub fn max_posts(&self) -> u32 {
        if self.max_per_minute == 0 {
            self.format.default_max_per_minute()
        } else {
            self.max_per_minute
        }
    }

    /// The URL as it may be shown: keys masked.
    pub fn masked_url(&self) -> String {
        super::mask::mask_url(&self.url)
    }

    /// Whether the notification's severity and rule are wanted here.
    pub fn wants(&self, severity: Severity, rule: &str) -> bool {
        severity >= self.min_severity && (self.rules.is_empty() || self.rules.iter().any(|r| r == rule))
    }

    /// Whether the file holding this entry holds a secret (for the readable-file warning).
    pub fn holds_secret(&self) -> bool {
        !self.secret.is_empty() || self.masked_url() != self.url
    }

    pub fn validate(&self, key: &str, p: &mut Problems) {
        if self.name.is_empty() {
            p.add(
                &format!("{key}.name"),
                "is empty; give each [[webhook]] a unique name such as \"ops\" (it names its queue and its environment overrides)",
            );
        } else if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            p.add(
                &format!("{key}.name"),
                format!(
                    "is {:?}; expected letters, digits, `_` and `-` only (it is part of environment variable names)",
                    self.name
                ),
            );
        }
        match reqwest::Url::parse(&self.url) {
            _ if self.url.is_empty() => p.add(
                &format!("{key}.url"),
                "is empty; expected the receiver's http:// or https:// URL",
            ),
            Err(e) => p.add(
                &format!("{key}.url"),
                format!("is not a URL ({e}); expected an http:// or https:// URL"),
            ),
            Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() => p.add(
                &format!("{key}.url"),
                format!(
                    "is {}; expected an http:// or https:// URL with a host",
                    self.masked_url()
                ),
            ),
            Ok(url) => self.check_vendor_url(key, &url, p),
        }
        if !self.secret.is_empty() && !self.format.takes_secret() {
            p.add(
                &format!("{key}.secret"),
                format!(
                    "is set, but {} webhooks are not signed (their key is in the URL); remove it",
                    self.format.name()
                ),
            );
        }
        if self.format == FormatKind::Generic && !self.secret.is_empty() {
            if let Err(problem) = signing::standard_webhooks_key(&self.secret) {
                p.add(&format!("{key}.secret"), problem);
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.trim().is_empty() {
                p.add(
                    &format!("{key}.rules[{i}]"),
                    "is empty; expected a rule name such as \"error_rate\"",
                );
            }
        }
        let d = |s: &str| format!("{key}.{s}");
        p.duration_in(
            &d("timeout"),
            self.timeout,
            Duration::from_millis(10),
            Duration::from_secs(300),
        );
        p.in_range(&d("max_per_minute"), self.max_per_minute, 0..=100_000);
        p.duration_in(
            &d("rate_window"),
            self.rate_window,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        p.duration_in(
            &d("group_wait"),
            self.group_wait,
            Duration::ZERO,
            Duration::from_secs(600),
        );
        p.duration_in(
            &d("backoff"),
            self.backoff,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        );
        p.duration_in(
            &d("max_backoff"),
            self.max_backoff,
            self.backoff.0,
            Duration::from_secs(86_400),
        );
        p.duration_in(
            &d("resend_interval"),
            self.resend_interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        if !self.generator_url.is_empty() && reqwest::Url::parse(&self.generator_url).is_err() {
            p.add(
                &d("generator_url"),
                "is not a URL; expected e.g. \"https://grafana.example.com/d/lngpt\"",
            );
        }
    }

    /// The vendors' URLs carry their key; a URL without it would be refused at every attempt.
    fn check_vendor_url(&self, key: &str, url: &reqwest::Url, p: &mut Problems) {
        let has_query = |name: &str| url.query_pairs().any(|(k, v)| k == name && !v.is_empty());
        let missing = match self.format {
            FormatKind::Dingtalk if !has_query("access_token") => {
                Some("https://oapi.dingtalk.com/robot/send?access_token=…")
            }
            FormatKind::Wecom if !has_query("key") => Some("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"),
            _ => None,
        };
        if let Some(example) = missing {
            p.add(
                &format!("{key}.url"),
                format!(
                    "is {}, which has no key; a {} robot's URL looks like {example} (copy it from the robot's settings)",
                    self.masked_url(),
                    self.format.name()
                ),
            );
        }
    }
}

/// Checks the whole `[[webhook]]` list: each entry, and names unique.
pub fn validate_all(webhooks: &[WebhookConfig], p: &mut Problems) {
    for (i, w) in webhooks.iter().enumerate() {
        w.validate(&format!("webhook[{i}]"), p);
        if let Some(first) = webhooks[..i]
            .iter()
            .position(|o| o.name == w.name && !w.name.is_empty())
        {
            p.add(
                &format!("webhook[{i}].name"),
                format!(
                    "{:?} is also the name of webhook[{first}]; each receiver needs its own name (it keys its queue)",
                    w.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_toml(text, "t.toml", env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_env_overrides_by_name_and_problems() {
        let c = load(
            "[[webhook]]\nname = \"ops\"\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=abc\"\nformat = \"dingtalk\"\n",
            &[("LNGPT_COLLECTOR_WEBHOOK_OPS_SECRET", "SECxyz"), ("LNGPT_COLLECTOR_WEBHOOK_0_RULES", "budget, error_rate")],
        )
        .unwrap();
        let w = &c.webhook[0];
        assert_eq!(w.secret, "SECxyz");
        assert_eq!(w.rules, vec!["budget".to_string(), "error_rate".to_string()]);
        assert_eq!(w.max_posts(), 20);
        assert_eq!(w.group_wait.0.as_secs(), 10);

        let e = load(
            "[[webhook]]\nname = \"a b\"\nurl = \"ftp://x\"\nformat = \"slack\"\nsecret = \"s\"\n[[webhook]]\nname = \"w\"\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send\"\nformat = \"wecom\"\ntimeout = \"0\"\n[[webhook]]\nname = \"w\"\nurl = \"http://h/x\"\nsecret = \"whsec_!!\"\n",
            &[],
        )
        .unwrap_err();
        for needle in [
            "`webhook[0].name` is \"a b\"",
            "`webhook[0].url` is ftp://x",
            "`webhook[0].secret` is set, but slack webhooks are not signed",
            "`webhook[1].url` is https://qyapi.weixin.qq.com/cgi-bin/webhook/send, which has no key",
            "`webhook[1].timeout` is 0",
            "`webhook[2].name` \"w\" is also the name of webhook[1]",
            "`webhook[2].secret`",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
        let e = load(
            "[[webhook]]\nname = \"x\"\nurl = \"http://h\"\nmin_severity = \"loud\"\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("webhook[0].min_severity") && e.contains("critical"), "{e}");
    }
}
