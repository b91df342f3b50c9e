//! The HTTP API: what a dashboard, the app's front end, Prometheus and probes ask of the daemon.
//!
//! It sits beside the pipeline, never in it: reads go to the store's query side ([`Query`]), live
//! streams read the tap's lossy broadcast, and `POST /api/events` is one more source that follows
//! the socket's rule (admitted to the memory budget before every read, answered once durable).
//! Areas live in files of their own: [`logs`] (listings), [`streams`] (SSE), [`stats`], [`ingest`],
//! [`health`], [`metrics`]; [`access`] holds the token, size limits and CORS; [`error`] the one
//! JSON error shape.
//!
//! The server is a producer in the lifecycle: at shutdown it stops accepting, ends streams, lets
//! in-flight requests finish for a short grace, and gives up its pipeline sender.

pub mod access;
mod alerts;
mod error;
mod health;
mod ingest;
mod logs;
pub mod metrics;
mod page;
mod params;
pub(crate) mod reads;
mod serve;
mod stats;
mod streams;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::shutdown::CancellationToken;

use crate::event::NaiveZone;
use crate::monitor::silences::Silences;
use crate::monitor::Monitor;
use crate::notify::Notifier;
use crate::pipeline::memory::MemoryBudget;
use crate::pipeline::tap::Tap;
use crate::problems::Problems;
use crate::shutdown::Shutdown;
use crate::source::Ingest;
use crate::store::AnyStore;
use crate::telemetry::Counters;
use crate::units::{ByteSize, HumanDuration};

pub use access::Access;
pub use error::ApiError;

/// The variable that may hold the token instead of the file.
pub const TOKEN_ENV: &str = "LNGPT_COLLECTOR_API_TOKEN";

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub enabled: bool,
    /// `host:port` (loopback unless a token is set), or `unix:/path/to/api.sock`; or a list of them.
    pub listen: ListenList,
    /// Bearer token every request must carry; required to listen beyond loopback.
    pub token: Option<String>,
    /// Origins allowed to call the API from a browser; empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Names a request's `Host` may give besides the listen addresses, `localhost`, `127.0.0.1`
    /// and `[::1]` (a name a proxy or another container uses); anything else is refused, so a
    /// web page that rebinds its own name to this machine cannot read the API.
    pub allowed_hosts: Vec<String>,
    /// HTTP connections open at once (all listen addresses); also kept below the open-files
    /// limit together with `socket.max_connections`.
    pub max_connections: usize,
    /// A request's headers must have arrived this long after the connection opened or its last
    /// answer (hyper's timer: a keep-alive connection waiting for its next request too).
    pub header_timeout: HumanDuration,
    /// An upload that sends nothing for this long is answered 408 and let go.
    pub body_timeout: HumanDuration,
    /// A connection with no request being handled and nothing sent or received for this long (an
    /// answer its client stopped reading) is closed.
    pub idle_timeout: HumanDuration,
    /// A store query running longer is cancelled and answered with 503; a stream's replay waits
    /// at most this long for the outbox to drain.
    pub query_timeout: HumanDuration,
    /// Longest accepted query string.
    pub max_query_bytes: usize,
    /// Largest `POST /api/events` body.
    pub max_body_bytes: ByteSize,
    /// Live streams open at once (all SSE routes together).
    pub max_stream_clients: usize,
    /// Comment line sent on idle streams, so proxies and browsers keep them open.
    pub keep_alive: HumanDuration,
    /// Listings count matches exactly up to this many; past it `total` is a lower bound.
    pub count_limit: u64,
    /// Events a stream resumed with `Last-Event-ID` replays from the store at most.
    pub max_replay: usize,
    /// The most a listing's page or a stream's replay sends (their documents' JSON): a page stops
    /// there with `next_cursor`, a replay sends the newest that fit and counts the rest as skipped.
    pub max_response_bytes: ByteSize,
    /// Memory that heavy reads (listings, replays, statistics) hold at once, all of them together;
    /// apart from `pipeline.memory_budget`, which ingest keeps for itself.
    pub read_memory: ByteSize,
    /// How much lower than the daemon's the CPU priority (nice) of the streams' thread is, so
    /// that ingest wins when the cores are short; 0 runs streams with the rest of the daemon.
    pub stream_nice: u8,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: ListenList(vec!["127.0.0.1:8787".into()]),
            token: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_connections: 512,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            query_timeout: HumanDuration(Duration::from_secs(10)),
            max_query_bytes: 8192,
            max_body_bytes: ByteSize(64 << 20),
            max_stream_clients: 64,
            keep_alive: HumanDuration(Duration::from_secs(15)),
            count_limit: 10_000,
            max_replay: 10_000,
            max_response_bytes: ByteSize(8 << 20),
            read_memory: ByteSize(32 << 20),
            stream_nice: 19,
        }
    }
}

