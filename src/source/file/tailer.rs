//! The tailer of one `[[file]]` entry: its state, and the loop that drives discovery, the open-file
//! cap and the reader.
//!
//! One pass ([`Tailer::step`]) scans the candidates and decides, for each, whether to go on with the
//! file already open under that dev and inode, reopen a parked one, or open it as new (from its
//! checkpoint, from 0, or past the history that `start_at = "end"` skips); then reads every open
//! file a fair share, and closes what needs no descriptor. The loop sleeps between passes until a
//! notification, the poll, or an open record's deadline, and goes again at once while there is
//! data. Everything runs on one thread with blocking reads: the files are local, a read waits
//! only on the page cache, and the only thing that blocks the thread for long, the pipeline's
//! budget, should block it.
//!
//! The state lives here, in one struct; each concern's behaviour is in its own module
//! (`discovery`, `fingerprint`, `open_files`, `reader`), so the order of a pass can be read in one
//! place.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::Checkpoints;
use super::discovery::{is_gz, Candidate, Discovery};
use super::fingerprint::identify_plain;
use super::open_files::{OpenFiles, Parked};
use super::python::TextFormat;
use super::reader::{lock, Reader};
use super::{FileConfig, FileId, FileSource, StartAt};
use crate::shutdown::CancellationToken;
use crate::source::Ingest;

/// The daemon is stopping (or the pipeline closed): the tailer returns.
pub(super) struct Stopped;

pub(super) struct Tailer {
    pub(super) cfg: FileConfig,
    pub(super) text: Option<Arc<TextFormat>>,
    pub(super) ingest: Ingest,
    pub(super) checkpoints: Arc<Checkpoints>,
    pub(super) runtime: tokio::runtime::Handle,
    stop: CancellationToken,
    pub(super) discovery: Discovery,
    pub(super) files: OpenFiles,
    /// This `[[file]]` path was never tailed before: `start_at` applies to what is there now.
    new_pattern: bool,
    /// With `start_at = "end"` on a pattern's first run: the files there at the first scan not
    /// opened yet (the cap may delay some) and their size then; what they held is skipped whenever
    /// they are opened.
    history: HashMap<FileId, u64>,
    /// The pattern is not recorded as tailed until every file of its first scan was taken in.
    pattern_recorded: bool,
    /// Files (by fingerprint) whose NUL runs were reported: once per file, its copies included.
    pub(super) nul_reported: HashSet<u64>,
    /// The reader's problems (cannot open, cannot read), each said once until it clears.
    pub(super) warnings: super::Warnings,
    pub(super) buf: Vec<u8>,
}

impl Tailer {
    pub(super) fn new(
        src: FileSource,
        runtime: tokio::runtime::Handle,
        stop: CancellationToken,
        wake_tx: Sender<()>,
    ) -> Tailer {
        let cfg = src.cfg;
        Tailer {
            discovery: Discovery::new(&cfg.path, cfg.max_open_files, cfg.poll_interval, wake_tx),
            files: OpenFiles::new(&cfg),
            cfg,
            text: src.text,
            ingest: src.ingest,
            checkpoints: src.checkpoints,
            runtime,
            stop,
            new_pattern: false,
            history: HashMap::new(),
            pattern_recorded: false,
            nul_reported: HashSet::new(),
            warnings: super::Warnings::default(),
            buf: vec![0; super::reader::READ_CHUNK],
        }
    }

