//! `generic`: our JSON schema (README, "The generic JSON schema"), signed as the Standard Webhooks
//! specification 1.0.0 says
//! (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>,
//! "Signature scheme" and "Webhook headers"): `webhook-id` (the delivery id, the same on every
//! retry), `webhook-timestamp` (this attempt, integer Unix seconds) and `webhook-signature`
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), the key being the
//! base64 after `whsec_`. Without a secret the two other headers are still sent.

use serde_json::json;

use super::{json_body, Format, Outgoing};
use crate::event::Timestamp;
use crate::notify::{signing, Notification};

pub struct Generic {
    url: reqwest::Url,
    key: Option<Vec<u8>>,
}

impl Generic {
    pub fn new(url: reqwest::Url, secret: &str) -> Result<Generic, String> {
        let key = if secret.is_empty() {
            None
        } else {
            Some(signing::standard_webhooks_key(secret).map_err(|e| format!("secret {e}"))?)
        };
        Ok(Generic { url, key })
    }
}

impl Format for Generic {
    fn build(&self, delivery_id: &str, items: &[Notification], _active: &[Notification], now: Timestamp) -> Outgoing {
        // When the latest change in it happened, so that every retry sends the same bytes.
        let latest = items
            .iter()
            .map(|n| n.ends_at.unwrap_or(n.starts_at))
            .max()
            .unwrap_or(now);
        let body = json_body(&json!({
            "type": "alert.notifications",
            "timestamp": latest.to_string(),
            "data": {
                "delivery_id": delivery_id,
                "notifications": items,
            },
        }));
        let secs = now.as_millis().div_euclid(1000);
        let mut headers = vec![
            ("content-type", "application/json".to_string()),
            ("webhook-id", delivery_id.to_string()),
            ("webhook-timestamp", secs.to_string()),
        ];
        if let Some(key) = &self.key {
            headers.push((
                "webhook-signature",
                signing::standard_webhooks(key, delivery_id, secs, &body),
            ));
        }
        Outgoing {
            url: self.url.clone(),
            headers,
            body,
        }
    }

    fn signature_scheme(&self) -> &'static str {
        if self.key.is_some() {
            "Standard Webhooks v1 (HMAC-SHA256 in webhook-signature)"
        } else {
            "none (no secret set; webhook-id and webhook-timestamp only)"
        }
    }
}
