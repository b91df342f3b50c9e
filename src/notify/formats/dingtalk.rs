//! `dingtalk`: a DingTalk custom robot, "自定义机器人安全设置" and "自定义机器人发送群消息"
//! (<https://open.dingtalk.com/document/orgapp/customize-robot-security-settings>,
//! <https://open.dingtalk.com/document/orgapp/custom-bot-send-message-type>).
//!
//! Signature (加签): `sign` = urlEncode(base64(HMAC-SHA256 with the key `secret` over
//! "{timestamp}\n{secret}")), `timestamp` in milliseconds (within an hour of DingTalk's clock),
//! both added to the URL's query beside `access_token`. The message is `markdown`. DingTalk
//! answers HTTP 200 with `errcode` 0 on success; 130101 and 410100 its rate limit (20 a minute,
//! then 10 minutes of silence), 310000 a bad signature, keyword or IP, 300001 a wrong token.

use serde_json::json;

use super::{json_body, json_code, BodyVerdict, Format, Outgoing};
use crate::event::Timestamp;
use crate::notify::render::Speech;
use crate::notify::{render, signing, Notification};

pub struct Dingtalk {
    pub url: reqwest::Url,
    pub secret: String,
    pub speech: Speech,
}

impl Format for Dingtalk {
    fn build(&self, _delivery_id: &str, items: &[Notification], _active: &[Notification], now: Timestamp) -> Outgoing {
        let title = render::message_title(items, &self.speech);
        // DingTalk's markdown starts a new line only after a blank one.
        let mut text = format!("#### {title}\n\n");
        for n in items {
            if items.len() > 1 {
                text.push_str(&format!("**{}**\n\n", render::heading(n, &self.speech)));
            }
            text.push_str(&render::message(n));
            text.push_str("\n\n");
            for fact in render::facts(n, &self.speech) {
                text.push_str(&format!("> {fact}\n\n"));
            }
        }
        let mut url = self.url.clone();
        if !self.secret.is_empty() {
            let ts = now.as_millis();
            // `append_pair` percent-encodes the base64 once: that is the documented urlEncode.
            url.query_pairs_mut()
                .append_pair("timestamp", &ts.to_string())
                .append_pair("sign", &signing::dingtalk(&self.secret, ts));
        }
        Outgoing {
            url,
            headers: vec![("content-type", "application/json; charset=utf-8".to_string())],
            body: json_body(&json!({
                "msgtype": "markdown",
                // A lone notification too long is cut; a group is split by `fitting` instead.
                "markdown": {"title": title, "text": if items.len() == 1 { render::truncate_bytes(&text, 17_000) } else { text }},
            })),
        }
    }

    fn max_body_bytes(&self) -> usize {
        18_000
    }

    fn judge(&self, body: &[u8]) -> BodyVerdict {
        match json_code(body, &["errcode"]) {
            Ok((0, _)) => BodyVerdict::Ok,
            Ok((code @ (130101 | 410100), msg)) => BodyVerdict::RateLimited(format!("DingTalk errcode {code}: {msg}")),
            Ok((-1, msg)) => BodyVerdict::Transient(format!("DingTalk errcode -1 (busy): {msg}")),
            Ok((code, msg)) => BodyVerdict::Refused(format!(
                "DingTalk errcode {code}: {msg}{}",
                if code == 310000 {
                    " (check secret, the robot's keywords (add `lngpt`) and its IP list)"
                } else {
                    ""
                }
            )),
            Err(e) => BodyVerdict::Transient(e),
        }
    }

    fn signature_scheme(&self) -> &'static str {
        if self.secret.is_empty() {
            "none (no secret set; the robot must use keywords or an IP list)"
        } else {
            "DingTalk 加签 (timestamp + sign in the query)"
        }
    }
}
