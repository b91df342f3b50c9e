//! `slack`: a Slack incoming webhook (<https://api.slack.com/messaging/webhooks>): `{"text", "blocks"}`
//! with `text` the notification-friendly fallback, a header block and one `mrkdwn` section per
//! notification (<https://api.slack.com/reference/block-kit/blocks>). Not signed: the URL is the
//! key. Slack answers `ok`, or 400/403/404/410 with a reason, or 429 with `Retry-After`.

use serde_json::{json, Value};

use super::{json_body, Format, Outgoing};
use crate::event::Timestamp;
use crate::monitor::vocabulary::{AlertState, Severity};
use crate::notify::render::Speech;
use crate::notify::{render, Notification};

pub struct Slack {
    pub url: reqwest::Url,
    pub speech: Speech,
}

/// Slack's mrkdwn escapes exactly these three.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn emoji(n: &Notification) -> &'static str {
    match (n.state, n.severity) {
        (AlertState::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":rotating_light:",
        (_, Severity::High) => ":red_circle:",
        (_, Severity::Warning) => ":large_orange_circle:",
        (_, Severity::Info) => ":information_source:",
    }
}

impl Format for Slack {
    fn build(&self, _delivery_id: &str, items: &[Notification], _active: &[Notification], _now: Timestamp) -> Outgoing {
        let title = render::message_title(items, &self.speech);
        let mut blocks = vec![json!({
            "type": "header",
            "text": {"type": "plain_text", "text": render::truncate_chars(&title, 140)},
        })];
        for n in items {
            let mut text = format!(
                "{} *{}*\n{}",
                emoji(n),
                escape(&render::heading(n, &self.speech)),
                escape(&render::message(n))
            );
            for fact in render::facts(n, &self.speech) {
                text.push_str("\n> ");
                text.push_str(&escape(&fact));
            }
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": render::truncate_chars(&text, 2900)},
            }));
        }
        let body: Value = json!({ "text": title, "blocks": blocks });
        Outgoing {
            url: self.url.clone(),
            headers: vec![("content-type", "application/json".to_string())],
            body: json_body(&body),
        }
    }

    fn max_body_bytes(&self) -> usize {
        30_000
    }

    fn signature_scheme(&self) -> &'static str {
        "none (Slack incoming webhooks: the key is in the URL)"
    }
}
