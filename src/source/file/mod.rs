//! The file source: tails the app's JSON log files, every line exactly once, through rotation,
//! truncation, restarts and crashes.
//!
//! **Identity.** A file is known by a fingerprint of its first line (up to `fingerprint_bytes`), not
//! by its name or inode: a renamed file (`app.log` → `app.log.1`) and a copied one (logrotate's
//! copytruncate) keep their fingerprint, so reading resumes where it stopped; a new or truncated
//! file has a new first line and starts at 0. A run of NULs before the first line (the hole that a
//! truncation leaves under a writer that keeps its offset) is not part of it. Device and inode only
//! tell which open handle is which.
//!
//! **Delivery.** Each line's event id is derived from (fingerprint, byte offset), so reading a line
//! again after a crash yields the same id and the store ignores it. The checkpoint of a file moves
//! only when the pipeline acknowledges that the events before that offset are durable, and never
//! past the last complete line.
//!
//! **Descriptors.** Only files with unread data or a recent write are held open, at most
//! `max_open_files`. An idle file that a scan can still find is *parked*: closed, with its size and
//! mtime remembered, and reopened where reading stopped when they change. Files beyond the cap wait
//! until an idle one is closed; none is skipped.
//!
//! **Rotation.** A file that left the scanned paths (deleted, or renamed to a name no longer
//! matched) cannot be found again, so it stays open, read to its end, until it has been idle for
//! `rotated_idle_timeout`: its writer may still hold it. Rotated siblings of a plain path
//! (`app.log.1`, `app.log.2026-11-26`) are scanned too, oldest first, so rotations that happened
//! while the daemon was stopped are finished on the next start; a `.gz` sibling is read only if it
//! is a checkpointed file compressed (its decompressed first line has a known fingerprint), from
//! that checkpoint on, with ids from the same fingerprint and uncompressed offsets.
//!
//! **Text logs.** With `format = "python"` (or `"auto"` and a first line that is not JSON) lines
//! are assembled into records by [`python::Records`]: a record's id comes from its first line's
//! offset and the checkpoint never stops inside a record, so the above holds for records too. A
//! file with a record still open stays open and is read until the record completes.
//!
//! Each `[[file]]` entry runs on a thread of its own with blocking reads; `notify` wakes it on
//! changes (only on events that mean one: its own opens and reads must not wake it) and a slow poll
//! covers missed notifications.

pub mod checkpoint;
mod config;
pub mod python;

pub use config::{FileConfig, Format, StartAt};

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use checkpoint::Checkpoints;
use flate2::read::MultiGzDecoder;

use super::lines::LineDecoder;
use super::{Ingest, Tally};
use crate::event::{EventId, Source, Timestamp};
use crate::pipeline::ack::Ack;
use crate::pipeline::budget::Reservation;
use crate::shutdown::Shutdown;
use python::{Out, Records, TextFormat};

const READ_CHUNK: usize = 1024 * 1024;
/// Bytes read from one file before the others get their turn.
const FAIR_SHARE: u64 = 8 * 1024 * 1024;
/// Time spent on one file before the others get their turn, and the next scan comes: a fast
/// writer may rotate a file through all its backups and delete it within seconds, and only a scan
/// opens it. (A read waits while the pipeline is full, so bytes alone do not bound the time.)
const TIME_SHARE: Duration = Duration::from_millis(100);
/// Suffixes of compressed archives. `.gz` files are read when they are a known file compressed;
/// the others never.
const ARCHIVES: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4"];

type FileId = (u64, u64);

/// Files opened by the notification thread the moment they appear (see [`Tailer::take_early`]).
#[derive(Default)]
struct Early {
    files: Mutex<HashMap<FileId, (PathBuf, File)>>,
    /// Files the tailer holds open, so that the two together stay within `max_open_files`.
    tracked: AtomicUsize,
}

impl Early {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, (PathBuf, File)>> {
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

/// Which paths belong to a `[[file]]` entry: the glob's matches, or a plain path and its rotated
/// siblings; never compressed files other than `.gz`.
struct Pattern {
    path: String,
    glob: Option<glob::Pattern>,
}

impl Pattern {
    fn new(path: &str) -> Pattern {
        let is_glob = path.contains(['*', '?', '[']);
        Pattern {
            path: path.to_string(),
            glob: is_glob.then(|| glob::Pattern::new(path).ok()).flatten(),
        }
    }

    /// Plain (uncompressed) files only: those are what a fast rotation may delete unread.
    fn matches(&self, p: &Path) -> bool {
        let name = p.to_string_lossy();
        if ARCHIVES.iter().any(|ext| name.ends_with(ext)) {
            return false;
        }
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        match &self.glob {
            Some(g) => g.matches_path_with(p, options),
            None => {
                name == self.path
                    || name
                        .strip_prefix(self.path.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }
        }
    }
}

pub struct FileSource {
    cfg: FileConfig,
    ingest: Ingest,
    checkpoints: Arc<Checkpoints>,
    /// The compiled pattern of a text log (`format = "python"` or `"auto"`).
    text: Option<Arc<TextFormat>>,
}

impl FileSource {
    /// Compiles the entry's text format, if it has one; the error names the key (the loader has
    /// checked it already, so this is for configurations built another way).
    pub fn new(cfg: FileConfig, ingest: Ingest, checkpoints: Arc<Checkpoints>) -> Result<FileSource, String> {
        let text = match cfg.format {
            Format::Json => None,
            Format::Python | Format::Auto => Some(Arc::new(
                TextFormat::new(&cfg, ingest.naive_timezone().clone())
                    .map_err(|(key, problem)| format!("`{key}` {problem}"))?,
            )),
        };
        Ok(FileSource {
            cfg,
            ingest,
            checkpoints,
            text,
        })
    }

