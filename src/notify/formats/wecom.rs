//! `wecom`: a WeCom (企业微信) group robot, "群机器人配置说明"
//! (<https://developer.work.weixin.qq.com/document/path/91770>): the key is the URL's `key=`, there
//! is no signature. The message is `markdown` (content at most 4096 bytes, UTF-8), with WeCom's
//! `<font color="warning|info">`. WeCom answers HTTP 200 with `errcode` 0 on success; 45009 its
//! rate limit (20 a minute per robot), 93000 an invalid webhook URL.

use serde_json::json;

use super::{json_body, json_code, BodyVerdict, Format, Outgoing};
use crate::event::Timestamp;
use crate::monitor::vocabulary::AlertState;
use crate::notify::render::Speech;
use crate::notify::{render, Notification};

pub struct Wecom {
    pub url: reqwest::Url,
    pub speech: Speech,
}

const CONTENT_BYTES: usize = 4096;

/// A lone notification too long for WeCom is cut; a group is not (it is split by `fitting` instead,
/// so that no member of a delivery is left out of its message).
fn fit_alone(items: &[Notification], text: String) -> String {
    if items.len() == 1 {
        render::truncate_bytes(&text, CONTENT_BYTES - 96)
    } else {
        text
    }
}

impl Format for Wecom {
    fn build(&self, _delivery_id: &str, items: &[Notification], _active: &[Notification], _now: Timestamp) -> Outgoing {
        let mut text = format!("**{}**\n", render::message_title(items, &self.speech));
        for n in items {
            let colour = if n.state == AlertState::Resolved {
                "info"
            } else {
                "warning"
            };
            if items.len() > 1 {
                text.push_str(&format!(
                    "\n<font color=\"{colour}\">{}</font>\n",
                    render::heading(n, &self.speech)
                ));
            }
            text.push_str(&render::message(n));
            text.push('\n');
            for fact in render::facts(n, &self.speech) {
                text.push_str(&format!("> {fact}\n"));
            }
        }
        Outgoing {
            url: self.url.clone(),
            headers: vec![("content-type", "application/json; charset=utf-8".to_string())],
            body: json_body(&json!({
                "msgtype": "markdown",
                "markdown": {"content": fit_alone(items, text)},
            })),
        }
    }

    fn max_body_bytes(&self) -> usize {
        CONTENT_BYTES
    }

    fn judge(&self, body: &[u8]) -> BodyVerdict {
        match json_code(body, &["errcode"]) {
            Ok((0, _)) => BodyVerdict::Ok,
            Ok((45009, msg)) => BodyVerdict::RateLimited(format!("WeCom errcode 45009 (rate limit): {msg}")),
            Ok((-1, msg)) => BodyVerdict::Transient(format!("WeCom errcode -1 (busy): {msg}")),
            Ok((code, msg)) => BodyVerdict::Refused(format!("WeCom errcode {code}: {msg}")),
            Err(e) => BodyVerdict::Transient(e),
        }
    }

    fn signature_scheme(&self) -> &'static str {
        "none (WeCom group robots: the key is in the URL)"
    }
}
