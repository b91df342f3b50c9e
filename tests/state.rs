//! The state directory: private, one daemon at a time, no symlinks followed, and errors that say
//! what to do. Against the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{base_config, run_until_exit, Daemon};

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