    pub(super) fn run(&mut self, wake: Receiver<()>) {
        self.begin();
        while !self.stopping() {
            self.discovery.watch();
            let busy = match self.step() {
                Ok(busy) => busy,
                Err(Stopped) => return,
            };
            if !busy {
                // Drain extra wake-ups, then sleep until the next change, poll, or open record's end.
                let poll = self.cfg.poll_interval.0;
                let now = Instant::now();
                let sleep = self
                    .files
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

    /// Says what is being tailed and how, before the first pass.
    pub(super) fn begin(&mut self) {
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
    }

    /// One pass: scan, read every open file its share, close what needs no descriptor. True if
    /// another pass should follow at once (data was read, or room can be made for a waiting file).
    pub(super) fn step(&mut self) -> Result<bool, Stopped> {
        self.scan();
        self.discovery.first_scan = false;
        if !self.pattern_recorded && self.history.is_empty() {
            self.pattern_recorded = true;
            self.checkpoints.add_pattern(&self.cfg.path);
        }
        let mut read_any = false;
        let mut i = 0;
        while i < self.files.tracked.len() {
            match self.read_file(i)? {
                Some(n) => read_any |= n > 0,
                None => {
                    // Rewritten under the reader: the next scan takes it as the new file it is.
                    self.files.tracked.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        self.files.close_idle();
        self.discovery
            .early
            .tracked
            .store(self.files.tracked.len(), Ordering::Relaxed);
        Ok(read_any || self.files.room_to_make())
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn scan(&mut self) {
        let candidates = self.discovery.candidates();
        self.files.waiting = false;
        let mut seen = HashSet::with_capacity(candidates.len());
        if self.discovery.first_scan && self.new_pattern && self.cfg.start_at == StartAt::End {
            self.history = candidates.iter().map(|c| (c.id(), c.meta.len())).collect();
        }
        for c in &candidates {
            seen.insert(c.id());
            self.consider(c);
        }
        self.take_early(&seen);
        let pattern = self.discovery.pattern();
        for t in &mut self.files.tracked {
            t.visible = seen.contains(&t.id());
            // Rotated away only on evidence: found under a name the app no longer writes to, or
            // neither listed nor at its path. A file the notification thread opened after this
            // scan's listing was not listed, yet is still where the app writes.
            t.current = (t.visible || t.still_at_its_path()) && pattern.is_current(&t.path);
        }
        // Closed files no longer found are gone (deleted, or renamed out of reach): forget them.
        let before = self.files.parked.len();
        self.files.parked.retain(|id, _| seen.contains(id));
        self.history.retain(|id, _| seen.contains(id));
        if !self.nul_reported.is_empty() {
            let (tracked, parked) = (&self.files.tracked, &self.files.parked);
            self.nul_reported.retain(|fp| {
                tracked.iter().any(|t| t.identity.fingerprint == *fp) || parked.values().any(|p| p.fingerprint == *fp)
            });
        }
        if self.files.parked.len() < before {
            tracing::debug!(
                "forgot {} closed files of {} that are no longer there",
                before - self.files.parked.len(),
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
        let early: Vec<(FileId, (PathBuf, File))> = self.discovery.early.lock().drain().collect();
        let mut keep = Vec::new();
        for (id, (path, file)) in early {
            if self.files.position(id).is_some() || self.files.parked.contains_key(&id) {
                continue;
            }
            if seen.contains(&id) {
                if self.files.tracked.len() + keep.len() < self.cfg.max_open_files {
                    keep.push((id, (path, file)));
                }
                continue;
            }
            // Gone before any scan found it.
            let Some(identity) = identify_plain(&file, self.cfg.fingerprint_bytes).ok().flatten() else {
                continue; // nothing complete to read in it
            };
            if self.files.reading(identity.fingerprint) {
                continue;
            }
            if !self.files.room_for_one() {
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
        self.discovery.early.lock().extend(keep);
    }

    /// Starts or resumes reading the candidate if it has something new and a descriptor is free.
    fn consider(&mut self, c: &Candidate) {
        let (path, meta) = (c.path.as_path(), &c.meta);
        let id = c.id();
        let size = meta.len();
        if let Some(i) = self.files.position(id) {
            if self.still_same(i, size) {
                let t = &mut self.files.tracked[i];
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
            self.files.tracked.remove(i);
        }
        if let Some(p) = self.files.parked.get(&id) {
            if p.unchanged(meta) {
                self.checkpoints.seen(p.fingerprint);
                return;
            }
        }
        if !self.files.room_for_one() {
            return;
        }
        let parked = self.files.parked.remove(&id);
        let opened = if is_gz(path) {
            self.open_gz(path, meta)
        } else {
            self.open_plain(path)
        };
        let Some((reader, identity)) = opened else {
            if let Some(p) = parked {
                self.files.parked.insert(id, p); // unreadable for now: try again next scan
            }
            return;
        };
        if self.files.reading(identity.fingerprint) {
            // The same content under another name (a copy being made, a hard link, a compressed copy
            // of a file still being read): look again once that one is let go.
            if let Some(p) = parked {
                self.files.parked.insert(id, p);
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
                    self.files.parked.insert(id, Parked::ignored(meta, fp));
                    return;
                }
            }
        } else {
            self.start_offset(fp, reader.file(), size, history)
        };
        self.open(path, reader, id, identity, start);
    }
}
