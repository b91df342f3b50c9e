//! Discovery: which paths belong to a `[[file]]` entry, and knowing promptly when they change.
//!
//! **Candidates.** A scan lists the entry's paths and `stat`s each once: the plain path or the
//! glob's matches, and the names they are rotated into, oldest first, so that rotations that
//! happened while the daemon was stopped are finished in the order they were written. For a plain
//! path those are its siblings (`app.log.1`, `app.log.2026-11-26`, `app.log.1.gz`), found by one
//! directory listing rather than a glob, since this runs on every poll; for a glob, the matches of
//! the glob with `.*` after it (`*.log.*` for `*.log`): a glob's matches rotate as a plain path
//! does, and a line written just before a rotation while the daemon was down is only in the
//! rotated file, which the glob itself no longer matches. Whether a rotated file is read, and from
//! where, is the fingerprint's and the checkpoint's to say, as for any file. Compressed archives
//! other than `.gz` are never candidates; a `.gz` is one, and the tailer reads it only if it is a
//! checkpointed file compressed (its fingerprint says so).
//!
//! **Notifications.** `notify` watches the entry's directory (or, while it is missing, its nearest
//! existing ancestor, so its creation is seen) and wakes the tailer on events that mean a change.
//! Opens, reads and closes without writing are not such events: the tailer's own listings and
//! reads cause them, and waking on them spun a core forever. A slow poll covers whatever inotify
//! misses (an overflowed queue, file systems without it). A directory renamed away and recreated
//! is another directory (its dev and inode say so) and is watched again at once.
//!
//! **Early opens.** A writer that rotates fast (Python's handler with few backups, in a burst) can
//! create a file, rename it through every backup and delete it while the tailer waits on a full
//! pipeline, before any scan lists it. So the notification thread, which nothing blocks, opens a
//! matching file the moment it appears ([`Early`]), within `max_open_files`; the tailer takes
//! those descriptors in at its next scan and reads through them what no path reaches any more.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::{mtime, FileId, Warnings};
use crate::units::HumanDuration;

/// Suffixes of compressed archives. `.gz` files are read when they are a known file compressed;
/// the others never.
const ARCHIVES: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4"];

/// Which paths belong to a `[[file]]` entry: a plain path or the glob's matches, and the names
/// they are rotated into.
#[derive(Clone)]
pub(super) struct Pattern {
    path: String,
    glob: Option<glob::Pattern>,
    /// For a glob, the names its matches are rotated into: the glob followed by `.*`.
    rotated: Option<glob::Pattern>,
}

impl Pattern {
    pub fn new(path: &str) -> Pattern {
        let compile = |p: &str| is_glob(path).then(|| glob::Pattern::new(p).ok()).flatten();
        Pattern {
            path: path.to_string(),
            glob: compile(path),
            rotated: compile(&rotated_glob(path)),
        }
    }

    pub fn is_glob(&self) -> bool {
        is_glob(&self.path)
    }

    /// Whether `p` is where the app writes now: the plain path itself, or a match of the glob.
    /// A file found under another name (a rotated sibling, a name the glob's matches are rotated
    /// into) has been rotated away: its writer has moved on to a new file.
    pub fn is_current(&self, p: &Path) -> bool {
        match &self.glob {
            Some(g) => g.matches_path_with(p, match_options()) && !is_archive(&p.to_string_lossy()),
            None => p.as_os_str() == self.path.as_str(),
        }
    }

