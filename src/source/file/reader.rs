//! The reader: opening a file where reading resumes, reading it, and queueing its lines (or text
//! records) with acknowledgements that move its checkpoint.
//!
//! **Delivery.** Each line's event id is derived from (fingerprint, byte offset), so reading a line
//! again after a crash yields the same id and the store ignores it. The checkpoint of a file moves
//! only when the pipeline acknowledges that the events before that offset are durable, and never
//! past the last complete line ([`Progress`] keeps a file's chunks in order: acknowledgements may
//! come out of order, the checkpoint moves past a chunk only when it and every one before it are
//! durable). A read is admitted to the pipeline's memory budget first, so a slow store slows the
//! tailer instead of filling memory.
//!
//! **Rewritten under the reader.** A file truncated and written again between two scans
//! (copytruncate, with a writer that appends or keeps its offset) is checked after each read: if its
//! first line is no longer the one it was opened with, the bytes just read are new content, and the
//! file is let go to be taken as the new file it is. Whatever was read before the truncation is
//! kept; the unread old lines are in the copy, which has the old fingerprint.
//!
//! **Compressed files.** A `.gz` is read through a decompressor, from the checkpoint of the file it
//! is a copy of, with the same fingerprint and uncompressed offsets: the same ids as if the plain
//! file had been read.
//!
//! **Text logs.** With `format = "python"` (or `"auto"` and a first line that is not JSON) lines
//! are assembled into records by [`Records`]: a record's id comes from its first line's offset and
//! the checkpoint never stops inside a record, so the above holds for records too. A record is
//! complete when the next begins, after `multiline_timeout` without new data, or as soon as its
//! file, rotated away, has been read to its end ([`Completion`]).
//!
//! **Fairness.** A file is read up to 8 MiB or 100 ms at a time before the others get their turn
//! and the next scan comes: a fast writer may rotate a file through all its backups and delete it
//! within seconds, and only a scan (or an early open) takes it in.

use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flate2::read::MultiGzDecoder;

use super::checkpoint::Checkpoints;
use super::fingerprint::{identify_at, identify_plain, identify_stream, Identity};
use super::open_files::{Parked, Resume};
use super::python::{Out, Records};
use super::tailer::{Stopped, Tailer};
use super::{mtime, FileId, Format};
use crate::event::{EventId, Source, Timestamp};
use crate::pipeline::ack::Ack;
use crate::pipeline::memory::Reservation;
use crate::source::lines::LineDecoder;
use crate::source::{Ingest, Tally};

pub(super) const READ_CHUNK: usize = 1024 * 1024;
/// Bytes read from one file before the others get their turn.
const FAIR_SHARE: u64 = 8 * 1024 * 1024;
/// Time spent on one file before the others get their turn, and the next scan comes: a fast
/// writer may rotate a file through all its backups and delete it within seconds, and only a scan
/// opens it. (A read waits while the pipeline is full, so bytes alone do not bound the time.)
const TIME_SHARE: Duration = Duration::from_millis(100);

pub(super) enum Reader {
    Plain(File),
    Gz(Box<MultiGzDecoder<File>>),
}

impl Reader {
    pub fn file(&self) -> &File {
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

    pub fn compressed(&self) -> bool {
        matches!(self, Reader::Gz(_))
    }
}

/// One open file being read.
pub(super) struct Tracked {
    pub identity: Identity,
    pub path: PathBuf,
    pub reader: Reader,
    pub dev: u64,
    pub ino: u64,
    pub decoder: LineDecoder,
    pub progress: Arc<Mutex<Progress>>,
    pub ingest: Ingest,
    /// The memory budget held by the partial last line the decoder keeps.
    pub partial: Reservation,
    /// Found by the last scan (under some scanned path); else deleted or renamed out of reach.
    pub visible: bool,
    /// Found by the last scan where the app writes now (the plain path, a match of the glob);
    /// else rotated away, so its text has ended between two records.
    pub current: bool,
    /// When the file was last found at its end.
    pub idle_since: Option<Instant>,
    /// A compressed file read to its end, and its size and mtime from before that last read.
    pub finished: Option<(u64, SystemTime)>,
    /// NUL bytes skipped in this file so far, and of those by this decoder.
    pub nul_skipped: u64,
    pub decoder_nul: u64,
    /// Record assembly, for a text log.
    pub records: Option<Records>,
}

impl Tracked {
    pub fn id(&self) -> FileId {
        (self.dev, self.ino)
    }

