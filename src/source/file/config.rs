//! `[[file]]`: one tailed file or glob of files.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::units::HumanDuration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// A path or a glob (`/var/log/lngpt/*.log`). The names its files are rotated into are followed
    /// too: a plain path's siblings (`app.log.1`, `app.log.2026-11-26`), a glob followed by `.*`.
    pub path: String,
    /// Where to start in a file never seen before.
    pub start_at: StartAt,
    /// How many bytes of a file's first line identify it.
    pub fingerprint_bytes: usize,
    /// The slow poll that covers missed file-system notifications.
    pub poll_interval: HumanDuration,
    pub max_line_bytes: usize,
    /// Files held open at once. Only files with unread data or a recent write need a descriptor;
    /// the others are closed and looked at by `stat`. Files beyond the cap wait their turn.
    pub max_open_files: usize,
    /// How long a deleted (or renamed-away) file is kept open after its last write, for a writer
    /// that still holds it and may write again. Lines it writes after this are lost.
    pub rotated_idle_timeout: HumanDuration,
    /// What the lines are: JSON lines, Python `logging` text, or decided per file.
    pub format: Format,
    /// The `logging.Formatter` pattern of a text log. Unset: the `LOG_FORMAT` environment variable,
    /// else the original system's `LOG_FORMAT` (filled in when the configuration is loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The `datefmt` of that formatter; unset, logging's own `2026-11-26 12:00:00,123`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datefmt: Option<String>,
    /// A text record is complete when the next one starts, after this long without new data in
    /// the file (Python writes a record, traceback included, at once), or when its file is rotated
    /// away (Python's handlers rotate between records).
    pub multiline_timeout: HumanDuration,
}

/// What a file's lines are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (the wire format).
    Json,
    /// Python `logging` text records, read with `pattern`.
    Python,
    /// Per file, from its first line: JSON if it starts with `{`, else Python text.
    Auto,
}

/// Where reading starts in a file never seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

impl std::fmt::Display for StartAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartAt::Beginning => "beginning",
            StartAt::End => "end",
        })
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: String::new(),
            start_at: StartAt::Beginning,
            fingerprint_bytes: 256,
            poll_interval: HumanDuration(Duration::from_secs(1)),
            max_line_bytes: 1 << 20,
            max_open_files: 256,
            rotated_idle_timeout: HumanDuration(Duration::from_secs(300)),
            format: Format::Json,
            pattern: None,
            datefmt: None,
            multiline_timeout: HumanDuration(Duration::from_secs(1)),
        }
    }
}