    /// Runs the tailer on its own thread until shutdown. The thread holds a child of `shutdown`,
    /// so the shutdown coordinator waits for it.
    pub fn spawn(self, mut shutdown: Shutdown, runtime: tokio::runtime::Handle) -> std::io::Result<()> {
        let (wake_tx, wake_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_done = shutdown.child("file tailer thread");
        let (flag, waker) = (stop.clone(), wake_tx.clone());
        runtime.spawn(async move {
            shutdown.recv().await;
            flag.store(true, Ordering::SeqCst);
            let _ = waker.send(());
        });
        let mut tailer = Tailer::new(self, runtime, stop, wake_tx);
        std::thread::Builder::new().name("file-tailer".into()).spawn(move || {
            tailer.run(wake_rx);
            drop(thread_done);
        })?;
        Ok(())
    }
}

/// What identifies a file's content: the fingerprint of its first line, and where that line starts
/// (past a leading run of NULs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    fingerprint: u64,
    head_at: u64,
    /// The first line starts with `{`: a JSON-lines file, for `format = "auto"`.
    json_head: bool,
}

enum Reader {
    Plain(File),
    Gz(Box<MultiGzDecoder<File>>),
}

impl Reader {
    fn file(&self) -> &File {
        match self {
            Reader::Plain(f) => f,
            Reader::Gz(d) => d.get_ref(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::Plain(f) => f.read(buf),
            Reader::Gz(d) => d.read(buf),
        }
    }

    fn compressed(&self) -> bool {
        matches!(self, Reader::Gz(_))
    }
}

/// One open file being read.
struct Tracked {
    identity: Identity,
    path: PathBuf,
    reader: Reader,
    dev: u64,
    ino: u64,
    decoder: LineDecoder,
    progress: Arc<Mutex<Progress>>,
    ingest: Ingest,
    /// The memory budget held by the partial last line the decoder keeps.
    partial: Reservation,
    /// Found by the last scan (under some scanned path); else deleted or renamed out of reach.
    visible: bool,
    /// When the file was last found at its end.
    idle_since: Option<Instant>,
    /// A compressed file read to its end, and its size and mtime from before that last read.
    finished: Option<(u64, SystemTime)>,
    /// NUL bytes skipped in this file so far, and of those by this decoder.
    nul_skipped: u64,
    decoder_nul: u64,
    /// Record assembly, for a text log.
    records: Option<Records>,
}

impl Tracked {
    fn id(&self) -> FileId {
        (self.dev, self.ino)
    }

    /// Where reading may resume without losing or repeating a line or a record.
    fn committed(&self) -> u64 {
        let decoded = self.decoder.committed_offset();
        self.records.as_ref().map_or(decoded, |r| r.committed(decoded))
    }

    /// Bytes held between reads: a partial last line, and an open record.
    fn held(&self) -> usize {
        self.decoder.pending_len() + self.records.as_ref().map_or(0, Records::held)
    }

    /// A record is open: the file is read on until it completes, never closed before.
    fn holds_record(&self) -> bool {
        self.records.as_ref().is_some_and(Records::is_open)
    }
}

/// A closed file that the scans still find: reopened where reading stopped once it changes.
struct Parked {
    size: u64,
    mtime: SystemTime,
    fingerprint: u64,
    /// None for a compressed file that is not a known file: never read while it stays as it is.
    resume: Option<Resume>,
}

struct Resume {
    identity: Identity,
    offset: u64,
    /// The same chunk sequence goes on, so the checkpoint never passes an unacknowledged chunk.
    progress: Arc<Mutex<Progress>>,
    nul_skipped: u64,
}

/// Chunks of one file in flight, in order; the checkpoint advances past a chunk only when it and
/// every chunk before it are durable.
struct Progress {
    fingerprint: u64,
    path: PathBuf,
    checkpoints: Arc<Checkpoints>,
    first_seq: u64,
    /// (end offset, durable) per chunk, oldest first.
    chunks: VecDeque<(u64, bool)>,
}

impl Progress {
    fn push(&mut self, end: u64) -> u64 {
        self.chunks.push_back((end, false));
        self.first_seq + self.chunks.len() as u64 - 1
    }

