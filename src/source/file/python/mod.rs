//! Python `logging` text files, read as they are: `format = "python"` in a `[[file]]` entry.
//!
//! The app logs through a `logging.Formatter` with a `%`-style pattern (its `LOG_FORMAT`,
//! `%(asctime)s - %(name)s - %(levelname)s - %(message)s`) into a `RotatingFileHandler`. The
//! pattern is compiled once ([`pattern`], with [`datefmt`] for the time) and each file's lines are
//! assembled into records ([`records`]): a record is a header line and the lines after it that are
//! no header (a traceback, a message with newlines).

mod datefmt;
mod pattern;
mod records;

use std::time::Duration;

pub use records::{Out, Records};

use pattern::Pattern;

use super::FileConfig;

/// The original system's `LOG_FORMAT`, used when neither the `[[file]]` entry nor the `LOG_FORMAT`
/// environment variable gives one.
pub const DEFAULT_PATTERN: &str = "%(asctime)s - %(name)s - %(levelname)s - %(message)s";

/// What reading one `[[file]]` entry's text records takes, compiled once and shared by its files.
pub struct TextFormat {
    pattern: Pattern,
    zone: jiff::tz::TimeZone,
    timeout: Duration,
    /// A record's lines are kept up to this many bytes (`max_line_bytes`).
    max_bytes: usize,
}

impl TextFormat {
    /// Compiles the entry's `pattern`, `datefmt` and `timezone`. The error names the key and says
    /// what is wrong and what to write.
    pub fn new(cfg: &FileConfig) -> Result<TextFormat, (&'static str, String)> {
        let pattern = Pattern::compile(
            cfg.pattern.as_deref().unwrap_or(DEFAULT_PATTERN),
            cfg.datefmt.as_deref(),
        )?;
        Ok(TextFormat {
            pattern,
            zone: zone(&cfg.timezone).map_err(|e| ("timezone", e))?,
            timeout: cfg.multiline_timeout.0,
            max_bytes: cfg.max_line_bytes,
        })
    }
}

/// `local` (the host's zone, as Python's `time.localtime` uses: `TZ`, else `/etc/localtime`) or
/// an IANA name.
fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name == "local" {
        return Ok(jiff::tz::TimeZone::system());
    }
    jiff::tz::TimeZone::get(name).map_err(|e| {
        format!(
            "is {name:?}, which is not a known time zone ({e}); expected \"local\" (the host's zone, as Python writes) or an IANA name such as \"Asia/Shanghai\" or \"UTC\""
        )
    })
}

/// For `format = "auto"`: whether a file whose first line is `head` holds JSON lines (it starts
/// with `{`, past a byte order mark and blanks) rather than text records.
pub fn looks_like_json(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests;
