//! The file source against the real daemon: rotation, truncation, restarts, crashes.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_until, Daemon};
use nix::sys::signal::Signal;
use proptest::prelude::*;

fn file_section(log: &Path, extra: &str) -> String {
    format!(
        "[[file]]\npath = {:?}\npoll_interval = \"100ms\"\n{extra}\n",
        log.display().to_string()
    )
}

fn line(seq: u64) -> String {
    format!("{{\"message\":\"line {seq}\",\"module\":\"tail\",\"extra\":{{\"seq\":{seq}}}}}\n")
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Every stored `extra.seq`, in row order (duplicates kept, so they can be seen).
fn stored_seqs(d: &Daemon) -> Vec<u64> {
    let db = d.db();
    let mut stmt = db
        .prepare("SELECT json_extract(doc, '$.extra.seq') FROM api_logs")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap();
    rows.map(|r| r.unwrap() as u64).collect()
}

/// Waits until exactly the `expected` lines are stored, each once.
fn wait_for_exactly(d: &Daemon, expected: &BTreeSet<u64>) {
    wait_until(
        "every line stored exactly once",
        || {
            let seqs = stored_seqs(d);
            let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
            assert_eq!(seqs.len(), distinct.len(), "a line was stored twice");
            assert!(
                distinct.is_subset(expected),
                "stored lines that were never completed: {:?}",
                distinct.difference(expected).collect::<Vec<_>>()
            );
            (distinct == *expected).then_some(())
        },
        || {
            let got: BTreeSet<u64> = stored_seqs(d).into_iter().collect();
            let missing: Vec<_> = expected.difference(&got).take(20).collect();
            format!(
                "{} of {} stored; missing e.g. {missing:?}\n{}",
                got.len(),
                expected.len(),
                d.log()
            )
        },
    );
}

/// What the app and the operator do to the log file and the daemon.
#[derive(Debug, Clone)]
enum Op {
    Write(u64),
    /// A line written up to the middle; the next write completes it.
    WritePartial,
    /// `app.log` → `app.log.N` (a new name each time), the next write creates `app.log`.
    RotateRename,
    /// logrotate's copytruncate: copy to `app.log.N`, then truncate `app.log`.
    CopyTruncate,
    /// Delete `app.log` (after the daemon caught up) and start a new one.
    DeleteRecreate,
    Stop,
    Kill,
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..60).prop_map(Op::Write),
        2 => Just(Op::WritePartial),
        2 => Just(Op::RotateRename),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::DeleteRecreate),
        1 => Just(Op::Stop),
        1 => Just(Op::Kill),
        2 => Just(Op::Start),
    ]
}

struct Model {
    logs: tempfile::TempDir,
    daemon: Daemon,
    running: bool,
    next_seq: u64,
    rotations: u32,
    expected: BTreeSet<u64>,
    /// A partial line: its seq and the text that completes it.
    partial: Option<(u64, String)>,
}

impl Model {
    fn log(&self) -> PathBuf {
        self.logs.path().join("app.log")
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write(n) => {
                let mut text = String::new();
                if let Some((seq, rest)) = self.partial.take() {
                    text.push_str(&rest);
                    self.expected.insert(seq);
                }
                for _ in 0..n {
                    text.push_str(&line(self.next_seq));
                    self.expected.insert(self.next_seq);
                    self.next_seq += 1;
                }
                append(&self.log(), &text);
            }
            Op::WritePartial => {
                if self.partial.is_none() {
                    let full = line(self.next_seq);
                    let cut = full.len() / 2;
                    append(&self.log(), &full[..cut]);
                    self.partial = Some((self.next_seq, full[cut..].to_string()));
                    self.next_seq += 1;
                }
            }
            Op::RotateRename => {
                if self.log().exists() {
                    self.rotations += 1;
                    std::fs::rename(self.log(), self.logs.path().join(format!("app.log.{}", self.rotations))).unwrap();
                    self.partial = None; // stays incomplete in the rotated file: never a line
                }
            }
            Op::CopyTruncate => {
                if self.log().exists() {
                    self.rotations += 1;
                    std::fs::copy(self.log(), self.logs.path().join(format!("app.log.{}", self.rotations))).unwrap();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(self.log())
                        .unwrap();
                    self.partial = None;
                }
            }
            Op::DeleteRecreate => {
                // Deleting a file the daemon never saw loses it by definition; delete what was read.
                self.apply(&Op::Start);
                wait_for_exactly(&self.daemon, &self.expected);
                let _ = std::fs::remove_file(self.log());
                self.partial = None;
            }
            Op::Stop => {
                if self.running {
                    let status = self.daemon.stop();
                    assert!(status.success(), "SIGTERM: exit 0, got {status}\n{}", self.daemon.log());
                    self.running = false;
                }
            }
            Op::Kill => {
                if self.running {
                    self.daemon.signal(Signal::SIGKILL);
                    self.daemon.wait_exit();
                    self.running = false;
                }
            }
            Op::Start => {
                if !self.running {
                    self.daemon.restart();
                    self.running = true;
                }
            }
        }
    }
}