    fn durable(&mut self, seq: u64) {
        if let Some(chunk) = self.chunks.get_mut((seq - self.first_seq) as usize) {
            chunk.1 = true;
        }
        let mut advanced = None;
        while let Some(&(end, true)) = self.chunks.front() {
            self.chunks.pop_front();
            self.first_seq += 1;
            advanced = Some(end);
        }
        if let Some(end) = advanced {
            self.checkpoints.advance(self.fingerprint, &self.path, end);
        }
    }
}

/// A path found by a scan, with its one `stat`.
struct Candidate {
    path: PathBuf,
    meta: Metadata,
}

struct Tailer {
    cfg: FileConfig,
    text: Option<Arc<TextFormat>>,
    ingest: Ingest,
    checkpoints: Arc<Checkpoints>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    tracked: Vec<Tracked>,
    parked: HashMap<FileId, Parked>,
    /// A file needed a descriptor and the cap left none this scan.
    waiting: bool,
    /// This `[[file]]` path was never tailed before: `start_at` applies to what is there now.
    new_pattern: bool,
    /// With `start_at = "end"` on a pattern's first run: the files there at the first scan not
    /// opened yet (the cap may delay some) and their size then; what they held is skipped whenever
    /// they are opened.
    history: HashMap<FileId, u64>,
    /// The pattern is not recorded as tailed until every file of its first scan was taken in.
    pattern_recorded: bool,
    /// Paths whose problem was already logged, so it is said once, not every poll.
    warned: HashSet<String>,
    /// Files (by fingerprint) whose NUL runs were reported: once per file, its copies included.
    nul_reported: HashSet<u64>,
    first_scan: bool,
    watcher: Option<notify::RecommendedWatcher>,
    /// The directory watched and its (dev, ino): a directory renamed away and recreated is another.
    watched: Option<(PathBuf, FileId)>,
    early: Arc<Early>,
    wake_tx: Sender<()>,
    buf: Vec<u8>,
}

/// Whether a notification means a change worth a scan. Opens, reads and closes without writing
/// are not: the tailer's own directory listings and reads cause them, and waking on them spun a
/// core forever.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        // Create, modify (data, metadata, rename), remove; Other is a queue overflow: rescan.
        _ => true,
    }
}

impl Tailer {
    fn new(src: FileSource, runtime: tokio::runtime::Handle, stop: Arc<AtomicBool>, wake_tx: Sender<()>) -> Tailer {
        Tailer {
            cfg: src.cfg,
            text: src.text,
            ingest: src.ingest,
            checkpoints: src.checkpoints,
            runtime,
            stop,
            tracked: Vec::new(),
            parked: HashMap::new(),
            waiting: false,
            warned: HashSet::new(),
            nul_reported: HashSet::new(),
            first_scan: true,
            new_pattern: false,
            history: HashMap::new(),
            pattern_recorded: false,
            watcher: None,
            watched: None,
            early: Arc::default(),
            wake_tx,
            buf: vec![0; READ_CHUNK],
        }
    }

    fn run(&mut self, wake: Receiver<()>) {
        self.new_pattern = !self.checkpoints.knows_pattern(&self.cfg.path);
        if self.new_pattern {
            let (path, start) = (&self.cfg.path, &self.cfg.start_at);
            tracing::info!("tailing {path} for the first time: starting at the {start} of the files there");
        } else if let Some(why) = self.checkpoints.lost() {
            tracing::warn!(
                "tailing {}: reading its files from their beginning, whatever start_at says, because the checkpoints were lost ({why})",
                self.cfg.path
            );
        } else {
            tracing::info!("tailing {}", self.cfg.path);
        }
        while !self.stopping() {
            self.watch();
            self.scan();
            self.first_scan = false;
            if !self.pattern_recorded && self.history.is_empty() {
                self.pattern_recorded = true;
                self.checkpoints.add_pattern(&self.cfg.path);
            }
            let mut read_any = false;
            let mut i = 0;
            while i < self.tracked.len() {
                match self.read_file(i) {
                    Ok(Some(n)) => read_any |= n > 0,
                    Ok(None) => {
                        // Rewritten under the reader: the next scan takes it as the new file it is.
                        self.tracked.remove(i);
                        continue;
                    }
                    Err(Stopped) => return,
                }
                i += 1;
            }
            self.close_idle();
            self.early.tracked.store(self.tracked.len(), Ordering::Relaxed);
            let room_to_make = self.waiting && self.tracked.iter().any(|t| self.evictable(t));
            if !read_any && !room_to_make {
                // Drain extra wake-ups, then sleep until the next change, poll, or open record's end.
                let poll = self.cfg.poll_interval.0;
                let now = Instant::now();
                let sleep = self
                    .tracked
                    .iter()
                    .filter_map(|t| t.records.as_ref()?.deadline())
                    .min()
                    .map_or(poll, |d| d.saturating_duration_since(now).min(poll));
                match wake.recv_timeout(sleep) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => while wake.try_recv().is_ok() {},
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn is_glob(&self) -> bool {
        self.cfg.path.contains(['*', '?', '['])
    }

    /// Watches the pattern's directory for changes; while it is missing, its nearest existing
    /// ancestor, so that its creation wakes the tailer. Watches again when the directory was
    /// replaced (renamed away and recreated): the old watch follows the old directory.
    fn watch(&mut self) {
        let parent = Path::new(&self.cfg.path).parent().map(Path::to_path_buf);
        let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty() && !d.to_string_lossy().contains(['*', '?', '[']))
        else {
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
                let msg = format!(
                    "waiting for the directory {} to exist (file {})",
                    dir.display(),
                    self.cfg.path
                );
                self.warn_once(&format!("dir:{}", dir.display()), msg);
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
        let (early, pattern, cap) = (
            self.early.clone(),
            Pattern::new(&self.cfg.path),
            self.cfg.max_open_files,
        );
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
                        self.warned.remove(&format!("dir:{}", dir.display()));
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
                        self.cfg.poll_interval
                    );
                    self.warn_once(&format!("watch:{}", target.0.display()), msg)
                }
            },
            Err(e) => {
                let msg = format!(
                    "no file-system notifications ({e}); polling every {}",
                    self.cfg.poll_interval
                );
                self.warn_once("watcher", msg)
            }
        }
    }

    /// Paths to look at, each stat-ed once: rotated siblings oldest first, then the watched
    /// path(s) oldest first. Compressed files other than `.gz` are left out.
    fn candidates(&mut self) -> Vec<Candidate> {
        let matches = |pattern: &str| -> Vec<PathBuf> {
            glob::glob(pattern)
                .map(|paths| paths.filter_map(Result::ok).collect())
                .unwrap_or_default()
        };
        let main: Vec<PathBuf> = if self.is_glob() {
            matches(&self.cfg.path)
        } else {
            vec![PathBuf::from(&self.cfg.path)]
        };
        let siblings: Vec<PathBuf> = if self.is_glob() {
            Vec::new()
        } else {
            siblings_of(Path::new(&self.cfg.path))
        };
        let mut found = Vec::with_capacity(main.len() + siblings.len());
        for (paths, current) in [(siblings, false), (main, true)] {
            let mut group = Vec::with_capacity(paths.len());
            for path in paths {
                if !is_gz(&path) && ARCHIVES.iter().any(|ext| path.to_string_lossy().ends_with(ext)) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => group.push(Candidate { path, meta }),
                    Ok(_) => {}
                    Err(e) => {
                        // Said at start only: during a rotation the path is briefly missing, which is normal.
                        if self.first_scan && current && e.kind() == std::io::ErrorKind::NotFound {
                            let msg = format!("waiting for {} to exist", path.display());
                            self.warn_once(&format!("missing:{}", path.display()), msg);
                        }
                    }
                }
            }
            group.sort_by_key(|c| mtime(&c.meta));
            found.append(&mut group);
        }
        found
    }

