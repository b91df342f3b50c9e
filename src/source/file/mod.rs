//! The file source: tails the app's JSON log files, every line exactly once, through rotation,
//! truncation, restarts and crashes.
//!
//! **Identity.** A file is known by a fingerprint of its first line (up to `fingerprint_bytes`), not
//! by its name or inode: a renamed file (`app.log` → `app.log.1`) and a copied one (logrotate's
//! copytruncate) keep their fingerprint, so reading resumes where it stopped; a new or truncated
//! file has a new first line and starts at 0. Device and inode only tell which open handle is which.
//!
//! **Delivery.** Each line's event id is derived from (fingerprint, byte offset), so reading a line
//! again after a crash yields the same id and the store ignores it. The checkpoint of a file moves
//! only when the pipeline acknowledges that the events before that offset are durable, and never
//! past the last complete line.
//!
//! **Rotation.** A file that left its watched path (renamed or deleted) is read to its end through
//! the open handle and let go only after it stayed at its end for a while. Rotated siblings of a
//! plain path (`app.log.1`, `app.log.2026-11-26`) are scanned too, oldest first, so rotations that
//! happened while the daemon was stopped are finished on the next start.
//!
//! Each `[[file]]` entry runs on a thread of its own with blocking reads; `notify` wakes it on
//! changes and a slow poll covers missed notifications.

pub mod checkpoint;
mod config;

pub use config::{FileConfig, StartAt};

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use checkpoint::Checkpoints;

use super::lines::LineDecoder;
use super::{Ingest, Tally};
use crate::event::{EventId, Source, Timestamp};
use crate::pipeline::ack::Ack;
use crate::pipeline::budget::Reservation;
use crate::shutdown::Shutdown;

const READ_CHUNK: usize = 1024 * 1024;
/// Bytes read from one file before the others get their turn.
const FAIR_SHARE: u64 = 8 * 1024 * 1024;
/// Rotated-name suffixes that are compressed archives, not logs to tail.
const ARCHIVES: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4"];

pub struct FileSource {
    cfg: FileConfig,
    ingest: Ingest,
    checkpoints: Arc<Checkpoints>,
}

impl FileSource {
    pub fn new(cfg: FileConfig, ingest: Ingest, checkpoints: Arc<Checkpoints>) -> FileSource {
        FileSource {
            cfg,
            ingest,
            checkpoints,
        }
    }