impl FileConfig {
    /// Checks the entry; `at` is its key path, such as `file[0]`.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        let key = |k: &str| format!("{at}.{k}");
        if self.path.is_empty() {
            p.add(
                &key("path"),
                "is missing; expected the app's log file, such as \"/var/log/lngpt/app.log\"",
            );
        } else if let Err(e) = glob::Pattern::new(&self.path) {
            p.add(&key("path"), format!("is not a valid path or glob: {e}"));
        }
        p.in_range(&key("fingerprint_bytes"), self.fingerprint_bytes, 16..=64 * 1024);
        p.duration_in(
            &key("poll_interval"),
            self.poll_interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        p.in_range(&key("max_line_bytes"), self.max_line_bytes, 1024..=64 << 20);
        p.in_range(&key("max_open_files"), self.max_open_files, 1..=65536);
        p.duration_in(
            &key("rotated_idle_timeout"),
            self.rotated_idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(7 * 24 * 3600),
        );
        p.duration_in(
            &key("multiline_timeout"),
            self.multiline_timeout,
            Duration::from_millis(10),
            Duration::from_secs(600),
        );
        if self.format == Format::Json {
            for (name, set) in [("pattern", self.pattern.is_some()), ("datefmt", self.datefmt.is_some())] {
                if set {
                    p.add(
                        &key(name),
                        "is set, but format is \"json\" (the default); set format = \"python\" (or \"auto\") for a Python logging text file",
                    );
                }
            }
        } else if let Err((name, problem)) = super::python::TextFormat::check(self) {
            p.add(&key(name), problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn file_entries_are_checked_key_by_key() {
        let load = |t: &str| Config::from_toml(t, "test.toml", Vec::new()).map_err(|e| e.first().clone());
        let c =
            load("[[file]]\npath = \"/var/log/app.log\"\n[[file]]\npath = \"/var/log/x/*.log\"\nstart_at = \"end\"\n")
                .unwrap();
        assert_eq!(c.file.len(), 2);
        assert_eq!(
            (c.file[0].start_at, c.file[1].start_at),
            (super::StartAt::Beginning, super::StartAt::End)
        );
        let e = load("[[file]]\npath = \"a\"\nstart = \"end\"\n").unwrap_err();
        assert_eq!(e.key, "file[0].start");
        assert!(e.problem.contains("did you mean `file.start_at`"), "{e}");
        let e = load("[[file]]\nstart_at = \"end\"\n").unwrap_err();
        assert_eq!(e.key, "file[0].path");
        let e = load("[[file]]\npath = \"a\"\nstart_at = \"middle\"\n").unwrap_err();
        assert_eq!(e.key, "file[0].start_at");
        assert!(
            e.problem.contains("`beginning`, `end`") || e.problem.contains("`beginning` or `end`"),
            "{e}"
        );
        let e = load("[[file]]\npath = \"a\"\nmax_open_files = 0\n").unwrap_err();
        assert_eq!(e.key, "file[0].max_open_files");
        let e = load("[[file]]\npath = \"a\"\nrotated_idle_timeout = \"10ms\"\n").unwrap_err();
        assert_eq!(e.key, "file[0].rotated_idle_timeout");
    }

    #[test]
    fn text_log_keys_are_checked_and_log_format_fills_a_missing_pattern() {
        let load_env = |t: &str, env: &[(&str, &str)]| {
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>();
            Config::from_toml(t, "test.toml", env)
        };
        let load = |t: &str| load_env(t, &[]).map_err(|e| e.first().clone());
        let c = load("[[file]]\npath = \"a\"\nformat = \"python\"\n").unwrap();
        let f = &c.file[0];
        assert_eq!(f.format, super::Format::Python);
        assert_eq!(
            f.pattern.as_deref(),
            Some(super::super::python::DEFAULT_PATTERN),
            "the effective pattern is shown"
        );
        assert_eq!(f.multiline_timeout.0, Duration::from_secs(1));
        assert_eq!(load("[[file]]\npath = \"a\"\n").unwrap().file[0].pattern, None);
        for (toml, key, says) in [
            ("format = \"xml\"", "file[0].format", "`json`"),
            (
                "format = \"python\"\npattern = \"%(asctime)s\"",
                "file[0].pattern",
                "no `%(message)s`",
            ),
            (
                "format = \"python\"\ndatefmt = \"%H:%M\"",
                "file[0].datefmt",
                "no full date",
            ),
            (
                "format = \"python\"\ntimezone = \"Asia/Shanghai\"",
                "file[0].timezone",
                "did you mean `naive_timezone`?",
            ),
            (
                "format = \"auto\"\nmultiline_timeout = \"2h\"",
                "file[0].multiline_timeout",
                "10ms",
            ),
            ("pattern = \"%(message)s\"", "file[0].pattern", "format = \"python\""),
        ] {
            let e = load(&format!("[[file]]\npath = \"a\"\n{toml}\n")).unwrap_err();
            assert_eq!(e.key, key, "{toml}: {e}");
            assert!(e.problem.contains(says), "{toml}: {e}");
        }
        // LOG_FORMAT fills a python entry without a pattern; a pattern in the file wins over it.
        let two = "[[file]]\npath = \"a\"\nformat = \"python\"\n[[file]]\npath = \"b\"\nformat = \"python\"\npattern = \"%(levelname)s %(message)s\"\n[[file]]\npath = \"c\"\n";
        let c = load_env(two, &[("LOG_FORMAT", "%(levelname)s:%(name)s:%(message)s")]).unwrap();
        assert_eq!(c.file[0].pattern.as_deref(), Some("%(levelname)s:%(name)s:%(message)s"));
        assert_eq!(c.file[1].pattern.as_deref(), Some("%(levelname)s %(message)s"));
        assert_eq!(c.file[2].pattern, None, "a JSON entry takes no pattern");
        let e = load_env(two, &[("LOG_FORMAT", "%(levelname)s")]).unwrap_err();
        assert_eq!(
            (e.first().origin.as_str(), e.first().key.as_str()),
            ("LOG_FORMAT", "file[0].pattern")
        );
    }
}