    /// Whether `p` is a plain (uncompressed) file of the pattern: those are what a fast rotation
    /// may delete unread, so the notification thread opens them at once.
    pub fn matches(&self, p: &Path) -> bool {
        let name = p.to_string_lossy();
        if is_archive(&name) {
            return false;
        }
        match &self.glob {
            Some(g) => {
                g.matches_path_with(p, match_options())
                    || self
                        .rotated
                        .as_ref()
                        .is_some_and(|r| r.matches_path_with(p, match_options()))
            }
            None => {
                name == self.path
                    || name
                        .strip_prefix(self.path.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }
        }
    }
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The glob of the names a glob's matches are rotated into.
fn rotated_glob(glob: &str) -> String {
    format!("{glob}.*")
}

fn is_archive(name: &str) -> bool {
    ARCHIVES.iter().any(|ext| name.ends_with(ext))
}

/// A `*` never matches across a `/`, as in the shell.
fn match_options() -> glob::MatchOptions {
    glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    }
}

/// A path found by a scan, with its one `stat`.
pub(super) struct Candidate {
    pub path: PathBuf,
    pub meta: Metadata,
}

impl Candidate {
    pub fn id(&self) -> FileId {
        (self.meta.dev(), self.meta.ino())
    }
}

/// Files opened by the notification thread the moment they appear (see the module doc).
#[derive(Default)]
pub(super) struct Early {
    files: Mutex<HashMap<FileId, (PathBuf, File)>>,
    /// Files the tailer holds open, so that the two together stay within `max_open_files`.
    pub tracked: AtomicUsize,
}

impl Early {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, (PathBuf, File)>> {
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens `path` if it is a file of the pattern and there is room. Called on the notification
    /// thread, which a full pipeline never blocks.
    fn open(&self, path: &Path, pattern: &Pattern, cap: usize) {
        if !pattern.matches(path) {
            return;
        }
        let mut files = self.lock();
        if files.len() + self.tracked.load(Ordering::Relaxed) >= cap {
            return;
        }
        if let Ok(file) = File::open(path) {
            if let Ok(meta) = file
                .metadata()
                .map_err(drop)
                .and_then(|m| if m.is_file() { Ok(m) } else { Err(()) })
            {
                files
                    .entry((meta.dev(), meta.ino()))
                    .or_insert((path.to_path_buf(), file));
            }
        }
    }
}

/// Whether a notification means a change worth a scan (see the module doc).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        // Create, modify (data, metadata, rename), remove; Other is a queue overflow: rescan.
        _ => true,
    }
}

/// One `[[file]]` entry's paths: the scan that lists them and the watch that says when to scan.
pub(super) struct Discovery {
    pattern: Pattern,
    max_open_files: usize,
    poll_interval: HumanDuration,
    /// Before the first scan: a missing file is worth a warning then, not during a rotation.
    pub first_scan: bool,
    watcher: Option<notify::RecommendedWatcher>,
    /// The directory watched and its (dev, ino): a directory renamed away and recreated is another.
    watched: Option<(PathBuf, FileId)>,
    pub early: Arc<Early>,
    wake_tx: Sender<()>,
    warnings: Warnings,
}

impl Discovery {
    pub fn new(path: &str, max_open_files: usize, poll_interval: HumanDuration, wake_tx: Sender<()>) -> Discovery {
        Discovery {
            pattern: Pattern::new(path),
            max_open_files,
            poll_interval,
            first_scan: true,
            watcher: None,
            watched: None,
            early: Arc::default(),
            wake_tx,
            warnings: Warnings::default(),
        }
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Watches the pattern's directory for changes; while it is missing, its nearest existing
    /// ancestor, so that its creation wakes the tailer. Watches again when the directory was
    /// replaced (renamed away and recreated): the old watch follows the old directory.
    pub fn watch(&mut self) {
        let path = self.pattern.path.clone();
        let parent = Path::new(&path).parent().map(Path::to_path_buf);
        let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty() && !is_glob(&d.to_string_lossy())) else {
            return;
        };
        let is_dir = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .filter(Metadata::is_dir)
                .map(|m| (m.dev(), m.ino()))
        };
        let target = match is_dir(&dir) {
            Some(id) => (dir.clone(), id),
            None => {
                let msg = format!("waiting for the directory {} to exist (file {path})", dir.display());
                self.warnings.once(&format!("dir:{}", dir.display()), msg);
                match dir
                    .ancestors()
                    .skip(1)
                    .find_map(|a| is_dir(a).map(|id| (a.to_path_buf(), id)))
                {
                    Some(ancestor) => ancestor,
                    None => return,
                }
            }
        };
        if self.watched.as_ref() == Some(&target) {
            return;
        }
        self.watcher = None;
        self.watched = None;
        let tx = self.wake_tx.clone();
        // Watching an ancestor, only what happens on the way to the directory counts.
        let toward = (target.0 != dir).then(|| dir.clone());
        let (early, pattern, cap) = (self.early.clone(), self.pattern.clone(), self.max_open_files);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            use notify::event::{ModifyKind, RenameMode};
            let Ok(event) = event else { return };
            let on_the_way = |toward: &PathBuf| event.paths.iter().any(|p| toward.starts_with(p));
            if !is_change(&event.kind) || !toward.as_ref().is_none_or(on_the_way) {
                return;
            }
            if toward.is_none()
                && matches!(
                    event.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                )
            {
                if let Some(path) = event.paths.last() {
                    early.open(path, &pattern, cap);
                }
            }
            let _ = tx.send(());
        });
        match watcher {
            Ok(mut w) => match notify::Watcher::watch(&mut w, &target.0, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!("watching {} for changes", target.0.display());
                    if target.0 == dir {
                        self.warnings.clear(&format!("dir:{}", dir.display()));
                    }
                    let ancestor = target.0 != dir;
                    self.watcher = Some(w);
                    self.watched = Some(target);
                    if ancestor && is_dir(&dir).is_some() {
                        // Created before the ancestor's watch was in place: no event will say so.
                        self.watch();
                    }
                }
                Err(e) => {
                    let msg = format!(
                        "cannot watch {} ({e}); polling every {}",
                        target.0.display(),
                        self.poll_interval
                    );
                    self.warnings.once(&format!("watch:{}", target.0.display()), msg)
                }
            },
            Err(e) => {
                let msg = format!(
                    "no file-system notifications ({e}); polling every {}",
                    self.poll_interval
                );
                self.warnings.once("watcher", msg)
            }
        }
    }

    /// Paths to look at, each stat-ed once: rotated siblings oldest first, then the watched
    /// path(s) oldest first. Compressed files other than `.gz` are left out.
    pub fn candidates(&mut self) -> Vec<Candidate> {
        let matches = |pattern: &str| -> Vec<PathBuf> {
            glob::glob(pattern)
                .map(|paths| paths.filter_map(Result::ok).collect())
                .unwrap_or_default()
        };
        let path = &self.pattern.path;
        let main: Vec<PathBuf> = if self.pattern.is_glob() {
            matches(path)
        } else {
            vec![PathBuf::from(path)]
        };
        let siblings: Vec<PathBuf> = if self.pattern.is_glob() {
            // A catch-all glob matches its rotated names itself: those are taken once, as matches.
            let main: HashSet<&PathBuf> = main.iter().collect();
            matches(&rotated_glob(path))
                .into_iter()
                .filter(|p| !main.contains(p))
                .collect()
        } else {
            siblings_of(Path::new(path))
        };
        let mut found = Vec::with_capacity(main.len() + siblings.len());
        for (paths, current) in [(siblings, false), (main, true)] {
            let mut group = Vec::with_capacity(paths.len());
            for path in paths {
                if !is_gz(&path) && is_archive(&path.to_string_lossy()) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => group.push(Candidate { path, meta }),
                    Ok(_) => {}
                    Err(e) => {
                        // Said at start only: during a rotation the path is briefly missing, which is normal.
                        if self.first_scan && current && e.kind() == std::io::ErrorKind::NotFound {
                            let msg = format!("waiting for {} to exist", path.display());
                            self.warnings.once(&format!("missing:{}", path.display()), msg);
                        }
                    }
                }
            }
            group.sort_by_key(|c| mtime(&c.meta));
            found.append(&mut group);
        }
        found
    }
}

