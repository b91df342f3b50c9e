//! The app's `.env`, read the way python-dotenv reads it (the app loads it with `dotenv_values`),
//! so that the collector and the app agree on every value: comments, `export`, single and double
//! quotes with their escapes, values over several lines, inline comments after whitespace, and
//! `${VAR}` / `${VAR:-default}` expansion from the process environment and earlier lines.
//!
//! The grammar is python-dotenv's own (its `parser.py`), one regular expression per token, so the
//! two agree line for line; a test compares them on tricky files. A line python-dotenv cannot parse
//! is skipped with a warning, as the app does, not refused: the app runs with that file.

use std::sync::OnceLock;

use regex::Regex;

/// What one `.env` file sets, in file order (a name set twice keeps its last value), and the
/// warnings for lines that could not be parsed.
#[derive(Debug, Default, PartialEq)]
pub struct DotEnv {
    /// Names with their values; `None` for a name without `=` (python-dotenv's `None`: not set).
    pub vars: Vec<(String, Option<String>)>,
    pub warnings: Vec<String>,
}

struct Grammar {
    multiline_whitespace: Regex,
    whitespace: Regex,
    export: Regex,
    single_quoted_key: Regex,
    unquoted_key: Regex,
    equal_sign: Regex,
    single_quoted_value: Regex,
    double_quoted_value: Regex,
    unquoted_value: Regex,
    comment: Regex,
    end_of_line: Regex,
    rest_of_line: Regex,
    inline_comment: Regex,
    variable: Regex,
}

fn grammar() -> &'static Grammar {
    static G: OnceLock<Grammar> = OnceLock::new();
    G.get_or_init(|| {
        // Anchored: each is tried at the reader's position, as Python's `regex.match(s, pos)`.
        let re = |p: &str| Regex::new(&format!("^(?:{p})")).unwrap_or_else(|e| panic!("dotenv grammar {p}: {e}"));
        Grammar {
            multiline_whitespace: re(r"\s*"),
            whitespace: re(r"[^\S\r\n]*"),
            export: re(r"(?:export[^\S\r\n]+)?"),
            single_quoted_key: re(r"'([^']+)'"),
            unquoted_key: re(r"([^=\#\s]+)"),
            equal_sign: re(r"(=[^\S\r\n]*)"),
            single_quoted_value: re(r"'((?:\\'|[^'])*)'"),
            double_quoted_value: re(r#""((?:\\"|[^"])*)""#),
            unquoted_value: re(r"([^\r\n]*)"),
            comment: re(r"(?:[^\S\r\n]*#[^\r\n]*)?"),
            end_of_line: re(r"[^\S\r\n]*(?:\r\n|\n|\r|$)"),
            rest_of_line: re(r"[^\r\n]*(?:\r|\n|\r\n)?"),
            inline_comment: Regex::new(r"\s+#.*").unwrap_or_else(|e| panic!("dotenv grammar: {e}")),
            variable: Regex::new(r"\$\{([^}:]*)(?::-([^}]*))?\}").unwrap_or_else(|e| panic!("dotenv grammar: {e}")),
        }
    })
}

/// A cursor over the file's text.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

/// A token was not where the grammar wants one: the statement is skipped.
struct Unparsable;

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    /// Matches `re` here and moves past it; the first group, if it has one.
    fn read(&mut self, re: &Regex) -> Result<Option<&'a str>, Unparsable> {
        let rest = &self.text[self.pos..];
        let caps = re.captures(rest).ok_or(Unparsable)?;
        let whole = caps.get(0).map_or(0, |m| m.end());
        let group = caps.get(1).map(|m| &rest[m.start()..m.end()]);
        self.pos += whole;
        Ok(group)
    }

    fn line(&self) -> usize {
        self.text[..self.pos].matches('\n').count() + 1
    }
}

/// Parses `.env` text; `lookup` answers `${VAR}` for names the file has not set (the process
/// environment).
pub fn parse(text: &str, lookup: impl Fn(&str) -> Option<String>) -> DotEnv {
    // Python reads the file in text mode: `\r\n` and `\r` arrive as `\n`.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let g = grammar();
    let mut reader = Reader { text, pos: 0 };
    let mut out = DotEnv::default();
    while !reader.at_end() {
        let start = reader.pos;
        match binding(&mut reader, g) {
            Ok(Some((key, value))) => {
                let value = value.map(|v| expand(&v, &out.vars, &lookup));
                out.vars.retain(|(k, _)| *k != key);
                out.vars.push((key, value));
            }
            Ok(None) => {}
            Err(Unparsable) => {
                // Python goes on after the rest of the line where the statement failed (which
                // may be a later line, inside a quoted value).
                let failed_at = reader.pos;
                reader.pos = start;
                let _ = reader.read(&g.multiline_whitespace);
                let line = reader.line();
                reader.pos = failed_at;
                let _ = reader.read(&g.rest_of_line);
                out.warnings.push(format!(
                    "line {line} cannot be parsed and is skipped (python-dotenv skips it too)"
                ));
            }
        }
    }
    out
}

