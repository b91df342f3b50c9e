//! Running as a systemd service: readiness and status (`sd_notify`), a watchdog fed by the
//! pipeline's own progress, sockets passed by socket activation, and the journal.
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` notifications go nowhere,
//! without `WATCHDOG_USEC` there is no watchdog, without `LISTEN_FDS` the daemon binds its sockets.

use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::shutdown::Shutdown;
use crate::store::query::{Query, StoreHealth};
use crate::telemetry::{Counters, RateLimited};

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// The store is open and every listener bound: events are accepted.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

pub fn status(line: &str) {
    notify(&[NotifyState::Status(line)]);
}

/// SIGHUP: reloading; systemd 253 and later want the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The reload is done.
pub fn reloaded() {
    notify(&[NotifyState::Ready]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Sockets systemd passed (`LISTEN_FDS`), by their `FileDescriptorName=`.
pub struct Activated {
    fds: Vec<(RawFd, String)>,
}

/// The name the collector's Unix socket is given in `lngpt-collector.socket`.
pub const SOCKET_NAME: &str = "collector";
/// A listening socket systemd passed, by its address family.
pub enum PassedListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The name of the HTTP API's socket.
pub const API_NAME: &str = "api";

impl Activated {
    /// Takes the passed sockets (once: the environment is cleared so children do not see them).
    pub fn take() -> Activated {
        let fds = match sd_notify::listen_fds_with_names() {
            Ok(fds) => fds.collect(),
            Err(e) => {
                tracing::warn!("cannot take the sockets systemd passed: {e}; binding them instead");
                Vec::new()
            }
        };
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: at start-up, before any thread that reads the environment is started.
            unsafe { std::env::remove_var(var) };
        }
        Activated { fds }
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    fn take_named(&mut self, name: &str) -> Option<RawFd> {
        // A single socket passed without a name is the collector's.
        let unnamed = self.fds.len() == 1 && name == SOCKET_NAME && self.fds[0].1 == "unknown";
        let at = self.fds.iter().position(|(_, n)| n == name || unnamed)?;
        Some(self.fds.remove(at).0)
    }

    /// The collector's Unix socket, if systemd passed it.
    pub fn unix_listener(&mut self, name: &str) -> Result<Option<std::os::unix::net::UnixListener>, String> {
        let Some(fd) = self.take_named(name) else {
            return Ok(None);
        };
        // SAFETY: systemd passed this descriptor to this process, and it is taken only once.
        let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        listener
            .local_addr()
            .map_err(|e| format!("the socket systemd passed as {name:?} is not a Unix socket: {e}"))?;
        Ok(Some(listener))
    }

    /// A socket systemd passed as `name`, TCP or Unix (the HTTP API may listen on either).
    pub fn listener(&mut self, name: &str) -> Result<Option<PassedListener>, String> {
        let Some(fd) = self.take_named(name) else {
            return Ok(None);
        };
        // SAFETY: systemd passed this descriptor to this process, and it is taken only once; the
        // first wrapper gives it up again before the second takes it.
        let unix = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        if unix.local_addr().is_ok() {
            return Ok(Some(PassedListener::Unix(unix)));
        }
        let tcp = unsafe { std::net::TcpListener::from_raw_fd(unix.into_raw_fd()) };
        tcp.local_addr().map_err(|e| {
            format!("the socket systemd passed as {name:?} is neither a Unix nor a TCP stream socket: {e}")
        })?;
        Ok(Some(PassedListener::Tcp(tcp)))
    }

    /// Names of passed sockets nobody took, to say so.
    pub fn leftover(&self) -> Vec<String> {
        self.fds.iter().map(|(_, n)| n.clone()).collect()
    }
}

/// Pings the watchdog at half its interval — but only while the pipeline proves it is alive: it
/// has nothing to store, or it stored something since the last ping. A writer wedged on a hung
/// store stops the pings, and systemd restarts the daemon.
pub async fn watchdog(interval: Duration, progress: Arc<AtomicU64>, counters: Arc<Counters>, mut shutdown: Shutdown) {
    let every = interval / 2;
    let mut last = progress.load(Ordering::Relaxed);
    let mut stuck = RateLimited::new(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.recv() => return,
        }
        let now = progress.load(Ordering::Relaxed);
        let waiting = counters.snapshot().accepted_not_stored();
        if now != last || waiting == 0 {
            notify(&[NotifyState::Watchdog]);
        } else if let Some(suppressed) = stuck.ready() {
            tracing::error!(
                "the writer stored nothing for {:?} with {waiting} events waiting; not pinging the watchdog, so systemd restarts the daemon{}",
                every,
                RateLimited::note(suppressed)
            );
        }
        last = now;
    }
}

/// Keeps `STATUS=` saying what the daemon does: events a second, the outbox, the store.
pub async fn report_status<S: Query>(store: S, counters: Arc<Counters>, every: Duration, mut shutdown: Shutdown) {
    let mut last = counters.snapshot();
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.recv() => return,
        }
        let now = counters.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        let rate = (now.events + now.rejected).saturating_sub(last.events + last.rejected) as f64 / secs;
        status(&status_line(rate, &store.health()));
        last = now;
        last_at = tokio::time::Instant::now();
    }
}

pub fn status_line(events_per_second: f64, health: &StoreHealth) -> String {
    match health.kind {
        "mongodb" => format!(
            "{events_per_second:.1} events/s; MongoDB {}; outbox {} events",
            if health.reachable { "reachable" } else { "UNREACHABLE" },
            health.outbox_events
        ),
        _ => format!(
            "{events_per_second:.1} events/s; embedded store {}",
            if health.reachable { "writable" } else { "NOT WRITABLE" }
        ),
    }
}
