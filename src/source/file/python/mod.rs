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

use std::sync::Arc;
use std::time::Duration;

pub use records::{Out, Records};

use pattern::Pattern;

use super::FileConfig;
use crate::event::NaiveZone;

/// The original system's `LOG_FORMAT`, used when neither the `[[file]]` entry nor the `LOG_FORMAT`
/// environment variable gives one.
pub const DEFAULT_PATTERN: &str = "%(asctime)s - %(name)s - %(levelname)s - %(message)s";

/// What reading one `[[file]]` entry's text records takes, compiled once and shared by its files.
pub struct TextFormat {
    pattern: Pattern,
    /// `naive_timezone`: `asctime` has no offset, like a naive timestamp in a JSON line, and is
    /// read the same way.
    zone: Arc<NaiveZone>,
    timeout: Duration,
    /// A record's lines are kept up to this many bytes (`max_line_bytes`).
    max_bytes: usize,
}

impl TextFormat {
    /// Compiles the entry's `pattern` and `datefmt`; times without an offset are read in `zone`.
    /// The error names the key and says what is wrong and what to write.
    pub fn new(cfg: &FileConfig, zone: Arc<NaiveZone>) -> Result<TextFormat, (&'static str, String)> {
        Ok(TextFormat {
            pattern: compile(cfg)?,
            zone,
            timeout: cfg.multiline_timeout.0,
            max_bytes: cfg.max_line_bytes,
        })
    }

    /// Checks the entry's `pattern` and `datefmt`, for the configuration loader.
    pub fn check(cfg: &FileConfig) -> Result<(), (&'static str, String)> {
        compile(cfg).map(drop)
    }
}

fn compile(cfg: &FileConfig) -> Result<Pattern, (&'static str, String)> {
    Pattern::compile(
        cfg.pattern.as_deref().unwrap_or(DEFAULT_PATTERN),
        cfg.datefmt.as_deref(),
    )
}

/// For `format = "auto"`: whether a file whose first line is `head` holds JSON lines (it starts
/// with `{`, past a byte order mark and blanks) rather than text records.
pub fn looks_like_json(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests;
