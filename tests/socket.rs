//! The Unix socket source against the real binary: concurrency, framing, shutdown, ownership.

use crate::common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use crate::common::{docs, raw_send, Daemon, BIN};
use serde_json::Value;

fn log_line(client: usize, seq: usize) -> String {
    format!("{{\"type\":\"log\",\"level\":\"INFO\",\"message\":\"client {client} line {seq}\",\"module\":\"bench\",\"extra\":{{\"client\":{client},\"seq\":{seq}}}}}\n")
}

#[test]
fn eight_concurrent_clients_every_line_stored_exactly_once() {
    const CLIENTS: usize = 8;
    const LINES: usize = 25_000;
    let d = Daemon::start("");
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let body: String = (0..LINES).map(|i| log_line(c, i)).collect();
                lngpt_collector::send::send(&socket, &mut body.as_bytes()).expect("send")
            })
        })
        .collect();
    for h in handles {
        let ack = h.join().unwrap();
        assert_eq!((ack.events, ack.rejected), (LINES as u64, 0));
    }
    d.wait_for_count("api_logs", (CLIENTS * LINES) as u64);
    let db = d.db();
    let distinct: i64 = db
        .query_row("SELECT count(DISTINCT json_extract(doc, '$.extra.client') || ':' || json_extract(doc, '$.extra.seq')) FROM api_logs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(distinct as usize, CLIENTS * LINES, "every (client, seq) exactly once");
    let ids: i64 = db
        .query_row("SELECT count(DISTINCT id) FROM api_logs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ids as usize, CLIENTS * LINES);
}

#[test]
fn an_over_long_line_is_rejected_and_the_lines_around_it_land() {
    let d = Daemon::start("[socket]\nmax_line_bytes = 4096\n");
    let long = format!("{{\"message\": \"{}\"}}\n", "x".repeat(200_000));
    let answer = raw_send(
        &d.socket,
        &[
            b"{\"message\": \"before\"}\n",
            long.as_bytes(),
            b"{\"message\": \"after\"}\n",
        ],
        Duration::ZERO,
    );
    assert_eq!(answer.trim(), r#"{"events":2,"rejected":1}"#);
    d.wait_for_count("api_logs", 2);
    d.wait_for_count("api_rejects", 1);
    let db = d.db();
    let messages: Vec<Value> = docs(&db, "api_logs").iter().map(|doc| doc["message"].clone()).collect();
    assert_eq!(messages, ["before", "after"]);
    let reject = &docs(&db, "api_rejects")[0];
    assert!(
        reject["reason"]
            .as_str()
            .unwrap()
            .contains("over the limit of 4096 bytes"),
        "{reject}"
    );
    assert_eq!(reject["raw_bytes"], long.len() - 1);
    assert_eq!(
        reject["raw"].as_str().unwrap().len(),
        64 * 1024,
        "the first 64 KiB are kept"
    );
}

#[test]
fn invalid_utf8_is_a_reject_and_crlf_and_split_lines_are_fine() {
    let d = Daemon::start("");
    let answer = raw_send(
        &d.socket,
        &[
            b"{\"message\": \"bad \xff\xfe byte\"}\r\n{\"mess",
            b"age\": \"split across writes\", \"level\": \"ERROR\"}\r\n\r\n",
            b"{\"message\": \"no newline at the end\"}",
        ],
        Duration::from_millis(300),
    );
    assert_eq!(answer.trim(), r#"{"events":2,"rejected":1}"#);
    d.wait_for_count("api_logs", 2);
    d.wait_for_count("api_rejects", 1);
    let db = d.db();
    let logs = docs(&db, "api_logs");
    assert_eq!(logs[0]["message"], "split across writes");
    assert_eq!(logs[0]["level"], "ERROR");
    assert_eq!(logs[1]["message"], "no newline at the end");
    let reject = &docs(&db, "api_rejects")[0];
    assert!(
        reject["reason"].as_str().unwrap().contains("not valid UTF-8"),
        "{reject}"
    );
    assert_eq!(reject["raw"], "{\"message\": \"bad \u{FFFD}\u{FFFD} byte\"}");
}

#[test]
fn sigterm_with_a_full_queue_stores_everything_accepted_and_exits_zero() {
    const CLIENTS: usize = 4;
    const LINES: usize = 200_000;
    let mut d = Daemon::start("[pipeline]\nmemory_budget = \"4MiB\"\nmax_batch = 100\nmax_wait = \"50ms\"\n");
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let body: String = (0..LINES).map(|i| log_line(c, i)).collect();
                // The daemon closes the connection mid-stream on shutdown; that write error is expected.
                let _ = s.write_all(body.as_bytes());
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                let ack: lngpt_collector::send::Ack =
                    serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"));
                ack.events
            })
        })
        .collect();
    common::wait_until(
        "some events stored",
        || (d.count("api_logs") > 5_000).then_some(()),
        || d.log(),
    );
    let status = d.stop();
    let accepted: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(status.success(), "exit status {status}:\n{}", d.log());
    let log = d.log();
    let in_use = log
        .split("storing what was accepted (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no shutdown line in the log:\n{log}"));
    assert_ne!(in_use, "0", "the budget should have been in use at SIGTERM:\n{log}");
    assert!(
        accepted.iter().all(|&n| n < LINES as u64),
        "shutdown should interrupt every client: {accepted:?}"
    );
    // What each client was told was accepted is exactly what is stored: its first N lines.
    let db = d.db();
    for (c, &n) in accepted.iter().enumerate() {
        let (rows, max_seq): (i64, Option<i64>) = db
            .query_row(
                "SELECT count(*), max(json_extract(doc, '$.extra.seq')) FROM api_logs WHERE json_extract(doc, '$.extra.client') = ?1",
                [c as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(rows as u64, n, "client {c}");
        assert_eq!(
            max_seq.map_or(0, |m| m as u64 + 1),
            n,
            "client {c}: a prefix, nothing skipped"
        );
    }
    assert!(!d.socket.exists(), "the socket file is removed on exit");
}

#[test]
fn a_second_daemon_on_the_same_socket_fails_clearly_and_the_first_keeps_working() {
    let first = Daemon::start("");
    let other_state = first.dir.path().join("other-state");
    let config = first.dir.path().join("second.toml");
    std::fs::write(&config, common::base_config(&other_state, &first.socket, "")).unwrap();
    let out = common::run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another process is already listening on")
            && stderr.contains("is another lngpt-collector running?"),
        "{stderr}"
    );
    assert_eq!(first.send(b"{\"message\": \"first still works\"}\n").events, 1);
    first.wait_for_count("api_logs", 1);
}

