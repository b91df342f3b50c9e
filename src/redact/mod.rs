//! Secret masking, applied to every event before it is queued, stored or logged.
//!
//! Two ways a secret is found: by the name of the field that holds it (`api_key`, `accessToken`,
//! `llm.api_key`, …, anywhere in `extra`, nested too), and by the shape of a value inside any string
//! or object key (`Bearer …`, `sk-…`, JWTs, AWS key ids, URL passwords, `api_key=…` in a message).
//! Text holding JSON (a rejected raw line, a request body in a message) is walked by structure first,
//! escapes decoded, so that nested values and `\u`-escaped names are caught. A masked value keeps only
//! its last four characters (`***wxyz`) so that operators can still tell keys apart.

mod json_text;
mod rules;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::problems::Problems;
use rules::Rules;

/// `[redact]`: what is masked before anything is queued, stored or logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    pub enabled: bool,
    /// Field names masked in addition to the built-in ones.
    pub keys: Vec<String>,
    /// Regular expressions masked in addition to the built-in ones (group 1 if present, else the match).
    pub patterns: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            keys: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

impl RedactConfig {
    pub fn validate(&self, p: &mut Problems) {
        if let Err(e) = Redactor::new(self) {
            p.add("redact.patterns", e);
        }
    }
}

/// Field names masked by default. A field matches a name when its own name ends with it as whole
/// words, in any case style: `api_key` matches `OPENAI_API_KEY`, `openaiApiKey`, `x-api-key`,
/// `llm.api_key`; `token` matches `access_token`, `accessToken`, but not `tokens` or `token_count`.
pub const DEFAULT_KEYS: &[&str] = &[
    "api_key",
    "authorization",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secret_key",
    "access_key",
    "private_key",
    "token",
    "jwt",
    "cookie",
    "credential",
    "credentials",
    "密码",
];

/// The redaction rules in force, shared by every parser. SIGHUP swaps in new rules without stopping
/// anything; each call reads the current rules once (a wait-free load).
pub struct Redactor {
    rules: arc_swap::ArcSwap<Rules>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.rules.load().fmt(f)
    }
}

impl Redactor {
    pub fn new(cfg: &RedactConfig) -> Result<Redactor, String> {
        Ok(Redactor {
            rules: arc_swap::ArcSwap::from_pointee(Rules::new(cfg)?),
        })
    }

    /// A redactor that changes nothing (redaction switched off).
    pub fn disabled() -> Redactor {
        Redactor {
            rules: arc_swap::ArcSwap::from_pointee(Rules::disabled()),
        }
    }

    /// Takes new rules (SIGHUP); the old ones stay if the new ones are not valid.
    pub fn reload(&self, cfg: &RedactConfig) -> Result<(), String> {
        self.rules.store(std::sync::Arc::new(Rules::new(cfg)?));
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.rules.load().enabled
    }

    /// Whether a field of this name holds a secret (see [`DEFAULT_KEYS`]). Allocates nothing.
    pub fn is_secret_key(&self, key: &str) -> bool {
        self.rules.load().is_secret_key(key)
    }

    /// Masks secrets inside a string, allocating only when something is found.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        self.rules.load().text(s)
    }

    /// Masks a rejected line: by JSON structure where it has one, else by shape.
    pub fn raw_line<'a>(&self, line: &'a str) -> Cow<'a, str> {
        self.rules.load().raw_line(line)
    }

    pub fn string_in_place(&self, s: &mut String) {
        self.rules.load().string_in_place(s)
    }

    /// Masks a JSON value: strings by pattern, and whole values under secret field names.
    pub fn value(&self, v: &mut Value) {
        self.rules.load().value(v)
    }

    pub fn map(&self, map: &mut Map<String, Value>) {
        self.rules.load().map(map)
    }
}

