//! The file source against the real daemon: rotation, truncation, restarts, crashes.

use crate::common;
use lngpt_collector::source::file::model_records::{text_record, text_record_parts};

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{wait_until, Daemon};
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

/// Every stored `extra.seq`, in row order (duplicates kept, so they can be seen). A text record's
/// seq is in its message (`record 12 …`), and the record must be stored whole: its level, message
/// and traceback as written.
fn stored_seqs(d: &Daemon) -> Vec<u64> {
    let db = d.db();
    let mut stmt = db
        .prepare("SELECT json_extract(doc, '$.extra.seq'), level, json_extract(doc, '$.message'), json_extract(doc, '$.traceback') FROM api_logs")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap();
    rows.map(|r| {
        let (seq, level, message, traceback) = r.unwrap();
        if let Some(seq) = seq {
            return seq as u64;
        }
        let seq: u64 = message
            .strip_prefix("record ")
            .and_then(|m| m.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a record of the test: {message:?}"));
        let (want_level, want_message, want_traceback) = text_record_parts(seq);
        assert_eq!(
            (level.as_str(), message.as_str(), traceback.as_deref()),
            (want_level, want_message.as_str(), want_traceback.as_deref()),
            "record {seq} is not stored whole"
        );
        seq
    })
    .collect()
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
            // Missing lines as ranges: a run points at a file or a stretch of one.
            let mut missing: Vec<(u64, u64)> = Vec::new();
            for &seq in expected.difference(&got) {
                match missing.last_mut() {
                    Some(run) if run.1 + 1 == seq => run.1 = seq,
                    _ => missing.push((seq, seq)),
                }
            }
            let runs: Vec<String> = missing.iter().take(20).map(|(a, b)| format!("{a}..={b}")).collect();
            format!(
                "{} of {} stored; missing {runs:?}\n{}",
                got.len(),
                expected.len(),
                d.log()
            )
        },
    );
}

/// How a written line ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Lf,
    CrLf,
    /// A lone `\r`.
    Cr,
}

/// What the app and the operator do to the log file and the daemon.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, End),
    /// A line written up to the middle; the next write completes it.
    WritePartial,
    /// `app.log` → `app.log.N` (a new name each time), the next write creates `app.log`.
    RotateRename,
    /// logrotate's copytruncate: copy to `app.log.N`, then truncate `app.log`.
    CopyTruncate,
    /// The same under a writer without O_APPEND: its next write lands at its old offset, after a
    /// hole of NULs.
    CopyTruncateKeepOffset,
    /// Delete `app.log` (after the daemon caught up) and start a new one.
    DeleteRecreate,
    Stop,
    Kill,
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..60, prop_oneof![4 => Just(End::Lf), 1 => Just(End::CrLf), 1 => Just(End::Cr)])
            .prop_map(|(n, end)| Op::Write(n, end)),
        2 => Just(Op::WritePartial),
        2 => Just(Op::RotateRename),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::CopyTruncateKeepOffset),
        1 => Just(Op::DeleteRecreate),
        1 => Just(Op::Stop),
        1 => Just(Op::Kill),
        2 => Just(Op::Start),
    ]
}

struct Model {
    logs: tempfile::TempDir,
    daemon: Daemon,
    /// Python text records instead of JSON lines.
    text: bool,
    running: bool,
    next_seq: u64,
    rotations: u32,
    expected: BTreeSet<u64>,
    /// A partial line: its seq and the text that completes it.
    partial: Option<(u64, String)>,
    /// Where the next write lands after a copytruncate under a writer that keeps its offset.
    write_at: Option<u64>,
}

impl Model {
    fn log(&self) -> PathBuf {
        self.logs.path().join("app.log")
    }

    /// The text of event `seq`, every line ending in `\n`.
    fn record(&self, seq: u64) -> String {
        if self.text {
            text_record(seq)
        } else {
            line(seq)
        }
    }

