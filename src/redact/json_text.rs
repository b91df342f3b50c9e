//! JSON-like text walked token by token — a rejected raw line, a request body quoted in a message,
//! a Python repr — so that secrets are found by structure (the value of a secret name, a whole
//! subtree) with escapes decoded, while everything else is kept exactly as written. It tolerates
//! broken JSON: cut short, unquoted names and values, single quotes.

use std::borrow::Cow;

use super::mask;
use super::rules::Rules;

/// Walks JSON-like text token by token and masks the values of secret names (whole subtrees)
/// and secrets inside every string, keeping everything else as written: order, spacing,
/// repeated names, big numbers. Tolerates broken JSON (cut short, unquoted names and values).
pub(super) fn walk(s: &str, rules: &Rules) -> String {
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
                    pending = masked_from.is_none() && rules.is_secret_key(&decoded);
                    changed(rules.text(&decoded))
                } else if masked_from.is_some() || std::mem::take(&mut pending) {
                    Some(mask(&decoded))
                } else {
                    changed(rules.text(&decoded))
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
                    pending = masked_from.is_none() && rules.is_secret_key(word);
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
pub(super) fn unescape(body: &str) -> Cow<'_, str> {
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

fn changed(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    }
}
