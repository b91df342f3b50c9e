//! The tailer against a model of the app and the operator, in-process (after Vector's
//! `file_watcher` experiments): random writes, partial lines, rotations (rename and create),
//! truncations, copytruncates (also under a writer that keeps its offset), compression of rotated
//! files, stops, crashes and restarts from the saved checkpoints, for JSON lines and Python text
//! records, under a plain path and under a glob, with a small `max_open_files`.
//!
//! The test plays the pipeline and the store: it takes the tailer's chunks, stores their events
//! when it acknowledges them (ignoring an id it already has, as both stores do) and runs their
//! acks, which move the checkpoints; a crash drops the chunks not acknowledged and the checkpoints
//! not saved. The tailer runs one pass at a time ([`Tailer::step`]) on the test's thread, without
//! file-system notifications, so a case is the same sequence of passes each time it runs. The
//! property: every complete line (or record) written is stored, none twice under two ids, none
//! that was never written, each whole, and each file's lines in the order they were written.
//! The daemon-level tests in `tests/files.rs` keep a few cases of the same model end to end.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::sync::mpsc;

use super::checkpoint::Checkpoints;
use super::model_records::{text_record, text_record_parts};
use super::tailer::Tailer;
use super::{FileConfig, FileSource, Format};
use crate::event::{Body, Event, EventId, NaiveZone, Parser, Source};
use crate::pipeline::{Chunk, PipelineSender};
use crate::redact::{RedactConfig, Redactor};
use crate::shutdown::CancellationToken;
use crate::source::Ingest;
use crate::units::HumanDuration;

/// How long a catch-up may go without progress (nothing read, nothing new stored): what may
/// legitimately hold it up is time passing (`multiline_timeout`, `rotated_idle_timeout` before a
/// compressed copy of a file still open is read, the second of grace before a gone file gives up
/// its descriptor), all under a second whatever the load. A failing case ends this long after its
/// last progress, so that shrinking one is quick.
const STALLED: Duration = Duration::from_secs(3);
/// How long a catch-up may take in all.
const PATIENCE: Duration = Duration::from_secs(60);

/// How a written line ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Lf,
    CrLf,
    /// A lone `\r`.
    Cr,
}

/// What the app, the operator and the daemon's lifecycle do.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, End),
    /// A line written up to its middle; the next write completes it.
    WritePartial,
    /// `app.log` → `app.log.N` (a new name each time); the next write creates `app.log`.
    RotateRename,
    /// logrotate's copytruncate: copy to `app.log.N`, then truncate `app.log`.
    CopyTruncate,
    /// The same under a writer without O_APPEND: its next write lands at its old offset, after a
    /// hole of NULs.
    CopyTruncateKeepOffset,
    /// Truncate `app.log` in place (once what it holds is stored: truncating unread lines loses
    /// them by definition).
    Truncate,
    /// Delete `app.log` (once what it holds is stored) and start a new one.
    DeleteRecreate,
    /// Compress a rotated file (`app.log.N` → `app.log.N.gz`), as logrotate's `compress` does.
    Gzip(usize),
    /// Passes of the tailer.
    Step(u8),
    /// The store makes this many of the queued chunks durable, oldest first.
    Acknowledge(u8),
    /// The checkpoint saver runs.
    Save,
    /// SIGTERM: the queued chunks are stored, the checkpoints saved.
    Stop,
    /// kill -9: the queued chunks and the unsaved checkpoints are lost.
    Kill,
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..20, prop_oneof![4 => Just(End::Lf), 1 => Just(End::CrLf), 1 => Just(End::Cr)])
            .prop_map(|(n, end)| Op::Write(n, end)),
        1 => Just(Op::WritePartial),
        2 => Just(Op::RotateRename),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::CopyTruncateKeepOffset),
        1 => Just(Op::Truncate),
        1 => Just(Op::DeleteRecreate),
        2 => any::<usize>().prop_map(Op::Gzip),
        4 => (1u8..4).prop_map(Op::Step),
        3 => (1u8..8).prop_map(Op::Acknowledge),
        2 => Just(Op::Save),
        1 => Just(Op::Stop),
        1 => Just(Op::Kill),
        2 => Just(Op::Start),
    ]
}

