//! The Unix socket source: JSON lines from any number of concurrent clients.
//!
//! When a client closes its side, the collector answers with one line,
//! `{"events":N,"rejected":M}`, once **every one of those lines is durable** (stored, or committed
//! to the outbox): how many became events and how many were rejected (stored in `api_rejects` with
//! the reason). A long-lived client may ask the same mid-stream with a sync line,
//! `{"type":"sync","id":…}`, answered with `{"sync":…,"events":N,"rejected":M}` once everything
//! before it is durable. On shutdown the collector stops reading, waits until what it accepted is
//! durable, answers, and closes; unread bytes were not accepted.
//!
//! Each connection is admitted to the memory budget before every read, so a full budget stops
//! reading (the client's writes block). Connections are capped and closed after `idle_timeout`
//! without data, so idle or stuck clients cannot exhaust file descriptors or memory.
//!
//! A connection part-way through a line holds that line's bytes, so it must never wait for memory
//! while others wait for what it holds (issue 20: 40 clients writing 900 KB lines deadlocked, and
//! 600 clients that stopped mid-line wedged intake for good). Two rules keep that from happening:
//! one connection at a time that holds a partial line and has data waiting may read past the
//! budget until that line ends (the budget's line lane), and a client that sends no more of a
//! started line for `line_timeout` while others wait for memory has that line cut: kept as a
//! reject, its memory given back. `idle_timeout` bounds every wait, for data or for memory.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::answers::{self, Answers};
use super::client::ClientLines;
use super::{Ingest, SyncRequest};
use crate::event::Event;
use crate::pipeline::memory::Reservation;
use crate::problems::Problems;
use crate::shutdown::Shutdown;
use crate::telemetry::RateLimited;
use crate::units::HumanDuration;

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
    /// Clients connected at once; more are refused with a message (also capped below the
    /// process's open-files limit).
    pub max_connections: usize,
    /// A connection that sends nothing for this long is answered and closed; `"0"` never.
    pub idle_timeout: HumanDuration,
    /// A client that stops in the middle of a line for this long while other clients wait for
    /// memory has that line cut (kept as a reject); also the longest an upload's line may pause.
    pub line_timeout: HumanDuration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            enabled: true,
            path: None,
            mode: "0660".into(),
            group: None,
            max_line_bytes: 1 << 20,
            max_connections: 1024,
            idle_timeout: HumanDuration(Duration::from_secs(600)),
            line_timeout: HumanDuration(Duration::from_secs(5)),
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
        p.in_range("socket.max_connections", self.max_connections, 1..=1_000_000);
        if !self.idle_timeout.0.is_zero() {
            p.duration_in(
                "socket.idle_timeout",
                self.idle_timeout,
                Duration::from_millis(100),
                crate::units::MAX_DURATION,
            );
        }
        p.duration_in(
            "socket.line_timeout",
            self.line_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
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

pub struct SocketSource {
    listener: UnixListener,
    path: PathBuf,
    /// The file this process created, removed at exit; None for a socket systemd passed, which
    /// outlives the daemon (connections wait in its backlog during a restart).
    _file: Option<SocketFile>,
}

/// Binds a Unix socket at `path` the way both the ingest socket and the API's do: a stale file
/// left by a dead process is replaced, a socket another process still answers on is refused, a
/// file that is not a socket is never deleted; the file gets `mode` and `group`. `key` names the
/// setting to change in errors. Returns a non-blocking listener and the file, removed on drop.
pub(crate) fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<&str>,
    key: &str,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the socket's directory {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!(
                "{} exists and is not a socket; remove it or set {key} to another file",
                path.display()
            ));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "another process is already listening on {} (is another lngpt-collector running?); stop it or set {key} to another file",
                    path.display()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket file {}: {e}", path.display()))?;
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
    Ok((std_listener, file))
}