/// `***` and the last four characters; short values (under 8 characters) are masked whole.
/// Already-masked values stay as they are, so masking twice changes nothing.
pub fn mask(secret: &str) -> String {
    if secret.starts_with("***") {
        return secret.to_string();
    }
    let n = secret.chars().count();
    if n < 8 {
        return "***".to_string();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("***{tail}")
}

#[cfg(test)]
mod tests {
    use super::json_text::unescape;
    use super::rules::{compact, ends_with_name, looks_like_a_key, not_a_description};
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new(&RedactConfig::default()).unwrap()
    }

    #[test]
    fn masks_values_by_shape_keeping_the_last_four() {
        let r = redactor();
        assert_eq!(
            r.text("Authorization: Bearer sk-live-9FD8C3877FFDCE80"),
            "Authorization: Bearer ***CE80"
        );
        assert_eq!(
            r.text("key sk-qgwz4kguf46maat8b3k990ep4l3t9p9ity3rm8wk used"),
            "key ***m8wk used"
        );
        assert_eq!(r.text(r#"{"api_key": "abc def ghi jkl"}"#), r#"{"api_key": "*** jkl"}"#);
        assert_eq!(r.text("password=hunter2hunter2"), "password=***ter2");
        assert_eq!(r.text("API调用成功: 2926 tokens"), "API调用成功: 2926 tokens");
        assert!(matches!(r.text("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn masks_fields_by_name_but_not_token_counts() {
        let r = redactor();
        let mut v = json!({"api_key": "sk-abcdefghijklmnop", "OPENAI-API-KEY": "zzzzzzzzzzzz1234", "tokens": 2926,
                           "total_tokens": 10, "nested": {"access_token": "abcdefgh1234"}, "password": 12345});
        r.value(&mut v);
        assert_eq!(
            v,
            json!({"api_key": "***mnop", "OPENAI-API-KEY": "***1234", "tokens": 2926, "total_tokens": 10,
                             "nested": {"access_token": "***1234"}, "password": "***"})
        );
    }

    #[test]
    fn user_patterns_and_keys_apply_and_switching_off_keeps_everything() {
        let cfg = RedactConfig {
            enabled: true,
            keys: vec!["session_id".into()],
            patterns: vec![r"card=(\d{12,19})".into()],
        };
        let r = Redactor::new(&cfg).unwrap();
        assert_eq!(r.text("card=4111111111111111 ok"), "card=***1111 ok");
        assert!(r.is_secret_key("session_id"));
        let off = Redactor::disabled();
        assert_eq!(off.text("Bearer abcdefghijklmnop"), "Bearer abcdefghijklmnop");
        let bad = RedactConfig {
            patterns: vec!["(".into()],
            ..RedactConfig::default()
        };
        assert!(Redactor::new(&bad).unwrap_err().contains("redact.patterns[0]"));
    }

    #[test]
    fn names_match_as_whole_trailing_words_in_any_case_style() {
        let name = |n: &str| compact(n);
        for (key, expected) in [
            ("access_token", true),
            ("accessToken", true),
            ("X-Access-Token", true),
            ("llm.api_key", true),
            ("openaiApiKey", true),
            ("APIKey", true),
            ("$password", true),
            ("数据库密码", true),
            ("tokens", false),
            ("token_count", false),
            ("csrftoken", false),
            ("OPENAIAPIKEY", false),
            ("", false),
        ] {
            let names = [name("token"), name("api_key"), name("password"), name("密码")];
            assert_eq!(
                names.iter().any(|n| ends_with_name(key.as_bytes(), n)),
                expected,
                "{key}"
            );
        }
        // User keys follow the same rule.
        let cfg = RedactConfig {
            keys: vec!["session-id".into()],
            ..RedactConfig::default()
        };
        let r = Redactor::new(&cfg).unwrap();
        assert!(r.is_secret_key("userSessionId") && r.is_secret_key("SESSION_ID") && !r.is_secret_key("valid"));
    }

    #[test]
    fn json_escapes_are_decoded_before_matching() {
        assert_eq!(unescape(r"\u0070ass\nw\\ord"), "pass\nw\\ord");
        assert_eq!(unescape(r#"\ud83d\ude00 \u00e9 \uZZZZ \"q\""#), "😀 é \\uZZZZ \"q\"");
        assert_eq!(unescape(r"\ud83d alone"), "\u{FFFD} alone");
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn structure_is_kept_and_broken_json_is_walked_as_far_as_it_goes() {
        let r = redactor();
        // Valid JSON stays valid and keeps its layout; only masked tokens change.
        let line = r#"{ "a":1,"password" : [ "abcdefghij", {"k": 12} ], "b":"x"}"#;
        assert_eq!(
            r.raw_line(line),
            r#"{ "a":1,"password" : [ "***ghij", {"k": "***"} ], "b":"x"}"#
        );
        // Cut short inside a string, and inside a secret value.
        assert_eq!(r.raw_line(r#"{"api_key": "abcdefghijklm"#), r#"{"api_key": "***jklm"#);
        assert_eq!(
            r.raw_line(r#"{"token": {"a": ["abcdefghijklm", "#),
            r#"{"token": {"a": ["***jklm", "#
        );
        // After the secret's value, nothing more is masked.
        assert_eq!(
            r.raw_line(r#"{"secret": {"a": 1}, "b": "plain text"}"#),
            r#"{"secret": {"a": "***"}, "b": "plain text"}"#
        );
        assert!(matches!(r.raw_line(r#"{"a": "b"}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn prose_rules_leave_descriptions_and_words_alone() {
        assert!(!not_a_description("incorrect.") && not_a_description("hunter22"));
        assert!(looks_like_a_key("sk-proj0a1B2c3D4e5F") && !looks_like_a_key("sk-usage-monitor-service-2"));
        let r = redactor();
        assert_eq!(r.text("the password is wrong"), "the password is wrong");
        assert_eq!(r.text("the password is hunter22"), "the password is ***er22");
    }

    #[test]
    fn a_secret_used_as_a_key_is_masked_and_keys_that_mask_alike_are_kept() {
        let r = redactor();
        let mut m = Map::new();
        m.insert("sk-aaaaaaaaaaaa1234".into(), json!(1));
        m.insert("sk-bbbbbbbbbbbb1234".into(), json!(2));
        m.insert("tokens".into(), json!(3));
        r.map(&mut m);
        assert_eq!(Value::Object(m), json!({"***1234": 1, "***1234 (2)": 2, "tokens": 3}));
    }

    #[test]
    fn masking_is_idempotent() {
        let r = redactor();
        let once = r
            .text("Authorization: Bearer sk-live-9FD8C3877FFDCE80 api_key=sk-abcdefghijk")
            .into_owned();
        assert_eq!(r.text(&once), once);
    }
}