/// `app.log.*` for `app.log`: one directory listing, no pattern to compile on every poll.
fn siblings_of(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let listed = if dir.as_os_str().is_empty() {
        std::fs::read_dir(".")
    } else {
        std::fs::read_dir(dir)
    };
    let Ok(entries) = listed else {
        return Vec::new();
    };
    let name = name.as_encoded_bytes();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.as_encoded_bytes();
            n.len() > name.len() + 1 && n.starts_with(name) && n[name.len()] == b'.'
        })
        .map(|e| dir.join(e.file_name()))
        .collect()
}

pub(super) fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_takes_its_rotated_names_and_tells_them_from_where_the_app_writes() {
        let plain = Pattern::new("/logs/app.log");
        let glob = Pattern::new("/logs/*.log");
        for p in [&plain, &glob] {
            assert!(p.is_current(Path::new("/logs/app.log")));
            for rotated in ["/logs/app.log.1", "/logs/app.log.2026-11-26"] {
                assert!(p.matches(Path::new(rotated)), "{rotated}");
                assert!(!p.is_current(Path::new(rotated)), "{rotated}");
            }
            assert!(
                !p.matches(Path::new("/logs/app.log.1.gz")),
                "read by a scan, not opened early"
            );
            assert!(!p.is_current(Path::new("/logs/app.log.1.gz")));
        }
        assert!(glob.is_current(Path::new("/logs/worker.log")));
        assert!(glob.matches(Path::new("/logs/worker.log.1")));
        assert!(!glob.matches(Path::new("/logs/worker.txt")));
        assert!(!glob.matches(Path::new("/logs/sub/app.log.1")), "a * never crosses a /");
        assert!(!plain.matches(Path::new("/logs/app.logx")));
        let all = Pattern::new("/logs/*");
        assert!(
            all.is_current(Path::new("/logs/app.log.1")),
            "a catch-all glob cannot tell"
        );
        assert!(
            !all.is_current(Path::new("/logs/app.log.1.gz")),
            "an archive never is current"
        );
    }
}