    /// The app's write: appended, or at its kept offset after a copytruncate.
    fn write(&mut self, text: &str) {
        match self.write_at.take() {
            Some(at) => {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.log())
                    .unwrap();
                f.write_all_at(text.as_bytes(), at).unwrap();
            }
            None => append(&self.log(), text),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write(n, end) => {
                let mut text = String::new();
                if let Some((seq, rest)) = self.partial.take() {
                    text.push_str(&rest);
                    self.expected.insert(seq);
                }
                for _ in 0..n {
                    for l in self.record(self.next_seq).lines() {
                        text.push_str(l);
                        text.push_str(match end {
                            End::Lf => "\n",
                            End::CrLf => "\r\n",
                            End::Cr => "\r",
                        });
                    }
                    self.expected.insert(self.next_seq);
                    self.next_seq += 1;
                }
                self.write(&text);
            }
            Op::WritePartial => {
                if self.partial.is_none() {
                    let full = self.record(self.next_seq);
                    // Inside the first line: a record never begun if a rotation leaves it there.
                    let cut = full.find('\n').unwrap() / 2;
                    self.write(&full[..cut]);
                    self.partial = Some((self.next_seq, full[cut..].to_string()));
                    self.next_seq += 1;
                }
            }
            Op::RotateRename => {
                if self.log().exists() {
                    self.rotations += 1;
                    std::fs::rename(self.log(), self.logs.path().join(format!("app.log.{}", self.rotations))).unwrap();
                    self.partial = None; // stays incomplete in the rotated file: never a line
                    self.write_at = None;
                }
            }
            Op::CopyTruncate | Op::CopyTruncateKeepOffset => {
                if self.log().exists() {
                    let size = std::fs::metadata(self.log()).unwrap().len();
                    self.rotations += 1;
                    std::fs::copy(self.log(), self.logs.path().join(format!("app.log.{}", self.rotations))).unwrap();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(self.log())
                        .unwrap();
                    self.partial = None;
                    self.write_at = matches!(op, Op::CopyTruncateKeepOffset).then_some(size);
                }
            }
            Op::DeleteRecreate => {
                // Deleting a file the daemon never saw loses it by definition; delete what was read.
                self.apply(&Op::Start);
                wait_for_exactly(&self.daemon, &self.expected);
                let _ = std::fs::remove_file(self.log());
                self.partial = None;
                self.write_at = None;
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
    // The end-to-end guarantee, a few cases (each starts the real daemon per restart): the model
    // runs hundreds of cases in-process against the tailer itself (`source::file::tests`).
    // DAEMON_PROPTEST_CASES=200 for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("DAEMON_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random writes (lines ending in `\n`, `\r\n` or a lone `\r`), partial lines, rotations,
    /// truncations (also under a writer that keeps its offset, leaving NUL holes), stops, crashes
    /// and restarts: every complete line written is stored, and none twice. (Writes never race a copytruncate here, so
    /// its inherent loss window — lines written between the copy and the truncate — does not arise.)
    #[test]
    fn every_complete_line_exactly_once_whatever_happens(ops in prop::collection::vec(op(), 1..14)) {
        let logs = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(&file_section(&logs.path().join("app.log"), ""));
        let mut model = Model { logs, daemon, text: false, running: true, next_seq: 0, rotations: 0, expected: BTreeSet::new(), partial: None, write_at: None };
        for op in &ops {
            model.apply(op);
        }
        model.apply(&Op::Start);
        wait_for_exactly(&model.daemon, &model.expected);
    }

    /// The same with Python text records of one or more lines (tracebacks with blank lines,
    /// messages with newlines): every complete record is stored once and whole, none is rejected.
    /// (The app writes a record at once, as Python's handlers do; a record split by a rotation has
    /// its own test.)
    #[test]
    fn every_python_record_exactly_once_and_whole_whatever_happens(ops in prop::collection::vec(op(), 1..14)) {
        let logs = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(&file_section(&logs.path().join("app.log"), TEXT));
        let mut model = Model { logs, daemon, text: true, running: true, next_seq: 0, rotations: 0, expected: BTreeSet::new(), partial: None, write_at: None };
        for op in &ops {
            model.apply(op);
        }
        model.apply(&Op::Start);
        wait_for_exactly(&model.daemon, &model.expected);
        prop_assert_eq!(model.daemon.count("api_rejects"), 0, "{}", model.daemon.log());
    }
}

/// A `[[file]]` entry's keys for the app's text log, with a short wait for a record's last lines.
const TEXT: &str = "format = \"python\"\nmultiline_timeout = \"300ms\"";

/// Found by the property test: a file written and rotated away faster than the tailer's scan, then a
/// stop. It has no checkpoint, so the next start must read it whole, however old its mtime is.
#[test]
fn a_file_rotated_away_before_it_was_ever_read_is_read_on_the_next_start() {
    let logs = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&file_section(&logs.path().join("app.log"), ""));
    let mut model = Model {
        logs,
        daemon,
        text: false,
        running: true,
        next_seq: 0,
        rotations: 0,
        expected: BTreeSet::new(),
        partial: None,
        write_at: None,
    };
    for op in [
        Op::Write(58, End::Lf),
        Op::Write(58, End::Lf),
        Op::RotateRename,
        Op::Write(45, End::Lf),
        Op::RotateRename,
        Op::Stop,
        Op::WritePartial,
        Op::Write(4, End::Lf),
        Op::Write(39, End::Lf),
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

/// CPU time (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks as f64 / per_second
}

/// How many of the process's open descriptors are files under `dir` (not `dir` itself, which a
/// directory listing opens).
fn open_fds_under(pid: i32, dir: &Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && target != dir)
        .count()
}

/// Waits for `check` like `wait_until`, but fails after `limit`: for what must happen promptly.
fn wait_within<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} took over {limit:?}; {}", describe());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Item 18: an idle tailer must sleep. Its own directory listings and reads cause inotify "open"
/// events; waking on those made it spin a core whether the file existed or not.
#[test]
fn an_idle_daemon_with_file_sources_uses_under_one_percent_of_a_core() {
    let logs = tempfile::tempdir().unwrap();
    let existing = logs.path().join("app.log");
    append(&existing, &line(0));
    // Polls every 250 ms, four times as often as the default: the cost of polling is part of what
    // is measured.
    let section = |path: &Path| {
        format!(
            "[[file]]\npath = {:?}\npoll_interval = \"250ms\"\n",
            path.display().to_string()
        )
    };
    let daemons = [
        ("an existing file", Daemon::start(&section(&existing))),
        (
            "a missing file",
            Daemon::start(&section(&logs.path().join("missing.log"))),
        ),
        ("a glob", Daemon::start(&section(&logs.path().join("*.log")))),
    ];
    for (_, d) in &daemons {
        d.wait_for_log("tailing");
    }
    wait_for_exactly(&daemons[0].1, &BTreeSet::from([0]));
    wait_for_exactly(&daemons[2].1, &BTreeSet::from([0]));
    let before: Vec<f64> = daemons.iter().map(|(_, d)| cpu_seconds(d.pid())).collect();
    // The measurement window itself, not a wait for something.
    std::thread::sleep(Duration::from_secs(10));
    for ((what, d), before) in daemons.iter().zip(before) {
        let used = cpu_seconds(d.pid()) - before;
        eprintln!("idle with {what}: {used:.3} CPU-s in 10 s");
        assert!(
            used < 0.1,
            "with {what}, the idle daemon used {used:.2} CPU-s in 10 s\n{}",
            d.log()
        );
    }
}

