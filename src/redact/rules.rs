//! The redaction rules built from a `[redact]` section: secret names (matched as whole trailing
//! words in any case style) and value shapes (regexes behind a literal prefilter), applied to
//! text, JSON values and object keys.

use std::borrow::Cow;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex, RegexSet};
use serde_json::{Map, Value};

use super::{json_text, mask, RedactConfig, DEFAULT_KEYS};

/// Literals of the value shapes: a string holding none of these (nor a secret name) is left alone.
const SHAPE_LITERALS: &[&str] = &[
    "bearer",
    "sk-",
    "://",
    "eyj",
    "akia",
    "asia",
    "key=",
    "sig=",
    "signature=",
];

/// After `password is`, words that describe the password rather than being it.
const NOT_A_PASSWORD: &[&str] = &[
    "incorrect",
    "invalid",
    "wrong",
    "required",
    "missing",
    "empty",
    "expired",
    "correct",
    "valid",
    "unset",
    "none",
    "null",
    "changed",
    "reset",
    "blank",
    "weak",
    "strong",
    "revoked",
    "disabled",
    "enabled",
    "accepted",
    "rejected",
    "needed",
    "mandatory",
    "optional",
    "present",
    "absent",
    "same",
    "different",
    "unknown",
    "available",
    "unavailable",
    "configured",
    "provided",
    "specified",
    "incomplete",
    "true",
    "false",
    "stored",
    "saved",
    "sent",
    "being",
    "already",
    "still",
    "also",
    "only",
    "too",
    "not",
    "set",
    "ok",
];

/// Shortest object key that a value-shape rule can change (`sk-` and eight characters); shorter
/// keys (`model`, `tokens`) skip the scan.
const SHORTEST_SECRET_KEY: usize = 11;

/// Whether a captured value really is a secret (for the rules that would otherwise mask prose).
type Accept = fn(&str) -> bool;

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    accept: Option<Accept>,
}

/// One set of redaction rules, built from a `[redact]` section.
#[derive(Debug)]
pub(super) struct Rules {
    pub(super) enabled: bool,
    /// The secret names, compacted: ASCII lowercase, separators and punctuation dropped.
    keys: Vec<Vec<u8>>,
    /// The last bytes of `keys`, as a set: most field names end otherwise and are ruled out at once.
    last_bytes: [u64; 4],
    /// Most strings hold no secret. One case-insensitive pass for the built-in patterns' literals
    /// (`bearer`, `sk-`, the key names) rules them out cheaply; the regexes run only on a hit.
    literals: AhoCorasick,
    /// The value shapes' literals only, for object keys: a key that merely names a secret
    /// (`tokens`) must not send every event down the regexes.
    shape_literals: AhoCorasick,
    /// User patterns have no known literals, so they are checked on every string.
    user: Option<RegexSet>,
    /// Which patterns match, in one pass; only those then replace.
    any: RegexSet,
    /// Applied in order; a pattern with a capture group masks only that group.
    patterns: Vec<Pattern>,
}