/// `api.listen`: one address (a string, as before) or several (a list, or one string with commas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenList(pub Vec<String>);

impl Serialize for ListenList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ListenList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(s)) => Ok(ListenList(
                s.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
            )),
            Ok(OneOrMany::Many(v)) => Ok(ListenList(v)),
            Err(_) => Err(serde::de::Error::custom(
                "expected an address such as \"127.0.0.1:8787\", or a list such as [\"127.0.0.1:8787\", \"unix:/run/lngpt-collector/api.sock\"]",
            )),
        }
    }
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "http://{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ApiConfig {
    /// The token in force: an empty one counts as none.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// Every address of `api.listen`, or what is wrong with the first bad one.
    pub fn listen_on(&self) -> Result<Vec<Listen>, String> {
        if self.listen.0.is_empty() {
            return Err("is empty; expected an address such as \"127.0.0.1:8787\", or api.enabled = false".into());
        }
        let all = self
            .listen
            .0
            .iter()
            .map(|s| parse_listen(s))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in all.iter().enumerate() {
            if all[..i].contains(a) {
                return Err(format!("names {a} twice"));
            }
        }
        Ok(all)
    }

    pub fn validate(&self, p: &mut Problems) {
        if !self.enabled {
            return;
        }
        match self.listen_on() {
            Err(problem) => p.add("api.listen", problem),
            Ok(all) => {
                for on in all {
                    if let Listen::Tcp(addr) = on {
                        if !addr.ip().is_loopback() && self.token().is_none() {
                            p.add(
                                "api.listen",
                                format!(
                                    "is {addr}, which is not a loopback address, and no api.token is set: anyone who can reach it could read every stored message and send events; set api.token (or {TOKEN_ENV}), or listen on 127.0.0.1"
                                ),
                            );
                        }
                    }
                }
            }
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            let ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'));
            if !ok {
                p.add(
                    &format!("api.allowed_hosts[{i}]"),
                    format!("is {host:?}; expected a host name or address without a port, such as \"collector\" or \"10.0.0.5\""),
                );
            }
        }
        p.in_range("api.max_connections", self.max_connections, 1..=1_000_000);
        for (key, d) in [
            ("api.header_timeout", self.header_timeout),
            ("api.body_timeout", self.body_timeout),
            ("api.idle_timeout", self.idle_timeout),
        ] {
            p.duration_in(key, d, Duration::from_millis(100), Duration::from_secs(86_400));
        }
        if self.idle_timeout.0 <= self.keep_alive.0 {
            p.add(
                "api.idle_timeout",
                format!(
                    "is {}, not longer than api.keep_alive ({}): idle streams would be closed between their keep-alive comments; make it longer",
                    self.idle_timeout, self.keep_alive
                ),
            );
        }
        if let Some(token) = self.token() {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.add(
                    "api.token",
                    "is too short or holds spaces; expected at least 16 printable characters without spaces (e.g. from `openssl rand -hex 32`)",
                );
            }
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                p.add(
                    &format!("api.cors_origins[{i}]"),
                    format!("is {origin:?}; expected an origin such as \"https://novel.example.com\" (scheme and host, no path), or \"*\""),
                );
            }
        }
        p.duration_in(
            "api.query_timeout",
            self.query_timeout,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        p.in_range("api.max_query_bytes", self.max_query_bytes, 256..=1 << 20);
        p.size_in("api.max_body_bytes", self.max_body_bytes, 1024, 1 << 40);
        p.in_range("api.max_stream_clients", self.max_stream_clients, 0..=100_000);
        p.duration_in(
            "api.keep_alive",
            self.keep_alive,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        p.in_range("api.count_limit", self.count_limit, 0..=100_000_000);
        p.in_range("api.max_replay", self.max_replay, 0..=1_000_000);
        p.size_in("api.max_response_bytes", self.max_response_bytes, 1024, 1 << 34);
        p.size_in("api.read_memory", self.read_memory, 64 * 1024, 1 << 36);
        p.in_range("api.stream_nice", self.stream_nice, 0..=19);
    }
}

