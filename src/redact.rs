//! Secret masking, applied to every event before it is queued, stored or logged.
//!
//! Two ways a secret is found: by the name of the field that holds it (`api_key`, `password`, …,
//! anywhere in `extra`, nested too), and by the shape of a value inside any string (`Bearer …`,
//! `sk-…`, `api_key=…` in a message, `"password": "…"` in a raw line kept as a reject). A masked
//! value keeps only its last four characters (`***wxyz`) so that operators can still tell keys apart.

use std::borrow::Cow;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex, RegexSet};
use serde_json::{Map, Value};

use serde::{Deserialize, Serialize};

use crate::config::Problems;

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

/// Field names masked by default (matched whole or as a `_`-separated suffix, case-insensitive).
pub const DEFAULT_KEYS: &[&str] = &[
    "api_key",
    "apikey",
    "authorization",
    "password",
    "passwd",
    "secret",
    "token",
    "private_key",
    "cookie",
];

#[derive(Debug)]
pub struct Redactor {
    enabled: bool,
    keys: Vec<String>,
    /// Most strings hold no secret. One case-insensitive pass for the built-in patterns' literals
    /// (`bearer`, `sk-`, the key names) rules them out cheaply; the regexes run only on a hit.
    literals: AhoCorasick,
    /// User patterns have no known literals, so they are checked on every string.
    user: Option<RegexSet>,
    /// Applied in order; a pattern with a capture group masks only that group.
    patterns: Vec<Regex>,
}

impl Redactor {
    pub fn new(cfg: &RedactConfig) -> Result<Redactor, String> {
        let keys: Vec<String> = DEFAULT_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(cfg.keys.iter().map(|k| normalize_key(k)))
            .collect();
        let key_alt = keys
            .iter()
            .map(|k| regex::escape(k).replace('_', "[_-]?"))
            .collect::<Vec<_>>()
            .join("|");
        // ASCII word boundaries: a Unicode `\b` would push the regex engine off its fast path on
        // every non-ASCII (e.g. Chinese) message.
        let mut sources = vec![
            // `Authorization: Bearer abc…`, in headers and prose alike.
            r"(?i)(?-u:\b)bearer\s+([A-Za-z0-9\-._~+/]{8,}=*)".to_string(),
            // OpenAI-style keys anywhere (sk-…, sk-proj-…, sk-live-…).
            r"(?-u:\b)(sk-[A-Za-z0-9_\-]{8,})".to_string(),
            // "api_key": "…" inside JSON text (a raw reject line, a message holding JSON).
            format!(r#"(?i)"(?:[a-z0-9]+[_-])*(?:{key_alt})"\s*:\s*"((?:[^"\\]|\\.)*)""#),
            // api_key=…, password: '…' in prose and Python reprs.
            format!(
                r#"(?i)(?-u:\b)(?:[a-z0-9]+[_-])*(?:{key_alt})(?-u:\b)['"]?\s*[:=]\s*['"]?(?:bearer\s+)?([^\s"',}}]{{4,}})"#
            ),
        ];
        for (i, p) in cfg.patterns.iter().enumerate() {
            Regex::new(p).map_err(|e| format!("redact.patterns[{i}] is not a valid regular expression: {e}"))?;
            sources.push(p.clone());
        }
        let patterns = sources
            .iter()
            .map(|s| Regex::new(s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut needles = vec!["bearer".to_string(), "sk-".to_string()];
        for k in &keys {
            needles.extend([k.clone(), k.replace('_', "-"), k.replace('_', "")]);
        }
        let literals = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&needles)
            .map_err(|e| e.to_string())?;
        let user = match cfg.patterns.is_empty() {
            true => None,
            false => Some(RegexSet::new(&cfg.patterns).map_err(|e| e.to_string())?),
        };
        Ok(Redactor {
            enabled: cfg.enabled,
            keys,
            literals,
            user,
            patterns,
        })
    }

    /// A redactor that changes nothing (redaction switched off).
    pub fn disabled() -> Redactor {
        let cfg = RedactConfig {
            enabled: false,
            ..RedactConfig::default()
        };
        Redactor::new(&cfg).unwrap_or_else(|_| unreachable!("built-in patterns are valid"))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether a field of this name holds a secret: `api_key`, `OPENAI_API_KEY`, `x-api-key`,
    /// `access_token` do; `tokens`, `total_tokens`, `token_count` do not.
    pub fn is_secret_key(&self, key: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let k = key.trim().as_bytes();
        self.keys.iter().any(|name| {
            let n = name.as_bytes();
            k.len() >= n.len()
                && same_key(&k[k.len() - n.len()..], n)
                && (k.len() == n.len() || matches!(k[k.len() - n.len() - 1], b'_' | b'-'))
        })
    }

    /// Masks secrets inside a string, allocating only when something is found.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let maybe_secret = self.literals.is_match(s) || self.user.as_ref().is_some_and(|u| u.is_match(s));
        if !self.enabled || !maybe_secret {
            return Cow::Borrowed(s);
        }
        let mut out = s.to_string();
        for p in &self.patterns {
            if let Cow::Owned(replaced) = p.replace_all(&out, |c: &Captures| mask_capture(c)) {
                out = replaced;
            }
        }
        Cow::Owned(out)
    }

    pub fn string_in_place(&self, s: &mut String) {
        if let Cow::Owned(masked) = self.text(s) {
            *s = masked;
        }
    }

    /// Masks a JSON value: strings by pattern, and whole values under secret field names.
    pub fn value(&self, v: &mut Value) {
        if !self.enabled {
            return;
        }
        match v {
            Value::String(s) => self.string_in_place(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => self.map(map),
            _ => {}
        }
    }

    pub fn map(&self, map: &mut Map<String, Value>) {
        for (k, v) in map.iter_mut() {
            if self.is_secret_key(k) {
                mask_value(v);
            } else {
                self.value(v);
            }
        }
    }
}

/// Compares a key with a normalized name: ASCII case-insensitive, `-` equal to `_`.
fn same_key(key: &[u8], name: &[u8]) -> bool {
    let norm = |b: u8| if b == b'-' { b'_' } else { b.to_ascii_lowercase() };
    key.iter().zip(name).all(|(&a, &b)| norm(a) == b)
}

fn normalize_key(k: &str) -> String {
    k.trim().to_ascii_lowercase().replace('-', "_")
}

/// Masks every leaf of a value that sits under a secret name.
fn mask_value(v: &mut Value) {
    match v {
        Value::String(s) => *s = mask(s),
        Value::Number(_) | Value::Bool(_) => *v = Value::String("***".into()),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        Value::Object(map) => map.values_mut().for_each(mask_value),
        Value::Null => {}
    }
}

fn mask_capture(c: &Captures) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    match c.get(1) {
        Some(secret) => {
            let start = secret.start() - c.get(0).map_or(0, |m| m.start());
            format!(
                "{}{}{}",
                &whole[..start],
                mask(secret.as_str()),
                &whole[start + secret.len()..]
            )
        }
        None => mask(whole),
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
    fn masking_is_idempotent() {
        let r = redactor();
        let once = r
            .text("Authorization: Bearer sk-live-9FD8C3877FFDCE80 api_key=sk-abcdefghijk")
            .into_owned();
        assert_eq!(r.text(&once), once);
    }
}
