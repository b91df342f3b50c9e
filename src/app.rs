//! The daemon's lifecycle: [`App::start`] opens state and store, binds listeners and starts every
//! task; [`Running::until_stopped`] serves until a stop signal (or a task that died); and
//! [`Running::shutdown`] stops in three phases, all under one deadline:
//!
//! 1. **producers** — sources stop reading; each connection waits until what it accepted is durable
//!    and answers its client;
//! 2. **pipeline** — with every sender gone, the batcher flushes and the writer finishes;
//! 3. **background** — outbox forwarder, retention, checkpoint saving, summaries stop.
//!
//! Long-lived tasks run under a [`Supervisor`]: one that ends before shutdown, or panics, is logged,
//! stops the daemon and fails its exit code, so systemd restarts it instead of it running half-dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, Sources};
use crate::event::{EventId, Parser, Source};
use crate::monitor::alerts::{AlertSink, Fanout, LogSink};
use crate::monitor::silences::{Silenced, Silences};
use crate::monitor::Monitor;
use crate::notify::{Notifier, Options as NotifyOptions};
use crate::pipeline::memory::MemoryBudget;
use crate::pipeline::tap::Tap;
use crate::pipeline::{pipeline, WriterReport};
use crate::redact::Redactor;
use crate::shutdown::signals::{Signal, Signals};
use crate::shutdown::Coordinator;
use crate::source::file::checkpoint::Checkpoints;
use crate::source::file::FileSource;
use crate::source::socket::{Limits, SocketSource};
use crate::source::Ingest;
use crate::state_dir::StateDir;
use crate::store::outbox::Outbox;
use crate::store::{retention, AnyStore, EmbeddedStore, MongoStore, Store};
use crate::systemd;
use crate::telemetry::{self, Counters};
use crate::units::HumanDuration;

/// File descriptors kept free for the store, tailed files and the daemon's own needs.
const RESERVED_FDS: u64 = 128;

pub struct App;

/// The daemon, started.
pub struct Running {
    config: Config,
    /// The file SIGHUP reads again (None: started on built-in defaults).
    /// Read again on SIGHUP.
    config_sources: Sources,
    sources: Coordinator,
    background: Coordinator,
    batcher: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<WriterReport>,
    supervisor: Supervisor,
    store: AnyStore,
    memory: MemoryBudget,
    counters: Arc<Counters>,
    checkpoints: Arc<Checkpoints>,
    monitor: Monitor,
    notifier: Notifier,
    redactor: Arc<Redactor>,
    prices: Arc<arc_swap::ArcSwap<crate::event::prices::PriceTable>>,
    /// The API's access rules (token, hosts, origins), swapped on SIGHUP; None with the API off.
    access: Option<crate::api::Access>,
    _state: StateDir,
}

/// Why the daemon stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Signal(&'static str),
    /// A supervised task ended before it was asked to.
    TaskFailed(String),
}

/// How the shutdown went; the exit code follows from it.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Accepted events not known to be durable at exit.
    pub not_stored: u64,
    /// Tasks that failed (panicked or ended early).
    pub failed_tasks: usize,
    pub deadline_passed: bool,
}

impl ShutdownReport {
    pub fn clean(&self) -> bool {
        self.not_stored == 0 && self.failed_tasks == 0 && !self.deadline_passed
    }
}