#[test]
fn socket_file_mode_stale_files_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("collector.sock");
    // A socket file left by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let state = dir.path().join("state");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, common::base_config(&state, &socket, "")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_until(
        "the socket answers",
        || UnixStream::connect(&socket).ok(),
        || "no answer".into(),
    );
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("removed the stale socket file"), "{log}");
    assert!(!socket.exists());

    // A regular file at the socket path is not deleted.
    std::fs::write(&socket, "precious").unwrap();
    let out = common::run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a socket"));
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

#[test]
fn send_reports_rejects_and_fails_clearly_when_nobody_listens() {
    let d = Daemon::start("");
    let mut child = Command::new(BIN)
        .args(["send", "--socket"])
        .arg(&d.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"message\": \"ok\"}\nnot json\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "exit 2 when a line was rejected");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("1 events accepted and stored, 1 lines rejected (their reasons are in api_rejects)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let gone = d.dir.path().join("nobody.sock");
    let out = Command::new(BIN)
        .args(["send", "--socket"])
        .arg(&gone)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nobody is listening on") && stderr.contains("is lngpt-collector running"),
        "{stderr}"
    );
}

#[test]
fn ids_are_distinct_across_a_restart() {
    let mut d = Daemon::start("");
    let body: String = (0..1000).map(|i| log_line(0, i)).collect();
    d.send(body.as_bytes());
    d.wait_for_count("api_logs", 1000);
    assert!(d.stop().success());
    d.restart();
    d.send(body.as_bytes());
    d.wait_for_count("api_logs", 2000);
    let ids: HashSet<String> = docs(&d.db(), "api_logs")
        .iter()
        .map(|doc| doc["_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2000);
}

#[test]
fn the_summary_line_says_what_happened_and_json_logs_are_json() {
    let d = Daemon::start("[log]\nformat = \"json\"\nsummary_interval = \"300ms\"\n");
    let ack = d.send(b"{\"message\": \"one\"}\n{\"type\": \"cost\", \"model\": \"m\", \"cost\": 1}\nnot json\n");
    assert_eq!((ack.events, ack.rejected), (2, 1));
    // Receiving and storing may fall into two intervals: add the figures of every summary line.
    let number_before = |line: &str, word: &str| -> u64 {
        line.split(word)
            .next()
            .and_then(|s| s.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    common::wait_until(
        "summary lines that add up to what was sent",
        || {
            let log = d.log();
            let summaries: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("\"message\":\"last 300ms: received"))
                .collect();
            let sum = |word: &str| summaries.iter().map(|l| number_before(l, word)).sum::<u64>();
            let sums = [
                sum(" events,"),
                sum(" lines;"),
                sum(" logs,"),
                sum(" cost,"),
                sum(" performance,"),
                sum(" rejects;"),
            ];
            (sums == [2, 1, 1, 1, 0, 1]).then_some(())
        },
        || d.log(),
    );
    for line in d.log().lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

#[test]
fn the_socket_file_gets_the_configured_group() {
    use std::os::unix::fs::MetadataExt;
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid)
        .unwrap()
        .expect("the current group has a name")
        .name;
    let d = Daemon::start(&format!("[socket]\ngroup = {group:?}\nmode = \"0640\"\n"));
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.gid(), gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        common::base_config(
            &dir.path().join("s"),
            &dir.path().join("c.sock"),
            "[socket]\ngroup = \"no-such-group-xyz\"\n",
        ),
    )
    .unwrap();
    let out = common::run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("`socket.group` is \"no-such-group-xyz\", but there is no group of that name on this system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "check-config finds it too");
}

#[test]
fn an_answer_means_durable_even_when_the_daemon_is_killed_right_after() {
    for run in 0..3 {
        let mut d = Daemon::start("");
        let body: String = (0..20_000).map(|i| log_line(run, i)).collect();
        let ack = d.send(body.as_bytes());
        assert_eq!((ack.events, ack.rejected), (20_000, 0));
        d.signal(nix::sys::signal::Signal::SIGKILL);
        d.wait_exit();
        assert_eq!(
            d.count("api_logs"),
            20_000,
            "run {run}: everything answered for is on disk"
        );
    }
}

#[test]
fn a_sync_line_is_answered_once_everything_before_it_is_durable() {
    let d = Daemon::start("[pipeline]\nmax_wait = \"2s\"\n");
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let first: String = (0..1_500).map(|i| log_line(1, i)).collect();
    s.write_all(first.as_bytes()).unwrap();
    s.write_all(b"not json\n{\"type\":\"sync\",\"id\":\"batch-1\"}\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut reader, &mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"sync": "batch-1", "events": 1500, "rejected": 1})
    );
    // Answered only once durable: it is all there now, without waiting.
    assert_eq!(d.count("api_logs"), 1_500);
    assert_eq!(d.count("api_rejects"), 1);
    // The connection carries on after a sync.
    s.write_all(log_line(2, 0).as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut last = String::new();
    reader.read_to_string(&mut last).unwrap();
    assert_eq!(last.trim(), r#"{"events":1501,"rejected":1}"#);
    assert_eq!(d.count("api_logs"), 1_501);
}

#[test]
fn rejects_keep_being_logged_when_the_summary_is_off() {
    let d = Daemon::start("[log]\nsummary_interval = \"0\"\n");
    let bad: String = (0..15).map(|i| format!("not json {i}\n")).collect();
    assert_eq!(d.send(bad.as_bytes()).rejected, 15);
    let logged = d.log().matches("rejected a line").count();
    assert_eq!(logged, 10, "ten a minute, one by one:\n{}", d.log());
}

/// `lines` log lines of `client`, from `first` on, then a sync line whose id is the chunk's number.
fn chunk_with_sync(client: usize, chunk: usize, first: usize, lines: usize) -> String {
    let mut out: String = (first..first + lines).map(|i| log_line(client, i)).collect();
    out.push_str(&format!("{{\"type\":\"sync\",\"id\":{chunk}}}\n"));
    out
}

/// Reads answer lines until the connection's close, each parsed; a read that waits `PATIENCE` fails.
fn answer_lines(s: &UnixStream) -> Vec<Value> {
    s.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let reader = std::io::BufReader::new(s.try_clone().unwrap());
    std::io::BufRead::lines(reader)
        .map(|line| {
            let line = line.expect("an answer line before the read timed out");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?}: {e}"))
        })
        .collect()
}

/// The daemon reads on past a sync line that waits for its answer (issue 20, item 5). Every chunk
/// is half a batch and batches wait an hour to fill: a daemon that stopped reading at each sync line
/// until its batch was written would wait that hour at the first one, with the client blocked on
/// its writes. Here the client writes all its chunks before it reads a single answer.
#[test]
fn many_sync_lines_sent_without_reading_answers_are_all_answered_in_order() {
    const CHUNKS: usize = 200;
    const LINES: usize = 50;
    let d = Daemon::start("[pipeline]\nmax_batch = 100\nmax_wait = \"1h\"\n[monitor]\ngrace = \"1h\"\n");
    let s = UnixStream::connect(&d.socket).unwrap();
    let mut writer = s.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        for chunk in 0..CHUNKS {
            writer
                .write_all(chunk_with_sync(0, chunk, chunk * LINES, LINES).as_bytes())
                .unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    common::wait_until(
        "the client to have written every chunk",
        || writing.is_finished().then_some(()),
        || d.log(),
    );
    writing.join().unwrap();
    let answers = answer_lines(&s);
    let mut expected: Vec<Value> = (0..CHUNKS)
        .map(|c| serde_json::json!({"sync": c, "events": (c + 1) * LINES, "rejected": 0}))
        .collect();
    expected.push(serde_json::json!({"events": CHUNKS * LINES, "rejected": 0}));
    assert_eq!(
        answers, expected,
        "every sync line answered, in order, with what came before it"
    );
    // Every answer meant durable: all there without waiting, each line once.
    let db = d.db();
    let (rows, distinct): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT json_extract(doc, '$.extra.seq')) FROM api_logs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows as usize, distinct as usize), (CHUNKS * LINES, CHUNKS * LINES));
}

/// A client that pipelines chunks and reads answers as they come, while the daemon is stopped: by
/// SIGKILL, every answer it got is on disk; by SIGTERM, every sync line the daemon read is answered
/// (it read past sync line `c` if it took more than `c`'s lines), then the close's answer, whose
/// count is exactly what is stored.
#[test]
fn pipelined_sync_answers_keep_their_promises_through_kill_and_stop() {
    const LINES: usize = 200;
    for signal in [nix::sys::signal::Signal::SIGKILL, nix::sys::signal::Signal::SIGTERM] {
        let mut d = Daemon::start("[pipeline]\nmax_batch = 300\nmax_wait = \"20ms\"\n");
        let s = UnixStream::connect(&d.socket).unwrap();
        let mut writer = s.try_clone().unwrap();
        // Writes until the daemon is gone or stops reading (its close ends the writes).
        std::thread::spawn(move || {
            for chunk in 0.. {
                if writer
                    .write_all(chunk_with_sync(1, chunk, chunk * LINES, LINES).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        });
        let (got, answers) = std::sync::mpsc::channel();
        let reading = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let reader = std::io::BufReader::new(reading);
            for line in std::io::BufRead::lines(reader) {
                let Ok(line) = line else { return };
                let answer: Value = serde_json::from_str(&line).unwrap();
                if got.send(answer).is_err() {
                    return;
                }
            }
        });
        // Some answers first, so that the stop comes with sync lines in flight.
        let mut received: Vec<Value> = Vec::new();
        while received.len() < 20 {
            received.push(
                answers
                    .recv_timeout(common::PATIENCE)
                    .expect("answers while the client writes"),
            );
        }
        d.signal(signal);
        let status = d.wait_exit();
        reader.join().unwrap();
        received.extend(answers.try_iter());
        let synced: Vec<&Value> = received.iter().filter(|a| a.get("sync").is_some()).collect();
        for (c, answer) in synced.iter().enumerate() {
            assert_eq!(
                **answer,
                serde_json::json!({"sync": c, "events": (c + 1) * LINES, "rejected": 0}),
                "{signal}: answers in order, each counting the lines before its sync line"
            );
        }
        let db = d.db();
        let prefix = |n: usize| -> u64 {
            db.query_row(
                "SELECT count(DISTINCT json_extract(doc, '$.extra.seq')) FROM api_logs WHERE json_extract(doc, '$.extra.seq') < ?1",
                [n as i64],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as u64
        };
        let answered = synced.len() * LINES;
        assert_eq!(
            prefix(answered),
            answered as u64,
            "{signal}: every answer meant durable"
        );
        if signal == nix::sys::signal::Signal::SIGTERM {
            assert!(status.success(), "{}", d.log());
            let last = received.last().unwrap();
            assert!(last.get("sync").is_none(), "the close's answer comes last: {last}");
            let accepted = last["events"].as_u64().unwrap() as usize;
            assert_eq!(
                d.count("api_logs"),
                accepted as u64,
                "what the close's answer counts is stored"
            );
            assert_eq!(prefix(accepted), accepted as u64, "a prefix, nothing skipped");
            // Sync line c follows line (c + 1) * LINES: read if more lines were taken, and maybe
            // when the stop came right after it.
            let read_past = accepted / LINES;
            assert!(
                synced.len() == read_past || (accepted % LINES == 0 && synced.len() + 1 == read_past),
                "every sync line read is answered: {} answered, {accepted} lines taken",
                synced.len()
            );
        }
    }
}
