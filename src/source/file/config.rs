//! `[[file]]`: one tailed file or glob of files.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{HumanDuration, Problems};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// A path or a glob (`/var/log/lngpt/*.log`). For a plain path, rotated siblings (`app.log.1`,
    /// `app.log.2026-11-26`) are followed too.
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
    }
}

#[cfg(test)]
mod tests {
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
}