impl Rules {
    pub(super) fn new(cfg: &RedactConfig) -> Result<Rules, String> {
        let names: Vec<String> = DEFAULT_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(cfg.keys.iter().map(|k| k.trim().to_string()))
            .filter(|k| !compact(k).is_empty())
            .collect();
        let keys: Vec<Vec<u8>> = names.iter().map(|k| compact(k)).collect();
        let mut last_bytes = [0u64; 4];
        for last in keys.iter().filter_map(|k| k.last()) {
            last_bytes[usize::from(last / 64)] |= 1 << (last % 64);
        }
        // Both lists are never empty: the defaults hold ASCII names and `密码`.
        let (ascii, other): (Vec<&String>, Vec<&String>) = names.iter().partition(|k| k.is_ascii());
        let ascii_alt = ascii.iter().map(|k| name_regex(k)).collect::<Vec<_>>().join("|");
        let other_alt = other.iter().map(|k| regex::escape(k)).collect::<Vec<_>>().join("|");
        // A name in text: ASCII names end at an ASCII word boundary and may carry any identifier
        // before them (`OPENAI_API_KEY`, `clientSecret`); others (`密码`) stand as they are.
        // ASCII word boundaries: a Unicode `\b` would push the regex engine off its fast path on
        // every non-ASCII (e.g. Chinese) message.
        let name = format!(r"(?:[a-z0-9_.$\-]*?(?:{ascii_alt})(?-u:\b)|[^\s\x00-\x7f]*?(?:{other_alt}))");
        let quoted_name = format!(r"(?:[^\s\x22'\\]*?(?:{ascii_alt}|{other_alt}))");
        let sources: Vec<(String, Option<Accept>)> = vec![
            // A bare JWT: header and payload are base64 of JSON objects, so both start `eyJ`.
            (
                r"(?-u:\b)(eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*)".into(),
                None,
            ),
            // AWS access key ids: long-term (AKIA) and temporary (ASIA).
            (r"(?-u:\b)((?:AKIA|ASIA)[A-Z0-9]{16})(?-u:\b)".into(), None),
            // The password of a URL: scheme://user:PASSWORD@host.
            (
                r#"(?i)(?-u:\b)[a-z][a-z0-9+.\-]*://[^/\s:@"'<>]*:([^@\s/"'<>]+)@"#.into(),
                None,
            ),
            // Credentials in a query string: ?key=…, &access_token=…, ?api_key=…, &sig=….
            (format!(r#"(?i)[?&;](?:{name}|key|sig|signature)=([^&#\s"'<>]+)"#), None),
            // `Authorization: Bearer abc…`, in headers and prose alike.
            (r"(?i)(?-u:\b)bearer\s+([A-Za-z0-9\-._~+/]{8,}=*)".into(), None),
            // OpenAI-style keys (sk-…, sk-proj-…, sk-ant-…) on their own …
            (r"(?-u:\b)(sk-[A-Za-z0-9_\-]{8,})".into(), None),
            // … or glued to a word before them (`keysk-…`): then only key-like ones, long and of
            // mixed case and digits, so that `disk-usage-monitor` stays.
            (r"(?-u:\B)(sk-[A-Za-z0-9_\-]{16,})".into(), Some(looks_like_a_key)),
            // "api_key": "…" and 'password': '…' inside text (a message holding JSON or a repr).
            (format!(r#"(?i)"{quoted_name}"\s*:\s*"((?:[^"\\]|\\.)*)""#), None),
            (format!(r#"(?i)'{quoted_name}'\s*:\s*'((?:[^'\\]|\\.)*)'"#), None),
            // api_key=…, password: '…', Authorization: Basic …, api_key：… (full-width colon).
            (
                format!(r#"(?i){name}['"]?\s*[:=：]\s*['"]?(?:(?:bearer|basic|token|digest)\s+)?([^\s"',;}}]{{4,}})"#),
                None,
            ),
            // password is …
            (
                format!(r#"(?i){name}\s+is\s+['"]?([^\s"',;}}]{{4,}})"#),
                Some(not_a_description),
            ),
        ];
        let mut patterns = Vec::new();
        for (source, accept) in sources {
            let regex = Regex::new(&source).map_err(|e| format!("built-in pattern {source}: {e}"))?;
            patterns.push(Pattern { regex, accept });
        }
        for (i, p) in cfg.patterns.iter().enumerate() {
            let regex =
                Regex::new(p).map_err(|e| format!("redact.patterns[{i}] is not a valid regular expression: {e}"))?;
            patterns.push(Pattern { regex, accept: None });
        }
        let any = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).map_err(|e| e.to_string())?;
        let mut needles: Vec<String> = SHAPE_LITERALS.iter().map(|l| l.to_string()).collect();
        for name in &names {
            let words: Vec<&str> = name
                .split(|c: char| c.is_ascii() && !c.is_ascii_alphanumeric())
                .collect();
            for sep in ["_", "-", ".", ""] {
                needles.push(words.join(sep));
            }
        }
        needles.sort();
        needles.dedup();
        let literals = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&needles)
            .map_err(|e| e.to_string())?;
        let shape_literals = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(SHAPE_LITERALS)
            .map_err(|e| e.to_string())?;
        let user = match cfg.patterns.is_empty() {
            true => None,
            false => Some(RegexSet::new(&cfg.patterns).map_err(|e| e.to_string())?),
        };
        Ok(Rules {
            enabled: cfg.enabled,
            keys,
            last_bytes,
            literals,
            shape_literals,
            user,
            any,
            patterns,
        })
    }

    pub(super) fn disabled() -> Rules {
        let cfg = RedactConfig {
            enabled: false,
            ..RedactConfig::default()
        };
        Rules::new(&cfg).unwrap_or_else(|_| unreachable!("built-in patterns are valid"))
    }

    /// Whether a field of this name holds a secret: its name ends with a secret name as whole
    /// words (see [`DEFAULT_KEYS`]). Allocates nothing.
    pub fn is_secret_key(&self, key: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let key = key.as_bytes();
        let Some(last) = key
            .iter()
            .rev()
            .find(|&&b| !is_separator(b))
            .map(u8::to_ascii_lowercase)
        else {
            return false;
        };
        self.last_bytes[usize::from(last / 64)] & (1 << (last % 64)) != 0
            && self
                .keys
                .iter()
                .any(|name| name.last() == Some(&last) && ends_with_name(key, name))
    }

    /// Masks secrets inside a string, allocating only when something is found.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if !self.enabled || !(self.literals.is_match(s) || self.user.as_ref().is_some_and(|u| u.is_match(s))) {
            return Cow::Borrowed(s);
        }
        // JSON inside the text (a request body in a message): by structure first, so that a
        // secret name's nested or escaped value is masked too.
        let structured = memchr::memchr2(b'{', b'[', s.as_bytes()).map(|at| {
            let mut out = s[..at].to_string();
            out.push_str(&json_text::walk(&s[at..], self));
            out
        });
        if let Some(masked) = self.by_shape(structured.as_deref().unwrap_or(s)) {
            return Cow::Owned(masked);
        }
        match structured {
            Some(changed) if changed != s => Cow::Owned(changed),
            _ => Cow::Borrowed(s),
        }
    }

    /// The value-shape patterns over `s`; `None` when none changed anything.
    fn by_shape(&self, s: &str) -> Option<String> {
        let matched = self.any.matches(s);
        if !matched.matched_any() {
            return None;
        }
        let mut out: Option<String> = None;
        for i in matched.iter() {
            let p = &self.patterns[i];
            let current = out.as_deref().unwrap_or(s);
            if let Cow::Owned(replaced) = p.regex.replace_all(current, |c: &Captures| mask_capture(c, p.accept)) {
                if replaced != current {
                    out = Some(replaced);
                }
            }
        }
        out
    }

    /// A line kept as a reject: by structure when it holds JSON (decoding escapes, so that
    /// `"\u0070assword"` is a password too; masking whole values under secret names, nested ones
    /// included), then by value shape over the whole, which also covers what is not JSON.
    pub fn raw_line<'a>(&self, line: &'a str) -> Cow<'a, str> {
        if !self.enabled {
            return Cow::Borrowed(line);
        }
        let Some(at) = memchr::memchr2(b'{', b'[', line.as_bytes()) else {
            return self.text(line);
        };
        let structured = format!("{}{}", &line[..at], json_text::walk(&line[at..], self));
        match self.text(&structured) {
            Cow::Owned(masked) => Cow::Owned(masked),
            Cow::Borrowed(_) if structured == line => Cow::Borrowed(line),
            Cow::Borrowed(_) => Cow::Owned(structured),
        }
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
        if !self.enabled {
            return;
        }
        if map.keys().any(|k| self.key_may_be_a_secret(k)) {
            self.mask_keys(map);
        }
        for (k, v) in map.iter_mut() {
            if self.is_secret_key(k) {
                mask_value(v);
            } else {
                self.value(v);
            }
        }
    }

    /// Whether an object key may itself be a secret (a token used as a key).
    fn key_may_be_a_secret(&self, key: &str) -> bool {
        (key.len() >= SHORTEST_SECRET_KEY && self.shape_literals.is_match(key))
            || self.user.as_ref().is_some_and(|u| u.is_match(key))
    }

    /// Masks the keys that are secrets. Two keys that mask alike are both kept (`***abcd (2)`).
    fn mask_keys(&self, map: &mut Map<String, Value>) {
        for (key, value) in std::mem::take(map) {
            let key = match self.text(&key) {
                Cow::Owned(masked) => masked,
                Cow::Borrowed(_) => key,
            };
            let mut unique = key.clone();
            let mut n = 2;
            while map.contains_key(&unique) {
                unique = format!("{key} ({n})");
                n += 1;
            }
            map.insert(unique, value);
        }
    }
}

/// A name's words joined by an optional separator, for the regexes: `api_key` → `api[_.\-]?key`.
fn name_regex(name: &str) -> String {
    name.split(|c: char| c.is_ascii() && !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"[_.\-]?")
}

/// ASCII punctuation and spaces separate words in a field name; everything else is part of one.
fn is_separator(b: u8) -> bool {
    b.is_ascii() && !b.is_ascii_alphanumeric()
}

/// `OPENAI_API_KEY` → `openaiapikey`; `数据库密码` stays as it is.
pub(super) fn compact(name: &str) -> Vec<u8> {
    name.bytes()
        .filter(|&b| !is_separator(b))
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// Whether `key` ends with the compacted `name`, the match starting at a word: at the key's start,
/// after a separator, at a camel-case hump (`openaiApiKey`), or next to a non-ASCII character.
pub(super) fn ends_with_name(key: &[u8], name: &[u8]) -> bool {
    let mut at = key.len();
    for &n in name.iter().rev() {
        while at > 0 && is_separator(key[at - 1]) {
            at -= 1;
        }
        if at == 0 || key[at - 1].to_ascii_lowercase() != n {
            return false;
        }
        at -= 1;
    }
    if at == 0 {
        return true;
    }
    let (before, first) = (key[at - 1], key[at]);
    is_separator(before)
        || !before.is_ascii()
        || !first.is_ascii()
        || (first.is_ascii_uppercase() && !before.is_ascii_uppercase())
}

/// Key-like: mixed case and digits, as generated keys are, and prose words are not.
pub(super) fn looks_like_a_key(secret: &str) -> bool {
    let body = secret.strip_prefix("sk-").unwrap_or(secret);
    body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
}

/// `password is incorrect` describes the password; `password is hunter22` gives it away.
pub(super) fn not_a_description(value: &str) -> bool {
    let word = value.trim_end_matches(['.', '!', '?']).to_ascii_lowercase();
    !NOT_A_PASSWORD.contains(&word.as_str())
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

fn mask_capture(c: &Captures, accept: Option<Accept>) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    match c.get(1) {
        Some(secret) if accept.is_some_and(|ok| !ok(secret.as_str())) => whole.to_string(),
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