    fn scan(&mut self) {
        let candidates = self.candidates();
        self.waiting = false;
        let mut seen = HashSet::with_capacity(candidates.len());
        if self.first_scan && self.new_pattern && self.cfg.start_at == StartAt::End {
            self.history = candidates
                .iter()
                .map(|c| ((c.meta.dev(), c.meta.ino()), c.meta.len()))
                .collect();
        }
        for c in &candidates {
            seen.insert((c.meta.dev(), c.meta.ino()));
            self.consider(c);
        }
        self.take_early(&seen);
        for t in &mut self.tracked {
            t.visible = seen.contains(&t.id());
        }
        // Closed files no longer found are gone (deleted, or renamed out of reach): forget them.
        let before = self.parked.len();
        self.parked.retain(|id, _| seen.contains(id));
        self.history.retain(|id, _| seen.contains(id));
        if !self.nul_reported.is_empty() {
            let (tracked, parked) = (&self.tracked, &self.parked);
            self.nul_reported.retain(|fp| {
                tracked.iter().any(|t| t.identity.fingerprint == *fp) || parked.values().any(|p| p.fingerprint == *fp)
            });
        }
        if self.parked.len() < before {
            tracing::debug!(
                "forgot {} closed files of {} that are no longer there",
                before - self.parked.len(),
                self.cfg.path
            );
        }
    }

    /// Takes in the files that the notification thread opened as they appeared. A writer that
    /// rotates fast may rename a new file through all its backups and delete it while the tailer
    /// waits on a full pipeline, before any scan found it; through the early descriptor it is still
    /// read. Files this scan found were considered by their path; their early descriptor is kept
    /// only while they are not taken yet (no complete first line, or no room), within the cap.
    fn take_early(&mut self, seen: &HashSet<FileId>) {
        let early: Vec<(FileId, (PathBuf, File))> = self.early.lock().drain().collect();
        let mut keep = Vec::new();
        for (id, (path, file)) in early {
            if self.tracked.iter().any(|t| t.id() == id) || self.parked.contains_key(&id) {
                continue;
            }
            if seen.contains(&id) {
                if self.tracked.len() + keep.len() < self.cfg.max_open_files {
                    keep.push((id, (path, file)));
                }
                continue;
            }
            // Gone before any scan found it.
            let Some(identity) = self.identify_plain(&file).ok().flatten() else {
                continue; // nothing complete to read in it
            };
            if self
                .tracked
                .iter()
                .any(|t| t.identity.fingerprint == identity.fingerprint)
            {
                continue;
            }
            if self.tracked.len() >= self.cfg.max_open_files && !self.make_room() {
                self.waiting = true;
                keep.push((id, (path, file)));
                continue;
            }
            tracing::debug!(
                "{} went before a scan found it; reading it through the early descriptor",
                path.display()
            );
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let start = self.start_offset(identity.fingerprint, &file, size, None);
            self.open(&path, Reader::Plain(file), id, identity, start);
        }
        self.early.lock().extend(keep);
    }

    /// Starts or resumes reading the candidate if it has something new and a descriptor is free.
    fn consider(&mut self, c: &Candidate) {
        let (path, meta) = (c.path.as_path(), &c.meta);
        let id = (meta.dev(), meta.ino());
        let size = meta.len();
        if let Some(i) = self.tracked.iter().position(|t| t.id() == id) {
            if self.still_same(i, size) {
                let t = &mut self.tracked[i];
                if t.path != path {
                    t.path = path.to_path_buf();
                    lock(&t.progress).path = path.to_path_buf();
                }
                self.checkpoints.seen(t.identity.fingerprint);
                return;
            }
            // Truncated in place (copytruncate) or rewritten: what was read stays delivered; the new
            // content is a new file. Unread old lines survive in the copy, which has the old fingerprint.
            tracing::info!(
                "{} was truncated or rewritten; reading its new content from the start",
                path.display()
            );
            self.tracked.remove(i);
        }
        if let Some(p) = self.parked.get(&id) {
            if p.size == size && p.mtime == mtime(meta) {
                self.checkpoints.seen(p.fingerprint);
                return;
            }
        }
        if self.tracked.len() >= self.cfg.max_open_files && !self.make_room() {
            self.waiting = true;
            return;
        }
        let parked = self.parked.remove(&id);
        let opened = if is_gz(path) {
            self.open_gz(path, meta)
        } else {
            self.open_plain(path)
        };
        let Some((reader, identity)) = opened else {
            if let Some(p) = parked {
                self.parked.insert(id, p); // unreadable for now: try again next scan
            }
            return;
        };
        if self
            .tracked
            .iter()
            .any(|t| t.identity.fingerprint == identity.fingerprint)
        {
            // The same content under another name (a copy being made, a hard link, a compressed copy
            // of a file still being read): look again once that one is let go.
            if let Some(p) = parked {
                self.parked.insert(id, p);
            }
            return;
        }
        let compressed = reader.compressed();
        if let Some(Parked { resume: Some(r), .. }) = parked {
            if r.identity == identity && (compressed || size >= r.offset) {
                self.resume(path, reader, id, r);
                return;
            }
        }
        // New to this tailer (or rewritten since it was parked).
        let fp = identity.fingerprint;
        let history = self.history.remove(&id);
        let start = if compressed {
            match self.checkpoints.offset(fp) {
                Some(offset) => offset,
                None => {
                    tracing::debug!(
                        "{} is not a compressed copy of a file read before: not read",
                        path.display()
                    );
                    self.parked.insert(id, Parked::ignored(meta, fp));
                    return;
                }
            }
        } else {
            self.start_offset(fp, reader.file(), size, history)
        };
        self.open(path, reader, id, identity, start);
    }