    /// Where reading may resume without losing or repeating a line or a record.
    pub fn committed(&self) -> u64 {
        let decoded = self.decoder.committed_offset();
        self.records.as_ref().map_or(decoded, |r| r.committed(decoded))
    }

    /// Bytes held between reads: a partial last line, and an open record.
    fn held(&self) -> usize {
        self.decoder.pending_len() + self.records.as_ref().map_or(0, Records::held)
    }

    /// Whether a plain file still holds the content it was opened with (its first line is the
    /// same): not truncated and written again under the reader.
    pub fn same_content(&self, fingerprint_bytes: usize) -> bool {
        match &self.reader {
            Reader::Gz(_) => true,
            Reader::Plain(file) => {
                identify_at(file, self.identity.head_at, fingerprint_bytes)
                    .ok()
                    .flatten()
                    == Some(self.identity)
            }
        }
    }

    /// Whether the file is still at the path it was last found at (same device and inode).
    pub fn still_at_its_path(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id())
    }

    /// A record is open: the file is read on until it completes, never closed before.
    pub fn holds_record(&self) -> bool {
        self.records.as_ref().is_some_and(Records::is_open)
    }
}

/// Chunks of one file in flight, in order; the checkpoint advances past a chunk only when it and
/// every chunk before it are durable.
pub(super) struct Progress {
    pub fingerprint: u64,
    pub path: PathBuf,
    pub checkpoints: Arc<Checkpoints>,
    pub first_seq: u64,
    /// (end offset, durable) per chunk, oldest first.
    pub chunks: VecDeque<(u64, bool)>,
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

impl Tailer {
    /// Whether tracked file `i`, now `size` bytes, still holds the content it was opened with.
    pub(super) fn still_same(&self, i: usize, size: u64) -> bool {
        let t = &self.files.tracked[i];
        match &t.reader {
            Reader::Gz(_) => true,
            Reader::Plain(_) => size >= t.decoder.committed_offset() && t.same_content(self.cfg.fingerprint_bytes),
        }
    }

    pub(super) fn open_plain(&mut self, path: &Path) -> Option<(Reader, Identity)> {
        let file = self.open_file(path)?;
        match identify_plain(&file, self.cfg.fingerprint_bytes) {
            Ok(Some(identity)) => Some((Reader::Plain(file), identity)),
            Ok(None) => None, // no complete first line yet
            Err(e) => {
                self.warn_read(path, &e);
                None
            }
        }
    }

