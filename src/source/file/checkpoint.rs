//! Where each tailed file has been read up to, kept under `state_dir`.
//!
//! An entry per file identity (the fingerprint of its first line): the offset up to which every line
//! is durable, the path it was last seen at, and when. The offsets only ever come from delivery
//! acknowledgements, so a checkpoint never runs ahead of the store. Saved by writing a temporary
//! file, fsyncing it and renaming it over the current one, whose previous version is kept as
//! `.prev`: a torn or corrupt current file falls back to the previous one.
//!
//! If both copies exist but neither can be read, the state is *lost*, which is not the same as a
//! fresh install: every known pattern counts as tailed before, so files are read from their
//! beginning whatever `start_at` says. Event ids derived from (fingerprint, offset) make the re-read
//! lines duplicates that the store ignores; skipping them would lose what was written meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// Entries of files not seen for this long are forgotten (rotated away and deleted).
const EXPIRE_AFTER_MS: i64 = 24 * 3600 * 1000;

pub struct Checkpoints {
    path: PathBuf,
    state: Mutex<State>,
    /// Why the saved state could not be read, when it existed (see the module doc).
    lost: Option<String>,
    /// One save at a time: two interleaved saves would rename each other's files away.
    saving: Mutex<()>,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    /// `[[file]]` paths tailed before: for these, a file without an entry is new and read whole.
    patterns: BTreeSet<String>,
    /// Bumped by every change; `saved` is the version last written. A failed save leaves them
    /// apart, so the next save retries.
    version: u64,
    saved: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The fingerprint, in hex (JSON numbers cannot hold every u64).
    fingerprint: String,
    path: String,
    offset: u64,
    seen_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    saved_at_ms: i64,
    #[serde(default)]
    patterns: BTreeSet<String>,
    files: Vec<Entry>,
}

impl Checkpoints {
    /// Loads `dir/checkpoints.json`, or its previous copy if the current one is unreadable.
    pub fn load(dir: &Path) -> Checkpoints {
        let path = dir.join("checkpoints.json");
        let prev = path.with_extension("json.prev");
        remove_stale_temporaries(dir);
        let (state, lost) = match (read(&path), read(&prev)) {
            (Ok(Some(state)), _) => (state, None),
            (Ok(None), Ok(prev_state)) => (prev_state.unwrap_or_default(), None),
            (Err(e), Ok(Some(state))) => {
                tracing::warn!("{}: {e}; using the previous copy {}", path.display(), prev.display());
                (state, None)
            }
            (Err(e), Ok(None)) => (State::default(), Some(format!("{}: {e}", path.display()))),
            (Ok(None), Err(e)) => (State::default(), Some(format!("{}: {e}", prev.display()))),
            (Err(e), Err(e_prev)) => (
                State::default(),
                Some(format!("{}: {e}; {}: {e_prev}", path.display(), prev.display())),
            ),
        };
        if let Some(why) = &lost {
            tracing::warn!(
                "the file checkpoints are lost ({why}): every tailed file is read again from its beginning, \
                 whatever start_at says; lines already stored keep their ids and are not stored twice"
            );
        }
        Checkpoints {
            path,
            state: Mutex::new(state),
            lost,
            saving: Mutex::new(()),
        }
    }

