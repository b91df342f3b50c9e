//! The daemon under systemd, without systemd as PID 1: the test is the service manager. It binds
//! the `NOTIFY_SOCKET`, sets `WATCHDOG_USEC`, passes listening sockets (`LISTEN_FDS`), runs
//! Debian's `systemd-socket-activate` and a `systemd-journald` of its own.

use crate::common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{base_config, wait_until, Daemon, BIN, PATIENCE};

/// What the daemon told the service manager, in order, with when.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<(Instant, String)>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Notifications {
            socket,
            seen: Vec::new(),
        }
    }

    fn poll(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                self.seen.push((Instant::now(), line.to_string()));
            }
        }
    }

    fn wait_for(&mut self, what: &str) -> Instant {
        let start = Instant::now();
        loop {
            self.poll();
            if let Some((at, _)) = self.seen.iter().find(|(_, l)| l.starts_with(what)) {
                return *at;
            }
            assert!(start.elapsed() < PATIENCE, "no {what} in {:?}", self.seen);
        }
    }

    fn count(&self, what: &str) -> usize {
        self.seen.iter().filter(|(_, l)| l.starts_with(what)).count()
    }
}

#[test]
fn ready_after_the_socket_accepts_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&notify_path);
    let mut d = Daemon::start_with(
        "",
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    notes.wait_for("READY=1");
    // READY=1 comes once the socket accepts: a client connecting now gets through.
    assert_eq!(d.send(b"{\"message\": \"after ready\"}\n").events, 1);
    assert!(
        notes
            .seen
            .iter()
            .any(|(_, l)| l.starts_with("STATUS=") && l.contains("events/s")),
        "{:?}",
        notes.seen
    );
    // Pings at half the interval: about five a second.
    let first = notes.wait_for("WATCHDOG=1");
    while notes.count("WATCHDOG=1") < 6 {
        notes.poll();
        assert!(first.elapsed() < PATIENCE);
    }
    let pings: Vec<Instant> = notes
        .seen
        .iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    let span = pings[5].duration_since(pings[0]);
    assert!(
        span >= Duration::from_millis(700) && span < Duration::from_secs(5),
        "five intervals of 200 ms took {span:?}"
    );
    assert!(d.stop().success());
    notes.wait_for("STOPPING=1");
}

#[test]
fn a_wedged_writer_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&notify_path);
    let d = Daemon::start_with(
        "",
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    notes.wait_for("WATCHDOG=1");
    // A store that hangs: another process holds the write lock.
    let locker = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let socket = d.socket.clone();
    let _client =
        std::thread::spawn(move || lngpt_collector::send::send(&socket, &mut &b"{\"message\": \"stuck\"}\n"[..]));
    d.wait_for_log("not pinging the watchdog");
    notes.poll();
    let before = notes.count("WATCHDOG=1");
    // Three ping periods with nothing stored: no ping.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        notes.poll();
    }
    assert_eq!(notes.count("WATCHDOG=1"), before, "pinged while the writer was wedged");
    // The store comes back: the pings resume.
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    while notes.count("WATCHDOG=1") == before {
        notes.poll();
        assert!(d.log().len() < 10_000_000);
    }
}

/// Runs the daemon with `listener` passed as systemd does: descriptor 3, `LISTEN_FDS=1`,
/// `LISTEN_PID` its own pid, `LISTEN_FDNAMES=collector`. The shell moves the descriptor to 3 (a
/// `dup2` between fork and exec could land on the descriptors the spawn itself uses).
fn spawn_activated(config: &Path, listener: &UnixListener) -> std::process::Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" run --config \"$1\"", BIN])
        .arg(config)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "collector")
        .stderr(Stdio::null());
    // SAFETY: only dup2 and fcntl between fork and exec, on the child's copies: the listener becomes
    // its fd 3 (SD_LISTEN_FDS_START), kept open across exec. (Not in the shell: with many tests in
    // one process the listener's number can pass 9, which sh's redirections cannot name.)
    unsafe {
        cmd.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            fcntl(3, FcntlArg::F_SETFD(FdFlag::empty()))
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().unwrap()
}

