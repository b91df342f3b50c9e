//! Where each tailed file has been read up to, kept under `state_dir`.
//!
//! An entry per file identity (the fingerprint of its first line): the offset up to which every line
//! is durable, the path it was last seen at, and when. The offsets only ever come from delivery
//! acknowledgements, so a checkpoint never runs ahead of the store. Saved by writing a temporary
//! file, fsyncing it and renaming it over the current one, whose previous version is kept as
//! `.prev`: a torn or corrupt current file falls back to the previous one.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// Entries of files not seen for this long are forgotten (rotated away and deleted).
const EXPIRE_AFTER_MS: i64 = 24 * 3600 * 1000;

pub struct Checkpoints {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    /// `[[file]]` paths tailed before: for these, a file without an entry is new and read whole.
    patterns: BTreeSet<String>,
    dirty: bool,
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
        let state = match read(&path) {
            Ok(Some(state)) => state,
            Ok(None) => read(&prev).ok().flatten().unwrap_or_default(),
            Err(e) => {
                tracing::warn!("{}: {e}; using the previous copy {}", path.display(), prev.display());
                read(&prev)
                    .unwrap_or_else(|e| {
                        tracing::warn!("{}: {e}; starting without checkpoints", prev.display());
                        None
                    })
                    .unwrap_or_default()
            }
        };
        Checkpoints {
            path,
            state: Mutex::new(state),
        }
    }

    pub fn offset(&self, fingerprint: u64) -> Option<u64> {
        self.lock().entries.get(&fingerprint).map(|e| e.offset)
    }

    /// Whether `pattern` (a `[[file]]` path) was tailed before. Only on its first run does
    /// `start_at` decide where files start; afterwards a file without an entry is new.
    pub fn knows_pattern(&self, pattern: &str) -> bool {
        self.lock().patterns.contains(pattern)
    }

    pub fn add_pattern(&self, pattern: &str) {
        let mut state = self.lock();
        if state.patterns.insert(pattern.to_string()) {
            state.dirty = true;
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
        state.dirty = true;
    }

    /// The file still exists, so its entry must not expire.
    pub fn seen(&self, fingerprint: u64) {
        if let Some(e) = self.lock().entries.get_mut(&fingerprint) {
            e.seen_at_ms = Timestamp::now().as_millis();
        }
    }

    /// Writes the checkpoints if they changed.
    pub fn save(&self) -> std::io::Result<()> {
        let now = Timestamp::now().as_millis();
        let body = {
            let mut state = self.lock();
            if !state.dirty {
                return Ok(());
            }
            state.entries.retain(|_, e| now - e.seen_at_ms < EXPIRE_AFTER_MS);
            state.dirty = false;
            let file = CheckpointFile {
                version: 1,
                saved_at_ms: now,
                patterns: state.patterns.clone(),
                files: state.entries.values().cloned().collect(),
            };
            serde_json::to_vec_pretty(&file)?
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        if self.path.exists() {
            std::fs::rename(&self.path, self.path.with_extension("json.prev"))?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        dirty: false,
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
    }
}