/// Item 19: a glob over thousands of files holds descriptors only for files with something to read,
/// never more than `max_open_files`, and still reads every line of every file once.
#[test]
fn a_glob_over_thousands_of_files_stays_within_max_open_files_and_reads_every_line_once() {
    const FILES: u64 = 3000;
    const CAP: usize = 50;
    let logs = tempfile::tempdir().unwrap();
    for f in 0..FILES {
        append(
            &logs.path().join(format!("w{f}.log")),
            &(line(2 * f) + &line(2 * f + 1)),
        );
    }
    let d = Daemon::start(&file_section(
        &logs.path().join("*.log"),
        &format!("max_open_files = {CAP}"),
    ));
    let (pid, dir) = (d.pid(), logs.path().to_path_buf());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(open_fds_under(pid, &dir));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let mut expected: BTreeSet<u64> = (0..2 * FILES).collect();
    wait_for_exactly(&d, &expected);
    // New lines in files that were closed meanwhile.
    for f in (0..FILES).step_by(30) {
        let seq = 10_000 + f;
        append(&logs.path().join(format!("w{f}.log")), &line(seq));
        expected.insert(seq);
    }
    wait_for_exactly(&d, &expected);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = sampler.join().unwrap();
    eprintln!("at most {most} of {FILES} log files open at once (max_open_files = {CAP})");
    assert!(
        most <= CAP,
        "{most} log files open at once, over max_open_files = {CAP}"
    );
}

/// Item 21: copytruncate under a writer without O_APPEND leaves a hole of NULs up to the writer's
/// offset before its next line. The run is skipped (logged once per file, not per line) and the
/// line after it read, for runs under and over the line limit.
#[test]
fn copytruncate_under_a_writer_without_o_append_skips_the_nul_run_and_reads_the_next_line() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let d = Daemon::start(&file_section(&log, ""));
    // The app's handler: opened once, without O_APPEND, so it keeps its own offset.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    let mut expected = BTreeSet::new();
    let mut seq = 0;
    let mut write = |n: u64, writer: &mut std::fs::File, expected: &mut BTreeSet<u64>| {
        for _ in 0..n {
            writer.write_all(line(seq).as_bytes()).unwrap();
            expected.insert(seq);
            seq += 1;
        }
    };
    let copytruncate = |n: u32| {
        std::fs::copy(&log, logs.path().join(format!("app.log.{n}"))).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
    };
    write(10, &mut writer, &mut expected);
    wait_for_exactly(&d, &expected);
    copytruncate(1);
    write(10, &mut writer, &mut expected); // after a hole of ~700 bytes
    wait_for_exactly(&d, &expected);
    write(20_000, &mut writer, &mut expected);
    wait_for_exactly(&d, &expected);
    copytruncate(2);
    write(10, &mut writer, &mut expected); // after a hole of over 1 MiB
    wait_for_exactly(&d, &expected);
    assert_eq!(d.count("api_rejects"), 0, "{}", d.log());
    assert_eq!(
        d.log().matches("NUL bytes").count(),
        2,
        "once per truncated file\n{}",
        d.log()
    );
}

/// Item 22: a deleted file that its writer still holds is read when the writer writes again after
/// a pause, however long the pause, up to rotated_idle_timeout (5 minutes by default).
#[test]
fn a_deleted_file_still_held_by_its_writer_is_read_after_a_pause() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let d = Daemon::start(&file_section(&log, ""));
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
        .unwrap();
    writer
        .write_all((0..10).map(line).collect::<String>().as_bytes())
        .unwrap();
    wait_for_exactly(&d, &(0..10).collect());
    std::fs::remove_file(&log).unwrap();
    // The writer's pause: part of the scenario, longer than any grace a tailer might give.
    std::thread::sleep(Duration::from_secs(3));
    writer
        .write_all((10..30).map(line).collect::<String>().as_bytes())
        .unwrap();
    wait_for_exactly(&d, &(0..30).collect());
}