    /// Opens a `.gz` file and reads its identity from its decompressed beginning.
    pub(super) fn open_gz(&mut self, path: &Path, meta: &Metadata) -> Option<(Reader, Identity)> {
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
                self.files
                    .parked
                    .insert((meta.dev(), meta.ino()), Parked::ignored(meta, 0));
                None
            }
        }
    }

    fn open_file(&mut self, path: &Path) -> Option<File> {
        match File::open(path) {
            Ok(f) => {
                self.warnings.clear(&format!("open:{}", path.display()));
                Some(f)
            }
            Err(e) => {
                self.warnings.once(
                    &format!("open:{}", path.display()),
                    format!("cannot read {} ({e}); will retry", path.display()),
                );
                None
            }
        }
    }

    fn warn_read(&mut self, path: &Path, e: &std::io::Error) {
        self.warnings.once(
            &format!("read:{}", path.display()),
            format!("cannot read {} ({e}); will retry", path.display()),
        );
    }

    /// Where to start reading a plain file just found; `history` is its size at the first scan of a
    /// new pattern with `start_at = "end"`.
    pub(super) fn start_offset(&self, fp: u64, file: &File, size: u64, history: Option<u64>) -> u64 {
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

    pub(super) fn open(&mut self, path: &Path, mut reader: Reader, id: FileId, identity: Identity, start: u64) {
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
                    self.files.parked.insert(id, Parked::ignored(&meta, fp));
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
    pub(super) fn resume(&mut self, path: &Path, mut reader: Reader, id: FileId, r: Resume) {
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
            decoder.keeping_blank_lines().keeping_long_line_heads()
        } else {
            decoder
        };
        let from_start = decoder.position() <= identity.head_at;
        let records = text.map(|format| Records::new(format, from_start));
        self.files.tracked.push(Tracked {
            identity,
            path: path.to_path_buf(),
            reader,
            dev: id.0,
            ino: id.1,
            decoder,
            progress,
            ingest: self.ingest.with_source(Source::from(path.display().to_string())),
            partial: self.ingest.memory().empty(),
            visible: true,
            current: self.discovery.pattern().is_current(path),
            idle_since: None,
            finished: None,
            nul_skipped,
            decoder_nul: 0,
            records,
        });
    }

    /// Reads what file `i` has (up to its fair share), queueing its lines. Returns bytes read, or
    /// None if the file turned out rewritten under the reader.
    pub(super) fn read_file(&mut self, i: usize) -> Result<Option<u64>, Stopped> {
        let mut total = 0;
        let fingerprint_bytes = self.cfg.fingerprint_bytes;
        // A compressed file's size and mtime from before its last read: if it grows after that
        // read found its end, they differ and it is read again.
        let before = match &self.files.tracked[i].reader {
            Reader::Gz(d) => d.get_ref().metadata().ok().map(|m| (m.len(), mtime(&m))),
            Reader::Plain(_) => None,
        };
        let began = Instant::now();
        let mut at_end = false;
        while total < FAIR_SHARE && began.elapsed() < TIME_SHARE {
            if self.stopping() {
                return Err(Stopped);
            }
            // Admitted to the memory budget before every read; waits while it is used up.
            let reservation = self.ingest.memory().admit_blocking(&self.runtime, READ_CHUNK);
            let t = &mut self.files.tracked[i];
            let n = match t.reader.read(&mut self.buf) {
                Ok(0) => {
                    if t.reader.compressed() {
                        t.finished = before;
                    }
                    at_end = true;
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
        if at_end && !self.files.tracked[i].current {
            self.complete_record(i, Completion::RotatedAway)?;
        } else if total == 0 {
            self.complete_record(i, Completion::IfDue)?;
        }
        let t = &mut self.files.tracked[i];
        if total > 0 {
            t.idle_since = None;
        } else if t.idle_since.is_none() {
            t.idle_since = Some(Instant::now());
        }
        Ok(Some(total))
    }

    /// Queues file `i`'s open record, if `why` says it is complete, as a chunk of its own; its
    /// checkpoint then moves past it once the chunk is durable.
    fn complete_record(&mut self, i: usize, why: Completion) -> Result<(), Stopped> {
        let t = &mut self.files.tracked[i];
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
        let completed = match why {
            Completion::IfDue => records.complete_if_due(Instant::now(), &mut out),
            Completion::RotatedAway => records.complete_open(&mut out),
        };
        if !completed {
            return Ok(());
        }
        if let Completion::RotatedAway = why {
            tracing::debug!("{}: rotated away, so its last record is complete", t.path.display());
        }
        // The record's memory moves from what the file holds to the chunk that carries it.
        let mut reservation = self.ingest.memory().empty();
        reservation.take_from(&mut t.partial, held);
        let seq = lock(&t.progress).push(t.committed());
        let progress = t.progress.clone();
        let ack = Ack::new(events.len(), move || lock(&progress).durable(seq));
        let ingest = t.ingest.clone();
        self.runtime
            .block_on(ingest.submit(&mut events, Some(ack), reservation, &mut Tally::default()))
            .map_err(|_| Stopped)
    }
}

/// Why an open text record may be complete.
enum Completion {
    /// It has waited `multiline_timeout` without new data.
    IfDue,
    /// Its file was rotated away (renamed, replaced or deleted) and read to its end. Python's
    /// handlers rotate only between records, so what the file holds is whole: waiting
    /// `multiline_timeout` would only widen the window in which a crash, and `backupCount`
    /// deleting the file before the restart, loses the record.
    RotatedAway,
}

pub(super) fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
