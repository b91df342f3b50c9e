//! `lngpt-collector`: command line and wiring. The parts live in the library; see `lib.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser as ClapParser, Subcommand};
use tokio::time::Instant;

use lngpt_collector::config::Config;
use lngpt_collector::event::{Parser, Source};
use lngpt_collector::pipeline::pipeline;
use lngpt_collector::redact::Redactor;
use lngpt_collector::shutdown::signals::{self, Signal};
use lngpt_collector::shutdown::Coordinator;
use lngpt_collector::source::file::checkpoint::Checkpoints;
use lngpt_collector::source::file::FileSource;
use lngpt_collector::source::socket::SocketSource;
use lngpt_collector::source::Ingest;
use lngpt_collector::store::outbox::Outbox;
use lngpt_collector::store::{retention, AnyStore, EmbeddedStore, MongoStore, Store};
use lngpt_collector::telemetry::{self, Counters};

const EXAMPLES: &str = "\
Examples:
  lngpt-collector run --config config.example.toml
  lngpt-collector check-config --config /etc/lngpt-collector/config.toml
  echo '{\"type\":\"log\",\"level\":\"INFO\",\"message\":\"hello\"}' | lngpt-collector send --socket ./data/collector.sock

Environment variables override the file: LNGPT_COLLECTOR_<SECTION>_<KEY> (e.g.
LNGPT_COLLECTOR_PIPELINE_MAX_BATCH=500), LNGPT_COLLECTOR_STATE_DIR, and LOG_LEVEL.";