    /// Whether tracked file `i`, now `size` bytes, still holds the content it was opened with.
    fn still_same(&self, i: usize, size: u64) -> bool {
        let t = &self.tracked[i];
        match &t.reader {
            Reader::Gz(_) => true,
            Reader::Plain(file) => {
                size >= t.decoder.committed_offset()
                    && identify_at(file, t.identity.head_at, self.cfg.fingerprint_bytes)
                        .ok()
                        .flatten()
                        == Some(t.identity)
            }
        }
    }

    fn open_plain(&mut self, path: &Path) -> Option<(Reader, Identity)> {
        let file = self.open_file(path)?;
        match self.identify_plain(&file) {
            Ok(Some(identity)) => Some((Reader::Plain(file), identity)),
            Ok(None) => None, // no complete first line yet
            Err(e) => {
                self.warn_read(path, &e);
                None
            }
        }
    }

    /// The identity of a plain file just opened (its read position is moved: seek before reading).
    fn identify_plain(&self, file: &File) -> std::io::Result<Option<Identity>> {
        // SEEK_DATA hops over a hole left by a truncation, so it is not read byte by byte.
        let data = match nix::unistd::lseek(file.as_raw_fd(), 0, nix::unistd::Whence::SeekData) {
            Ok(at) => at as u64,
            Err(nix::errno::Errno::ENXIO) => return Ok(None), // nothing but a hole yet
            Err(_) => 0,
        };
        identify_at(file, data, self.cfg.fingerprint_bytes)
    }

    /// Opens a `.gz` file and reads its identity from its decompressed beginning.
    fn open_gz(&mut self, path: &Path, meta: &Metadata) -> Option<(Reader, Identity)> {
        let file = self.open_file(path)?;
        let mut head = MultiGzDecoder::new(file);
        let identity = identify_stream(&mut head, 0, self.cfg.fingerprint_bytes);
        let mut file = head.into_inner();
        match identity {
            Ok(Some(identity)) if file.seek(SeekFrom::Start(0)).is_ok() => {
                Some((Reader::Gz(Box::new(MultiGzDecoder::new(file))), identity))
            }
            Ok(_) => None,
            Err(e) => {
                // Not gzip, or still being written: look again when it changes.
                tracing::debug!("{} cannot be decompressed yet ({e})", path.display());
                self.parked.insert((meta.dev(), meta.ino()), Parked::ignored(meta, 0));
                None
            }
        }
    }

    fn open_file(&mut self, path: &Path) -> Option<File> {
        match File::open(path) {
            Ok(f) => {
                self.warned.remove(&format!("open:{}", path.display()));
                Some(f)
            }
            Err(e) => {
                self.warn_once(
                    &format!("open:{}", path.display()),
                    format!("cannot read {} ({e}); will retry", path.display()),
                );
                None
            }
        }
    }

    fn warn_read(&mut self, path: &Path, e: &std::io::Error) {
        self.warn_once(
            &format!("read:{}", path.display()),
            format!("cannot read {} ({e}); will retry", path.display()),
        );
    }

    /// Where to start reading a plain file just found; `history` is its size at the first scan of a
    /// new pattern with `start_at = "end"`.
    fn start_offset(&self, fp: u64, file: &File, size: u64, history: Option<u64>) -> u64 {
        match self.checkpoints.offset(fp) {
            Some(offset) if offset <= size => return offset,
            Some(_) => return 0, // a checkpoint past the end is stale: another file
            None => {}
        }
        // Never read: new, unless it was there at the first scan of a new pattern that says "end"
        // (rotated siblings are history then, and so are the current file's existing lines).
        match history {
            Some(then) => end_of_last_line(file, then.min(size)),
            None => 0,
        }
    }

