//! The open-file cap: which files hold a descriptor, within `max_open_files`.
//!
//! Only files with unread data or a recent write need a descriptor. A glob may match thousands of
//! files, and a process has a limit on descriptors that the socket and the store share, so:
//!
//! - An idle file that a scan can still find is **parked**: closed, with its size and mtime
//!   remembered (one `stat` per scan tells whether it changed), and reopened where reading stopped
//!   once they change. Its chunk sequence ([`Resume::progress`]) goes on across the reopen, so the
//!   checkpoint never passes a chunk the pipeline has not acknowledged yet.
//! - A file gone from the scanned paths (deleted, or renamed out of reach) cannot be found again,
//!   so it is never parked: it stays open, read to its end, until it has been idle for
//!   `rotated_idle_timeout`, because its writer may still hold it and write again.
//! - Files beyond the cap wait until an idle one is closed ([`OpenFiles::make_room`]); none is
//!   skipped. Eviction prefers files the scans still find (parking them loses nothing); a gone file
//!   is closed early only when nothing else can be, with a warning, since lines its writer adds
//!   later are lost.
//! - A file with a text record still open is never closed: closing would drop the record's lines,
//!   and the checkpoint stands at its first line, so it would be read again anyway.

use std::collections::HashMap;
use std::fs::Metadata;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::fingerprint::Identity;
use super::reader::{Progress, Tracked};
use super::{mtime, FileConfig, FileId, Warnings};
use crate::units::HumanDuration;

/// A closed file that the scans still find: reopened where reading stopped once it changes.
pub(super) struct Parked {
    pub size: u64,
    pub mtime: SystemTime,
    pub fingerprint: u64,
    /// None for a compressed file that is not a known file: never read while it stays as it is.
    pub resume: Option<Resume>,
}

impl Parked {
    /// A compressed file not to be read while it stays as it is.
    pub fn ignored(meta: &Metadata, fingerprint: u64) -> Parked {
        Parked {
            size: meta.len(),
            mtime: mtime(meta),
            fingerprint,
            resume: None,
        }
    }

    /// Whether the file is as it was when it was closed (same size and mtime).
    pub fn unchanged(&self, meta: &Metadata) -> bool {
        self.size == meta.len() && self.mtime == mtime(meta)
    }
}

/// Where a parked file's reading stopped.
pub(super) struct Resume {
    pub identity: Identity,
    pub offset: u64,
    /// The same chunk sequence goes on, so the checkpoint never passes an unacknowledged chunk.
    pub progress: Arc<Mutex<Progress>>,
    pub nul_skipped: u64,
}

/// The files of one `[[file]]` entry: open (tracked) or closed until they change (parked).
pub(super) struct OpenFiles {
    pub tracked: Vec<Tracked>,
    pub parked: HashMap<FileId, Parked>,
    /// A file needed a descriptor and the cap left none this scan.
    pub waiting: bool,
    max_open_files: usize,
    poll_interval: Duration,
    rotated_idle_timeout: HumanDuration,
    fingerprint_bytes: usize,
    warnings: Warnings,
}

impl OpenFiles {
    pub fn new(cfg: &FileConfig) -> OpenFiles {
        OpenFiles {
            tracked: Vec::new(),
            parked: HashMap::new(),
            waiting: false,
            max_open_files: cfg.max_open_files,
            poll_interval: cfg.poll_interval.0,
            rotated_idle_timeout: cfg.rotated_idle_timeout,
            fingerprint_bytes: cfg.fingerprint_bytes,
            warnings: Warnings::default(),
        }
    }

    /// The open file with this dev and inode.
    pub fn position(&self, id: FileId) -> Option<usize> {
        self.tracked.iter().position(|t| t.id() == id)
    }

    /// Whether an open file has this content (same fingerprint): a copy, a hard link or a
    /// compressed copy of it is looked at again once that one is let go.
    pub fn reading(&self, fingerprint: u64) -> bool {
        self.tracked.iter().any(|t| t.identity.fingerprint == fingerprint)
    }

    /// Whether one more file may be opened, closing an idle one if that makes room. Sets
    /// `waiting` when it may not.
    pub fn room_for_one(&mut self) -> bool {
        if self.tracked.len() < self.max_open_files || self.make_room() {
            return true;
        }
        self.waiting = true;
        false
    }

    /// Room would be made for a waiting file on the next pass.
    pub fn room_to_make(&self) -> bool {
        self.waiting && self.tracked.iter().any(|t| self.evictable(t))
    }

    /// How long a file the scans still find may sit idle before it is closed (parked).
    fn park_after(&self) -> Duration {
        (self.poll_interval * 10).max(Duration::from_secs(1))
    }

    /// Closes what needs no descriptor: compressed files read to their end, idle files the scans
    /// still find (parked), and files gone from the scanned paths once idle for
    /// `rotated_idle_timeout`.
    pub fn close_idle(&mut self) {
        let (park_after, rotated) = (self.park_after(), self.rotated_idle_timeout.0);
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
                    self.rotated_idle_timeout
                );
            } else {
                i += 1;
            }
        }
    }

    /// Closes `t`, remembering where reading stopped. A plain file that grew since its last read
    /// is kept open instead: it has unread data, and its new size would look unchanged later. One
    /// truncated and written again since (to the same size, so the size cannot tell) is let go:
    /// remembered, its new content would look read; a scan takes it as the new file it is.
    fn park(&mut self, t: Tracked) {
        let (size, mtime) = match t.finished {
            Some(before) => before,
            None => match t.reader.file().metadata() {
                Ok(m) if t.reader.compressed() => (m.len(), mtime(&m)),
                Ok(m) if m.len() == t.decoder.position() => {
                    if !t.same_content(self.fingerprint_bytes) {
                        return;
                    }
                    (m.len(), mtime(&m))
                }
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
        let id = t.id();
        let resume = Resume {
            identity: t.identity,
            offset: t.committed(),
            progress: t.progress,
            nul_skipped: t.nul_skipped,
        };
        self.parked.insert(
            id,
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
        let grace = (self.poll_interval * 2).max(Duration::from_secs(1));
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
            return self.tracked.len() < self.max_open_files;
        }
        let Some(i) = pick(false) else {
            return false;
        };
        let t = self.tracked.remove(i);
        let msg = format!(
            "closing {} (deleted or renamed away, idle) before its rotated_idle_timeout of {} to stay within max_open_files = {}; lines its writer adds now are lost: raise max_open_files",
            t.path.display(),
            self.rotated_idle_timeout,
            self.max_open_files
        );
        self.warnings.once(&format!("evict:{}", t.path.display()), msg);
        true
    }
}