proptest! {
    // 12 cases by default (each starts the real daemon); PROPTEST_CASES=200 for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random writes, partial lines, rotations, truncations, stops, crashes and restarts: every
    /// complete line written is stored, and none twice. (Writes never race a copytruncate here, so
    /// its inherent loss window — lines written between the copy and the truncate — does not arise.)
    #[test]
    fn every_complete_line_exactly_once_whatever_happens(ops in prop::collection::vec(op(), 1..14)) {
        let logs = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(&file_section(&logs.path().join("app.log"), ""));
        let mut model = Model { logs, daemon, running: true, next_seq: 0, rotations: 0, expected: BTreeSet::new(), partial: None };
        for op in &ops {
            model.apply(op);
        }
        model.apply(&Op::Start);
        wait_for_exactly(&model.daemon, &model.expected);
    }
}

/// Found by the property test: a file written and rotated away faster than the tailer's scan, then a
/// stop. It has no checkpoint, so the next start must read it whole, however old its mtime is.
#[test]
fn a_file_rotated_away_before_it_was_ever_read_is_read_on_the_next_start() {
    let logs = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&file_section(&logs.path().join("app.log"), ""));
    let mut model = Model {
        logs,
        daemon,
        running: true,
        next_seq: 0,
        rotations: 0,
        expected: BTreeSet::new(),
        partial: None,
    };
    for op in [
        Op::Write(58),
        Op::Write(58),
        Op::RotateRename,
        Op::Write(45),
        Op::RotateRename,
        Op::Stop,
        Op::WritePartial,
        Op::Write(4),
        Op::Write(39),
        Op::Start,
    ] {
        model.apply(&op);
    }
    wait_for_exactly(&model.daemon, &model.expected);
}

