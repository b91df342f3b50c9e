//! `feishu`: a Feishu (Lark) custom bot, "自定义机器人使用指南"
//! (<https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>).
//!
//! Signature (安全设置 → 签名校验): `sign` = base64(HMAC-SHA256 with the key
//! "{timestamp}\n{secret}" over an empty message), `timestamp` in seconds (within an hour of
//! Feishu's clock), both sent in the JSON body beside `msg_type`. The message is an `interactive`
//! card whose header colour follows the severity. Feishu answers HTTP 200 with `code` (older
//! deployments: `StatusCode`) 0 on success; 19021 a bad signature or clock, 19022 an IP not
//! allowed, 19024 a keyword missing, 11232 its rate limit (100 a minute, 5 a second per bot).
//! A request body may hold at most 20 KB.

use serde_json::{json, Value};

use super::{json_body, json_code, BodyVerdict, Format, Outgoing};
use crate::event::Timestamp;
use crate::monitor::vocabulary::{AlertState, Severity};
use crate::notify::render::Speech;
use crate::notify::{render, signing, Notification};

pub struct Feishu {
    pub url: reqwest::Url,
    pub secret: String,
    pub speech: Speech,
}

fn colour(items: &[Notification]) -> &'static str {
    if items.iter().all(|n| n.state == AlertState::Resolved) {
        return "green";
    }
    match render::top_severity(items) {
        Severity::Critical => "red",
        Severity::High => "orange",
        Severity::Warning => "yellow",
        Severity::Info => "blue",
    }
}

impl Format for Feishu {
    fn build(&self, _delivery_id: &str, items: &[Notification], _active: &[Notification], now: Timestamp) -> Outgoing {
        let mut elements = Vec::new();
        for (i, n) in items.iter().enumerate() {
            if i > 0 {
                elements.push(json!({"tag": "hr"}));
            }
            let mut text = String::new();
            if items.len() > 1 {
                text.push_str(&format!("**{}**\n", render::heading(n, &self.speech)));
            }
            text.push_str(&render::message(n));
            for fact in render::facts(n, &self.speech) {
                text.push('\n');
                text.push_str(&fact);
            }
            elements.push(json!({"tag": "div", "text": {"tag": "lark_md", "content": text}}));
        }
        let mut body: Value = json!({
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": true},
                "header": {
                    "title": {"tag": "plain_text", "content": render::message_title(items, &self.speech)},
                    "template": colour(items),
                },
                "elements": elements,
            },
        });
        if !self.secret.is_empty() {
            let ts = now.as_millis().div_euclid(1000);
            body["timestamp"] = Value::String(ts.to_string());
            body["sign"] = Value::String(signing::feishu(&self.secret, ts));
        }
        Outgoing {
            url: self.url.clone(),
            headers: vec![("content-type", "application/json; charset=utf-8".to_string())],
            body: json_body(&body),
        }
    }

    fn max_body_bytes(&self) -> usize {
        19_000
    }

    fn judge(&self, body: &[u8]) -> BodyVerdict {
        match json_code(body, &["code", "StatusCode"]) {
            Ok((0, _)) => BodyVerdict::Ok,
            Ok((11232, msg)) => BodyVerdict::RateLimited(format!("Feishu code 11232 (rate limit): {msg}")),
            Ok((2200, msg)) => BodyVerdict::Transient(format!("Feishu code 2200 (internal error): {msg}")),
            Ok((code, msg)) => BodyVerdict::Refused(format!("Feishu code {code}: {msg}{}", hint(code))),
            Err(e) => BodyVerdict::Transient(e),
        }
    }

    fn signature_scheme(&self) -> &'static str {
        if self.secret.is_empty() {
            "none (no secret set)"
        } else {
            "Feishu 签名校验 (timestamp + sign in the body)"
        }
    }
}

fn hint(code: i64) -> &'static str {
    match code {
        19021 => " (the signature or the clock is off: check secret and the machine's time)",
        19022 => " (this machine's IP is not on the bot's allow list)",
        19024 => " (the bot's keyword security wants a keyword; add `lngpt` to its keywords)",
        _ => "",
    }
}