#[test]
fn a_restart_under_socket_activation_keeps_the_socket_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket_path = dir.path().join("collector.sock");
    let config = dir.path().join("c.toml");
    // The configured path is elsewhere: the passed socket must be used, not bound anew.
    std::fs::write(&config, base_config(&state, &dir.path().join("unused.sock"), "")).unwrap();
    let listener = UnixListener::bind(&socket_path).unwrap();
    std::fs::set_permissions(&socket_path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mut daemon = spawn_activated(&config, &listener);
    let send = |n: usize, tag: &str| {
        let body: String = (0..n).map(|i| format!("{{\"message\": \"{tag} {i}\"}}\n")).collect();
        lngpt_collector::send::send(&socket_path, &mut body.as_bytes()).unwrap()
    };
    assert_eq!(send(100, "first").events, 100);
    // Stop it; clients connecting now wait in the kernel's backlog of the socket we hold.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
    assert!(socket_path.exists(), "an activated socket is not removed at exit");
    assert!(!dir.path().join("unused.sock").exists());
    let waiting = std::thread::spawn({
        let socket_path = socket_path.clone();
        move || {
            let body: String = (0..100).map(|i| format!("{{\"message\": \"during {i}\"}}\n")).collect();
            lngpt_collector::send::send(&socket_path, &mut body.as_bytes()).unwrap()
        }
    });
    let mut daemon = spawn_activated(&config, &listener);
    assert_eq!(
        waiting.join().unwrap().events,
        100,
        "sent while the daemon was down, stored after"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
    let db = rusqlite::Connection::open(state.join("collector.db")).unwrap();
    assert_eq!(common::count(&db, "api_logs"), 200);
}

#[test]
fn systemd_socket_activate_starts_the_daemon_on_the_first_connection() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-socket-activate is missing: install Debian's systemd package (.ci/run does)");
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket_path = dir.path().join("collector.sock");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_config(&state, &dir.path().join("unused.sock"), "")).unwrap();
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket_path)
        .arg("--fdname=collector")
        .args([BIN, "run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The daemon is not running yet: this client's connection starts it, and its lines are stored.
    // (The socket file appears at bind, a moment before the activator listens.)
    let mut s = wait_until(
        "the activation socket",
        || UnixStream::connect(&socket_path).ok(),
        String::new,
    );
    s.write_all(b"{\"message\": \"before the daemon ran\"}\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.trim(), r#"{"events":1,"rejected":0}"#);
    let _ = activator.kill();
    let _ = activator.wait();
    let db = rusqlite::Connection::open(state.join("collector.db")).unwrap();
    assert_eq!(common::count(&db, "api_logs"), 1);
}

/// The HTTP API's socket passed by name (`api`) beside the collector's: the daemon serves on it
/// instead of binding `api.listen`, and a request to it is what starts the daemon.
#[test]
fn systemd_socket_activate_passes_the_apis_socket_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket_path = dir.path().join("collector.sock");
    let config = dir.path().join("c.toml");
    // A configured address nobody can bind twice shows that it is not bound: the passed one is used.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!("[api]\nlisten = \"{}\"\n", taken.local_addr().unwrap());
    std::fs::write(&config, base_config(&state, &dir.path().join("unused.sock"), &extra)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket_path)
        .arg("--listen")
        .arg(&api)
        .arg("--fdname=collector:api")
        .args([BIN, "run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian's systemd package; .ci/run installs it)");
    wait_until(
        "the activation sockets",
        || (socket_path.exists() && std::net::TcpStream::connect(&api).is_ok()).then_some(()),
        String::new,
    );
    // The probe above connected once, which started the daemon; its answer comes from the passed socket.
    let health = common::http::get(&api, "/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    let mut s = UnixStream::connect(&socket_path).unwrap();
    s.write_all(b"{\"message\": \"through the collector socket\"}\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.trim(), r#"{"events":1,"rejected":0}"#);
    let logs = common::http::get(&api, "/api/logs");
    assert_eq!(logs.json()["pagination"]["total"], 1, "{}", logs.text());
    let _ = activator.kill();
    let _ = activator.wait();
    drop(taken);
}

#[test]
fn under_the_journal_log_lines_land_with_their_priority_and_fields() {
    let journal_socket = Path::new("/run/systemd/journal/socket");
    let mut journald = None;
    if UnixDatagram::unbound().and_then(|s| s.connect(journal_socket)).is_err() {
        // No journal on this machine: run one, as the test's own.
        let Ok(child) = Command::new("/lib/systemd/systemd-journald")
            .stderr(Stdio::null())
            .spawn()
        else {
            panic!("no journal, and /lib/systemd/systemd-journald cannot run: install Debian's systemd package (.ci/run does)");
        };
        journald = Some(child);
        wait_until(
            "the journal's socket",
            || UnixDatagram::unbound().and_then(|s| s.connect(journal_socket)).ok(),
            String::new,
        );
    }
    let mut d = Daemon::start("[log]\ntarget = \"journald\"\nsummary_interval = \"100ms\"\n");
    d.send(b"{\"message\": \"one\"}\nnot json\n");
    let pid = d.pid().to_string();
    let entries = wait_until(
        "the daemon's lines in the journal",
        || {
            let out = Command::new("journalctl")
                .args(["--no-pager", "-o", "json", &format!("_PID={pid}")])
                .output()
                .ok()?;
            let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let has_summary = lines.iter().any(|e| e.get("EVENT_COUNT").is_some());
            let has_warning = lines.iter().any(|e| e["PRIORITY"] == "4");
            (has_summary && has_warning).then_some(lines)
        },
        || "journalctl shows nothing yet".into(),
    );
    let started = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("started: storing events"))
        })
        .expect("the start-up line");
    assert_eq!(started["PRIORITY"], "6", "INFO is priority 6");
    assert_eq!(started["SYSLOG_IDENTIFIER"], "lngpt-collector");
    let reject = entries
        .iter()
        .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains("rejected a line")))
        .expect("the reject warning");
    assert_eq!(reject["PRIORITY"], "4", "WARN is priority 4");
    let summary = entries.iter().find(|e| e.get("EVENT_COUNT").is_some()).unwrap();
    assert_eq!(summary["EVENT_COUNT"], "1");
    assert!(d.stop().success());
    if let Some(mut j) = journald {
        let _ = j.kill();
        let _ = j.wait();
    }
}