impl App {
    /// Opens the state directory and the store, binds the listeners and starts every task. When it
    /// returns, the daemon accepts events.
    pub async fn start(config: Config, config_sources: Sources) -> Result<Running, String> {
        // State files hold every message: not readable by other users, whatever the caller's umask.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
        let state = StateDir::open(&config.state_dir)?;
        EventId::set_installation(state.installation());
        let fd_limit = raise_fd_limit();
        let redactor = Arc::new(Redactor::new(&config.redact)?);
        let prices = Arc::new(arc_swap::ArcSwap::from_pointee(config.prices.clone()));
        let naive = Arc::new(crate::event::NaiveZone::named(&config.naive_timezone)?);
        let counters = Arc::new(Counters::default());
        let background = Coordinator::new();
        let mut supervisor = Supervisor::default();
        let store = open_store(&config, &counters, &redactor, &background).await?;
        // The rest of the state file is opened before any listener, so a client that can connect
        // finds the daemon fully started.
        let notifier = Notifier::open(
            &config.database_path(),
            &config.webhook,
            NotifyOptions {
                speech: crate::notify::render::Speech {
                    lang: config.monitor.language,
                    // Checked by the configuration's validation.
                    zone: crate::monitor::budget::time_zone(&config.budget.timezone).unwrap_or(jiff::tz::TimeZone::UTC),
                },
                synchronous: config.embedded.synchronous,
            },
        )?;
        let silences = Silences::open(&config.database_path(), config.embedded.synchronous)?;
        let monitor = Monitor::new(
            config.monitor.clone(),
            config.budget.clone(),
            crate::store::document::hostname(),
        );
        let observers: Vec<Arc<dyn crate::pipeline::tap::Observer>> = if config.monitor.enabled {
            vec![Arc::new(monitor.clone())]
        } else {
            Vec::new()
        };
        let tap = Tap::new(observers, 16);
        let parts = pipeline(&config.pipeline, store.clone(), counters.clone(), tap.clone());
        let sender = parts.sender;
        let memory = parts.memory;
        let parts_progress = parts.progress.clone();
        let batcher = tokio::spawn(parts.batcher.run());
        let writer = tokio::spawn(parts.writer.run());

        let sources = Coordinator::new();
        let mut activated = systemd::Activated::take();
        // Socket and HTTP connections share the open-files limit: both caps fit under it together.
        let caps = cap_connections(
            if config.socket.enabled {
                config.socket.max_connections
            } else {
                0
            },
            if config.api.enabled {
                config.api.max_connections
            } else {
                0
            },
            fd_limit,
        );
        if config.socket.enabled {
            let path = config.socket_path();
            let mode = config.socket.mode_bits().unwrap_or(0o660);
            let socket = match activated.unix_listener(systemd::SOCKET_NAME)? {
                Some(listener) => SocketSource::activated(listener)?,
                None => SocketSource::bind(&path, mode, config.socket.group.as_deref())?,
            };
            let ingest = Ingest::new(
                Parser::new(redactor.clone())
                    .with_naive_timezone(naive.clone())
                    .with_max_clock_skew(config.max_clock_skew.as_millis_i64()),
                prices.clone(),
                sender.clone(),
                counters.clone(),
                Source::from("socket"),
                config.socket.max_line_bytes,
            );
            let max_connections = caps.socket;
            let limits = Limits {
                max_connections,
                idle_timeout: config.socket.idle_timeout.0,
                line_timeout: config.socket.line_timeout.0,
            };
            tracing::info!(
                "listening on unix socket {} ({}, at most {max_connections} clients)",
                socket.path().display(),
                if activated.is_empty() {
                    format!("mode {mode:04o}")
                } else {
                    "passed by systemd".to_string()
                }
            );
            supervisor.spawn(
                "socket listener",
                socket.run(ingest, limits, sources.listener("socket listener")),
            );
        }
        let checkpoints = Arc::new(Checkpoints::load(&config.state_dir));
        for entry in &config.file {
            let ingest = Ingest::new(
                Parser::new(redactor.clone())
                    .with_naive_timezone(naive.clone())
                    .with_max_clock_skew(config.max_clock_skew.as_millis_i64()),
                prices.clone(),
                sender.clone(),
                counters.clone(),
                Source::from(entry.path.as_str()),
                entry.max_line_bytes,
            );
            FileSource::new(entry.clone(), ingest, checkpoints.clone())
                .map_err(|e| format!("cannot tail {}: {e}", entry.path))?
                .spawn(sources.listener("file tailer"), tokio::runtime::Handle::current())
                .map_err(|e| format!("cannot start the file tailer for {}: {e}", entry.path))?;
        }
        if !config.file.is_empty() {
            supervisor.spawn(
                "checkpoint saver",
                save_checkpoints_periodically(checkpoints.clone(), background.listener("checkpoint saver")),
            );
        }
        // Deliveries go on while the pipeline drains; they stop with the background tasks.
        supervisor.spawn(
            "webhook delivery",
            notifier.clone().run(background.listener("webhook delivery")),
        );
        if config.monitor.enabled {
            // A producer (it writes `api_metrics` through the pipeline), so it stops with the sources.
            let webhooks = Silenced {
                silences: silences.clone(),
                inner: notifier.clone(),
            };
            let sink: Arc<dyn AlertSink> = Arc::new(Fanout(vec![
                Arc::new(LogSink(config.monitor.language)),
                Arc::new(webhooks),
            ]));
            supervisor.spawn(
                "monitor",
                monitor.clone().run(
                    store.clone(),
                    sender.clone(),
                    sink,
                    format!("{:016x}", state.installation()),
                    sources.listener("monitor"),
                ),
            );
        }
        let mut access = None;
        if config.api.enabled {
            let server = match activated.listener(systemd::API_NAME)? {
                Some(passed) => crate::api::Server::activated(passed)?,
                None => crate::api::Server::bind(
                    &config.api,
                    config.socket.mode_bits().unwrap_or(0o660),
                    config.socket.group.as_deref(),
                )?,
            };
            let ingest = Ingest::new(
                Parser::new(redactor.clone())
                    .with_naive_timezone(naive.clone())
                    .with_max_clock_skew(config.max_clock_skew.as_millis_i64()),
                prices.clone(),
                sender.clone(),
                counters.clone(),
                Source::from("http"),
                config.socket.max_line_bytes,
            );
            let parts = crate::api::Parts {
                store: store.clone(),
                tap,
                ingest: Some(ingest),
                memory: memory.clone(),
                counters: counters.clone(),
                outbox_cap: config.mongo().map(|m| m.max_outbox_bytes.0),
                monitor: monitor.clone(),
                monitor_running: config.monitor.enabled,
                silences: silences.clone(),
                notifier: notifier.clone(),
                naive: (*naive).clone(),
                line_timeout: config.socket.line_timeout.0,
            };
            let rules = crate::api::Access::new(&config.api, &server.local());
            access = Some(rules.clone());
            start_api(&config, server, parts, rules, caps.api, &sources, &mut supervisor);
        }
        // The sources hold the only senders now: when they are gone, the pipeline drains and ends.
        drop(sender);
        if let AnyStore::Embedded(embedded) = &store {
            supervisor.spawn(
                "retention",
                retention::run(
                    embedded.clone(),
                    config.retention.clone(),
                    background.listener("retention"),
                ),
            );
        }
        if !config.log.summary_interval.0.is_zero() {
            let summary_memory = memory.clone();
            supervisor.spawn(
                "summary",
                telemetry::summarize(
                    counters.clone(),
                    move || summary_memory.used(),
                    config.log.summary_interval.0,
                    background.listener("summary"),
                ),
            );
        }
        if !activated.leftover().is_empty() {
            tracing::warn!("systemd passed sockets nobody uses: {:?}", activated.leftover());
        }
        if let Some(interval) = sd_notify::watchdog_enabled() {
            supervisor.spawn(
                "watchdog",
                systemd::watchdog(
                    interval,
                    parts_progress.clone(),
                    counters.clone(),
                    background.listener("watchdog"),
                ),
            );
        }
        supervisor.spawn(
            "status",
            systemd::report_status(
                store.clone(),
                counters.clone(),
                Duration::from_secs(10),
                background.listener("status"),
            ),
        );
        systemd::status(&systemd::status_line(0.0, &crate::store::query::Query::health(&store)));
        systemd::ready();
        let b = &config.budget;
        let limit = |rmb: f64| match rmb {
            0.0 => "off".to_string(),
            _ => format!("¥{rmb}"),
        };
        tracing::info!(
            "lngpt-collector {} started: storing events in the {}; budget {} an hour, {} a day at {} RMB per USD{}; redaction {}; memory budget {}",
            env!("CARGO_PKG_VERSION"),
            store.describe(),
            limit(b.hourly_limit_rmb),
            limit(b.daily_limit_rmb),
            b.usd_to_rmb_rate,
            if config.api.enabled {
                ""
            } else {
                " (api.enabled = false: the app's check_cost_limits() cannot ask)"
            },
            if redactor.enabled() { "on" } else { "OFF" },
            config.pipeline.memory_budget,
        );
        Ok(Running {
            config,
            config_sources,
            sources,
            background,
            batcher,
            writer,
            supervisor,
            store,
            memory,
            counters,
            checkpoints,
            monitor,
            notifier,
            redactor,
            prices,
            access,
            _state: state,
        })
    }
}