    /// Why the saved checkpoints could not be read, if they existed and could not.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    pub fn offset(&self, fingerprint: u64) -> Option<u64> {
        self.lock().entries.get(&fingerprint).map(|e| e.offset)
    }

    /// Whether `pattern` (a `[[file]]` path) was tailed before. Only on its first run does
    /// `start_at` decide where files start; afterwards a file without an entry is new.
    /// With the state lost, every pattern counts as known: its files are read whole.
    pub fn knows_pattern(&self, pattern: &str) -> bool {
        self.lost.is_some() || self.lock().patterns.contains(pattern)
    }

    pub fn add_pattern(&self, pattern: &str) {
        let mut state = self.lock();
        if state.patterns.insert(pattern.to_string()) {
            state.version += 1;
        }
    }

    /// Lines of the file up to `offset` are durable. Offsets only move forward.
    pub fn advance(&self, fingerprint: u64, path: &Path, offset: u64) {
        let now = Timestamp::now().as_millis();
        let mut state = self.lock();
        let entry = state.entries.entry(fingerprint).or_insert_with(|| Entry {
            fingerprint: format!("{fingerprint:016x}"),
            path: String::new(),
            offset: 0,
            seen_at_ms: now,
        });
        entry.offset = entry.offset.max(offset);
        entry.path = path.display().to_string();
        entry.seen_at_ms = now;
        state.version += 1;
    }

    /// The file still exists, so its entry must not expire.
    pub fn seen(&self, fingerprint: u64) {
        if let Some(e) = self.lock().entries.get_mut(&fingerprint) {
            e.seen_at_ms = Timestamp::now().as_millis();
        }
    }

    /// Writes the checkpoints if they changed since the last successful save.
    pub fn save(&self) -> std::io::Result<()> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Timestamp::now().as_millis();
        let (body, version) = {
            let mut state = self.lock();
            if state.version == state.saved {
                return Ok(());
            }
            state.entries.retain(|_, e| now - e.seen_at_ms < EXPIRE_AFTER_MS);
            let file = CheckpointFile {
                version: 1,
                saved_at_ms: now,
                patterns: state.patterns.clone(),
                files: state.entries.values().cloned().collect(),
            };
            (serde_json::to_vec_pretty(&file)?, state.version)
        };
        let tmp = self.write_temporary(&body)?;
        let renamed = (|| {
            if self.path.exists() {
                std::fs::rename(&self.path, self.path.with_extension("json.prev"))?;
            }
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        let mut state = self.lock();
        state.saved = state.saved.max(version);
        Ok(())
    }

    /// Writes `body` to a new file beside the checkpoints and fsyncs it. Its name is random and it
    /// is created exclusively without following symlinks, so nothing planted in `state_dir` (a
    /// symlink to a file the daemon may write as root) is ever written through.
    fn write_temporary(&self, body: &[u8]) -> std::io::Result<PathBuf> {
        let suffix = getrandom::u64().map_err(|e| std::io::Error::other(format!("no random name: {e}")))?;
        let tmp = self.path.with_extension(format!("json.tmp.{suffix:016x}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o640)
            .open(&tmp)?;
        let written = f.write_all(body).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Temporary files left by a crash mid-save (never followed: removing a symlink removes the link).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("checkpoints.json.tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn read(path: &Path) -> Result<Option<State>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let file: CheckpointFile = serde_json::from_slice(&bytes).map_err(|e| format!("corrupt ({e})"))?;
    let mut entries = HashMap::new();
    for e in file.files {
        let fp =
            u64::from_str_radix(&e.fingerprint, 16).map_err(|_| format!("corrupt fingerprint {:?}", e.fingerprint))?;
        entries.insert(fp, e);
    }
    Ok(Some(State {
        entries,
        patterns: file.patterns,
        ..State::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_checkpoints_come_back_and_a_corrupt_file_falls_back_to_the_previous_copy() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::load(dir.path());
        assert!(!c.knows_pattern("/x/app.log"));
        c.add_pattern("/x/app.log");
        c.advance(7, Path::new("/x/app.log"), 100);
        c.save().unwrap();
        c.advance(7, Path::new("/x/app.log"), 50);
        assert_eq!(c.offset(7), Some(100), "offsets only move forward");
        c.advance(7, Path::new("/x/app.log"), 200);
        c.save().unwrap();
        assert_eq!(Checkpoints::load(dir.path()).offset(7), Some(200));
        std::fs::write(dir.path().join("checkpoints.json"), b"{ torn").unwrap();
        let c = Checkpoints::load(dir.path());
        assert_eq!(c.offset(7), Some(100), "the previous copy");
        assert!(c.knows_pattern("/x/app.log"));
        assert!(c.lost().is_none());
    }

    #[test]
    fn a_failed_save_is_retried_by_the_next_one() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let c = Checkpoints::load(&dir);
        c.advance(7, Path::new("/x/app.log"), 100);
        // The directory is gone (a full disk or a failing mount would do the same): the save fails.
        std::fs::remove_dir(&dir).unwrap();
        assert!(c.save().is_err());
        std::fs::create_dir(&dir).unwrap();
        c.save().unwrap();
        assert_eq!(Checkpoints::load(&dir).offset(7), Some(100), "written by the retry");
    }

    #[test]
    fn both_copies_unreadable_means_lost_and_every_pattern_counts_as_known() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Checkpoints::load(dir.path()).lost().is_none(),
            "a fresh install is not a loss"
        );
        std::fs::write(dir.path().join("checkpoints.json"), b"{ torn").unwrap();
        let c = Checkpoints::load(dir.path());
        assert!(c.lost().is_some_and(|why| why.contains("corrupt")), "{:?}", c.lost());
        assert!(c.knows_pattern("/never/seen.log"));
        std::fs::write(dir.path().join("checkpoints.json.prev"), b"[]").unwrap();
        assert!(Checkpoints::load(dir.path()).lost().is_some());
    }

    #[test]
    fn the_temporary_file_is_never_written_through_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let c = Checkpoints::load(dir.path());
        std::os::unix::fs::symlink(&victim, dir.path().join("checkpoints.json.tmp")).unwrap();
        c.advance(7, Path::new("/x/app.log"), 100);
        c.save().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let saved = std::fs::metadata(dir.path().join("checkpoints.json")).unwrap();
        assert_eq!(saved.permissions().mode() & 0o777, 0o640);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("checkpoints.json.tmp."))
            .collect();
        assert!(left.is_empty(), "no temporary left behind: {left:?}");
    }
}