/// The socket's path, removed on drop if it is still the file this process created.
pub(crate) struct SocketFile {
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
        let (std_listener, file) = bind_unix(path, mode, group, "socket.path")?;
        let listener = UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
        Ok(SocketSource {
            listener,
            path: path.to_path_buf(),
            _file: Some(file),
        })
    }

    /// A socket systemd passed (socket activation): used as it is, never re-moded or removed.
    pub fn activated(std_listener: std::os::unix::net::UnixListener) -> Result<SocketSource, String> {
        let path = std_listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("(passed by systemd)"));
        std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
        Ok(SocketSource {
            listener,
            path,
            _file: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients until shutdown; each connection runs as its own task, at most
    /// `limits.max_connections` at once.
    pub async fn run(self, ingest: Ingest, limits: Limits, mut shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut refused = RateLimited::new(Duration::from_secs(10));
        let mut accept_failed = RateLimited::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let child = shutdown.child("socket connection");
                            let ingest = ingest.clone();
                            tokio::spawn(async move {
                                Connection::serve(stream, ingest, limits, child).await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            if let Some(suppressed) = refused.ready() {
                                tracing::warn!(
                                    "refused a connection on {}: {} clients are connected (socket.max_connections){}",
                                    self.path.display(),
                                    limits.max_connections,
                                    RateLimited::note(suppressed),
                                );
                            }
                            tokio::spawn(refuse(stream, limits.max_connections));
                        }
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little instead of spinning.
                        if let Some(suppressed) = accept_failed.ready() {
                            tracing::warn!(
                                "cannot accept a connection on {}: {e}{}",
                                self.path.display(),
                                RateLimited::note(suppressed),
                            );
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = shutdown.recv() => return,
                        }
                    }
                },
                _ = shutdown.recv() => return,
            }
        }
    }
}

/// What bounds the socket's clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Zero: never.
    pub idle_timeout: Duration,
    /// How long a client may pause mid-line while others wait for memory.
    pub line_timeout: Duration,
}

/// Tells a client over the connection cap why it is turned away, so it can retry or spool.
async fn refuse(mut stream: UnixStream, max: usize) {
    let line = format!(
        "{{\"error\":\"too many connections: {max} clients are connected (socket.max_connections); nothing was read, try again\"}}\n"
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
}

const READ_BUFFER: usize = 64 * 1024;

/// Waits `d`; zero: for ever.
async fn patience(d: Duration) {
    if d.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(d).await;
}

/// Why a connection stopped reading.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed its side.
    Closed,
    /// Shutdown.
    Stopping,
    /// Nothing arrived, or no memory could be had, for `idle_timeout`.
    Idle,
    /// The client went away, or the pipeline did.
    Gone,
}

/// What waiting for the client's next bytes came to.
enum Wait {
    Ready,
    /// The client stopped mid-line for `line_timeout` while others wait for memory.
    Stalled,
    /// The lane's holder has no more bytes for [`LANE_PATIENCE`]: its client is not blocked on us,
    /// so the lane goes to the next connection.
    LanePause,
    End(End),
}

/// How long the line lane's holder may wait for its client's next bytes. A client writing a long
/// line is blocked on the daemon's reading, so its next bytes are there at once; a longer pause
/// means it is not, and someone else should have the lane.
pub(crate) const LANE_PATIENCE: Duration = Duration::from_millis(100);

/// Why a line is cut, for the reject's reason.
const CUT_STALLED: &str =
    "the client sent no more of it for socket.line_timeout while other clients waited for the memory it held";

/// One client: reads lines and queues them; its [`answers::Answerer`] answers each sync line, and the close,
/// once what came before is durable.
struct Connection {
    read: OwnedReadHalf,
    limits: Limits,
    lines: ClientLines,
    answers: Answers,
}

