//! The Unix socket source: JSON lines from any number of concurrent clients.
//!
//! When a client closes its side, the collector answers with one line,
//! `{"events":N,"rejected":M}`: how many of its lines were accepted as events and how many were
//! rejected (stored in `api_rejects` with the reason). On shutdown the collector stops reading,
//! sends the same line for what it accepted, and closes; unread bytes were not accepted.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use serde::{Deserialize, Serialize};

use super::lines::LineDecoder;
use super::{Ingest, Tally};
use crate::config::Problems;
use crate::event::{EventId, Timestamp};
use crate::shutdown::Shutdown;

/// `[socket]`: the Unix socket the app writes JSON lines to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    pub enabled: bool,
    /// Defaults to `<state_dir>/collector.sock`.
    pub path: Option<PathBuf>,
    /// Octal file mode of the socket file.
    pub mode: String,
    /// Group that owns the socket file, so the app's user can connect.
    pub group: Option<String>,
    pub max_line_bytes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            enabled: true,
            path: None,
            mode: "0660".into(),
            group: None,
            max_line_bytes: 1 << 20,
        }
    }
}

impl SocketConfig {
    /// The file mode, if `mode` is a valid octal mode.
    pub fn mode_bits(&self) -> Option<u32> {
        let m = self.mode.trim_start_matches("0o");
        u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o777)
    }

    pub fn validate(&self, p: &mut Problems) {
        p.in_range("socket.max_line_bytes", self.max_line_bytes, 1024..=64 << 20);
        if self.mode_bits().is_none() {
            p.add(
                "socket.mode",
                format!("is {:?}; expected an octal file mode such as \"0660\"", self.mode),
            );
        }
        if let Some(name) = &self.group {
            if let Err(problem) = group_id(name) {
                p.add("socket.group", problem);
            }
        }
    }
}

/// The id of the group named `name`, or what is wrong with it.
fn group_id(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "is {name:?}, but there is no group of that name on this system"
        )),
        Err(e) => Err(format!("is {name:?}, which cannot be looked up: {e}")),
    }
}

const READ_BUFFER: usize = 64 * 1024;

pub struct SocketSource {
    listener: UnixListener,
    file: SocketFile,
}

/// The socket's path, removed on drop if it is still the file this process created.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl SocketSource {
    /// Binds the socket: replaces a stale file left by a dead process, refuses to take over a
    /// socket another process still answers on, sets the file's mode and group.
    pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<SocketSource, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the socket's directory {}: {e}", dir.display()))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(format!("{} exists and is not a socket; remove it or set socket.path to another file", path.display()));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(format!(
                        "another process is already listening on {} (is another lngpt-collector running?); stop it or set socket.path to another file",
                        path.display()
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket file {}: {e}", path.display()))?;
                    tracing::info!("removed the stale socket file {} left by a process that is gone", path.display());
                }
                Err(e) => return Err(format!("{} exists and cannot be checked: {e}", path.display())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
        }
        let std_listener = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        let file = SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set mode {mode:o} on {}: {e}", path.display()))?;
        if let Some(name) = group {
            let gid = group_id(name).map_err(|problem| format!("socket.group {problem}"))?;
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| format!("cannot give {} to group {name}: {e}", path.display()))?;
        }
        std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
        Ok(SocketSource { listener, file })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Accepts clients until shutdown; each connection runs as its own task.
    pub async fn run(self, ingest: Ingest, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, ingest.clone(), shutdown.child()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little instead of spinning.
                        tracing::warn!("cannot accept a connection on {}: {e}", self.file.path.display());
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.recv() => return,
            }
        }
    }
}

async fn serve(mut stream: UnixStream, ingest: Ingest, mut shutdown: Shutdown) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut decoder = LineDecoder::new(ingest.max_line());
    let mut events = Vec::new();
    let mut tally = Tally::default();
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            read = stream.read(&mut buf) => read,
        };
        let received = Timestamp::now();
        match read {
            Ok(0) => {
                decoder.finish(&mut |frame| ingest.push(&mut events, frame, received, EventId::new()));
                let _ = ingest.submit(&mut events, &mut tally).await;
                break;
            }
            Ok(n) => decoder.feed(&buf[..n], &mut |frame| {
                ingest.push(&mut events, frame, received, EventId::new())
            }),
            Err(e) => {
                tracing::debug!("socket client went away: {e}");
                break;
            }
        }
        if ingest.submit(&mut events, &mut tally).await.is_err() {
            break;
        }
    }
    let ack = format!("{{\"events\":{},\"rejected\":{}}}\n", tally.events, tally.rejected);
    let _ = stream.write_all(ack.as_bytes()).await;
    let _ = stream.shutdown().await;
}