/// One address of `api.listen`.
fn parse_listen(s: &str) -> Result<Listen, String> {
    let s = s.trim();
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("is {s:?}; expected a path after \"unix:\""));
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)),
        None => s.parse::<SocketAddr>().ok(),
    };
    addr.map(Listen::Tcp).ok_or_else(|| {
        format!("is {s:?}; expected an address and port such as \"127.0.0.1:8787\" or \"[::1]:8787\", or \"unix:/run/lngpt-collector/api.sock\"")
    })
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    inner: Arc<Shared>,
}

struct Shared {
    store: AnyStore,
    tap: Tap,
    config: ApiConfig,
    /// Taken at shutdown: requests that hold a clone finish, new ones are refused.
    ingest: Mutex<Option<Arc<IngestGate>>>,
    streams: Arc<Semaphore>,
    /// Cancelled once the daemon is stopping: streams end, uploads stop reading.
    stopping: CancellationToken,
    metrics: metrics::Metrics,
    monitor: Monitor,
    /// Whether the monitor's task refreshes the budget (else `/api/budget` reads it per request).
    monitor_running: bool,
    silences: Silences,
    /// How times without an offset in parameters are read (`naive_timezone`).
    naive: NaiveZone,
    /// One formatter per streamed collection, shared by its clients.
    hubs: streams::Hubs,
    /// Where the hubs and the stream clients' tasks run (see `api.stream_nice`).
    stream_tasks: tokio::runtime::Handle,
    host: String,
    /// The outbox's cap, to tell whether it still takes events (MongoDB only).
    outbox_cap: Option<u64>,
    memory: MemoryBudget,
    line_timeout: Duration,
    /// The heavy reads' own memory budget (`api.read_memory`).
    reads: reads::Reads,
}

/// The HTTP source and a completion guard: shutdown's producer phase waits until every upload
/// that holds one has answered.
struct IngestGate {
    ingest: Ingest,
    _done: Shutdown,
}

impl Api {
    fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// Runs a store query under `query_timeout`; past it the query is dropped and the caller gets
    /// a 503 that says so.
    async fn timed<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
    ) -> Result<T, ApiError> {
        let limit = self.inner.config.query_timeout;
        match tokio::time::timeout(limit.0, query).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => Err(ApiError::unavailable(format!(
                "the query ran longer than api.query_timeout ({limit}) and was cancelled; narrow the time range or add filters"
            ))
            .with_code("query_timeout")),
        }
    }

    /// One piece of a heavy read: admitted to `api.read_memory` for what `q.max_bytes` allows
    /// (at most [`reads::PIECE_BYTES`]), read from the store in its turn and under
    /// `query_timeout`. The memory is held until the piece's bytes are written.
    async fn read_piece(
        &self,
        mut q: crate::store::query::FindQuery,
    ) -> Result<(crate::store::query::Found, reads::ReadMemory), ApiError> {
        use crate::store::query::Query;
        q.max_bytes = q.max_bytes.min(reads::PIECE_BYTES);
        let mut memory = self.inner.reads.admit(q.max_bytes).await;
        let found = {
            let _turn = self.inner.reads.query_turn().await;
            self.timed(self.store().find(q)).await?
        };
        memory.resize(found.bytes);
        Ok((found, memory))
    }

    fn is_stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }
}

/// Everything the server needs from the daemon.
pub struct Parts {
    pub store: AnyStore,
    pub tap: Tap,
    /// The `http` source; None: `POST /api/events` answers 503.
    pub ingest: Option<Ingest>,
    pub memory: MemoryBudget,
    pub counters: Arc<Counters>,
    pub outbox_cap: Option<u64>,
    pub monitor: Monitor,
    pub monitor_running: bool,
    pub silences: Silences,
    /// Webhook delivery counters for `/metrics`.
    pub notifier: Notifier,
    pub naive: NaiveZone,
    /// `socket.line_timeout`: how long an upload's line may pause while memory is short.
    pub line_timeout: Duration,
}