    /// Positions `reader` at `start` (for a compressed file, by decompressing up to it).
    fn seek_to(&mut self, path: &Path, reader: &mut Reader, start: u64) -> bool {
        let result = match reader {
            Reader::Plain(f) => f.seek(SeekFrom::Start(start)).map(|_| true),
            Reader::Gz(d) => std::io::copy(&mut d.by_ref().take(start), &mut std::io::sink()).map(|n| n == start),
        };
        match result {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!(
                    "{} is shorter than its checkpoint: not the file read before",
                    path.display()
                );
                false
            }
            Err(e) => {
                self.warn_read(path, &e);
                false
            }
        }
    }

    fn open(&mut self, path: &Path, mut reader: Reader, id: FileId, identity: Identity, start: u64) {
        let fp = identity.fingerprint;
        let mut nul_skipped = 0;
        let mut start = start;
        if start < identity.head_at {
            // Everything before the first line is NULs (identify checked): pass over them at once.
            nul_skipped = identity.head_at - start;
            if self.nul_reported.insert(fp) {
                tracing::warn!(
                    "{}: skipped {nul_skipped} NUL bytes before its first line (a copytruncate under a writer that keeps its offset); further NUL runs in this file are skipped without a word",
                    path.display()
                );
            }
            start = identity.head_at;
        }
        if !self.seek_to(path, &mut reader, start) {
            if reader.compressed() {
                if let Ok(meta) = reader.file().metadata() {
                    self.parked.insert(id, Parked::ignored(&meta, fp));
                }
            }
            return;
        }
        if start > 0 {
            tracing::info!("resuming {} at byte {start}", path.display());
        }
        tracing::debug!("reading {} (fingerprint {fp:016x}) from byte {start}", path.display());
        let progress = Progress {
            fingerprint: fp,
            path: path.to_path_buf(),
            checkpoints: self.checkpoints.clone(),
            first_seq: 0,
            chunks: VecDeque::new(),
        };
        self.checkpoints.advance(fp, path, start);
        let decoder = LineDecoder::starting_at(self.cfg.max_line_bytes, start).skipping_nul_runs();
        self.track(
            path,
            reader,
            id,
            identity,
            decoder,
            Arc::new(Mutex::new(progress)),
            nul_skipped,
        );
    }

    /// Reopens a parked file where reading stopped, continuing its chunk sequence.
    fn resume(&mut self, path: &Path, mut reader: Reader, id: FileId, r: Resume) {
        if !self.seek_to(path, &mut reader, r.offset) {
            return;
        }
        lock(&r.progress).path = path.to_path_buf();
        tracing::debug!("reopened {} at byte {}", path.display(), r.offset);
        let decoder = LineDecoder::starting_at(self.cfg.max_line_bytes, r.offset).skipping_nul_runs();
        self.track(path, reader, id, r.identity, decoder, r.progress, r.nul_skipped);
    }

    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        path: &Path,
        reader: Reader,
        id: FileId,
        identity: Identity,
        decoder: LineDecoder,
        progress: Arc<Mutex<Progress>>,
        nul_skipped: u64,
    ) {
        // A text log's records: its lines, blank ones included, go to the assembly.
        let text = self.text.clone().filter(|_| match self.cfg.format {
            Format::Json => false,
            Format::Python => true,
            Format::Auto => !identity.json_head,
        });
        let decoder = if text.is_some() {
            decoder.keeping_blank_lines()
        } else {
            decoder
        };
        let from_start = decoder.position() <= identity.head_at;
        let records = text.map(|format| Records::new(format, from_start));
        self.tracked.push(Tracked {
            identity,
            path: path.to_path_buf(),
            reader,
            dev: id.0,
            ino: id.1,
            decoder,
            progress,
            ingest: self.ingest.with_source(Source::from(path.display().to_string())),
            partial: self.ingest.budget().empty(),
            visible: true,
            idle_since: None,
            finished: None,
            nul_skipped,
            decoder_nul: 0,
            records,
        });
    }

    /// Reads what file `i` has (up to its fair share), queueing its lines. Returns bytes read, or
    /// None if the file turned out rewritten under the reader.
    fn read_file(&mut self, i: usize) -> Result<Option<u64>, Stopped> {
        let mut total = 0;
        let fingerprint_bytes = self.cfg.fingerprint_bytes;
        // A compressed file's size and mtime from before its last read: if it grows after that
        // read found its end, they differ and it is read again.
        let before = match &self.tracked[i].reader {
            Reader::Gz(d) => d.get_ref().metadata().ok().map(|m| (m.len(), mtime(&m))),
            Reader::Plain(_) => None,
        };
        let began = Instant::now();
        while total < FAIR_SHARE && began.elapsed() < TIME_SHARE {
            if self.stopping() {
                return Err(Stopped);
            }
            // Admitted to the memory budget before every read; waits while it is used up.
            let reservation = self.ingest.budget().admit_blocking(&self.runtime, READ_CHUNK);
            let t = &mut self.tracked[i];
            let n = match t.reader.read(&mut self.buf) {
                Ok(0) => {
                    if t.reader.compressed() {
                        t.finished = before;
                    }
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if t.reader.compressed() => {
                    // Corrupt, or still being written: what decompressed is read; more once it changes.
                    tracing::debug!("{}: {e}; reading on once it changes", t.path.display());
                    t.finished = before;
                    break;
                }
                Err(e) => {
                    let (path, e) = (t.path.clone(), e);
                    self.warn_read(&path, &e);
                    break;
                }
            };
            // Truncated and written again since the last scan (copytruncate, and a writer that
            // appends or keeps its offset): these bytes are new content, not the rest of the file
            // being read. It is taken as the new file it is; the old unread lines are in the copy.
            // Checked after the read, so that whatever was read before a truncation is kept.
            if let Reader::Plain(file) = &t.reader {
                if identify_at(file, t.identity.head_at, fingerprint_bytes).ok().flatten() != Some(t.identity) {
                    tracing::info!(
                        "{} was truncated or rewritten while being read; reading its new content from the start",
                        t.path.display()
                    );
                    return Ok(None);
                }
            }
            total += n as u64;
            let received = Timestamp::now();
            // Sized for typical lines (~200 bytes), so the vector is not regrown mid-chunk.
            let mut events = Vec::with_capacity(n / 160 + 1);
            let (ingest, fp) = (&t.ingest, t.identity.fingerprint);
            match &mut t.records {
                None => t.decoder.feed_at(&self.buf[..n], &mut |frame, start| {
                    ingest.push(&mut events, frame, received, EventId::derived(fp, start))
                }),
                Some(records) => {
                    records.data_arrived(Instant::now());
                    let mut out = Out {
                        ingest,
                        events: &mut events,
                        received,
                        fingerprint: fp,
                    };
                    t.decoder
                        .feed_at(&self.buf[..n], &mut |frame, start| records.line(frame, start, &mut out));
                }
            }
            t.partial.resize(t.held());
            let skipped = t.decoder.nul_bytes_skipped() - t.decoder_nul;
            if skipped > 0 {
                t.decoder_nul += skipped;
                t.nul_skipped += skipped;
                if self.nul_reported.insert(fp) {
                    tracing::warn!(
                        "{}: skipped {skipped} NUL bytes before a line (a copytruncate under a writer that keeps its offset); further NUL runs in this file are skipped without a word",
                        t.path.display()
                    );
                }
            }
            let end = t.committed();
            let seq = lock(&t.progress).push(end);
            if events.is_empty() {
                lock(&t.progress).durable(seq);
                continue;
            }
            let progress = t.progress.clone();
            let ack = Ack::new(events.len(), move || lock(&progress).durable(seq));
            let ingest = t.ingest.clone();
            if self
                .runtime
                .block_on(ingest.submit(&mut events, Some(ack), reservation, &mut Tally::default()))
                .is_err()
            {
                return Err(Stopped);
            }
        }
        if total == 0 {
            self.complete_due_record(i)?;
        }
        let t = &mut self.tracked[i];
        if total > 0 {
            t.idle_since = None;
        } else if t.idle_since.is_none() {
            t.idle_since = Some(Instant::now());
        }
        Ok(Some(total))
    }

    /// Queues file `i`'s open record if it has waited `multiline_timeout` for more lines, as a
    /// chunk of its own; its checkpoint then moves past it.
    fn complete_due_record(&mut self, i: usize) -> Result<(), Stopped> {
        let t = &mut self.tracked[i];
        let Some(records) = t.records.as_mut() else {
            return Ok(());
        };
        let held = records.held();
        let mut events = Vec::with_capacity(1);
        let mut out = Out {
            ingest: &t.ingest,
            events: &mut events,
            received: Timestamp::now(),
            fingerprint: t.identity.fingerprint,
        };
        if !records.complete_if_due(Instant::now(), &mut out) {
            return Ok(());
        }
        // The record's memory moves from what the file holds to the chunk that carries it.
        let mut reservation = self.ingest.budget().empty();
        reservation.take_from(&mut t.partial, held);
        let seq = lock(&t.progress).push(t.committed());
        let progress = t.progress.clone();
        let ack = Ack::new(events.len(), move || lock(&progress).durable(seq));
        let ingest = t.ingest.clone();
        self.runtime
            .block_on(ingest.submit(&mut events, Some(ack), reservation, &mut Tally::default()))
            .map_err(|_| Stopped)
    }

    /// How long a file the scans still find may sit idle before it is closed (parked).
    fn park_after(&self) -> Duration {
        (self.cfg.poll_interval.0 * 10).max(Duration::from_secs(1))
    }

    /// Closes what needs no descriptor: compressed files read to their end, idle files the scans
    /// still find (parked), and files gone from the scanned paths once idle for
    /// `rotated_idle_timeout`.
    fn close_idle(&mut self) {
        let (park_after, rotated) = (self.park_after(), self.cfg.rotated_idle_timeout.0);
        let mut i = 0;
        while i < self.tracked.len() {
            let t = &self.tracked[i];
            let idle = t.idle_since.map(|since| since.elapsed()).filter(|_| !t.holds_record());
            if (t.finished.is_some() && !t.holds_record()) || (t.visible && idle.is_some_and(|d| d >= park_after)) {
                let t = self.tracked.remove(i);
                self.park(t);
            } else if !t.visible && idle.is_some_and(|d| d >= rotated) {
                let t = self.tracked.remove(i);
                tracing::debug!(
                    "let go of {} (deleted or renamed away, idle for {})",
                    t.path.display(),
                    self.cfg.rotated_idle_timeout
                );
            } else {
                i += 1;
            }
        }
    }

    /// Closes `t`, remembering where reading stopped. A plain file that grew since its last read
    /// is kept open instead: it has unread data, and its new size would look unchanged later.
    fn park(&mut self, t: Tracked) {
        let (size, mtime) = match t.finished {
            Some(before) => before,
            None => match t.reader.file().metadata() {
                Ok(m) if t.reader.compressed() || m.len() == t.decoder.position() => (m.len(), mtime(&m)),
                Ok(_) => {
                    self.tracked.push(Tracked { idle_since: None, ..t });
                    return;
                }
                // Cannot stat: forget it; a scan that finds it takes it as new, from its checkpoint.
                Err(_) => return,
            },
        };
        tracing::debug!(
            "closed {} until it changes ({} NUL bytes skipped in it)",
            t.path.display(),
            t.nul_skipped
        );
        let resume = Resume {
            identity: t.identity,
            offset: t.committed(),
            progress: t.progress,
            nul_skipped: t.nul_skipped,
        };
        self.parked.insert(
            (t.dev, t.ino),
            Parked {
                size,
                mtime,
                fingerprint: t.identity.fingerprint,
                resume: Some(resume),
            },
        );
    }

    /// A file that may be closed to make room: at its end, and either still found by the scans
    /// (parking it loses nothing) or gone and idle past a short grace.
    fn evictable(&self, t: &Tracked) -> bool {
        let grace = (self.cfg.poll_interval.0 * 2).max(Duration::from_secs(1));
        !t.holds_record()
            && (t.finished.is_some() || t.idle_since.is_some_and(|since| t.visible || since.elapsed() >= grace))
    }

    /// Closes one file to make room for another under `max_open_files`: the longest idle of those
    /// the scans still find, else the longest idle of the gone ones (with a warning: lines its
    /// writer adds later are lost). False if every open file still has data to read.
    fn make_room(&mut self) -> bool {
        let pick = |visible: bool| {
            self.tracked
                .iter()
                .enumerate()
                .filter(|(_, t)| self.evictable(t) && (t.visible || t.finished.is_some()) == visible)
                .min_by_key(|(_, t)| t.idle_since)
                .map(|(i, _)| i)
        };
        if let Some(i) = pick(true) {
            let t = self.tracked.remove(i);
            self.park(t);
            return self.tracked.len() < self.cfg.max_open_files;
        }
        let Some(i) = pick(false) else {
            return false;
        };
        let t = self.tracked.remove(i);
        let msg = format!(
            "closing {} (deleted or renamed away, idle) before its rotated_idle_timeout of {} to stay within max_open_files = {}; lines its writer adds now are lost: raise max_open_files",
            t.path.display(),
            self.cfg.rotated_idle_timeout,
            self.cfg.max_open_files
        );
        self.warn_once(&format!("evict:{}", t.path.display()), msg);
        true
    }

    fn warn_once(&mut self, key: &str, message: String) {
        if self.warned.insert(key.to_string()) {
            tracing::warn!("{message}");
        }
    }
}