    /// Runs the tailer on its own thread until shutdown. The thread holds a child of `shutdown`,
    /// so the shutdown coordinator waits for it.
    pub fn spawn(self, mut shutdown: Shutdown, runtime: tokio::runtime::Handle) -> std::io::Result<()> {
        let (wake_tx, wake_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_done = shutdown.child();
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

/// One open file being read.
struct Tracked {
    fingerprint: u64,
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    decoder: LineDecoder,
    progress: Arc<Mutex<Progress>>,
    ingest: Ingest,
    /// The memory budget held by the partial last line the decoder keeps.
    partial: Reservation,
    /// Still at the watched path (not renamed away or deleted).
    current: bool,
    /// When the file was last found at its end while no longer current.
    idle_since: Option<Instant>,
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

struct Tailer {
    cfg: FileConfig,
    ingest: Ingest,
    checkpoints: Arc<Checkpoints>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    tracked: Vec<Tracked>,
    /// Files read to their end and let go: (dev, ino) → (size, mtime, fingerprint), so an unchanged
    /// one is not reopened, and its checkpoint is kept alive while it exists.
    finished: HashMap<(u64, u64), (u64, SystemTime, u64)>,
    /// This `[[file]]` path was never tailed before: `start_at` applies to what is there now.
    new_pattern: bool,
    /// Paths whose problem was already logged, so it is said once, not every poll.
    warned: HashSet<String>,
    first_scan: bool,
    watcher: Option<notify::RecommendedWatcher>,
    watched_dir: Option<PathBuf>,
    wake_tx: Sender<()>,
    buf: Vec<u8>,
}

impl Tailer {
    fn new(src: FileSource, runtime: tokio::runtime::Handle, stop: Arc<AtomicBool>, wake_tx: Sender<()>) -> Tailer {
        Tailer {
            cfg: src.cfg,
            ingest: src.ingest,
            checkpoints: src.checkpoints,
            runtime,
            stop,
            tracked: Vec::new(),
            finished: HashMap::new(),
            warned: HashSet::new(),
            first_scan: true,
            new_pattern: false,
            watcher: None,
            watched_dir: None,
            wake_tx,
            buf: vec![0; READ_CHUNK],
        }
    }

    fn run(&mut self, wake: Receiver<()>) {
        self.new_pattern = !self.checkpoints.knows_pattern(&self.cfg.path);
        if self.new_pattern {
            let (path, start) = (&self.cfg.path, &self.cfg.start_at);
            tracing::info!("tailing {path} for the first time: starting at the {start} of the files there");
        } else {
            tracing::info!("tailing {}", self.cfg.path);
        }
        while !self.stopping() {
            self.watch();
            self.scan();
            if self.first_scan {
                self.first_scan = false;
                self.checkpoints.add_pattern(&self.cfg.path);
            }
            let mut read_any = false;
            for i in 0..self.tracked.len() {
                match self.read_file(i) {
                    Ok(n) => read_any |= n > 0,
                    Err(Stopped) => return,
                }
            }
            self.let_go_of_finished();
            if !read_any {
                // Drain extra wake-ups, then sleep until the next change or poll.
                match wake.recv_timeout(self.cfg.poll_interval.0) {
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

    /// Watches the pattern's directory for changes, once it exists.
    fn watch(&mut self) {
        let parent = Path::new(&self.cfg.path).parent().map(Path::to_path_buf);
        let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty() && !d.to_string_lossy().contains(['*', '?', '[']))
        else {
            return;
        };
        let dir = dir.as_path();
        if self.watched_dir.as_deref() == Some(dir) || !dir.is_dir() {
            if !dir.is_dir() {
                let msg = format!(
                    "waiting for the directory {} to exist (file {})",
                    dir.display(),
                    self.cfg.path
                );
                self.warn_once(&format!("dir:{}", dir.display()), msg);
            }
            return;
        }
        let tx = self.wake_tx.clone();
        let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.send(());
        });
        match watcher {
            Ok(mut w) => match notify::Watcher::watch(&mut w, dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watcher = Some(w);
                    self.watched_dir = Some(dir.to_path_buf());
                    self.warned.remove(&format!("dir:{}", dir.display()));
                }
                Err(e) => {
                    let msg = format!(
                        "cannot watch {} ({e}); polling every {}",
                        dir.display(),
                        self.cfg.poll_interval
                    );
                    self.warn_once(&format!("watch:{}", dir.display()), msg)
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

    /// Paths to look at: rotated siblings oldest first, then the watched path(s).
    fn candidates(&self) -> (Vec<PathBuf>, HashSet<PathBuf>) {
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
        let mut siblings: Vec<PathBuf> = if self.is_glob() {
            Vec::new()
        } else {
            matches(&format!("{}.*", glob::Pattern::escape(&self.cfg.path)))
                .into_iter()
                .filter(|p| !ARCHIVES.iter().any(|ext| p.to_string_lossy().ends_with(ext)))
                .collect()
        };
        let mtime = |p: &PathBuf| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        siblings.sort_by_key(mtime);
        let mut main_sorted = main.clone();
        main_sorted.sort_by_key(mtime);
        let current: HashSet<PathBuf> = main.into_iter().collect();
        (siblings.into_iter().chain(main_sorted).collect(), current)
    }

    fn scan(&mut self) {
        let (paths, current) = self.candidates();
        for t in &mut self.tracked {
            t.current = false;
        }
        for path in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) => {
                    // Said at start only: during a rotation the path is briefly missing, which is normal.
                    if self.first_scan && current.contains(&path) && e.kind() == std::io::ErrorKind::NotFound {
                        self.warn_once(
                            &format!("missing:{}", path.display()),
                            format!("waiting for {} to exist", path.display()),
                        );
                    }
                    continue;
                }
            };
            let is_current = current.contains(&path);
            self.consider(&path, &meta, is_current);
        }
    }

    /// Starts reading `path` if it is a file not being read yet.
    fn consider(&mut self, path: &Path, meta: &Metadata, is_current: bool) {
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        if let Some(i) = self.tracked.iter().position(|t| t.dev == dev && t.ino == ino) {
            let t = &self.tracked[i];
            let still_same = size >= t.decoder.committed_offset()
                && fingerprint(&t.file, self.cfg.fingerprint_bytes).ok().flatten() == Some(t.fingerprint);
            if still_same {
                let t = &mut self.tracked[i];
                t.current |= is_current;
                if t.path != path {
                    t.path = path.to_path_buf();
                    lock(&t.progress).path = path.to_path_buf();
                }
                self.checkpoints.seen(t.fingerprint);
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
        if let Some(&(old_size, old_mtime, fp)) = self.finished.get(&(dev, ino)) {
            if old_size == size && meta.modified().ok() == Some(old_mtime) {
                self.checkpoints.seen(fp);
                return;
            }
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn_once(
                    &format!("open:{}", path.display()),
                    format!("cannot read {} ({e}); will retry", path.display()),
                );
                return;
            }
        };
        self.warned.remove(&format!("open:{}", path.display()));
        let fp = match fingerprint(&file, self.cfg.fingerprint_bytes) {
            Ok(Some(fp)) => fp,
            Ok(None) => return, // no complete first line yet
            Err(e) => {
                self.warn_once(
                    &format!("read:{}", path.display()),
                    format!("cannot read {} ({e}); will retry", path.display()),
                );
                return;
            }
        };
        if self.tracked.iter().any(|t| t.fingerprint == fp) {
            return; // the same content under another name (a copy being made, a hard link)
        }
        let Some(start) = self.start_offset(fp, &file, meta, is_current) else {
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            self.finished.insert((dev, ino), (size, mtime, fp));
            return;
        };
        self.open(path, file, dev, ino, fp, start, is_current);
    }

    /// Where to start reading a file just found; None to leave it alone.
    fn start_offset(&self, fp: u64, file: &File, meta: &Metadata, is_current: bool) -> Option<u64> {
        let size = meta.len();
        match self.checkpoints.offset(fp) {
            Some(offset) if offset <= size => return Some(offset),
            Some(_) => return Some(0), // a checkpoint past the end is stale: another file
            None => {}
        }
        // Never read: new, unless this is the first run for this `[[file]]` and it says "end".
        if !(self.first_scan && self.new_pattern && self.cfg.start_at == StartAt::End) {
            return Some(0);
        }
        // start_at = "end" on the first run: rotated siblings are history, and so are the current
        // file's existing lines.
        is_current.then(|| end_of_last_line(file, size))
    }

    #[allow(clippy::too_many_arguments)]
    fn open(&mut self, path: &Path, mut file: File, dev: u64, ino: u64, fp: u64, start: u64, current: bool) {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            self.warn_once(
                &format!("read:{}", path.display()),
                format!("cannot read {} ({e}); will retry", path.display()),
            );
            return;
        }
        if start > 0 {
            tracing::info!("resuming {} at byte {start}", path.display());
        }
        let progress = Progress {
            fingerprint: fp,
            path: path.to_path_buf(),
            checkpoints: self.checkpoints.clone(),
            first_seq: 0,
            chunks: VecDeque::new(),
        };
        self.checkpoints.advance(fp, path, start);
        self.tracked.push(Tracked {
            fingerprint: fp,
            path: path.to_path_buf(),
            file,
            dev,
            ino,
            decoder: LineDecoder::starting_at(self.cfg.max_line_bytes, start),
            progress: Arc::new(Mutex::new(progress)),
            ingest: self.ingest.with_source(Source::from(path.display().to_string())),
            partial: self.ingest.budget().empty(),
            current,
            idle_since: None,
        });
    }

    /// Reads what file `i` has (up to its fair share), queueing its lines. Returns bytes read.
    fn read_file(&mut self, i: usize) -> Result<u64, Stopped> {
        let mut total = 0;
        while total < FAIR_SHARE {
            if self.stopping() {
                return Err(Stopped);
            }
            // Admitted to the memory budget before every read; waits while it is used up.
            let reservation = self.ingest.budget().admit_blocking(&self.runtime, READ_CHUNK);
            let t = &mut self.tracked[i];
            let n = match t.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let key = format!("read:{}", t.path.display());
                    let msg = format!("cannot read {} ({e}); will retry", t.path.display());
                    self.warn_once(&key, msg);
                    break;
                }
            };
            total += n as u64;
            let received = Timestamp::now();
            // Sized for typical lines (~200 bytes), so the vector is not regrown mid-chunk.
            let mut events = Vec::with_capacity(n / 160 + 1);
            let (ingest, fp) = (&t.ingest, t.fingerprint);
            t.decoder.feed_at(&self.buf[..n], &mut |frame, start| {
                ingest.push(&mut events, frame, received, EventId::derived(fp, start))
            });
            t.partial.resize(t.decoder.pending_len());
            let end = t.decoder.committed_offset();
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
        let t = &mut self.tracked[i];
        if total > 0 {
            t.idle_since = None;
        } else if !t.current && t.idle_since.is_none() {
            t.idle_since = Some(Instant::now());
        }
        Ok(total)
    }

    /// Lets go of files that left their watched path and have stayed at their end for a while.
    fn let_go_of_finished(&mut self) {
        let grace = (self.cfg.poll_interval.0 * 2).max(Duration::from_secs(1));
        let finished = &mut self.finished;
        self.tracked.retain(|t| {
            let done = !t.current && t.idle_since.is_some_and(|since| since.elapsed() >= grace);
            if done {
                if let Ok(meta) = t.file.metadata() {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    finished.insert((t.dev, t.ino), (meta.len(), mtime, t.fingerprint));
                }
                tracing::debug!("finished {}", t.path.display());
            }
            !done
        });
    }

    fn warn_once(&mut self, key: &str, message: String) {
        if self.warned.insert(key.to_string()) {
            tracing::warn!("{message}");
        }
    }
}

struct Stopped;

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// FNV-1a of the first line (with its newline), or of the first `max` bytes if the line is longer.
/// None while the file has neither: its identity is not settled yet.
fn fingerprint(file: &File, max: usize) -> std::io::Result<Option<u64>> {
    let mut head = vec![0u8; max];
    let mut filled = 0;
    while filled < max {
        match file.read_at(&mut head[filled..], filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    let head = &head[..filled];
    let first = match memchr::memchr(b'\n', head) {
        Some(nl) => &head[..=nl],
        None if filled == max => head,
        None => return Ok(None),
    };
    Ok(Some(first.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })))
}

/// The offset just past the last newline (for `start_at = "end"`), looking at the last 64 KiB.
fn end_of_last_line(file: &File, size: u64) -> u64 {
    let window = size.min(64 * 1024);
    let mut tail = vec![0u8; window as usize];
    if file.read_exact_at(&mut tail, size - window).is_err() {
        return size;
    }
    memchr::memrchr(b'\n', &tail).map_or(size - window, |i| size - window + i as u64 + 1)
}