/// The bound listeners (one per address of `api.listen`), ready to serve.
pub struct Server {
    bound: Vec<Bound>,
}

struct Bound {
    listener: Listener,
    on: Listen,
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    /// The file is `None` for a socket systemd passed: systemd owns it, so it outlives the daemon.
    Unix(tokio::net::UnixListener, Option<crate::source::socket::SocketFile>),
}

impl Server {
    /// Binds every address of `api.listen`; a Unix socket gets `unix_mode` and `unix_group` (the
    /// ingest socket's `socket.mode` and `socket.group`). Errors say what to change.
    pub fn bind(config: &ApiConfig, unix_mode: u32, unix_group: Option<&str>) -> Result<Server, String> {
        let all = config.listen_on().map_err(|p| format!("api.listen {p}"))?;
        let mut bound = Vec::new();
        for on in all {
            let listener = match &on {
                Listen::Tcp(addr) => {
                    let std = std::net::TcpListener::bind(addr).map_err(|e| {
                        format!("cannot listen on {addr} for the HTTP API: {e}; set api.listen to a free address, or api.enabled = false")
                    })?;
                    std.set_nonblocking(true).map_err(|e| e.to_string())?;
                    Listener::Tcp(tokio::net::TcpListener::from_std(std).map_err(|e| e.to_string())?)
                }
                Listen::Unix(path) => {
                    let (std, file) = crate::source::socket::bind_unix(path, unix_mode, unix_group, "api.listen")
                        .map_err(|e| format!("the HTTP API: {e}"))?;
                    Listener::Unix(
                        tokio::net::UnixListener::from_std(std).map_err(|e| e.to_string())?,
                        Some(file),
                    )
                }
            };
            bound.push(Bound { listener, on });
        }
        Ok(Server { bound })
    }

