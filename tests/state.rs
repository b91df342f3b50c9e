//! The state directory: private, one daemon at a time, no symlinks followed, and errors that say
//! what to do. Against the real binary.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use crate::common::{base_config, run_until_exit, Daemon};

#[test]
fn stored_data_is_private_to_the_daemon() {
    let d = Daemon::start("");
    d.send(b"{\"message\": \"secret plot twist\"}\n");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.state), 0o750, "state_dir");
    for entry in std::fs::read_dir(&d.state).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sock") {
            continue;
        }
        let m = mode(&path);
        assert_eq!(m & 0o027, 0, "{} is mode {m:o}", path.display());
    }
}

#[test]
fn a_world_readable_state_dir_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_config(&state, &dir.path().join("c.sock"), "")).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("c.sock");
    common::wait_until("the socket", || socket.exists().then_some(()), String::new);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        log.contains("is open to every user (mode 0755)") && log.contains("chmod 750"),
        "{log}"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses() {
    let first = Daemon::start("");
    let config = first.dir.path().join("second.toml");
    std::fs::write(
        &config,
        base_config(&first.state, &first.dir.path().join("other.sock"), ""),
    )
    .unwrap();
    let out = run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "another lngpt-collector (pid {}) is using the state directory",
            first.pid()
        )),
        "{stderr}"
    );
    assert_eq!(first.send(b"{\"message\": \"still mine\"}\n").events, 1);
}

#[test]
fn symlinks_planted_in_the_state_dir_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let elsewhere = dir.path().join("elsewhere.db");
    std::os::unix::fs::symlink(&elsewhere, state.join("collector.db")).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_config(&state, &dir.path().join("c.sock"), "")).unwrap();
    let out = run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a symlink") && stderr.contains("collector.db"),
        "{stderr}"
    );
    assert!(!elsewhere.exists(), "SQLite must not create the symlink's target");
}

#[test]
fn a_store_that_cannot_be_opened_says_which_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("collector.db"), vec![b'g'; 8192]).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_config(&state, &dir.path().join("c.sock"), "")).unwrap();
    // Python's level names must not silence the error.
    let out = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("LOG_LEVEL", "WARNING")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&state.join("collector.db").display().to_string())
            && stderr.contains("is not an SQLite database")
            && stderr.contains("move it aside"),
        "{stderr}"
    );
}

#[test]
fn a_reader_that_stays_open_across_a_restart_keeps_reading() {
    let mut d = Daemon::start("");
    d.send(b"{\"message\": \"before\"}\n");
    // A dashboard or an sqlite3 shell: one connection, kept open.
    let reader = d.db();
    assert_eq!(common::count(&reader, "api_logs"), 1);
    assert!(d.stop().success());
    assert!(d.state.join("collector.db-wal").exists(), "the WAL's files stay");
    d.restart();
    d.send(b"{\"message\": \"after\"}\n");
    d.wait_for_count("api_logs", 2);
    assert_eq!(
        common::count(&reader, "api_logs"),
        2,
        "the old connection sees new rows"
    );
    let fresh = d.db();
    assert_eq!(common::count(&fresh, "api_logs"), 2, "a new connection opens fine");
    let check: String = fresh.query_row("PRAGMA quick_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_store_from_the_first_release_is_migrated_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // The first release's schema and one of its rows.
    let old = rusqlite::Connection::open(state.join("collector.db")).unwrap();
    old.execute_batch(
        "CREATE TABLE api_logs (id BLOB NOT NULL UNIQUE, timestamp_ms INTEGER NOT NULL, level TEXT NOT NULL, module TEXT, doc TEXT NOT NULL);
         CREATE INDEX api_logs_timestamp ON api_logs (timestamp_ms);
         CREATE INDEX api_logs_level_timestamp ON api_logs (level, timestamp_ms);
         CREATE TABLE api_cost (id BLOB NOT NULL UNIQUE, created_at_ms INTEGER NOT NULL, model TEXT NOT NULL, doc TEXT NOT NULL);
         CREATE INDEX api_cost_created_at_ms ON api_cost (created_at_ms);
         INSERT INTO api_logs VALUES (x'0102030405060708090a0b0c', 1795680000000, 'INFO', 'm',
           '{\"_id\":\"0102030405060708090a0b0c\",\"timestamp\":\"2026-11-26T08:00:00.000Z\",\"level\":\"INFO\",\"message\":\"old\",\"logger\":\"lngpt.api\",\"extra\":{\"request_id\":\"req-1\"}}');",
    )
    .unwrap();
    drop(old);
    let config = dir.path().join("c.toml");
    std::fs::write(&config, base_config(&state, &dir.path().join("c.sock"), "")).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("c.sock");
    common::wait_until("the socket", || socket.exists().then_some(()), String::new);
    let db = rusqlite::Connection::open(state.join("collector.db")).unwrap();
    let (logger, request_id, version): (String, String, i64) = db
        .query_row(
            "SELECT logger, request_id, (SELECT user_version FROM pragma_user_version) FROM api_logs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (logger.as_str(), request_id.as_str(), version),
        ("lngpt.api", "req-1", lngpt_collector::store::embedded::SCHEMA_VERSION)
    );
    // Only this release's indexes are kept up: the first release's names are gone, and so is the
    // plain time index where the statistics' covering index starts with the time.
    let indexes = |table: &str| -> Vec<String> {
        let mut stmt = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([table], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        indexes("api_logs"),
        [
            "api_logs_level_timestamp_ms_rare",
            "api_logs_module_timestamp_ms",
            "api_logs_request_id",
            "api_logs_timestamp_ms"
        ]
    );
    assert_eq!(
        indexes("api_cost"),
        [
            "api_cost_created_at_ms_covering",
            "api_cost_model_created_at_ms",
            "api_cost_received_at_ms"
        ]
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    // A file from a newer release is refused, not damaged.
    db.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(db);
    let out = run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("written by a newer lngpt-collector (schema 99"));
}

#[test]
fn sigterm_with_a_blocked_store_exits_by_the_shutdown_deadline() {
    let mut d = Daemon::start("[pipeline]\nshutdown_timeout = \"2s\"\n");
    let locker = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let socket = d.socket.clone();
    let sender =
        std::thread::spawn(move || lngpt_collector::send::send(&socket, &mut &b"{\"message\": \"stuck\"}\n"[..]));
    common::wait_until(
        "the daemon's write to fail",
        || d.log().contains("cannot store a batch").then_some(()),
        || d.log(),
    );
    let started = std::time::Instant::now();
    let status = d.stop();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "events were not stored: exit 1");
    assert!(
        took < std::time::Duration::from_millis(3500),
        "took {took:?} for a 2s shutdown_timeout"
    );
    assert!(
        d.log().contains("accepted events not known to be stored"),
        "{}",
        d.log()
    );
    let answer = sender.join().unwrap();
    assert!(
        answer.is_err(),
        "the client is not told its line was stored: {answer:?}"
    );
}
