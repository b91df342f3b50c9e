//! Graceful shutdown, made explicit (the mini-redis pattern).
//!
//! One stop token tells every task to stop; each task holds a clone of a completion sender and drops
//! it when done, so the caller knows all tasks have finished when the receiver sees the channel close.
//!
//! The token is tokio-util's `CancellationToken`: tasks await it, threads poll it, and code that
//! must notice the stop without holding up the shutdown (an HTTP connection, a stream, an upload)
//! takes a bare [`Shutdown::token`]. It is the only stop signal in the daemon; a part that must be
//! stopped on its own (a webhook receiver removed by a reload) gets a token of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

/// Listens for the stop signal. Cheap to clone from a [`Coordinator`].
pub struct Shutdown {
    token: CancellationToken,
    /// Dropped with the task, which is how the coordinator learns that the task has finished.
    _done: mpsc::Sender<()>,
    /// Names the task while it runs, so that a shutdown that overruns says what it waited for.
    _running: Running,
}

impl Shutdown {
    /// Waits for the stop signal; returns at once if it was already given.
    pub async fn recv(&mut self) {
        self.token.cancelled().await;
    }

    /// Whether the stop signal has come, without waiting: for loops that check between steps.
    pub fn is_stopping(&mut self) -> bool {
        self.token.is_cancelled()
    }

    /// The stop signal alone, not holding up the shutdown: for what only has to notice it.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A listener for a sub-task, tied to the same completion and named after `name`.
    pub fn child(&self, name: &'static str) -> Shutdown {
        Shutdown {
            token: self.token.clone(),
            _done: self._done.clone(),
            _running: self._running.named(name),
        }
    }
}

/// One running task's entry in its coordinator's list of names.
struct Running {
    name: &'static str,
    tasks: Arc<Tasks>,
}

#[derive(Default)]
struct Tasks {
    running: Mutex<BTreeMap<&'static str, usize>>,
}

impl Running {
    fn new(tasks: Arc<Tasks>, name: &'static str) -> Running {
        *tasks.lock().entry(name).or_default() += 1;
        Running { name, tasks }
    }

    fn named(&self, name: &'static str) -> Running {
        Running::new(self.tasks.clone(), name)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.tasks.lock();
        if let Some(n) = running.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.name);
            }
        }
    }
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, usize>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Owns the signal and the completion channel of one group of tasks.
pub struct Coordinator {
    token: CancellationToken,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
    tasks: Arc<Tasks>,
}

impl Coordinator {
    pub fn new() -> Coordinator {
        let (done_tx, done_rx) = mpsc::channel(1);
        Coordinator {
            token: CancellationToken::new(),
            done_tx,
            done_rx,
            tasks: Arc::default(),
        }
    }

    /// A listener for the task called `name` (the name a late shutdown reports).
    pub fn listener(&self, name: &'static str) -> Shutdown {
        Shutdown {
            token: self.token.clone(),
            _done: self.done_tx.clone(),
            _running: Running::new(self.tasks.clone(), name),
        }
    }

    /// Signals every listener and waits until all of them (and their children) are dropped, or
    /// until `deadline`; then returns the names of the tasks still running.
    pub async fn shutdown_by(self, deadline: tokio::time::Instant) -> Result<(), Vec<&'static str>> {
        let Coordinator {
            token,
            done_tx,
            mut done_rx,
            tasks,
        } = self;
        token.cancel();
        drop(done_tx);
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(tasks.lock().keys().copied().collect()),
        }
    }
}

impl Default for Coordinator {
    fn default() -> Self {
        Coordinator::new()
    }
}

/// The process signals the daemon acts on, delivered from signal-hook's thread into async code.
pub mod signals {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals as HookSignals;
    use tokio::sync::mpsc;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Signal {
        /// SIGTERM or SIGINT: stop accepting, store what was accepted, exit.
        Stop(&'static str),
        /// SIGHUP: reload.
        Reload,
    }

    /// Signals as they arrive.
    pub type Signals = mpsc::UnboundedReceiver<Signal>;

    pub fn listen() -> std::io::Result<Signals> {
        let mut signals = HookSignals::new([SIGTERM, SIGINT, SIGHUP])?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                let signal = match sig {
                    SIGHUP => Signal::Reload,
                    SIGINT => Signal::Stop("SIGINT"),
                    _ => Signal::Stop("SIGTERM"),
                };
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test]
    async fn a_late_shutdown_names_the_tasks_it_waited_for() {
        let coordinator = Coordinator::new();
        let mut prompt = coordinator.listener("prompt");
        let stubborn = coordinator.listener("stubborn");
        let prompt_task = tokio::spawn(async move { prompt.recv().await });
        let late = coordinator
            .shutdown_by(Instant::now() + Duration::from_millis(200))
            .await
            .expect_err("one task ignores the signal");
        assert_eq!(late, vec!["stubborn"]);
        prompt_task.await.expect("the prompt task stopped");
        drop(stubborn);
    }

    #[tokio::test]
    async fn a_child_made_after_the_signal_starts_stopped() {
        let coordinator = Coordinator::new();
        let parent = coordinator.listener("connections");
        let children = tokio::spawn(async move {
            // Runs once the test's one thread waits in `shutdown_by`, so after the signal was sent;
            // the parent never looked at it, so only the coordinator can tell the child.
            let mut child = parent.child("connection");
            tokio::time::timeout(Duration::from_secs(5), child.recv())
                .await
                .expect("the child sees the signal it was born after");
        });
        coordinator
            .shutdown_by(Instant::now() + Duration::from_secs(10))
            .await
            .expect("every task stopped");
        children.await.expect("the child task");
    }
}
