//! Secret masking, applied to every event before it is queued, stored or logged.
//!
//! Two ways a secret is found: by the name of the field that holds it (`api_key`, `accessToken`,
//! `llm.api_key`, …, anywhere in `extra`, nested too), and by the shape of a value inside any string
//! or object key (`Bearer …`, `sk-…`, JWTs, AWS key ids, URL passwords, `api_key=…` in a message).
//! Text holding JSON (a rejected raw line, a request body in a message) is walked by structure first,
//! escapes decoded, so that nested values and `\u`-escaped names are caught. A masked value keeps only
//! its last four characters (`***wxyz`) so that operators can still tell keys apart.

use std::borrow::Cow;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex, RegexSet};
use serde_json::{Map, Value};

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

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
struct Rules {
    enabled: bool,
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

impl Rules {
    fn new(cfg: &RedactConfig) -> Result<Rules, String> {
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

    fn disabled() -> Rules {
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
            out.push_str(&self.json_like(&s[at..]));
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
        let structured = format!("{}{}", &line[..at], self.json_like(&line[at..]));
        match self.text(&structured) {
            Cow::Owned(masked) => Cow::Owned(masked),
            Cow::Borrowed(_) if structured == line => Cow::Borrowed(line),
            Cow::Borrowed(_) => Cow::Owned(structured),
        }
    }

    /// Walks JSON-like text token by token and masks the values of secret names (whole subtrees)
    /// and secrets inside every string, keeping everything else as written: order, spacing,
    /// repeated names, big numbers. Tolerates broken JSON (cut short, unquoted names and values).
    fn json_like(&self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len() + 16);
        let mut i = 0;
        let mut depth = 0usize;
        // A secret name was read; its value comes next.
        let mut pending = false;
        // Inside the value of a secret name, which opened at this depth.
        let mut masked_from: Option<usize> = None;
        while i < b.len() {
            match b[i] {
                // Single quotes too: Python reprs (`{'password': '…'}`) are common in logs.
                quote @ (b'"' | b'\'') => {
                    let end = string_end(b, i, quote);
                    let closed = end - i >= 2 && b[end - 1] == quote;
                    let body = &s[i + 1..if closed { end - 1 } else { end }];
                    let decoded = unescape(body);
                    let is_name = next_non_space(b, end) == Some(b':');
                    let replacement = if is_name {
                        pending = masked_from.is_none() && self.is_secret_key(&decoded);
                        changed(self.text(&decoded))
                    } else if masked_from.is_some() || std::mem::take(&mut pending) {
                        Some(mask(&decoded))
                    } else {
                        changed(self.text(&decoded))
                    };
                    match replacement {
                        Some(new) => {
                            let quoted = match quote {
                                b'"' => serde_json::to_string(&new).unwrap_or_else(|_| "\"***\"".into()),
                                _ => format!("'{}'", new.replace('\\', "\\\\").replace('\'', "\\'")),
                            };
                            out.push_str(if closed { &quoted } else { &quoted[..quoted.len() - 1] });
                        }
                        None => out.push_str(&s[i..end]),
                    }
                    i = end;
                }
                c @ (b'{' | b'[') => {
                    if std::mem::take(&mut pending) {
                        masked_from = Some(depth);
                    }
                    depth += 1;
                    out.push(c as char);
                    i += 1;
                }
                c @ (b'}' | b']') => {
                    depth = depth.saturating_sub(1);
                    if masked_from == Some(depth) {
                        masked_from = None;
                    }
                    out.push(c as char);
                    i += 1;
                }
                c if c == b',' || c == b':' || c.is_ascii_whitespace() => {
                    if c == b',' {
                        pending = false;
                    }
                    out.push(c as char);
                    i += 1;
                }
                _ => {
                    let end = bare_word_end(b, i);
                    let word = &s[i..end];
                    if next_non_space(b, end) == Some(b':') {
                        pending = masked_from.is_none() && self.is_secret_key(word);
                        out.push_str(word);
                    } else if masked_from.is_some() || std::mem::take(&mut pending) {
                        match word {
                            "null" => out.push_str("null"),
                            // Numbers and booleans become a masked string, so JSON stays JSON.
                            _ if word == "true" || word == "false" || word.parse::<f64>().is_ok() => {
                                out.push_str("\"***\"")
                            }
                            _ => out.push_str(&mask(word)),
                        }
                    } else {
                        out.push_str(word);
                    }
                    i = end;
                }
            }
        }
        out
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

fn changed(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
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
fn compact(name: &str) -> Vec<u8> {
    name.bytes()
        .filter(|&b| !is_separator(b))
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// Whether `key` ends with the compacted `name`, the match starting at a word: at the key's start,
/// after a separator, at a camel-case hump (`openaiApiKey`), or next to a non-ASCII character.
fn ends_with_name(key: &[u8], name: &[u8]) -> bool {
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

/// Index just past the closing `quote` of the string starting at `start`, or the end of the text.
fn string_end(b: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Index just past a run of characters that are not JSON punctuation, quotes or spaces.
fn bare_word_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len()
        && !matches!(b[i], b'"' | b'\'' | b'{' | b'}' | b'[' | b']' | b',' | b':')
        && !b[i].is_ascii_whitespace()
    {
        i += 1;
    }
    i.max(start + 1)
}

fn next_non_space(b: &[u8], from: usize) -> Option<u8> {
    b.get(from..)?.iter().copied().find(|c| !c.is_ascii_whitespace())
}

/// The text of a JSON string's body with its escapes decoded; invalid escapes are kept as written.
fn unescape(body: &str) -> Cow<'_, str> {
    if !body.contains('\\') {
        return Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16) {
                    Ok(unit) if hex.len() == 4 => {
                        chars.nth(3);
                        out.push(decode_utf16_unit(unit, &mut chars));
                    }
                    _ => out.push_str("\\u"),
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// One `\uXXXX` unit, joined with a following low surrogate when it is a high one.
fn decode_utf16_unit(unit: u32, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> char {
    if (0xD800..0xDC00).contains(&unit) {
        let ahead: String = rest.clone().take(6).collect();
        if let Some(low) = ahead
            .strip_prefix("\\u")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .filter(|low| (0xDC00..0xE000).contains(low))
        {
            rest.nth(5);
            return char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)).unwrap_or('\u{FFFD}');
        }
    }
    char::from_u32(unit).unwrap_or('\u{FFFD}')
}

/// Key-like: mixed case and digits, as generated keys are, and prose words are not.
fn looks_like_a_key(secret: &str) -> bool {
    let body = secret.strip_prefix("sk-").unwrap_or(secret);
    body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
}

/// `password is incorrect` describes the password; `password is hunter22` gives it away.
fn not_a_description(value: &str) -> bool {
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