#[test]
fn python_rotating_file_handler_100000_records_over_20_rotations_exactly_once() {
    const RECORDS: u64 = 100_000;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let d = Daemon::start(&file_section(&log, ""));
    let script = format!(
        r#"
import json, logging, logging.handlers
class JsonFormatter(logging.Formatter):
    def format(self, r):
        return json.dumps({{"created": r.created, "levelname": r.levelname, "msg": r.getMessage(), "name": r.name,
                           "module": r.module, "funcName": r.funcName, "lineno": r.lineno, "extra": {{"seq": r.seq}}}},
                          ensure_ascii=False)
class CountingHandler(logging.handlers.RotatingFileHandler):
    rollovers = 0
    def doRollover(self):
        CountingHandler.rollovers += 1
        super().doRollover()
handler = CountingHandler({log:?}, maxBytes=800_000, backupCount=5, encoding="utf-8")
handler.setFormatter(JsonFormatter())
logger = logging.getLogger("lngpt.api")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
for i in range({RECORDS}):
    logger.info("API调用成功: stream_chat %d", i, extra={{"seq": i}})
print(CountingHandler.rollovers)
"#,
        log = log.display().to_string()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rollovers: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(rollovers >= 20, "only {rollovers} rotations");
    let expected: BTreeSet<u64> = (0..RECORDS).collect();
    wait_for_exactly(&d, &expected);
    let db = d.db();
    let (level, logger): (String, String) = db
        .query_row(
            "SELECT level, json_extract(doc, '$.logger') FROM api_logs LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((level.as_str(), logger.as_str()), ("INFO", "lngpt.api"));
}

#[test]
fn rotations_while_the_daemon_is_stopped_are_finished_on_the_next_start() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let mut d = Daemon::start(&file_section(&log, ""));
    let mut expected = BTreeSet::new();
    let mut seq = 0;
    let mut write = |n: u64, path: &Path, expected: &mut BTreeSet<u64>| {
        let text: String = (seq..seq + n).map(line).collect();
        expected.extend(seq..seq + n);
        seq += n;
        append(path, &text);
    };
    write(1000, &log, &mut expected);
    wait_for_exactly(&d, &expected);
    assert!(d.stop().success());
    // While stopped: more lines, then two RotatingFileHandler-style rotations.
    write(500, &log, &mut expected);
    std::fs::rename(&log, logs.path().join("app.log.1")).unwrap();
    write(300, &log, &mut expected);
    std::fs::rename(logs.path().join("app.log.1"), logs.path().join("app.log.2")).unwrap();
    std::fs::rename(&log, logs.path().join("app.log.1")).unwrap();
    write(200, &log, &mut expected);
    d.restart();
    wait_for_exactly(&d, &expected);
    d.wait_for_log("resuming");
}

#[test]
fn kill_9_under_load_then_restart_loses_and_duplicates_nothing() {
    const LINES: u64 = 60_000;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let mut d = Daemon::start(&file_section(&log, ""));
    let writer_log = log.clone();
    let writer = std::thread::spawn(move || {
        for chunk in 0..LINES / 1000 {
            let text: String = (chunk * 1000..(chunk + 1) * 1000).map(line).collect();
            append(&writer_log, &text);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    wait_until(
        "some lines stored",
        || (d.count("api_logs") > 10_000).then_some(()),
        || d.log(),
    );
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    writer.join().unwrap();
    d.restart();
    wait_for_exactly(&d, &(0..LINES).collect());
}

#[test]
fn a_missing_directory_is_waited_for_and_lines_flow_once_it_appears() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("later/app.log");
    let d = Daemon::start(&file_section(&log, ""));
    d.wait_for_log("waiting for the directory");
    std::fs::create_dir(base.path().join("later")).unwrap();
    append(&log, &(0..10).map(line).collect::<String>());
    wait_for_exactly(&d, &(0..10).collect());
    assert_eq!(
        d.log().matches("waiting for the directory").count(),
        1,
        "said once, not every poll"
    );
}

#[test]
fn start_at_end_skips_what_was_there_and_reads_what_comes() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    append(&log, &(0..100).map(line).collect::<String>());
    let d = Daemon::start(&file_section(&log, "start_at = \"end\""));
    // The tailer has taken the file (at its end) once its checkpoint names it.
    let checkpoints = d.state.join("checkpoints.json");
    wait_until(
        "the file's first checkpoint",
        || {
            std::fs::read_to_string(&checkpoints)
                .ok()
                .filter(|c| c.contains("app.log"))
                .map(|_| ())
        },
        || d.log(),
    );
    append(&log, &(100..150).map(line).collect::<String>());
    wait_for_exactly(&d, &(100..150).collect());
}

#[test]
fn a_file_unreadable_at_first_is_read_once_it_becomes_readable() {
    use std::os::unix::fs::PermissionsExt;
    let logs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(logs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = logs.path().join("app.log");
    append(&log, &(0..20).map(line).collect::<String>());
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o000)).unwrap();
    let d = Daemon::start_unprivileged(&file_section(&log, ""));
    d.wait_for_log("cannot read");
    assert!(
        d.log().contains("Permission denied") && d.log().contains("will retry"),
        "{}",
        d.log()
    );
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_for_exactly(&d, &(0..20).collect());
    assert_eq!(d.log().matches("cannot read").count(), 1, "said once, not every poll");
}

#[test]
fn a_glob_follows_every_matching_file() {
    let logs = tempfile::tempdir().unwrap();
    append(&logs.path().join("writer.log"), &(0..30).map(line).collect::<String>());
    let d = Daemon::start(&format!(
        "[[file]]\npath = {:?}\npoll_interval = \"100ms\"\n",
        logs.path().join("*.log").display().to_string()
    ));
    append(&logs.path().join("api.log"), &(30..50).map(line).collect::<String>());
    append(
        &logs.path().join("ignored.txt"),
        &(50..60).map(line).collect::<String>(),
    );
    wait_for_exactly(&d, &(0..50).collect());
    let sources: BTreeSet<String> = {
        let db = d.db();
        let mut stmt = db
            .prepare("SELECT DISTINCT json_extract(doc, '$.source') FROM api_logs")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    assert_eq!(sources.len(), 2, "each file is its own source: {sources:?}");
}

#[test]
fn a_utf8_file_with_a_byte_order_mark_is_read_whole_and_a_utf16_file_is_named() {
    let logs = tempfile::tempdir().unwrap();
    let bom_file = logs.path().join("bom.log");
    let text: String = (0..5).map(line).collect();
    std::fs::write(&bom_file, [b"\xEF\xBB\xBF", text.as_bytes()].concat()).unwrap();
    let utf16_file = logs.path().join("utf16.log");
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            (5..7)
                .map(line)
                .collect::<String>()
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    std::fs::write(&utf16_file, utf16).unwrap();
    let d = Daemon::start(&format!(
        "[[file]]\npath = {:?}\npoll_interval = \"100ms\"\n",
        logs.path().join("*.log").display().to_string()
    ));
    wait_for_exactly(&d, &(0..5).collect());
    d.wait_for_count("api_rejects", 2);
    for reject in common::docs(&d.db(), "api_rejects") {
        let reason = reject["reason"].as_str().unwrap();
        assert!(reason.contains("the file is UTF-16; write UTF-8"), "{reason}");
    }
}