/// Item 23: a line may end in a lone `\r`, from a file and from the socket; `\r\n` is still one
/// line end.
#[test]
fn lines_ending_in_a_lone_carriage_return_are_lines_from_files_and_the_socket() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let d = Daemon::start(&file_section(&log, ""));
    let text = |seqs: std::ops::Range<u64>, end: &str| -> String {
        seqs.map(|s| line(s).trim_end().to_string() + end).collect()
    };
    append(&log, &text(0..10, "\r"));
    append(&log, &text(10..20, "\r\n"));
    append(&log, &text(20..30, "\r"));
    let answer = common::raw_send(
        &d.socket,
        &[text(30..40, "\r").as_bytes(), text(40..50, "\r\n").as_bytes()],
        Duration::ZERO,
    );
    assert!(answer.contains("\"events\":20"), "{answer}");
    wait_for_exactly(&d, &(0..50).collect());
    assert_eq!(d.count("api_rejects"), 0);
}

/// Item 25: the log directory renamed away and recreated: the tailer watches the new one at once,
/// so a line written there arrives long before the (here 30 s) poll would find it.
#[test]
fn a_directory_renamed_away_and_recreated_is_watched_again_at_once() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let log = dir.join("app.log");
    let d = Daemon::start(&format!(
        "[log]\nlevel = \"info,lngpt_collector=debug\"\n[[file]]\npath = {:?}\npoll_interval = \"30s\"\n",
        log.display().to_string()
    ));
    append(&log, &line(0));
    wait_for_exactly(&d, &BTreeSet::from([0]));
    std::fs::rename(&dir, base.path().join("logs.old")).unwrap();
    std::fs::create_dir(&dir).unwrap();
    // The write comes after the tailer has seen the new directory: a write racing the rename would
    // be found by the scan that the rename itself triggers, watched or not.
    let watching = format!("watching {} for changes", dir.display());
    wait_within(
        Duration::from_secs(10),
        "watching the recreated directory",
        || (d.log().matches(&watching).count() >= 2).then_some(()),
        || d.log(),
    );
    append(&log, &line(1));
    wait_within(
        Duration::from_secs(10),
        "the line in the recreated directory",
        || (stored_seqs(&d).len() == 2).then_some(()),
        || d.log(),
    );
    wait_for_exactly(&d, &BTreeSet::from([0, 1]));
}

/// Item 11: logrotate with `compress` and no `delaycompress` while the daemon is down turns the
/// unread rest of app.log into app.log.1.gz. It is read from the checkpoint on; a compressed file
/// that is not a checkpointed file is never read.
#[test]
fn a_rotation_compressed_while_the_daemon_was_down_is_read_from_its_checkpoint() {
    use flate2::{write::GzEncoder, Compression};
    let gzip = |from: &Path, to: &Path| {
        let mut gz = GzEncoder::new(std::fs::File::create(to).unwrap(), Compression::default());
        gz.write_all(&std::fs::read(from).unwrap()).unwrap();
        gz.finish().unwrap();
        std::fs::remove_file(from).unwrap();
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    // An old archive of another file, never read: its lines must not appear.
    let other = logs.path().join("other");
    append(&other, &(50_000..50_010).map(line).collect::<String>());
    gzip(&other, &logs.path().join("app.log.9.gz"));
    let mut d = Daemon::start(&file_section(&log, ""));
    append(&log, &(0..100).map(line).collect::<String>());
    wait_for_exactly(&d, &(0..100).collect());
    assert!(d.stop().success());
    append(&log, &(100..1100).map(line).collect::<String>());
    std::fs::rename(&log, logs.path().join("app.log.1")).unwrap();
    gzip(&logs.path().join("app.log.1"), &logs.path().join("app.log.1.gz"));
    append(&log, &(1100..1110).map(line).collect::<String>());
    d.restart();
    wait_for_exactly(&d, &(0..1110).collect());
}

/// Item 5: both checkpoint copies corrupt is not a fresh install: with start_at = "end" the files
/// are still read from their beginning (what was stored is recognized by its ids), so the lines
/// appended while the daemon was down are not skipped.
#[test]
fn with_both_checkpoint_copies_corrupt_files_are_read_whole_whatever_start_at_says() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    append(&log, &(0..50).map(line).collect::<String>());
    let mut d = Daemon::start(&file_section(&log, "start_at = \"end\""));
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
    append(&log, &(50..100).map(line).collect::<String>());
    wait_for_exactly(&d, &(50..100).collect());
    assert!(d.stop().success());
    append(&log, &(100..200).map(line).collect::<String>());
    std::fs::write(&checkpoints, b"{\"version\": 1, \"files\": [{").unwrap();
    std::fs::write(d.state.join("checkpoints.json.prev"), b"\0\0\0").unwrap();
    d.restart();
    d.wait_for_log("checkpoints are lost");
    // The 50 lines skipped at the first start are read now too: the price of not losing any.
    wait_for_exactly(&d, &(0..200).collect());
}