/// One statement: `Some((key, value))`, or `None` for a comment or blank tail.
type Binding = Option<(String, Option<String>)>;

fn binding(r: &mut Reader<'_>, g: &Grammar) -> Result<Binding, Unparsable> {
    r.read(&g.multiline_whitespace)?;
    if r.at_end() {
        return Ok(None);
    }
    r.read(&g.export)?;
    let key = match r.peek() {
        Some('#') => None,
        Some('\'') => r.read(&g.single_quoted_key)?.map(str::to_string),
        _ => r.read(&g.unquoted_key)?.map(str::to_string),
    };
    r.read(&g.whitespace)?;
    let value = if r.peek() == Some('=') {
        r.read(&g.equal_sign)?;
        Some(value(r, g)?)
    } else {
        None
    };
    r.read(&g.comment)?;
    r.read(&g.end_of_line)?;
    Ok(key.map(|k| (k, value)))
}

fn value(r: &mut Reader<'_>, g: &Grammar) -> Result<String, Unparsable> {
    match r.peek() {
        Some('\'') => Ok(unescape(r.read(&g.single_quoted_value)?.unwrap_or(""), "\\'")),
        Some('"') => Ok(unescape(r.read(&g.double_quoted_value)?.unwrap_or(""), "\\'\"abfnrtv")),
        None | Some('\n') => Ok(String::new()),
        _ => {
            let part = r.read(&g.unquoted_value)?.unwrap_or("");
            Ok(g.inline_comment.replace_all(part, "").trim_end().to_string())
        }
    }
}

/// Decodes `\x` for each `x` in `escapable`, as python-dotenv's `decode_escapes` does.
fn unescape(s: &str, escapable: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&n)) if escapable.contains(n) => {
                chars.next();
                out.push(match n {
                    'a' => '\x07',
                    'b' => '\x08',
                    'f' => '\x0c',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\x0b',
                    other => other,
                });
            }
            _ => out.push(c),
        }
    }
    out
}

/// `${NAME}` and `${NAME:-default}`: earlier lines of the file first, then `lookup`; unset is "".
fn expand(value: &str, earlier: &[(String, Option<String>)], lookup: &impl Fn(&str) -> Option<String>) -> String {
    grammar()
        .variable
        .replace_all(value, |caps: &regex::Captures<'_>| {
            let name = caps.get(1).map_or("", |m| m.as_str());
            let default = caps.get(2).map(|m| m.as_str().to_string());
            match earlier.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => v.clone().unwrap_or_default(),
                None => lookup(name).or(default).unwrap_or_default(),
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, Option<String>)> {
        parse(text, |n| (n == "HOME").then(|| "/home/app".to_string())).vars
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn the_apps_env_example_reads_as_the_app_reads_it() {
        let text = "# MongoDB Configuration - MongoDB数据库配置\nENABLE_MONGODB=false\nMONGODB_URI=mongodb://host.docker.internal:27017/\n\n# 每小时费用上限（人民币）\nAPI_HOURLY_LIMIT_RMB=100\nWENXIN_AK=\n";
        assert_eq!(
            vars(text),
            set(&[
                ("ENABLE_MONGODB", "false"),
                ("MONGODB_URI", "mongodb://host.docker.internal:27017/"),
                ("API_HOURLY_LIMIT_RMB", "100"),
                ("WENXIN_AK", ""),
            ])
        );
    }

    #[test]
    fn quotes_escapes_export_comments_and_expansion() {
        let text = concat!(
            "export A=1\n",
            "B = 'single # not a comment' # a comment\n",
            "C=\"line\\nbreak \\\"quoted\\\"\"\n",
            "D=value # comment\n",
            "E=value#not-a-comment\n",
            "F=\"two\nlines\"\n",
            "G=${HOME}/x ${MISSING:-fallback} ${A}\n",
            "'H'=k\n",
            "NAME_ONLY\n",
            "A=2\n",
        );
        let v = vars(text);
        let get = |k: &str| v.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.clone());
        assert_eq!(get("A").as_deref(), Some("2"));
        assert_eq!(get("B").as_deref(), Some("single # not a comment"));
        assert_eq!(get("C").as_deref(), Some("line\nbreak \"quoted\""));
        assert_eq!(get("D").as_deref(), Some("value"));
        assert_eq!(get("E").as_deref(), Some("value#not-a-comment"));
        assert_eq!(get("F").as_deref(), Some("two\nlines"));
        assert_eq!(get("G").as_deref(), Some("/home/app/x fallback 1"));
        assert_eq!(get("H").as_deref(), Some("k"));
        assert!(v.iter().any(|(n, v)| n == "NAME_ONLY" && v.is_none()));
    }

    #[test]
    fn an_unparsable_line_is_skipped_with_a_warning_and_the_rest_read() {
        let d = parse("A=1\nB=\"unterminated\nC=3\n", |_| None);
        // python-dotenv: the unterminated quote spoils its own line only.
        assert_eq!(d.vars, set(&[("A", "1"), ("C", "3")]));
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("line 2"), "{:?}", d.warnings);
    }
}