impl Parked {
    /// A compressed file not to be read while it stays as it is.
    fn ignored(meta: &Metadata, fingerprint: u64) -> Parked {
        Parked {
            size: meta.len(),
            mtime: mtime(meta),
            fingerprint,
            resume: None,
        }
    }
}

struct Stopped;

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn mtime(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
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

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The identity of a plain file whose content starts at `at` (after a NUL run, if any, is skipped).
fn identify_at(file: &File, at: u64, max: usize) -> std::io::Result<Option<Identity>> {
    let mut pos = at;
    let mut reader = ReadAt { file, pos: &mut pos };
    identify_stream(&mut reader, at, max)
}

/// Sequential reads through `read_at`, leaving the file's own position alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: &'a mut u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, *self.pos)?;
        *self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a stream that starts at offset `at`: skips a leading run of NULs, then fingerprints the
/// first line. None while there is no complete first line yet.
fn identify_stream(r: &mut impl Read, at: u64, max: usize) -> std::io::Result<Option<Identity>> {
    let mut buf = vec![0u8; max.max(8192)];
    let mut head_at = at;
    let mut head: Vec<u8> = loop {
        let n = read_some(r, &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        match buf[..n].iter().position(|&b| b != 0) {
            Some(i) => {
                head_at += i as u64;
                break buf[i..n.min(i + max)].to_vec();
            }
            None => head_at += n as u64,
        }
    };
    while head.len() < max {
        let n = read_some(r, &mut buf[..max - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let json_head = python::looks_like_json(&head);
    Ok(line_fingerprint(&head, max).map(|fingerprint| Identity {
        fingerprint,
        head_at,
        json_head,
    }))
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// FNV-1a of the first line with its line end, or of the first `max` bytes if the line is longer.
/// A line ending in a lone `\r` is hashed as if it ended in `\r\n`, so its identity is settled as
/// soon as the `\r` is there, whether a `\n` follows later or not (and files that end their lines
/// with `\n` or `\r\n` keep the fingerprints they always had). None while there is neither.
fn line_fingerprint(head: &[u8], max: usize) -> Option<u64> {
    let (line, lone_cr) = match memchr::memchr2(b'\n', b'\r', head) {
        Some(i) if head[i] == b'\n' => (&head[..=i], false),
        Some(i) if head.get(i + 1) == Some(&b'\n') => (&head[..i + 2], false),
        Some(i) => (&head[..=i], true),
        None if head.len() >= max => (head, false),
        None => return None,
    };
    let fnv = |h: u64, b: &u8| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    let h = line.iter().fold(0xcbf2_9ce4_8422_2325u64, fnv);
    Some(if lone_cr { fnv(h, &b'\n') } else { h })
}

/// The offset just past the last line end (for `start_at = "end"`), looking at the last 64 KiB.
fn end_of_last_line(file: &File, size: u64) -> u64 {
    let window = size.min(64 * 1024);
    let mut tail = vec![0u8; window as usize];
    if file.read_exact_at(&mut tail, size - window).is_err() {
        return size;
    }
    memchr::memrchr2(b'\n', b'\r', &tail).map_or(size - window, |i| size - window + i as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_the_first_line_whatever_its_line_end_and_skips_a_leading_nul_run() {
        let id = |bytes: &[u8]| identify_stream(&mut &bytes[..], 0, 16).unwrap();
        let fp = |bytes: &[u8]| id(bytes).map(|i| i.fingerprint);
        assert_eq!(fp(b"abc\ndef\n"), fp(b"abc\nxyz"), "only the first line counts");
        assert_eq!(fp(b"abc\r\ndef"), fp(b"abc\r\nxyz"));
        assert_eq!(fp(b"abc\rdef"), fp(b"abc\rxyz"), "a lone \\r ends the first line");
        assert_eq!(fp(b"abc\r"), fp(b"abc\r\ndef"), "settled at the \\r, \\n or not");
        assert_eq!(fp(b"abc\rdef"), fp(b"abc\r\n"));
        assert_ne!(fp(b"abc\r"), fp(b"abc\n"));
        assert_eq!(fp(b"abc"), None);
        assert!(fp(b"0123456789abcdefXYZ").is_some(), "a first line over the limit");
        let holed = [&[0u8; 20000][..], b"abc\n"].concat();
        assert_eq!(
            id(&holed),
            Some(Identity {
                fingerprint: fp(b"abc\n").unwrap(),
                head_at: 20000,
                json_head: false,
            })
        );
        assert_eq!(id(&[0u8; 100]), None);
    }
}