/// Item 16: a symlink planted where the checkpoint's temporary file used to go is never written
/// through (the daemon may run as root).
#[test]
fn a_symlink_planted_in_state_dir_is_not_written_through() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let mut d = Daemon::start(&file_section(&log, ""));
    assert!(d.stop().success());
    let victim = logs.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, d.state.join("checkpoints.json.tmp")).unwrap();
    d.restart();
    append(&log, &(0..10).map(line).collect::<String>());
    wait_for_exactly(&d, &(0..10).collect());
    let checkpoints = d.state.join("checkpoints.json");
    wait_until(
        "the checkpoint saved",
        || {
            std::fs::read_to_string(&checkpoints)
                .ok()
                .filter(|c| c.contains("app.log"))
                .map(|_| ())
        },
        || d.log(),
    );
    assert!(d.stop().success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

/// Item 10: closed files that are gone are forgotten, not remembered forever.
#[test]
fn closed_files_that_are_gone_are_forgotten() {
    let logs = tempfile::tempdir().unwrap();
    for f in 0..20 {
        append(&logs.path().join(format!("w{f}.log")), &line(f));
    }
    let d = Daemon::start(&format!(
        "[log]\nlevel = \"info,lngpt_collector=debug\"\n{}",
        file_section(&logs.path().join("*.log"), "max_open_files = 2")
    ));
    wait_for_exactly(&d, &(0..20).collect());
    d.wait_for_log("closed");
    for f in 0..20 {
        std::fs::remove_file(logs.path().join(format!("w{f}.log"))).unwrap();
    }
    d.wait_for_log("that are no longer there");
}

/// The stored documents of api_logs, keyed by the seq of the test's records (`record N …`).
fn text_docs(d: &Daemon) -> std::collections::BTreeMap<u64, serde_json::Value> {
    let mut by_seq = std::collections::BTreeMap::new();
    for doc in common::docs(&d.db(), "api_logs") {
        let message = doc["message"].as_str().unwrap_or_default();
        let seq = message
            .split(|c: char| !c.is_ascii_digit())
            .find(|n| !n.is_empty())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no seq in {doc}"));
        assert!(by_seq.insert(seq, doc).is_none(), "record {seq} stored twice");
    }
    by_seq
}

/// Issue 10: the app's own text log, as its `setup_logging()` writes it (the original LOG_FORMAT,
/// a RotatingFileHandler with a small maxBytes and backupCount=5), 50,000 records of which 1 %
/// carry a chained traceback, local times in Asia/Shanghai; the daemon is killed (-9) in the middle.
/// Every record is stored once, with its level, logger, time, message and whole traceback.
#[test]
fn python_text_log_50000_records_with_tracebacks_rotations_and_a_kill_9_exactly_once() {
    const RECORDS: u64 = 50_000;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let expected_path = logs.path().join("expected.jsonl");
    let pause = logs.path().join("pause");
    let tz = [("TZ", "Asia/Shanghai")];
    // `naive_timezone` is left at "local": the daemon reads times in its TZ, as Python writes them.
    let mut d = Daemon::start_with(&file_section(&log, "format = \"python\""), &tz);
    let script = format!(
        r#"
import json, logging, logging.handlers, os, time
LOG_FORMAT = '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
class Expected(logging.Handler):
    """What each record must be stored as (exc_text is set once the file handler formatted it)."""
    def __init__(self, path):
        super().__init__()
        self.out = open(path, "w", encoding="utf-8")
    def emit(self, r):
        self.out.write(json.dumps({{"seq": r.seq, "level": r.levelname, "logger": r.name,
            "ms": int(r.created) * 1000 + int(r.msecs), "message": r.getMessage(),
            "traceback": r.exc_text}}, ensure_ascii=False) + "\n")
class Counting(logging.handlers.RotatingFileHandler):
    rollovers = 0
    def doRollover(self):
        Counting.rollovers += 1
        super().doRollover()
file_handler = Counting({log:?}, maxBytes=300_000, backupCount=5, encoding="utf-8")
file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
expected = Expected({expected:?})
root = logging.getLogger("lngpt")
root.setLevel(logging.DEBUG)
root.addHandler(file_handler)
root.addHandler(expected)
loggers = [logging.getLogger(n) for n in ("lngpt", "lngpt.api", "lngpt.writer.chapter")]
levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
def call_model(i):
    try:
        {{}}["glm-4-flash-%d" % i]
    except KeyError as e:
        raise RuntimeError("no model for request %d" % i) from e
for i in range({RECORDS}):
    if i % 100 == 0:
        # While the test restarts the daemon: RotatingFileHandler deletes the oldest backup, and a
        # daemon that is down cannot read what is deleted meanwhile.
        while os.path.exists({pause:?}):
            time.sleep(0.01)
    if i % 250 == 0:
        time.sleep(0.005)
    lg = loggers[i % 3]
    if i % 100 == 7:
        try:
            call_model(i)
        except RuntimeError:
            lg.exception("API调用失败: request %d", i, extra={{"seq": i}})
    elif i % 300 == 11:
        lg.warning("request %d: a message\nwith newlines\n\n  and indentation", i, extra={{"seq": i}})
    else:
        lg.log(levels[i % 5], "request %d 开始API调用 tokens=%d", i, i * 7, extra={{"seq": i}})
expected.out.close()
print(Counting.rollovers)
"#,
        log = log.display().to_string(),
        expected = expected_path.display().to_string(),
        pause = pause.display().to_string(),
    );
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("TZ", "Asia/Shanghai")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "some records stored",
        || (d.count("api_logs") >= 15_000).then_some(()),
        || d.log(),
    );
    d.signal(Signal::SIGKILL);
    std::fs::write(&pause, b"").unwrap();
    d.wait_exit();
    d.restart();
    std::fs::remove_file(&pause).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rollovers: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(rollovers >= 10, "only {rollovers} rotations");
    wait_until(
        "every record stored",
        || (d.count("api_logs") >= RECORDS).then_some(()),
        || format!("{} of {RECORDS} stored\n{}", d.count("api_logs"), d.log()),
    );
    let stored = text_docs(&d);
    assert_eq!(stored.len() as u64, RECORDS);
    let mut tracebacks = 0;
    for line in std::fs::read_to_string(&expected_path).unwrap().lines() {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = want["seq"].as_u64().unwrap();
        let got = &stored[&seq];
        let want_time = lngpt_collector::event::Timestamp(want["ms"].as_i64().unwrap()).to_string();
        assert_eq!(got["level"], want["level"], "record {seq}: {got}");
        assert_eq!(got["logger"], want["logger"], "record {seq}: {got}");
        assert_eq!(
            got["timestamp"].as_str(),
            Some(want_time.as_str()),
            "record {seq}: {got}"
        );
        assert_eq!(got["message"], want["message"], "record {seq}: {got}");
        assert_eq!(got["traceback"], want["traceback"], "record {seq}: {got}");
        tracebacks += usize::from(!want["traceback"].is_null());
    }
    assert_eq!(tracebacks, 500);
    assert_eq!(d.count("api_rejects"), 0, "{}", d.log());
}