impl Running {
    /// Serves until SIGTERM/SIGINT, or until a supervised task dies.
    pub async fn until_stopped(&mut self, signals: &mut Signals) -> Stop {
        loop {
            tokio::select! {
                signal = signals.recv() => match signal {
                    Some(Signal::Reload) => self.reload(),
                    Some(Signal::Stop(name)) => return Stop::Signal(name),
                    None => return Stop::Signal("signal thread ended"),
                },
                failed = self.supervisor.next_failure() => return Stop::TaskFailed(failed),
            }
        }
    }

    /// SIGHUP: reads the configuration file again and applies what can change while running — the
    /// log level, `[monitor]` and `[budget]` — and says what needs a restart. A file with problems
    /// changes nothing.
    fn reload(&mut self) {
        systemd::reloading();
        self.reload_config();
        systemd::reloaded();
    }

    fn reload_config(&mut self) {
        let Some(path) = self.config_sources.file.clone() else {
            tracing::info!("SIGHUP received: started without a configuration file, nothing to reload");
            return;
        };
        let new = match Config::load_from(&self.config_sources) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "SIGHUP: keeping the running configuration, {} has problems:\n{e}",
                    path.display()
                );
                return;
            }
        };
        let section = |c: &Config, name: &str| -> String {
            let value = serde_json::to_value(c).unwrap_or_default();
            value.get(name).map(|v| v.to_string()).unwrap_or_default()
        };
        let mut applied = vec!["[monitor]", "[budget]", "[prices]"];
        self.prices.store(Arc::new(new.prices.clone()));
        if new.log.level != self.config.log.level {
            match telemetry::set_level(&new.log.level) {
                Ok(()) => applied.push("log.level"),
                Err(e) => tracing::error!("SIGHUP: cannot change the log level: {e}"),
            }
        }
        self.monitor.reconfigure(new.monitor.clone(), new.budget.clone());
        if section(&self.config, "redact") != section(&new, "redact") {
            match self.redactor.reload(&new.redact) {
                Ok(()) => applied.push("[redact]"),
                Err(e) => tracing::error!("SIGHUP: keeping the previous redaction rules: {e}"),
            }
        }
        match self.notifier.reload(&new.webhook) {
            Ok(()) => applied.push("[[webhook]]"),
            Err(e) => tracing::error!("SIGHUP: keeping the previous webhooks: {e}"),
        }
        // [api]: the access rules apply at once (a leaked token is rotated by a reload); the rest
        // is bound into listeners and connections, and is named as needing a restart.
        let mut api_restart: Vec<String> = Vec::new();
        if section(&self.config, "api") != section(&new, "api") {
            if let Some(access) = &self.access {
                access.reload(&new.api);
                applied.push("api.token, api.allowed_hosts, api.cors_origins, api.max_query_bytes");
            }
            let live = |c: &Config| -> serde_json::Value {
                let mut v = serde_json::to_value(&c.api).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    for key in ["token", "allowed_hosts", "cors_origins", "max_query_bytes"] {
                        o.remove(key);
                    }
                }
                v
            };
            let (old, fresh) = (live(&self.config), live(&new));
            if let (Some(old), Some(fresh)) = (old.as_object(), fresh.as_object()) {
                api_restart = fresh
                    .iter()
                    .filter(|(k, v)| old.get(*k) != Some(*v))
                    .map(|(k, _)| format!("api.{k}"))
                    .collect();
            }
            if self.access.is_some() {
                let keep = self.config.api.clone();
                self.config.api = crate::api::ApiConfig {
                    token: new.api.token.clone(),
                    allowed_hosts: new.api.allowed_hosts.clone(),
                    cors_origins: new.api.cors_origins.clone(),
                    max_query_bytes: new.api.max_query_bytes,
                    ..keep
                };
            }
        }
        let needs_restart: Vec<&str> = [
            "state_dir",
            "socket",
            "file",
            "pipeline",
            "retention",
            "redact",
            "embedded",
            "mongodb",
        ]
        .into_iter()
        .filter(|name| section(&self.config, name) != section(&new, name))
        .collect();
        let log_format_changed = new.log.format != self.config.log.format;
        self.config.monitor = new.monitor;
        self.config.budget = new.budget;
        self.config.webhook = new.webhook;
        self.config.redact = new.redact;
        self.config.prices = new.prices;
        self.config.log.level = new.log.level;
        tracing::info!("SIGHUP: reloaded {}", applied.join(", "));
        if !needs_restart.is_empty() || log_format_changed || !api_restart.is_empty() {
            let mut names: Vec<String> = needs_restart.iter().map(|n| format!("[{n}]")).collect();
            if log_format_changed {
                names.push("log.format".into());
            }
            names.extend(api_restart);
            tracing::warn!("SIGHUP: changes to {} take effect after a restart", names.join(", "));
        }
    }

    /// Stops in three phases (producers → pipeline → background), all by `timeout`.
    pub async fn shutdown(self, stop: Stop, timeout: Duration, mut signals: Signals) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        systemd::stopping();
        if let AnyStore::Mongo(mongo) = &self.store {
            // Leave time to commit what MongoDB has not taken to the outbox.
            mongo.finish_by(deadline - timeout / 4);
        }
        let in_flight = self.memory.used();
        match &stop {
            Stop::Signal(name) => tracing::info!(
                "{name} received: no longer accepting events; storing what was accepted ({} of the memory budget in use; at most {})",
                crate::units::ByteSize(in_flight as u64),
                HumanDuration(timeout)
            ),
            Stop::TaskFailed(what) => tracing::error!("stopping: {what}"),
        }
        // A second Ctrl-C is a person who does not want to wait; a repeated SIGTERM is just repeated.
        let counters = self.counters.clone();
        tokio::spawn(async move {
            while let Some(signal) = signals.recv().await {
                if signal == Signal::Stop("SIGINT") {
                    let now = counters.snapshot();
                    tracing::error!(
                        "second SIGINT: exiting at once; up to {} accepted events are not stored",
                        now.accepted_not_stored()
                    );
                    std::process::exit(130);
                }
                tracing::info!("{signal:?} received again: still storing what was accepted");
            }
        });

        let mut report = ShutdownReport::default();
        let Running {
            sources,
            background,
            batcher,
            writer,
            mut supervisor,
            checkpoints,
            counters,
            config,
            store,
            ..
        } = self;
        if let Err(late) = sources.shutdown_by(deadline).await {
            report.deadline_passed = true;
            tracing::error!(
                "the shutdown deadline passed while these still took events in: {}",
                late.join(", ")
            );
        }
        let drained = tokio::time::timeout_at(deadline, async {
            if batcher.await.is_err() {
                tracing::error!("the batcher failed during shutdown");
                return Err(());
            }
            match writer.await {
                Ok(writer_report) => Ok(writer_report),
                Err(e) => {
                    tracing::error!("the writer failed during shutdown: {e}");
                    Err(())
                }
            }
        })
        .await;
        match drained {
            Ok(Ok(writer_report)) => report.not_stored += writer_report.lost,
            Ok(Err(())) => report.failed_tasks += 1,
            Err(_) => {
                report.deadline_passed = true;
                tracing::error!("the shutdown deadline passed while the pipeline was still storing");
            }
        }
        if let Err(late) = background.shutdown_by(deadline).await {
            report.deadline_passed = true;
            tracing::error!(
                "background tasks did not stop by the shutdown deadline: {}",
                late.join(", ")
            );
        }
        // Includes a task whose failure stopped the daemon.
        report.failed_tasks += supervisor.finish().await;
        // Everything acknowledged is durable now; the checkpoints may say so.
        if let Err(e) = checkpoints.save() {
            tracing::error!("cannot save the file checkpoints: {e}; files will be re-read from the last saved point (no duplicates are stored)");
        }
        let totals = counters.snapshot();
        report.not_stored = report.not_stored.max(totals.accepted_not_stored());
        if report.clean() {
            // Duplicates count as stored: a retry whose first attempt landed, or a line read twice.
            // What still waits now, not what was ever deferred (all of it may have been delivered).
            let outbox = match &store {
                AnyStore::Mongo(_) => format!(
                    ", {} events wait in the outbox for MongoDB",
                    crate::store::query::Query::health(&store).outbox_events
                ),
                AnyStore::Embedded(_) => String::new(),
            };
            tracing::info!(
                "stopped: {} events and {} rejects accepted since start, {} documents stored ({} of them were there already){outbox}",
                totals.events,
                totals.rejected,
                totals.stored.iter().sum::<u64>() + totals.duplicates,
                totals.duplicates,
            );
        } else {
            tracing::error!(
                "stopped with problems: {} accepted events not known to be stored{}{}; (pipeline.shutdown_timeout is {})",
                report.not_stored,
                if report.deadline_passed { ", the shutdown deadline passed" } else { "" },
                if report.failed_tasks > 0 {
                    format!(", {} tasks failed", report.failed_tasks)
                } else {
                    String::new()
                },
                config.pipeline.shutdown_timeout,
            );
        }
        report
    }
}

