//! `lngpt-collector`: command line and wiring. The parts live in the library; see `lib.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser as ClapParser, Subcommand};

use lngpt_collector::app::App;
use lngpt_collector::config::{Config, Sources};
use lngpt_collector::notify;
use lngpt_collector::shutdown::signals;
use lngpt_collector::telemetry;

const EXAMPLES: &str = "\
Examples:
  lngpt-collector run --config config.example.toml
  lngpt-collector check-config --config /etc/lngpt-collector/config.toml
  echo '{\"type\":\"log\",\"level\":\"INFO\",\"message\":\"hello\"}' | lngpt-collector send --socket ./data/collector.sock
  lngpt-collector alert test --config /etc/lngpt-collector/config.toml --receiver ops

Environment variables override the file: LNGPT_COLLECTOR_<SECTION>_<KEY> (e.g.
LNGPT_COLLECTOR_PIPELINE_MAX_BATCH=500), and the app's own names (API_HOURLY_LIMIT_RMB,
API_DAILY_LIMIT_RMB, API_USD_TO_RMB_RATE, ENABLE_MONGODB, MONGODB_URI, MONGODB_DB_NAME, LOG_LEVEL,
LOG_FORMAT), also read from the app's .env with --env-file.";

#[derive(ClapParser)]
#[command(name = "lngpt-collector", version, about = "Collects an LLM app's logs, API costs and performance records into a store", after_help = EXAMPLES)]
struct Cli {
    /// Configuration file (TOML); without it, built-in defaults apply.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The app's .env file (python-dotenv syntax): its names set the limits, the rate and the
    /// store, under the process environment. Overrides the file's `env_file`.
    #[arg(long, global = true, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default when no command is given).
    Run,
    /// Validate the configuration and print it as it takes effect, secrets masked.
    CheckConfig {
        /// Print nothing when the configuration is valid (problems still go to stderr).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Send JSON lines from stdin to a running collector; exits 2 if any line was rejected.
    Send {
        /// The collector's socket; defaults to the configuration's socket path.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Alerts to webhooks.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Send a test alert to each [[webhook]] (or the named one) directly, and print what each
    /// answered; exits 1 if any failed.
    Test {
        /// Only the [[webhook]] with this name.
        #[arg(long, value_name = "NAME")]
        receiver: Option<String>,
    },
}

fn main() -> ExitCode {
    // `generate-docs DIR`: the man pages and completions, a packaging step. Taken before clap parses,
    // so it is in none of them (clap_complete lists even hidden subcommands), and it needs no
    // configuration: the packaging runs it on the build machine.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "generate-docs") {
        let [_, _, out] = &args[..] else {
            eprintln!("usage: lngpt-collector generate-docs DIR");
            return ExitCode::from(2);
        };
        let out = std::path::Path::new(out);
        return match generate_docs(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lngpt-collector: cannot write the docs into {}: {e}", out.display());
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let sources = Sources {
        file: cli.config.clone(),
        env_file: cli.env_file.clone(),
    };
    let config = match Config::load_from(&sources).map_err(|e| e.to_string()) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("lngpt-collector: configuration error: {line}");
            }
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config, sources),
        Command::CheckConfig { quiet } => {
            for warning in &config.provenance.warnings {
                eprintln!("lngpt-collector: warning: {warning}");
            }
            if !quiet {
                println!("# configuration is valid; effective values (secrets masked), each with where it came from:");
                print!("{}", config.to_masked_toml());
            }
            ExitCode::SUCCESS
        }
        Command::Alert {
            command: AlertCommand::Test { receiver },
        } => alert_test(&config, receiver.as_deref()),
        Command::Send { socket } => {
            let socket = socket.unwrap_or_else(|| config.socket_path());
            match lngpt_collector::send::send(&socket, &mut std::io::stdin().lock()) {
                Ok(ack) => {
                    println!(
                        "{} events accepted and stored, {} lines rejected{}",
                        ack.events,
                        ack.rejected,
                        if ack.rejected > 0 {
                            " (their reasons are in api_rejects)"
                        } else {
                            ""
                        }
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

/// `alert test`: one line per receiver, what it answered and how the request was signed.
fn alert_test(config: &Config, receiver: Option<&str>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lngpt-collector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcomes = runtime.block_on(notify::send_test_alerts(
        &config.webhook,
        receiver,
        lngpt_collector::notify::render::Speech {
            lang: config.monitor.language,
            zone: lngpt_collector::monitor::budget::time_zone(&config.budget.timezone)
                .unwrap_or(jiff::tz::TimeZone::UTC),
        },
    ));
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lngpt-collector: {e}");
            return ExitCode::FAILURE;
        }
    };
    for o in &outcomes {
        println!(
            "{} ({}, {}): {}\n  answer: {}\n  signature: {}",
            o.receiver,
            o.format.name(),
            o.url,
            if o.ok { "OK" } else { "FAILED" },
            o.answer,
            o.signature
        );
        if let Some(problem) = &o.problem {
            println!("  problem: {problem}");
        }
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        eprintln!(
            "lngpt-collector: {failed} of {} webhooks failed the test",
            outcomes.len()
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `generate-docs DIR`: `DIR/man/lngpt-collector.1` and one page per subcommand
/// (`lngpt-collector-run.1`, …), and `DIR/completions/` for bash, zsh and fish, all from the clap
/// definitions above, so they never drift from `--help`.
fn generate_docs(out: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    // Without clap's `help` pseudo-commands, which would each get a page (12 of 17) and show in
    // the completions; `--help` stays.
    fn real_commands_only(cmd: clap::Command) -> clap::Command {
        cmd.disable_help_subcommand(true).mut_subcommands(real_commands_only)
    }
    let mut cmd = real_commands_only(Cli::command());
    cmd.build();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd, "lngpt-collector", &completions)?;
    }
    Ok(())
}

/// Exit codes: 0 stopped cleanly with everything stored; 1 a start-up error, or a stop with
/// accepted events not stored or a task failed; 130 a second SIGINT.
fn run(config: Config, sources: Sources) -> ExitCode {
    lngpt_collector::allocator::tune();
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
    if let Some(warning) = sources.file.as_deref().and_then(|p| config.secrets_readable_warning(p)) {
        tracing::warn!("{warning}");
    }
    for warning in &config.provenance.warnings {
        tracing::warn!("{warning}");
    }
    let timeout = config.pipeline.shutdown_timeout.0;
    let result = runtime.block_on(async move {
        let mut signals = signals::listen().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let mut running = App::start(config, sources).await?;
        let stop = running.until_stopped(&mut signals).await;
        Ok::<_, String>(running.shutdown(stop, timeout, signals).await)
    });
    // Tasks still blocked (a hung store) must not hold the exit up past the deadline.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(report) if report.clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