/// A record is complete only when the next begins (or after multiline_timeout, here far away): a
/// kill -9 (and a stop) while its traceback is half written neither loses nor duplicates it, and
/// the checkpoint never stops inside it.
#[test]
fn a_kill_9_or_a_stop_in_the_middle_of_a_traceback_stores_the_record_once_and_whole() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let mut d = Daemon::start(&file_section(&log, "format = \"python\"\nmultiline_timeout = \"10m\""));
    // Records 0..=5 and 6..=11 each end in one whose traceback is cut in two by the crash.
    for (first, stop) in [(0, Signal::SIGKILL), (6, Signal::SIGTERM)] {
        let split = first + 3; // a traceback record (seq % 6 == 3)
        let (before, after): (String, String) = {
            let record = text_record(split);
            let cut = record.match_indices('\n').nth(4).unwrap().0 + 1; // inside its traceback
            (record[..cut].to_string(), record[cut..].to_string())
        };
        append(&log, &((first..split).map(text_record).collect::<String>() + &before));
        wait_for_exactly(&d, &(0..split).collect());
        d.signal(stop);
        d.wait_exit();
        append(&log, &after);
        append(&log, &(split + 1..first + 6).map(text_record).collect::<String>());
        d.restart();
        // The last record of the batch stays open: the next batch completes it.
        wait_for_exactly(&d, &(0..first + 5).collect());
    }
    append(&log, &text_record(12));
    wait_for_exactly(&d, &(0..12).collect());
    assert_eq!(d.count("api_rejects"), 0, "{}", d.log());
}

/// A rotation in the middle of a record (a copytruncate, or a writer that splits its writes): the
/// old file's record is stored with the lines it has once multiline_timeout passes, and the new
/// file's first lines, which continue nothing, are one reject that says why. Nothing is lost.
#[test]
fn a_record_cut_by_a_rotation_is_stored_with_its_lines_and_the_rest_is_a_reject_that_says_why() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let d = Daemon::start(&file_section(&log, TEXT));
    let record = text_record(3);
    let cut = record.match_indices('\n').nth(4).unwrap().0 + 1;
    append(&log, &(text_record(2) + &record[..cut]));
    // Record 3 may be taken as complete (with the lines it has) before the rename, or after.
    wait_until("record 2", || (d.count("api_logs") >= 1).then_some(()), || d.log());
    std::fs::rename(&log, logs.path().join("app.log.1")).unwrap();
    append(&log, &(record[cut..].to_string() + &text_record(4)));
    d.wait_for_count("api_rejects", 1);
    wait_until(
        "records 2, 3 and 4",
        || (d.count("api_logs") == 3).then_some(()),
        || d.log(),
    );
    let docs = text_docs(&d);
    let (_, _, traceback) = text_record_parts(3);
    let kept: Vec<&str> = record[..cut].lines().skip(1).collect();
    assert_eq!(docs[&3]["traceback"].as_str(), Some(kept.join("\n").as_str()));
    assert!(traceback.unwrap().starts_with(&kept.join("\n")));
    let reject = &common::docs(&d.db(), "api_rejects")[0];
    let reason = reject["reason"].as_str().unwrap();
    assert!(
        reason.contains("lines do not match the pattern `%(asctime)s - %(name)s - %(levelname)s - %(message)s`")
            && reason.contains("begin the file"),
        "{reason}"
    );
    assert_eq!(
        reject["raw"].as_str(),
        Some(record[cut..].trim()),
        "its leading blank line is not kept"
    );
}