/// Long-lived tasks that must run until shutdown.
#[derive(Default)]
struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
    failed: usize,
}

impl Supervisor {
    fn spawn(&mut self, name: &'static str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for a task to end before shutdown: that is a failure, whatever the reason.
    async fn next_failure(&mut self) -> String {
        loop {
            match self.tasks.join_next_with_id().await {
                None => std::future::pending::<()>().await,
                Some(joined) => {
                    self.failed += 1;
                    return self.describe(joined);
                }
            }
        }
    }

    fn describe(&self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> String {
        match joined {
            Ok((id, ())) => format!(
                "the {} task ended unexpectedly",
                self.names.get(&id).unwrap_or(&"unnamed")
            ),
            Err(e) => format!("the {} task failed: {e}", self.names.get(&e.id()).unwrap_or(&"unnamed")),
        }
    }

    /// After shutdown: the tasks that panicked (those that ended normally were asked to).
    async fn finish(&mut self) -> usize {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            if joined.is_err() {
                tracing::error!("{}", self.describe(joined));
                self.failed += 1;
            }
        }
        self.tasks.abort_all();
        self.failed
    }
}

/// Serves the HTTP API as a producer: it stops with the sources, and its uploads hold pipeline
/// senders until answered.
fn start_api(
    config: &Config,
    server: crate::api::Server,
    parts: crate::api::Parts,
    access: crate::api::Access,
    max_connections: usize,
    sources: &Coordinator,
    supervisor: &mut Supervisor,
) {
    let on: Vec<String> = server.local().iter().map(ToString::to_string).collect();
    tracing::info!(
        "HTTP API listening on {} ({}, at most {max_connections} connections)",
        on.join(" and "),
        if config.api.token().is_some() {
            "token required"
        } else {
            "no token"
        }
    );
    let mut api_config = config.api.clone();
    api_config.max_connections = max_connections;
    // In-flight requests get a third of the shutdown deadline; storing what was accepted, the rest.
    let grace = config.pipeline.shutdown_timeout.0 / 3;
    supervisor.spawn(
        "HTTP API",
        server.run(api_config, parts, access, sources.listener("HTTP API"), grace),
    );
}

/// Checkpoints follow acknowledgements; saving them every second bounds what a crash re-reads.
async fn save_checkpoints_periodically(checkpoints: Arc<Checkpoints>, mut shutdown: crate::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.recv() => return,
        }
        let c = checkpoints.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || c.save()).await {
            tracing::warn!("cannot save the file checkpoints, will retry: {e}");
        }
    }
}