#[derive(ClapParser)]
#[command(name = "lngpt-collector", version, about = "Collects an LLM app's logs, API costs and performance records into a store", after_help = EXAMPLES)]
struct Cli {
    /// Configuration file (TOML); without it, built-in defaults apply.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default when no command is given).
    Run,
    /// Validate the configuration and print it as it takes effect, secrets masked.
    CheckConfig,
    /// Send JSON lines from stdin to a running collector; exits 2 if any line was rejected.
    Send {
        /// The collector's socket; defaults to the configuration's socket path.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lngpt-collector: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config, cli.config),
        Command::CheckConfig => {
            println!("# configuration is valid; effective values (secrets masked):");
            print!("{}", config.to_masked_toml());
            ExitCode::SUCCESS
        }
        Command::Send { socket } => {
            let socket = socket.unwrap_or_else(|| config.socket_path());
            match lngpt_collector::send::send(&socket, &mut std::io::stdin().lock()) {
                Ok(ack) => {
                    eprintln!(
                        "lngpt-collector: {} events accepted, {} lines rejected (see api_rejects)",
                        ack.events, ack.rejected
                    );
                    if ack.rejected > 0 {
                        ExitCode::from(2)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("lngpt-collector: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Config::from_toml("", "(built-in defaults)", std::env::vars()).map_err(|e| e.to_string()),
    }
}

fn run(config: Config, path: Option<PathBuf>) -> ExitCode {
    telemetry::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collector")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(warning) = path.and_then(|p| config.secrets_readable_warning(&p)) {
        tracing::warn!("{warning}");
    }
    match runtime.block_on(daemon(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Checkpoints follow acknowledgements; saving them every second bounds what a crash re-reads.
async fn save_checkpoints_periodically(
    checkpoints: Arc<Checkpoints>,
    mut shutdown: lngpt_collector::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
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
            let store = MongoStore::open(
                mongo,
                &config.retention,
                outbox,
                counters.clone(),
                redactor.clone(),
                background.listener(),
            )
            .await
            .map_err(|e| e.to_string())?;
            AnyStore::Mongo(store)
        }
        None => AnyStore::Embedded(EmbeddedStore::open(&path, sync).map_err(|e| e.to_string())?),
    })
}

async fn daemon(config: Config) -> Result<(), String> {
    let mut signals = signals::listen().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        format!(
            "cannot create state_dir {}: {e}; create it or point state_dir elsewhere",
            config.state_dir.display()
        )
    })?;
    let redactor = Arc::new(Redactor::new(&config.redact)?);
    let counters = Arc::new(Counters::default());
    let background = Coordinator::new();
    let store = open_store(&config, &counters, &redactor, &background).await?;
    let (sender, batcher, writer) = pipeline(&config.pipeline, store.clone(), counters.clone());
    let gauge = sender.gauge();
    let batcher = tokio::spawn(batcher.run());
    let writer = tokio::spawn(writer.run());

    let sources = Coordinator::new();
    if config.socket.enabled {
        let path = config.socket_path();
        let mode = config.socket.mode_bits().unwrap_or(0o660);
        let socket = SocketSource::bind(&path, mode, config.socket.group.as_deref())?;
        let ingest = Ingest::new(
            Parser::new(redactor.clone()),
            sender.clone(),
            counters.clone(),
            Source::from("socket"),
            config.socket.max_line_bytes,
        );
        tracing::info!(
            "listening on unix socket {} (mode {:04o})",
            socket.path().display(),
            mode
        );
        tokio::spawn(socket.run(ingest, sources.listener()));
    }
    let checkpoints = Arc::new(Checkpoints::load(&config.state_dir));
    for entry in &config.file {
        let ingest = Ingest::new(
            Parser::new(redactor.clone()),
            sender.clone(),
            counters.clone(),
            Source::from(entry.path.as_str()),
            entry.max_line_bytes,
        );
        FileSource::new(entry.clone(), ingest, checkpoints.clone())
            .spawn(sources.listener(), tokio::runtime::Handle::current())
            .map_err(|e| format!("cannot start the file tailer for {}: {e}", entry.path))?;
    }
    if !config.file.is_empty() {
        tokio::spawn(save_checkpoints_periodically(
            checkpoints.clone(),
            background.listener(),
        ));
    }
    drop(sender);
    if let AnyStore::Embedded(embedded) = &store {
        tokio::spawn(retention::run(
            embedded.clone(),
            config.retention.clone(),
            background.listener(),
        ));
    }
    let summary_gauge = gauge.clone();
    tokio::spawn(telemetry::summarize(
        counters.clone(),
        move || summary_gauge.queued(),
        config.log.summary_interval.0,
        background.listener(),
    ));
    tracing::info!(
        "lngpt-collector {} started: storing events in the {}; redaction {}",
        env!("CARGO_PKG_VERSION"),
        store.describe(),
        if redactor.enabled() { "on" } else { "OFF" }
    );

    let stop = loop {
        match signals.recv().await {
            Some(Signal::Reload) => tracing::warn!("SIGHUP received: reloading the configuration is not supported yet; restart the service to apply changes"),
            Some(Signal::Stop(name)) => break name,
            None => break "signal thread ended",
        }
    };
    let deadline = Instant::now() + config.pipeline.shutdown_timeout.0;
    if let AnyStore::Mongo(mongo) = &store {
        // Leave time to commit what MongoDB has not taken to the outbox.
        mongo.finish_by(deadline - config.pipeline.shutdown_timeout.0 / 4);
    }
    tracing::info!(
        "{stop} received: no longer accepting events; storing the {} queued (at most {})",
        gauge.queued(),
        config.pipeline.shutdown_timeout
    );
    // A second Ctrl-C is a person who does not want to wait; a repeated SIGTERM is just repeated.
    let second_gauge = gauge.clone();
    tokio::spawn(async move {
        while let Some(signal) = signals.recv().await {
            if signal == Signal::Stop("SIGINT") {
                tracing::error!(
                    "second SIGINT: exiting at once; {} accepted events are not stored",
                    second_gauge.queued()
                );
                std::process::exit(130);
            }
            tracing::info!(
                "{signal:?} received again: still storing the {} queued events",
                second_gauge.queued()
            );
        }
    });

    let drained = tokio::time::timeout_at(deadline, async {
        sources.shutdown().await;
        let _ = batcher.await;
        let _ = writer.await;
    })
    .await;
    background.shutdown().await;
    // Everything acknowledged is durable now; the checkpoints may say so.
    if let Err(e) = checkpoints.save() {
        tracing::error!("cannot save the file checkpoints: {e}; files will be re-read from the last saved point (no duplicates are stored)");
    }
    let totals = counters.snapshot();
    match drained {
        Ok(()) => {
            tracing::info!(
                "stopped: {} events and {} rejects accepted since start, {} documents stored",
                totals.events,
                totals.rejected,
                totals.stored.iter().sum::<u64>()
            );
            Ok(())
        }
        Err(_) => Err(format!(
            "pipeline.shutdown_timeout ({}) passed with {} accepted events not stored; they are lost",
            config.pipeline.shutdown_timeout,
            gauge.queued()
        )),
    }
}