/// `format = "auto"` reads each file by its first line: JSON lines or the app's text; `LOG_FORMAT`
/// in the environment is the app's pattern when the entry gives none.
#[test]
fn format_auto_reads_json_and_text_files_side_by_side_and_log_format_gives_the_pattern() {
    let logs = tempfile::tempdir().unwrap();
    append(&logs.path().join("json.log"), &(0..5).map(line).collect::<String>());
    append(
        &logs.path().join("text.log"),
        "INFO:lngpt:record 5 first\nERROR:lngpt.api:record 6 second\nTraceback (most recent call last):\nValueError: 6\nINFO:lngpt:record 7 third\n",
    );
    let d = Daemon::start_with(
        &file_section(
            &logs.path().join("*.log"),
            "format = \"auto\"\nmultiline_timeout = \"100ms\"",
        ),
        &[("LOG_FORMAT", "%(levelname)s:%(name)s:%(message)s")],
    );
    d.wait_for_count("api_logs", 8);
    let docs = text_docs(&d);
    assert_eq!(docs[&6]["logger"], "lngpt.api");
    assert_eq!(
        docs[&6]["traceback"],
        "Traceback (most recent call last):\nValueError: 6"
    );
    assert_eq!(docs[&2]["extra"]["seq"], 2);
    assert_eq!(d.count("api_rejects"), 0, "{}", d.log());
}

/// Issue 10, timestamps: `asctime` has no offset, so it is read in `naive_timezone`, the one
/// setting that reads naive times in JSON lines too. Under `TZ=Asia/Shanghai`, records either side
/// of local midnight land 8 hours earlier in UTC, on the same UTC day, in a text log and a JSON-lines
/// file alike; a configured zone wins over the host's.
#[test]
fn asctime_is_read_in_naive_timezone_like_naive_json_times_either_side_of_midnight() {
    let stored = |config: &str| {
        let logs = tempfile::tempdir().unwrap();
        append(
            &logs.path().join("app.log"),
            "2026-11-26 23:59:59,999 - lngpt - INFO - record 1 before midnight\n\
             2026-11-27 00:00:00,000 - lngpt - INFO - record 2 after midnight\n\
             2026-11-27 00:00:00,001 - lngpt - INFO - record 3 last\n",
        );
        append(
            &logs.path().join("events.jsonl"),
            "{\"message\": \"record 4 before midnight\", \"timestamp\": \"2026-11-26T23:59:59.999\"}\n\
             {\"message\": \"record 5 after midnight\", \"timestamp\": \"2026-11-27T00:00:00.000\"}\n",
        );
        let entry = file_section(
            &logs.path().join("*"),
            "format = \"auto\"\nmultiline_timeout = \"50ms\"",
        );
        let d = Daemon::start_with(&format!("{config}{entry}"), &[("TZ", "Asia/Shanghai")]);
        d.wait_for_count("api_logs", 5);
        let times: Vec<String> = text_docs(&d)
            .values()
            .map(|doc| doc["timestamp"].as_str().unwrap().to_string())
            .collect();
        times
    };
    assert_eq!(
        stored(""),
        [
            "2026-11-26T15:59:59.999Z",
            "2026-11-26T16:00:00.000Z",
            "2026-11-26T16:00:00.001Z",
            "2026-11-26T15:59:59.999Z",
            "2026-11-26T16:00:00.000Z",
        ],
        "naive_timezone = \"local\" (the default) is the host's zone"
    );
    assert_eq!(
        stored("naive_timezone = \"America/New_York\"\n"),
        [
            "2026-11-27T04:59:59.999Z",
            "2026-11-27T05:00:00.000Z",
            "2026-11-27T05:00:00.001Z",
            "2026-11-27T04:59:59.999Z",
            "2026-11-27T05:00:00.000Z",
        ],
        "a configured zone wins over the host's"
    );
}