/// MongoDB when configured (the embedded file then holds only the outbox), else the embedded store.
async fn open_store(
    config: &Config,
    counters: &Arc<Counters>,
    redactor: &Arc<Redactor>,
    background: &Coordinator,
) -> Result<AnyStore, String> {
    let path = config.database_path();
    crate::state_dir::refuse_symlink(&path)?;
    let sync = config.embedded.synchronous;
    Ok(match config.mongo() {
        Some(mongo) => {
            let outbox = Outbox::open(&path, sync, mongo.max_outbox_bytes.0).map_err(|e| e.to_string())?;
            if outbox.events() > 0 {
                tracing::info!(
                    "{} events wait in the outbox from an earlier run; they go to MongoDB first",
                    outbox.events()
                );
            }
            // Checked by the configuration's validation.
            let naive = crate::event::NaiveZone::named(&config.naive_timezone).unwrap_or_default();
            let store = MongoStore::open(
                mongo,
                &config.retention,
                naive,
                outbox,
                counters.clone(),
                redactor.clone(),
                background.listener("MongoDB outbox forwarder"),
            )
            .await
            .map_err(|e| e.to_string())?;
            AnyStore::Mongo(store)
        }
        None => AnyStore::Embedded(EmbeddedStore::open(&path, sync).map_err(|e| e.to_string())?),
    })
}

