//! Graceful shutdown, made explicit (the mini-redis pattern).
//!
//! A broadcast tells every task to stop; each task holds a clone of a completion sender and drops
//! it when done, so the caller knows all tasks have finished when the receiver sees the channel close.

use tokio::sync::{broadcast, mpsc};

/// Listens for the stop signal. Cheap to clone from a [`Coordinator`].
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
    /// Dropped with the task, which is how the coordinator learns that the task has finished.
    _done: mpsc::Sender<()>,
}

impl Shutdown {
    /// Waits for the stop signal; returns at once if it was already received.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Closed or lagged both mean the coordinator is stopping.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }

    /// Whether the stop signal has come, without waiting: for loops that check between steps.
    pub fn is_stopping(&mut self) -> bool {
        if !self.is_shutdown {
            use broadcast::error::TryRecvError;
            if !matches!(self.notify.try_recv(), Err(TryRecvError::Empty)) {
                self.is_shutdown = true;
            }
        }
        self.is_shutdown
    }

    /// A listener for a sub-task, tied to the same completion.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            is_shutdown: self.is_shutdown,
            notify: self.notify.resubscribe(),
            _done: self._done.clone(),
        }
    }
}

/// Owns the signal and the completion channel of one group of tasks.
pub struct Coordinator {
    notify: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

impl Coordinator {
    pub fn new() -> Coordinator {
        let (notify, _) = broadcast::channel(1);
        let (done_tx, done_rx) = mpsc::channel(1);
        Coordinator {
            notify,
            done_tx,
            done_rx,
        }
    }

    pub fn listener(&self) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify: self.notify.subscribe(),
            _done: self.done_tx.clone(),
        }
    }

    /// Signals every listener and waits until all of them (and their children) are dropped.
    pub async fn shutdown(self) {
        let Coordinator {
            notify,
            done_tx,
            mut done_rx,
        } = self;
        let _ = notify.send(());
        drop(done_tx);
        let _ = done_rx.recv().await;
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