impl Connection {
    /// Serves `stream` until the client closes, idles, goes away or shutdown; answers last.
    async fn serve(stream: UnixStream, ingest: Ingest, limits: Limits, mut shutdown: Shutdown) {
        let (read, write) = stream.into_split();
        let (answers, answerer) = answers::answers(write, limits.idle_timeout);
        let answering = tokio::spawn(answerer.run());
        let mut this = Connection {
            read,
            limits,
            lines: ClientLines::new(ingest),
            answers,
        };
        let end = this.read_until_end(&mut shutdown).await;
        if end == End::Idle {
            tracing::debug!(
                "closing a socket client idle for {}",
                HumanDuration(this.limits.idle_timeout)
            );
        }
        if end != End::Gone {
            // A last line without a newline counts, a sync line too.
            let mut syncs = Vec::new();
            let events = this.lines.decode_rest(Some(&mut syncs));
            let held = events.iter().map(|e| e.held_bytes as usize).sum();
            let reservation = this.lines.ingest().memory().force(held);
            let _ = this.queue_decoded(events, syncs, reservation).await;
        }
        // Answered after every sync line, only once everything is durable; if shutdown's deadline
        // comes first, the process ends and the client sees no answer, which `send` reports as
        // "not confirmed".
        let tally = *this.lines.tally();
        let answer = format!("{{\"events\":{},\"rejected\":{}}}\n", tally.events, tally.rejected);
        let mut memory = this.lines.ingest().memory().empty();
        let _ = this.answers.owe(this.lines.mark(), answer, &mut memory);
        let Connection { mut read, answers, .. } = this;
        drop(answers);
        if let Ok(Some(mut write)) = answering.await {
            let _ = write.shutdown().await;
        }
        if end == End::Idle {
            // Closing with unread bytes would reset the connection, and the client could lose the
            // answer before reading it: what it still sends is read and dropped for a moment
            // (it was not accepted; the answer's counts say what was).
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut left = 1usize << 20;
                while left > 0 {
                    match tokio::io::AsyncReadExt::read(&mut read, &mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
        }
    }

    async fn read_until_end(&mut self, shutdown: &mut Shutdown) -> End {
        let budget = self.lines.ingest().memory().clone();
        let mut buf: Vec<u8> = Vec::new();
        // Held while this connection reads past the budget to finish its partial line.
        let mut lane: Option<crate::pipeline::memory::LanePermit> = None;
        loop {
            if !self.answers.has_room() {
                // As many answers wait as one connection may owe: read on once one is written.
                // Their durability needs nobody's memory, so the lane goes to the next connection.
                lane = None;
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => return End::Stopping,
                    _ = self.answers.room() => {}
                    _ = patience(self.limits.idle_timeout) => return End::Idle,
                }
                if self.answers.is_gone() {
                    return End::Gone;
                }
                continue;
            }
            match self.wait_readable(shutdown, lane.is_some()).await {
                Wait::Ready => {}
                Wait::End(end) => return end,
                Wait::LanePause => {
                    lane = None;
                    continue;
                }
                Wait::Stalled => {
                    tracing::debug!("cutting the partial line of a socket client that stalled mid-line");
                    self.lines.cut_partial(CUT_STALLED).await;
                    continue;
                }
            }
            let reservation = if lane.is_some() {
                budget.force(READ_BUFFER)
            } else if self.lines.line_growing() {
                // Waiting here while holding a partial line would be hold-and-wait: take the lane
                // if memory does not come first.
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => return End::Stopping,
                    r = budget.admit(READ_BUFFER) => r,
                    permit = budget.line_lane() => {
                        lane = Some(permit);
                        budget.force(READ_BUFFER)
                    }
                    _ = patience(self.limits.idle_timeout) => return End::Idle,
                }
            } else {
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => return End::Stopping,
                    r = budget.admit(READ_BUFFER) => r,
                    _ = patience(self.limits.idle_timeout) => return End::Idle,
                }
            };
            if buf.is_empty() {
                buf = vec![0; READ_BUFFER];
            }
            let n = match self.read.try_read(&mut buf) {
                Ok(0) => return End::Closed,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle for now: an idle connection holds no buffer and no budget.
                    buf = Vec::new();
                    continue;
                }
                Err(e) => {
                    tracing::debug!("socket client went away: {e}");
                    return End::Gone;
                }
            };
            if self.queue(&buf[..n], reservation).await.is_err() {
                return End::Gone;
            }
            if lane.is_some() && !self.lines.line_growing() {
                // The line ended (or is over-long, and holds no more): the next one's turn.
                lane = None;
            }
        }
    }

    /// Waits until the client's next bytes (or its close) can be read: at most `idle_timeout`,
    /// and at most `line_timeout` while it holds part of a line that others wait for memory for.
    async fn wait_readable(&self, shutdown: &mut Shutdown, in_lane: bool) -> Wait {
        let started = tokio::time::Instant::now();
        let idle = self.limits.idle_timeout;
        loop {
            let holding = self.lines.partial_bytes() > 0;
            let idle_left = (!idle.is_zero()).then(|| idle.saturating_sub(started.elapsed()));
            let line = if in_lane {
                LANE_PATIENCE
            } else {
                self.limits.line_timeout
            };
            let slice = match (holding, idle_left) {
                (true, Some(left)) => Some(left.min(line)),
                (true, None) => Some(line),
                (false, left) => left,
            };
            let readable = async {
                match slice {
                    Some(d) => tokio::time::timeout(d, self.read.readable()).await.ok(),
                    None => Some(self.read.readable().await),
                }
            };
            let ready = tokio::select! {
                biased;
                _ = shutdown.recv() => return Wait::End(End::Stopping),
                ready = readable => ready,
            };
            match ready {
                Some(Ok(())) => return Wait::Ready,
                Some(Err(e)) => {
                    tracing::debug!("socket client went away: {e}");
                    return Wait::End(End::Gone);
                }
                None => {}
            }
            if in_lane {
                return Wait::LanePause;
            }
            let budget = self.lines.ingest().memory();
            if holding && started.elapsed() >= self.limits.line_timeout && budget.has_waiters() {
                return Wait::Stalled;
            }
            if !idle.is_zero() && started.elapsed() >= idle {
                return Wait::End(End::Idle);
            }
        }
    }

    /// Parses `bytes` and queues the events; each sync line's answer is owed once what came before
    /// it is durable, and the connection reads on meanwhile.
    async fn queue(&mut self, bytes: &[u8], reservation: Reservation) -> Result<(), ()> {
        // (events before it, the request) for each sync line, in order.
        let mut syncs: Vec<(usize, SyncRequest)> = Vec::new();
        let events = self.lines.decode(bytes, Some(&mut syncs));
        self.queue_decoded(events, syncs, reservation).await
    }

    /// Queues what one read brought: `events`, with `syncs` (events before each, the request).
    async fn queue_decoded(
        &mut self,
        events: Vec<Event>,
        syncs: Vec<(usize, SyncRequest)>,
        mut reservation: Reservation,
    ) -> Result<(), ()> {
        if syncs.is_empty() {
            let mut events = events;
            return self.lines.submit(&mut events, reservation).await;
        }
        let mut events = events.into_iter();
        let mut done = 0;
        for (before, sync) in syncs {
            let mut part: Vec<_> = events.by_ref().take(before - done).collect();
            done = before;
            let mut share = self.lines.ingest().memory().empty();
            share.take_from(&mut reservation, part.iter().map(|e| e.held_bytes as usize).sum());
            self.lines.submit(&mut part, share).await?;
            let tally = self.lines.tally();
            let answer = serde_json::json!({
                "sync": sync.id,
                "events": tally.events,
                "rejected": tally.rejected,
            });
            let mut line = answer.to_string();
            line.push('\n');
            self.answers
                .owe(self.lines.mark(), line, &mut reservation)
                .map_err(|_| ())?;
        }
        self.lines.submit(&mut events.collect(), reservation).await
    }
}