/// Raises the soft open-files limit to the hard one (connections and tailed files each take one);
/// returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Connection caps that fit under the open-files limit together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caps {
    socket: usize,
    api: usize,
}

/// `socket.max_connections` and `api.max_connections`, lowered (in proportion) so that both
/// together leave descriptors for everything else: 1,100 idle HTTP connections once took every
/// descriptor and the socket's clients got "Too many open files".
fn cap_connections(socket: usize, api: usize, fd_limit: u64) -> Caps {
    let room = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .max(2);
    let total = socket.saturating_add(api);
    if total <= room {
        return Caps { socket, api };
    }
    let share = |n: usize| ((n as u128 * room as u128 / total.max(1) as u128) as usize).max(usize::from(n > 0));
    let caps = Caps {
        socket: share(socket),
        api: share(api),
    };
    tracing::warn!(
        "socket.max_connections ({socket}) and api.max_connections ({api}) together pass the open-files limit ({fd_limit}, {RESERVED_FDS} kept for files and the store): allowing {} socket clients and {} HTTP connections; raise LimitNOFILE= (or ulimit -n) to allow more",
        caps.socket,
        caps.api
    );
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_caps_fit_under_the_descriptor_limit_together() {
        assert_eq!(cap_connections(1024, 512, 65536), Caps { socket: 1024, api: 512 });
        let caps = cap_connections(1024, 512, 1024);
        assert!(caps.socket + caps.api <= 1024 - 128, "{caps:?}");
        assert!(caps.socket > caps.api && caps.api > 0, "{caps:?}");
        assert_eq!(cap_connections(1024, 0, 256).api, 0);
    }
}