/// A JSON line (`\n`-ended) of event `seq`.
fn json_line(seq: u64) -> String {
    format!("{{\"message\":\"record {seq}\",\"module\":\"tail\",\"extra\":{{\"seq\":{seq}}}}}\n")
}

/// The seq of a stored event, checking that it is stored whole.
fn seq_of(e: &Event, text: bool) -> Result<u64, String> {
    let log = match &e.body {
        Body::Log(log) => log,
        Body::Reject(r) => return Err(format!("rejected: {} ({:?})", r.reason, r.raw)),
        other => return Err(format!("not a log: {other:?}")),
    };
    let seq: u64 = log
        .message
        .strip_prefix("record ")
        .and_then(|m| m.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a record of the test: {:?}", log.message))?;
    let whole = if text {
        let (level, message, traceback) = text_record_parts(seq);
        log.level.as_str() == level && log.message == message && log.traceback == traceback
    } else {
        log.message == format!("record {seq}")
    };
    if !whole {
        return Err(format!("record {seq} is not stored whole: {log:?}"));
    }
    Ok(seq)
}

/// What the store holds: each event once by id, and the order events were first stored in.
#[derive(Default)]
struct Store {
    ids: HashMap<EventId, u64>,
    seqs: HashMap<u64, EventId>,
    order: Vec<u64>,
}

impl Store {
    /// Stores `e` unless its id is there already; returns its seq.
    fn insert(&mut self, e: &Event, text: bool) -> Result<u64, String> {
        if let Some(&seq) = self.ids.get(&e.id) {
            return Ok(seq); // read again after a restart: the store ignores it
        }
        let seq = seq_of(e, text)?;
        if let Some(first) = self.seqs.insert(seq, e.id) {
            return Err(format!("record {seq} stored twice, as {first:?} and {:?}", e.id));
        }
        self.ids.insert(e.id, seq);
        self.order.push(seq);
        Ok(seq)
    }

    fn stored(&self) -> BTreeSet<u64> {
        self.seqs.keys().copied().collect()
    }
}

/// The collector: the tailer, with the test as its pipeline and store.
struct Collector {
    cfg: FileConfig,
    state: tempfile::TempDir,
    runtime: tokio::runtime::Handle,
    ingest: Ingest,
    rx: mpsc::Receiver<Chunk>,
    checkpoints: Arc<Checkpoints>,
    tailer: Option<Tailer>,
    /// Chunks queued and not durable yet, oldest first.
    queued: VecDeque<Chunk>,
    /// Records acknowledged to this run of the tailer: their files have a checkpoint in its
    /// memory, which the next save writes (a crash before it loses them).
    acknowledged: HashSet<u64>,
    store: Store,
    text: bool,
}

impl Collector {
    fn new(cfg: FileConfig, shared: &Shared) -> Collector {
        let (runtime, redactor) = (shared.runtime.clone(), shared.redactor.clone());
        let zone = Arc::new(NaiveZone::named("UTC").unwrap());
        let (sender, rx) = PipelineSender::to_test(4096, 256 << 20);
        let ingest = Ingest::new(
            Parser::new(redactor).with_naive_timezone(zone),
            Arc::default(),
            sender,
            Arc::default(),
            Source::from(cfg.path.as_str()),
            cfg.max_line_bytes,
        );
        let state = tempfile::tempdir().unwrap();
        let checkpoints = Arc::new(Checkpoints::load(state.path()));
        Collector {
            text: cfg.format == Format::Python,
            cfg,
            state,
            runtime,
            ingest,
            rx,
            checkpoints,
            tailer: None,
            queued: VecDeque::new(),
            acknowledged: HashSet::new(),
            store: Store::default(),
        }
    }

    fn running(&self) -> bool {
        self.tailer.is_some()
    }

    /// Starts from the saved checkpoints, as the daemon does.
    fn start(&mut self) {
        if self.running() {
            return;
        }
        self.checkpoints = Arc::new(Checkpoints::load(self.state.path()));
        self.acknowledged.clear();
        let source = FileSource::new(self.cfg.clone(), self.ingest.clone(), self.checkpoints.clone()).unwrap();
        // Passes are driven by the test: no notifications, so nothing wakes it.
        let (wake_tx, _) = std::sync::mpsc::channel();
        let mut tailer = Tailer::new(source, self.runtime.clone(), CancellationToken::new(), wake_tx);
        tailer.begin();
        self.tailer = Some(tailer);
    }

    /// One pass of the tailer, if it runs; whether it read anything.
    fn step(&mut self) -> Result<bool, TestCaseError> {
        let busy = match self.tailer.as_mut().map(Tailer::step) {
            None => false,
            Some(Ok(busy)) => busy,
            Some(Err(_)) => return Err(TestCaseError::fail("the tailer stopped by itself")),
        };
        while let Ok(chunk) = self.rx.try_recv() {
            self.queued.push_back(chunk);
        }
        Ok(busy)
    }

    /// The store makes the `n` oldest queued chunks durable and acknowledges them.
    fn acknowledge(&mut self, n: usize) -> Result<(), TestCaseError> {
        for _ in 0..n {
            let Some(chunk) = self.queued.pop_front() else { break };
            for e in &chunk.events {
                let seq = self.store.insert(e, self.text).map_err(TestCaseError::fail)?;
                self.acknowledged.insert(seq);
            }
            if let Some(ack) = &chunk.ack {
                ack.acknowledge_n(chunk.events.len());
            }
        }
        Ok(())
    }

    fn save(&self) {
        self.checkpoints.save().unwrap();
    }

    /// SIGTERM: the tailer stops, what it queued is stored, the checkpoints are saved.
    fn stop(&mut self) -> Result<(), TestCaseError> {
        if self.tailer.take().is_some() {
            self.step()?;
            self.acknowledge(usize::MAX)?;
            self.save();
        }
        Ok(())
    }

    /// kill -9: what was queued and the checkpoints not saved are lost.
    fn kill(&mut self) -> Result<(), TestCaseError> {
        if self.tailer.take().is_some() {
            self.step()?;
            self.queued.clear();
        }
        Ok(())
    }

    /// Runs passes and stores everything until `done` holds, failing after [`STALLED`] without
    /// progress.
    fn catch_up(&mut self, what: &str, done: impl Fn(&Store) -> bool) -> Result<(), TestCaseError> {
        self.start();
        let began = Instant::now();
        let mut progress = (Instant::now(), self.store.order.len());
        loop {
            let busy = self.step()?;
            self.acknowledge(usize::MAX)?;
            if done(&self.store) {
                return Ok(());
            }
            if busy || self.store.order.len() > progress.1 {
                progress = (Instant::now(), self.store.order.len());
            }
            if progress.0.elapsed() > STALLED || began.elapsed() > PATIENCE {
                return Err(TestCaseError::fail(format!("{what}: no progress for {STALLED:?}")));
            }
            if !busy {
                // Time must pass for an open record's multiline_timeout, or a file gone from the
                // scanned paths to be let go (its compressed copy waits for that).
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// The app writing its log, and what it expects to be stored.
struct App {
    dir: PathBuf,
    text: bool,
    next_seq: u64,
    /// The content `app.log` holds now: a new one after each rotation, truncation or deletion.
    generation: u64,
    rotations: u32,
    expected: BTreeSet<u64>,
    /// The generation each record was written to, for the order check.
    file_of: HashMap<u64, u64>,
    /// A partial line: its seq and the text that completes it.
    partial: Option<(u64, String)>,
    /// Where the next write lands after a copytruncate under a writer that keeps its offset.
    write_at: Option<u64>,
    /// Rotated files not compressed yet, with their generation.
    rotated: Vec<(PathBuf, u64)>,
    /// Generations with a saved checkpoint: a record of theirs had been acknowledged to the run
    /// that saved. A compressed copy of them is read; a `.gz` of a file with no checkpoint is not
    /// (the documented rule: it cannot be told from an old archive).
    saved: HashSet<u64>,
}

impl App {
    fn log(&self) -> PathBuf {
        self.dir.join("app.log")
    }

    fn record(&self, seq: u64) -> String {
        if self.text {
            text_record(seq)
        } else {
            json_line(seq)
        }
    }

    /// The app's write: appended, or at its kept offset after a copytruncate.
    fn write(&mut self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(self.write_at.is_none())
            .truncate(false)
            .open(self.log())
            .unwrap();
        match self.write_at.take() {
            Some(at) => std::os::unix::fs::FileExt::write_all_at(&f, text.as_bytes(), at).unwrap(),
            None => f.write_all(text.as_bytes()).unwrap(),
        }
    }

    /// `app.log` holds new content from now on.
    fn new_generation(&mut self) {
        self.generation += 1;
        self.partial = None;
        self.write_at = None;
    }

    fn rotated_name(&mut self) -> PathBuf {
        self.rotations += 1;
        self.dir.join(format!("app.log.{}", self.rotations))
    }

    fn apply(&mut self, op: &Op, c: &mut Collector) -> Result<(), TestCaseError> {
        match *op {
            Op::Write(n, end) => {
                let mut text = String::new();
                if let Some((seq, rest)) = self.partial.take() {
                    text.push_str(&rest);
                    self.expected.insert(seq);
                }
                for _ in 0..n {
                    let seq = self.next_seq;
                    for l in self.record(seq).lines() {
                        text.push_str(l);
                        text.push_str(match end {
                            End::Lf => "\n",
                            End::CrLf => "\r\n",
                            End::Cr => "\r",
                        });
                    }
                    self.expected.insert(seq);
                    self.file_of.insert(seq, self.generation);
                    self.next_seq += 1;
                }
                self.write(&text);
            }
            Op::WritePartial => {
                if self.partial.is_none() {
                    let seq = self.next_seq;
                    let full = self.record(seq);
                    // Inside the first line: a record never begun if a rotation leaves it there.
                    let cut = full.find('\n').unwrap_or(0) / 2;
                    self.write(&full[..cut]);
                    self.partial = Some((seq, full[cut..].to_string()));
                    self.file_of.insert(seq, self.generation);
                    self.next_seq += 1;
                }
            }
            Op::RotateRename => {
                if self.log().exists() {
                    let to = self.rotated_name();
                    std::fs::rename(self.log(), &to).unwrap();
                    self.rotated.push((to, self.generation));
                    self.new_generation();
                }
            }
            Op::CopyTruncate | Op::CopyTruncateKeepOffset => {
                if self.log().exists() {
                    let size = std::fs::metadata(self.log()).unwrap().len();
                    let to = self.rotated_name();
                    std::fs::copy(self.log(), &to).unwrap();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(self.log())
                        .unwrap();
                    self.rotated.push((to, self.generation));
                    self.new_generation();
                    self.write_at = matches!(op, Op::CopyTruncateKeepOffset).then_some(size);
                }
            }
            Op::Truncate | Op::DeleteRecreate => {
                if self.log().exists() {
                    let expected = self.expected.clone();
                    c.catch_up("catching up before a truncation", |s| s.stored() == expected)?;
                    if let Op::Truncate = op {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .truncate(true)
                            .open(self.log())
                            .unwrap();
                    } else {
                        std::fs::remove_file(self.log()).unwrap();
                    }
                    self.new_generation();
                }
            }
            Op::Gzip(pick) => {
                let eligible: Vec<usize> = (0..self.rotated.len())
                    .filter(|&i| self.saved.contains(&self.rotated[i].1))
                    .collect();
                if !eligible.is_empty() {
                    let (path, _) = self.rotated.remove(eligible[pick % eligible.len()]);
                    let mut gz = flate2::write::GzEncoder::new(
                        std::fs::File::create(
                            path.with_extension(format!("{}.gz", path.extension().unwrap().to_string_lossy())),
                        )
                        .unwrap(),
                        flate2::Compression::fast(),
                    );
                    gz.write_all(&std::fs::read(&path).unwrap()).unwrap();
                    gz.finish().unwrap();
                    std::fs::remove_file(&path).unwrap();
                }
            }
            Op::Step(n) => {
                for _ in 0..n {
                    c.step()?;
                }
            }
            Op::Acknowledge(n) => c.acknowledge(usize::from(n))?,
            Op::Save => {
                if c.running() {
                    self.saved_now(c);
                }
            }
            Op::Stop => {
                if c.running() {
                    c.stop()?;
                    self.saved_now(c);
                }
            }
            Op::Kill => c.kill()?,
            Op::Start => c.start(),
        }
        Ok(())
    }

    /// The collector saves its checkpoints: the files this run acknowledged records of are in them.
    fn saved_now(&mut self, c: &Collector) {
        c.save();
        let file_of = &self.file_of;
        self.saved
            .extend(c.acknowledged.iter().filter_map(|seq| file_of.get(seq).copied()));
    }
}

/// What the cases share: made once, since compiling the redaction rules takes longer than a case.
struct Shared {
    runtime: tokio::runtime::Handle,
    redactor: Arc<Redactor>,
}

/// One case: the ops, then a start and a catch-up; the property holds.
fn run_case(ops: &[Op], text: bool, glob: bool, max_open_files: usize, shared: &Shared) -> Result<(), TestCaseError> {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join(if glob { "*.log" } else { "app.log" });
    let cfg = FileConfig {
        path: path.display().to_string(),
        poll_interval: HumanDuration(Duration::from_millis(10)),
        max_open_files,
        rotated_idle_timeout: HumanDuration(Duration::from_millis(100)),
        format: if text { Format::Python } else { Format::Json },
        multiline_timeout: HumanDuration(Duration::from_millis(10)),
        ..FileConfig::default()
    };
    let mut c = Collector::new(cfg, shared);
    c.start();
    let mut app = App {
        dir: logs.path().to_path_buf(),
        text,
        next_seq: 0,
        generation: 0,
        rotations: 0,
        expected: BTreeSet::new(),
        file_of: HashMap::new(),
        partial: None,
        write_at: None,
        rotated: Vec::new(),
        saved: HashSet::new(),
    };
    for op in ops {
        app.apply(op, &mut c)?;
    }
    let expected = app.expected.clone();
    let caught_up = c.catch_up("every record stored", |s| expected.is_subset(&s.stored()));
    let stored = c.store.stored();
    let missing: Vec<&u64> = expected.difference(&stored).collect();
    let extra: Vec<&u64> = stored.difference(&expected).collect();
    prop_assert!(missing.is_empty(), "missing {missing:?} ({caught_up:?})");
    prop_assert!(extra.is_empty(), "stored but never completed: {extra:?}");
    // Each file's records in the order they were written.
    let mut last: HashMap<u64, u64> = HashMap::new();
    for &seq in &c.store.order {
        let file = app.file_of[&seq];
        if let Some(before) = last.insert(file, seq) {
            prop_assert!(before < seq, "record {seq} stored after {before} of the same file");
        }
    }
    Ok(())
}

#[test]
fn every_line_and_record_exactly_once_and_in_order_whatever_happens_to_the_files() {
    // PROPTEST_CASES=5000 for a longer soak.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shared = Shared {
        runtime: runtime.handle().clone(),
        redactor: Arc::new(Redactor::new(&RedactConfig::default()).unwrap()),
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(op(), 1..40),
        any::<bool>(),
        any::<bool>(),
        1usize..5,
    );
    let began = Instant::now();
    let result = runner.run(&strategy, |(ops, text, glob, cap)| {
        run_case(&ops, text, glob, cap, &shared)
    });
    eprintln!("{cases} cases in {:.1} s", began.elapsed().as_secs_f64());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Found by the model: with one descriptor, a copytruncate, and the app writing as many bytes
/// again before the next scan, the open file was parked to make room for the copy with its new
/// size and mtime, as if its new content had been read; that content was never read.
#[test]
fn a_file_truncated_and_rewritten_to_the_same_size_is_not_parked_as_read() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shared = Shared {
        runtime: runtime.handle().clone(),
        redactor: Arc::new(Redactor::new(&RedactConfig::default()).unwrap()),
    };
    let ops = [
        Op::Write(10, End::Lf),
        Op::Truncate,
        Op::Write(11, End::Lf),
        Op::Step(2),
        Op::CopyTruncate,
        Op::Write(11, End::Lf),
        Op::Truncate,
    ];
    if let Err(e) = run_case(&ops, false, false, 1, &shared) {
        panic!("{e}");
    }
}