/// Issue 20, item 4: a text record keeps its lines up to `max_line_bytes` in all, a record of one
/// line longer than that too (it kept only the first 64 KiB, the length a rejected line keeps),
/// and a continuation line that crosses the limit keeps the part that fits. What is not kept is
/// counted in `extra.cut_bytes`.
#[test]
fn a_text_record_keeps_up_to_max_line_bytes_even_as_one_long_line() {
    const MAX: usize = 256 * 1024;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let header = |seq: u64| format!("2026-11-26 12:00:00,000 - lngpt - INFO - record {seq} ");
    // Record 1: one line of 1 MiB. Record 2: a short header, then a traceback whose second line
    // crosses the limit. Record 3 completes record 2.
    let long = "x".repeat(1 << 20);
    let first = format!("{}{long}\n", header(1));
    let tb_head = "Traceback (most recent call last):";
    let second = format!("{}boom\n{tb_head}\n{long}\n", header(2));
    append(&log, &(first.clone() + &second + &header(3) + "end\n"));
    let d = Daemon::start(&file_section(&log, &format!("{TEXT}\nmax_line_bytes = {MAX}")));
    d.wait_for_count("api_logs", 3);
    let docs = text_docs(&d);
    let one = &docs[&1];
    let message = one["message"].as_str().unwrap();
    let kept = header(1).len() - "record 1 ".len() + message.len();
    assert_eq!(kept, MAX, "the line's first max_line_bytes are kept");
    assert_eq!(one["extra"]["cut_bytes"].as_u64(), Some((first.len() - 1 - MAX) as u64));
    let two = &docs[&2];
    let traceback = two["traceback"].as_str().unwrap();
    let kept = header(2).len() + "boom".len() + 1 + traceback.len();
    assert_eq!(kept, MAX, "the record's lines fill max_line_bytes");
    assert_eq!(
        kept as u64 + two["extra"]["cut_bytes"].as_u64().unwrap(),
        (second.len() - 1) as u64,
        "every byte is kept or counted"
    );
    assert_eq!(d.count("api_rejects"), 0, "{}", d.log());
}

/// Issue 20, item 4: Python's handlers rotate between records, so the last record of a text log
/// is complete once its file is rotated away, and is stored at once, not `multiline_timeout` later
/// (here 10 minutes). A kill -9 in that wait, then `backupCount` deleting the rotated file before
/// the restart, lost the record: the checkpoint stood at its first line, in a file that was gone.
#[test]
fn the_last_record_of_a_rotated_text_log_is_stored_at_once_and_survives_a_kill_9_and_deletion() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let mut d = Daemon::start(&file_section(&log, "format = \"python\"\nmultiline_timeout = \"10m\""));
    append(&log, &(0..6).map(text_record).collect::<String>());
    // Record 5, the file's last, is open: nothing after it says it is complete.
    wait_for_exactly(&d, &(0..5).collect());
    // RotatingFileHandler's rollover, then the next records in the new file.
    std::fs::rename(&log, logs.path().join("app.log.1")).unwrap();
    append(&log, &(6..8).map(text_record).collect::<String>());
    wait_for_exactly(&d, &(0..7).collect());
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    std::fs::remove_file(logs.path().join("app.log.1")).unwrap();
    d.restart();
    append(&log, &text_record(8));
    wait_for_exactly(&d, &(0..8).collect());
    assert_eq!(d.count("api_rejects"), 0, "{}", d.log());
}

/// Issue 20, item 4: a glob follows the files its matches were rotated into, also while the daemon
/// was down. `*.log` matches neither `app.log.1` nor `worker.log.1.gz`; the lines written to them
/// before the rotation, while the daemon was stopped, were silently lost. They are read from
/// their checkpoints now (the compressed one too, and with no new `worker.log` beside it), once.
#[test]
fn a_glob_finishes_rotations_that_happened_while_the_daemon_was_down_compressed_or_not() {
    use flate2::{write::GzEncoder, Compression};
    let logs = tempfile::tempdir().unwrap();
    let (app, worker) = (logs.path().join("app.log"), logs.path().join("worker.log"));
    append(&app, &(0..100).map(line).collect::<String>());
    append(&worker, &(1000..1100).map(line).collect::<String>());
    let mut d = Daemon::start(&file_section(&logs.path().join("*.log"), ""));
    let mut expected: BTreeSet<u64> = (0..100).chain(1000..1100).collect();
    wait_for_exactly(&d, &expected);
    assert!(d.stop().success());
    // While stopped: more lines, then a rename rotation of app.log, and worker.log rotated and
    // compressed (logrotate's compress without delaycompress) with no new worker.log yet.
    append(&app, &(100..200).map(line).collect::<String>());
    std::fs::rename(&app, logs.path().join("app.log.1")).unwrap();
    append(&app, &(200..210).map(line).collect::<String>());
    append(&worker, &(1100..1200).map(line).collect::<String>());
    let mut gz = GzEncoder::new(
        std::fs::File::create(logs.path().join("worker.log.1.gz")).unwrap(),
        Compression::default(),
    );
    gz.write_all(&std::fs::read(&worker).unwrap()).unwrap();
    gz.finish().unwrap();
    std::fs::remove_file(&worker).unwrap();
    expected.extend((100..210).chain(1100..1200));
    d.restart();
    wait_for_exactly(&d, &expected);
}
