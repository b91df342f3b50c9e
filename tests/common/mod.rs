//! Starts the real `lngpt-collector` binary on a private state directory and talks to it over
//! its real socket; reads what it stored straight from its SQLite file.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lngpt_collector::send::Ack;
use rusqlite::{Connection, OpenFlags};

pub mod cdp;
pub mod http;
pub mod mongo;
pub mod webhook;

pub const BIN: &str = env!("CARGO_BIN_EXE_lngpt-collector");

/// How long any awaited condition may take before the test fails (a slow CI machine included).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    log: Arc<Mutex<String>>,
    /// The program and leading arguments that run the daemon (the binary, or setpriv and a copy).
    command: Vec<String>,
    /// Environment variables it is started with, again on `restart`.
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a collector whose config is the test's defaults plus `extra` (TOML sections).
    pub fn start(extra: &str) -> Daemon {
        Self::start_with(extra, &[])
    }

    /// Starts the daemon as an unprivileged user when the tests run as root (as CI does), so that
    /// file permissions apply to it.
    pub fn start_unprivileged(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let command: Vec<String> = if nix::unistd::geteuid().is_root() {
            // A copy of the binary the unprivileged user can surely reach.
            let bin = dir.path().join("lngpt-collector");
            std::fs::copy(BIN, &bin).expect("copy the binary");
            let setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
            setpriv
                .iter()
                .map(|s| s.to_string())
                .chain([bin.display().to_string()])
                .collect()
        } else {
            vec![BIN.to_string()]
        };
        Self::start_in(dir, extra, &[], command)
    }

    /// Starts the daemon under a wrapper command, e.g. `["prlimit", "--nofile=256:256"]`.
    pub fn start_wrapped(extra: &str, wrapper: &[&str]) -> Daemon {
        let command = wrapper.iter().map(|s| s.to_string()).chain([BIN.to_string()]).collect();
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra, &[], command)
    }

    pub fn start_with(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_in(
            tempfile::tempdir().expect("temp dir"),
            extra,
            env,
            vec![BIN.to_string()],
        )
    }

    fn start_in(dir: tempfile::TempDir, extra: &str, env: &[(&str, &str)], command: Vec<String>) -> Daemon {
        let state = dir.path().join("state");
        let socket = dir.path().join("collector.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, base_config(&state, &socket, extra)).expect("write config");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut d = Daemon {
            child: spawn(&config, &env, &command),
            dir,
            state,
            socket,
            config,
            log: Arc::default(),
            command,
            env,
        };
        d.capture_log();
        d.wait_ready();
        d
    }

    /// Starts again on the same state directory and config (after `stop` or `kill`).
    pub fn restart(&mut self) {
        self.child = spawn(&self.config, &self.env, &self.command);
        self.log = Arc::default();
        self.capture_log();
        self.wait_ready();
    }

    fn capture_log(&mut self) {
        let stderr = self.child.stderr.take().expect("stderr piped");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("collector exited during start-up with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < PATIENCE,
                "collector did not open its socket:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's resident memory now and at its peak, in bytes (VmRSS, VmHWM).
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Open file descriptors of the daemon.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the daemon's own log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        wait_until(
            &format!("log line containing {needle:?}"),
            || self.log().contains(needle).then_some(()),
            || self.log(),
        );
    }

    /// The HTTP API's address (`127.0.0.1:PORT`), from the daemon's start-up line.
    pub fn api(&self) -> String {
        wait_until(
            "the HTTP API's address in the log",
            || {
                let log = self.log();
                let rest = log.split("HTTP API listening on http://").nth(1)?;
                Some(rest.split_whitespace().next()?.to_string())
            },
            || self.log(),
        )
    }

    /// Sends lines through the library's client (the same code as `lngpt-collector send`).
    pub fn send(&self, bytes: &[u8]) -> Ack {
        lngpt_collector::send::send(&self.socket, &mut &bytes[..]).expect("send")
    }

    pub fn db(&self) -> Connection {
        let path = self.state.join("collector.db");
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the collector's database")
    }

    /// Events waiting in the outbox (MongoDB mode).
    pub fn count_outbox(&self) -> u64 {
        self.db()
            .query_row("SELECT coalesce(sum(events), 0) FROM outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0) as u64
    }

    /// Waits until the outbox has been delivered (MongoDB mode).
    pub fn wait_for_empty_outbox(&self) {
        wait_until(
            "the outbox drained",
            || (self.count_outbox() == 0).then_some(()),
            || self.log(),
        );
    }

    pub fn count(&self, table: &str) -> u64 {
        count(&self.db(), table)
    }

    /// Waits until `table` holds exactly `n` rows (fails at once if it holds more).
    pub fn wait_for_count(&self, table: &str, n: u64) {
        wait_until(
            &format!("{n} rows in {table}"),
            || {
                let c = self.count(table);
                assert!(c <= n, "{table} holds {c} rows, more than the {n} expected");
                (c == n).then_some(())
            },
            || format!("{table} holds {}\n{}", self.count(table), self.log()),
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the log thread read the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return s;
            }
            assert!(start.elapsed() < PATIENCE, "collector did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn base_config(state: &Path, socket: &Path, extra: &str) -> String {
    // The test's own [socket] or [log] section, if any, gets the harness's keys added to it.
    let socket_line = format!("path = {:?}\n", socket.display().to_string());
    // The summary line is off in tests unless a test sets it.
    let log_lines = if extra.contains("summary_interval") {
        ""
    } else {
        "summary_interval = \"0\"\n"
    };
    // Tests run in parallel: unless a test chooses, the API takes any free loopback port.
    let api_lines = if extra.contains("listen") {
        ""
    } else {
        "listen = \"127.0.0.1:0\"\n"
    };
    // Top-level keys of `extra` (before its first section) must precede every section.
    let top_end = if extra.starts_with('[') {
        0
    } else {
        extra.find("\n[").map_or(extra.len(), |i| i + 1)
    };
    let (top, extra) = extra.split_at(top_end);
    let mut extra = extra.to_string();
    let mut head = format!("state_dir = {:?}\n{top}\n", state.display().to_string());
    for (section, lines) in [
        ("[socket]\n", socket_line.as_str()),
        ("[log]\n", log_lines),
        ("[api]\n", api_lines),
    ] {
        if extra.contains(section) {
            extra = extra.replacen(section, &format!("{section}{lines}"), 1);
        } else {
            head.push_str(&format!("{section}{lines}"));
        }
    }
    format!("{head}{extra}\n")
}

fn spawn(config: &Path, env: &[(String, String)], command: &[String]) -> Child {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Naive timestamps are read in the host's zone; tests pin it unless they set their own.
    cmd.env("TZ", "UTC");
    cmd.env_remove("LOG_LEVEL").env_remove("LOG_FORMAT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the collector")
}

/// Runs the daemon on `config` and returns once it exits: for start-up failures.
pub fn run_until_exit(config: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .output()
        .expect("run the collector")
}

pub fn count(db: &Connection, table: &str) -> u64 {
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
        .expect("count") as u64
}

/// Polls `check` until it yields a value, failing with `describe()` after [`PATIENCE`].
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}; {}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A raw client: writes `bytes`, closes its side, returns the collector's answer line.
pub fn raw_send(socket: &Path, parts: &[&[u8]], pause: Duration) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        s.write_all(p).expect("write");
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    answer
}

/// All stored documents of a table, oldest row first.
pub fn docs(db: &Connection, table: &str) -> Vec<serde_json::Value> {
    let mut stmt = db
        .prepare(&format!("SELECT doc FROM {table} ORDER BY rowid"))
        .expect("prepare");
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect("query");
    rows.map(|r| serde_json::from_str(&r.expect("row")).expect("stored doc is JSON"))
        .collect()
}
