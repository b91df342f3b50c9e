//! The file source: tails the app's log files, every line (or text record) exactly once, through
//! rotation, truncation, compression, restarts and crashes.
//!
//! Each `[[file]]` entry runs a [`tailer`] on a thread of its own. The parts, after Vector's
//! `file-source`, each with one job:
//!
//! - [`discovery`]: which paths belong to the entry (the glob's matches, or a plain path and its
//!   rotated siblings), and `notify` watching so that a change wakes the tailer at once.
//! - [`fingerprint`]: what a file *is*: the fingerprint of its first line, which survives renames,
//!   copies and compression, so its checkpoint follows it.
//! - [`open_files`]: the `max_open_files` cap: idle files are parked (closed, watched by `stat`)
//!   or, once gone, let go after `rotated_idle_timeout`; files beyond the cap wait their turn.
//! - [`reader`]: opening a file where reading resumes, reading it, and queueing its lines with
//!   acknowledgements that move its checkpoint only past what is durable; [`python`] assembles
//!   a text log's lines into records.
//! - [`checkpoint`]: where each file (by fingerprint) has been read up to, saved under
//!   `state_dir`.
//!
//! The guarantee they make together: an event's id is derived from (fingerprint, offset of its
//! first line), and a checkpoint never runs ahead of the store, so whatever is read twice after a
//! crash is recognized by the store, and whatever was not yet durable is read again.

pub mod checkpoint;
mod config;
mod discovery;
mod fingerprint;
#[doc(hidden)]
pub mod model_records;
mod open_files;
pub mod python;
mod reader;
mod tailer;

pub use config::{FileConfig, Format, StartAt};

use std::collections::HashSet;
use std::fs::Metadata;
use std::sync::Arc;
use std::time::SystemTime;

use checkpoint::Checkpoints;

use super::Ingest;
use crate::shutdown::Shutdown;
use python::TextFormat;
use tailer::Tailer;

/// A file's device and inode: which open handle is which (identity is the fingerprint's job).
type FileId = (u64, u64);

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
        let thread_done = shutdown.child("file tailer thread");
        let stop = shutdown.token();
        // The thread waits on its channel, not on the token: wake it when the stop comes.
        let waker = wake_tx.clone();
        runtime.spawn(async move {
            shutdown.recv().await;
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

/// Problems said once, not on every poll, until they clear (a missing directory, an unreadable
/// file): each part of the tailer keeps its own.
#[derive(Default)]
struct Warnings(HashSet<String>);

impl Warnings {
    fn once(&mut self, key: &str, message: String) {
        if self.0.insert(key.to_string()) {
            tracing::warn!("{message}");
        }
    }

    /// The problem is gone: say it again if it comes back.
    fn clear(&mut self, key: &str) {
        self.0.remove(key);
    }
}

fn mtime(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests;