    /// Serves on a socket systemd passed (TCP or Unix), which is kept, not removed, at exit.
    pub fn activated(passed: crate::systemd::PassedListener) -> Result<Server, String> {
        use crate::systemd::PassedListener;
        let bound = match passed {
            PassedListener::Tcp(std) => {
                std.set_nonblocking(true).map_err(|e| e.to_string())?;
                let addr = std.local_addr().map_err(|e| e.to_string())?;
                let listener = tokio::net::TcpListener::from_std(std).map_err(|e| e.to_string())?;
                Bound {
                    listener: Listener::Tcp(listener),
                    on: Listen::Tcp(addr),
                }
            }
            PassedListener::Unix(std) => {
                std.set_nonblocking(true).map_err(|e| e.to_string())?;
                let path = std
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(PathBuf::from))
                    .unwrap_or_default();
                let listener = tokio::net::UnixListener::from_std(std).map_err(|e| e.to_string())?;
                Bound {
                    listener: Listener::Unix(listener, None),
                    on: Listen::Unix(path),
                }
            }
        };
        Ok(Server { bound: vec![bound] })
    }

    /// Where it listens, with the port the system chose for port 0.
    pub fn local(&self) -> Vec<Listen> {
        self.bound
            .iter()
            .map(|b| match &b.listener {
                Listener::Tcp(l) => l.local_addr().map(Listen::Tcp).unwrap_or_else(|_| b.on.clone()),
                Listener::Unix(..) => b.on.clone(),
            })
            .collect()
    }

    /// Serves until `shutdown`; then stops accepting, ends streams and uploads, and returns once
    /// in-flight requests are done or `grace` has passed.
    pub async fn run(
        self,
        config: ApiConfig,
        parts: Parts,
        access: access::Access,
        mut shutdown: Shutdown,
        grace: Duration,
    ) {
        let stopping = shutdown.token();
        let streams = Arc::new(Semaphore::new(config.max_stream_clients));
        let main = tokio::runtime::Handle::current();
        let stream_runtime = match config.stream_nice {
            0 => None,
            nice => streams::StreamRuntime::start(nice)
                .inspect_err(|e| {
                    tracing::warn!("streams run at the daemon's priority: cannot start their runtime: {e}")
                })
                .ok(),
        };
        let stream_tasks = stream_runtime
            .as_ref()
            .and_then(|r| r.handle())
            .unwrap_or_else(|| main.clone());
        let mut metrics = metrics::Metrics::new(
            parts.counters.clone(),
            parts.memory.clone(),
            parts.store.clone(),
            streams.clone(),
            config.max_stream_clients,
        );
        metrics.register(Box::new(metrics::MonitorMetrics::new(
            parts.monitor.clone(),
            parts.notifier.clone(),
        )));
        let reads = reads::Reads::new(config.read_memory.0 as usize);
        metrics.register(Box::new(metrics::ReadMetrics(reads.clone())));
        let ingest = parts.ingest.map(|ingest| {
            Arc::new(IngestGate {
                ingest,
                _done: shutdown.child("HTTP upload"),
            })
        });
        let api = Api {
            inner: Arc::new(Shared {
                store: parts.store,
                tap: parts.tap,
                ingest: Mutex::new(ingest),
                streams,
                stopping,
                metrics,
                monitor: parts.monitor,
                monitor_running: parts.monitor_running,
                silences: parts.silences,
                naive: parts.naive,
                hubs: streams::Hubs::new(parts.memory.clone()),
                stream_tasks,
                host: crate::store::document::hostname(),
                outbox_cap: parts.outbox_cap,
                memory: parts.memory.clone(),
                line_timeout: parts.line_timeout,
                reads,
                config,
            }),
        };
        let app = router(api.clone(), access);
        let stop_signal = {
            let api = api.clone();
            async move {
                shutdown.recv().await;
                // Uploads under way keep their own clone; new ones are refused.
                if let Ok(mut gate) = api.inner.ingest.lock() {
                    gate.take();
                }
                // Keep the guard (and so the producer phase) until the server has wound down.
                shutdown
            }
        };
        // Stream connections move to the streams' runtime, if they have one of their own.
        let streams_to = stream_runtime.as_ref().and_then(|r| r.handle());
        let guard = Arc::new(serve::Guard::new(
            api.config().max_connections,
            api.config().header_timeout.0,
            api.config().idle_timeout.0,
        ));
        let mut servers = tokio::task::JoinSet::new();
        for bound in self.bound {
            let (app, streams_to, guard, stop) = (
                app.clone(),
                streams_to.clone(),
                guard.clone(),
                api.inner.stopping.clone(),
            );
            match bound.listener {
                Listener::Tcp(l) => servers.spawn(serve::serve(l, app, streams_to, guard, stop)),
                Listener::Unix(l, file) => servers.spawn(async move {
                    serve::serve(l, app, streams_to, guard, stop).await;
                    drop(file);
                }),
            };
        }
        let served = async move { while servers.join_next().await.is_some() {} };
        tokio::pin!(served);
        tokio::select! {
            _ = &mut served => {}
            held = stop_signal => {
                // Stopping: give in-flight requests `grace` to finish; a stalled client does not
                // hold up the daemon's shutdown past it.
                let _ = tokio::time::timeout(grace, &mut served).await;
                drop(held);
            }
        }
        drop(stream_runtime);
    }
}

fn router(api: Api, access: access::Access) -> Router {
    let listings = logs::LISTINGS.iter().fold(Router::new(), |r, listing| {
        r.route(listing.path, get(logs::list(listing)))
    });
    let streams = streams::STREAMS.iter().fold(Router::new(), |r, stream| {
        r.route(stream.path, get(streams::subscribe(stream)))
    });
    let cors = access::cors(&access);
    Router::new()
        .merge(listings)
        .merge(streams)
        .route("/api/stats/cost", get(stats::cost))
        .route("/api/stats/errors", get(stats::errors))
        .route("/api/stats/performance", get(stats::performance))
        .route("/api/stats/recent", get(alerts::recent))
        .route("/api/collectors", get(alerts::collectors))
        .route("/api/events", post(ingest::post_events))
        .route("/api/budget", get(alerts::budget))
        .route("/api/alerts/active", get(alerts::active))
        .route(
            "/api/alerts/silences",
            get(alerts::list_silences).post(alerts::add_silence),
        )
        .route("/api/alerts/silences/{id}", delete(alerts::expire_silence))
        .route("/api/config/monitor", get(alerts::monitor_config))
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(access.clone(), access::check))
        // The page holds no data and a browser cannot send the token when it navigates: it is
        // served without it, and asks for the token for its API calls.
        .merge(page::router())
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(access, access::host))
}
