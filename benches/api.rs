//! The HTTP API of the release binary on a large embedded store.
//!
//! `cargo bench --bench api` generates a store of BENCH_STORE_EVENTS (default 10,000,000) events over
//! 10 days (70 % logs, of which 8 % ERROR; 15 % cost; 15 % performance), kept in
//! `target/bench-api-store-<N>` for later runs, and starts the daemon on it. It then measures, with a
//! fresh connection per request as a browser's first request would:
//!
//! - the first page of `/api/logs?level=ERROR` and a keyset page 1,000 pages deep (p50, p99);
//! - `/api/stats/cost` over the last 24 h (p50, max);
//! - `/api/budget` (p50, p99), the app's gate before each call;
//! - ingest of BENCH_INGEST_EVENTS (default 500,000) socket events into a fresh store, alone and with
//!   BENCH_SSE_CLIENTS (default 100) stream clients reading `/api/logs/stream`.
//!
//! Targets: p99 < 20 ms for both pages, < 200 ms for the cost statistics, ingest with clients at
//! least 0.9 × ingest without.
//!
//! BENCH_ONLY=queries skips the stream run. For the stream run: BENCH_ONLY=stream skips the store
//! and the queries; BENCH_ROUNDS (default 1)
//! repeats the pair (alone, with clients), the order alternating per round; BENCH_BIN runs another
//! build of the collector, and BENCH_BIN_B others (comma-separated) alternated with it in every round
//! (a copy of the binary before a change, for A/B runs in the same conditions). A build may be
//! followed by `+` and `[api]` settings separated by `;` (`target/release/lngpt-collector+stream_nice = 0`). Each run prints the
//! daemon's CPU time and write calls (`syscw` of /proc/<pid>/io, the stream's socket writes and the
//! store's) and this process's CPU time (the stream clients'); with BENCH_THREADS, per thread name
//! of both processes, the CPU time and the time spent runnable but waiting for a core.
//! BENCH_CLIENT_NICE runs the stream clients' threads at that nice value (as if their reading cost
//! were elsewhere: the daemon's own share of the slowdown).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{cpu_seconds, env_usize, line as event};
use lngpt_collector::event::{Collection, Event, EventId, Parser, Source, Timestamp};
use lngpt_collector::redact::{RedactConfig, Redactor};
use lngpt_collector::store::sqlite::Synchronous;
use lngpt_collector::store::{Batch, EmbeddedStore, Store};

const DAY_MS: i64 = 86_400_000;
const BASE_MS: i64 = 1_795_000_000_000;

fn main() {
    let only = std::env::var("BENCH_ONLY").ok();
    if only.as_deref() != Some("stream") {
        queries();
    }
    if only.as_deref() != Some("queries") {
        streams();
    }
}

/// The store and the query timings.
fn queries() {
    let size = env_usize("BENCH_STORE_EVENTS", 10_000_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-api-store-{size}"));
    let state = root.join("state");
    if !state.join("collector.db").exists() || !root.join("complete").exists() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&state).expect("create the store directory");
        let t = Instant::now();
        generate(&state.join("collector.db"), size);
        std::fs::write(root.join("complete"), b"").expect("mark the store complete");
        println!("generated {size} events in {:.0} s", t.elapsed().as_secs_f64());
    }
    println!("store: {size} events, {} MiB", file_mib(&state.join("collector.db")));

    let daemon = Daemon::start(env!("CARGO_BIN_EXE_lngpt-collector"), &root, &state);
    let api = daemon.api.clone();
    let level_page = "/api/logs?level=ERROR&per_page=50";
    get(&api, level_page); // warm the page cache as a running daemon would be
    let first = timings(200, || {
        get(&api, level_page);
    });
    report("first page of /api/logs?level=ERROR (per_page=50)", &first, 20.0);

    let mut cursor = String::new();
    let walk = Instant::now();
    for _ in 0..1000 {
        let path = if cursor.is_empty() {
            "/api/logs?per_page=50".to_string()
        } else {
            format!("/api/logs?per_page=50&cursor={cursor}")
        };
        let page = get(&api, &path);
        cursor = page["pagination"]["next_cursor"]
            .as_str()
            .expect("more pages")
            .to_string();
    }
    println!(
        "walked 1,000 pages of 50 by cursor in {:.1} s",
        walk.elapsed().as_secs_f64()
    );
    let deep_path = format!("/api/logs?per_page=50&cursor={cursor}");
    let deep = timings(200, || {
        get(&api, &deep_path);
    });
    report("keyset page 1,000 deep (per_page=50)", &deep, 20.0);

    let end = BASE_MS + 10 * DAY_MS;
    let cost_path = format!(
        "/api/stats/cost?start_time={}&end_time={}",
        (end - DAY_MS) as f64 / 1000.0,
        end as f64 / 1000.0
    );
    let stats = get(&api, &cost_path);
    println!("/api/stats/cost over 24 h: {} cost records", stats["call_count"]);
    let cost = timings(20, || {
        get(&api, &cost_path);
    });
    report("/api/stats/cost over 24 h", &cost, 200.0);

    // The app's gate before each call: answered from the monitor's memory, not the store.
    get(&api, "/api/budget");
    let budget = timings(1000, || {
        get(&api, "/api/budget?model=gpt-4o");
    });
    report("/api/budget?model=gpt-4o", &budget, 1.0);
    drop(daemon);
}

/// Ingest alone and with stream clients, per build, in alternating order.
fn streams() {
    let ingest_events = env_usize("BENCH_INGEST_EVENTS", 500_000);
    let clients = env_usize("BENCH_SSE_CLIENTS", 100);
    let rounds = env_usize("BENCH_ROUNDS", 1).max(1);
    let mut bins = vec![std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into())];
    if let Ok(others) = std::env::var("BENCH_BIN_B") {
        bins.extend(others.split(',').map(str::to_string));
    }
    let mut ratios = vec![Vec::new(); bins.len()];
    for round in 0..rounds {
        for (b, bin) in bins.iter().enumerate() {
            let (alone, with) = if (round + b) % 2 == 0 {
                let alone = ingest_rate(bin, ingest_events, 0);
                (alone, ingest_rate(bin, ingest_events, clients))
            } else {
                let with = ingest_rate(bin, ingest_events, clients);
                (ingest_rate(bin, ingest_events, 0), with)
            };
            println!(
                "round {}, {bin}: ingest of {ingest_events} events: {alone:.0} events/s alone, {with:.0} events/s with {clients} stream clients ({:.2}×; target ≥ 0.9×)",
                round + 1,
                with / alone
            );
            ratios[b].push(with / alone);
        }
    }
    for (bin, mut r) in bins.iter().zip(ratios) {
        r.sort_by(f64::total_cmp);
        println!(
            "{bin}: with / alone over {rounds} rounds: median {:.2}×, {:?}",
            r[r.len() / 2],
            r.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>()
        );
    }
}

/// Writes `n` events straight into a new embedded store, in batches, as the daemon would.
fn generate(db: &Path, n: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = EmbeddedStore::open(db, Synchronous::Normal).expect("open the store");
    let parser = Parser::new(Arc::new(Redactor::new(&RedactConfig::default()).expect("redactor")));
    let source = Source::from("bench");
    let step = (10 * DAY_MS) as f64 / n as f64;
    let mut pending: [Vec<Event>; 3] = Default::default();
    for i in 0..n {
        let t = BASE_MS + (i as f64 * step) as i64;
        let secs = t as f64 / 1000.0;
        let line = match i % 20 {
            0..=13 => {
                let level = match i % 100 {
                    0..=7 => "ERROR",
                    8..=17 => "WARNING",
                    18..=19 => "DEBUG",
                    _ => "INFO",
                };
                format!(
                    r#"{{"type":"log","timestamp":{secs:.3},"level":"{level}","message":"API调用成功: stream_chat request {i}","module":"writer","extra":{{"model":"glm-4-flash","chapter":{}}}}}"#,
                    i % 50
                )
            }
            14..=16 => format!(
                r#"{{"type":"cost","created_at":{secs:.3},"model":"{}","cost":0.0123,"currency_symbol":"$","input_tokens":1200,"output_tokens":300}}"#,
                ["gpt-4o", "glm-4-plus", "claude-3.5-sonnet"][i % 3]
            ),
            _ => format!(
                r#"{{"type":"performance","timestamp":{secs:.3},"response_time":{:.3},"status":"{}","model":"gpt-4o","first_chunk_time":0.5}}"#,
                1.0 + (i % 1000) as f64 / 100.0,
                if i % 37 == 0 { "error" } else { "success" }
            ),
        };
        let e = parser.parse(line.as_bytes(), &source, Timestamp(t), EventId::new());
        let slot = match e.collection() {
            Collection::Logs => 0,
            Collection::Cost => 1,
            _ => 2,
        };
        pending[slot].push(e);
        if pending[slot].len() == 10_000 || i + 1 == n {
            for events in pending.iter_mut().filter(|p| !p.is_empty()) {
                let events = std::mem::take(events);
                let batch = Batch {
                    collection: events[0].collection(),
                    events,
                };
                runtime.block_on(store.write(Arc::new(batch))).expect("write a batch");
            }
        }
        if i > 0 && i % 1_000_000 == 0 {
            println!("  {i} events written");
        }
    }
}

struct Daemon {
    child: Child,
    api: String,
}

impl Daemon {
    /// `bin`: the binary, optionally followed by `+` and `[api]` settings separated by `;`.
    fn start(bin: &str, dir: &Path, state: &Path) -> Daemon {
        let (bin, api_settings) = bin.split_once('+').unwrap_or((bin, ""));
        let api_settings = api_settings.replace(';', "\n");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let api = format!("127.0.0.1:{port}");
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[retention]\napi_logs = \"0\"\napi_cost = \"0\"\napi_performance = \"0\"\n[api]\nlisten = {api:?}\nmax_stream_clients = 1000\n{api_settings}\n",
                state.display().to_string(),
                dir.join("bench.sock").display().to_string()
            ),
        )
        .expect("write config");
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the collector");
        let start = Instant::now();
        while TcpStream::connect(&api).is_err() || UnixStream::connect(dir.join("bench.sock")).is_err() {
            assert!(start.elapsed() < Duration::from_secs(120), "collector did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, api }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        common::stop(&mut self.child);
    }
}

/// Per thread name: nanoseconds on a CPU and runnable but waiting, so far (schedstat), summed.
fn thread_times(pid: u32) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
        let (run, wait) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        let e: &mut (u64, u64) = out.entry(comm.trim().to_string()).or_default();
        e.0 += run;
        e.1 += wait;
    }
    out
}

/// Write system calls of a process so far (`syscw` of /proc/<pid>/io).
fn write_calls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn file_mib(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0)
}

/// GET on a fresh connection; the body as JSON (chunked bodies decoded).
fn get(addr: &str, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&raw)
    );
    let mut body = &raw[split..];
    let mut out = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let nl = body.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&body[..nl]).expect("hex"), 16).expect("hex");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&body[nl + 2..nl + 2 + size]);
            body = &body[nl + 4 + size..];
        }
    } else {
        out.extend_from_slice(body);
    }
    serde_json::from_slice(&out).expect("JSON")
}

fn timings(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut out: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn report(what: &str, sorted_ms: &[f64], target_ms: f64) {
    let at = |p: f64| sorted_ms[((p / 100.0 * sorted_ms.len() as f64).ceil() as usize).clamp(1, sorted_ms.len()) - 1];
    let p99 = at(99.0);
    println!(
        "{what}: p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms ({} requests; target p99 < {target_ms} ms: {})",
        at(50.0),
        sorted_ms[sorted_ms.len() - 1],
        sorted_ms.len(),
        if p99 < target_ms { "met" } else { "NOT met" }
    );
}

/// Events per second stored from 4 socket clients into a fresh store, with `streams` SSE clients
/// reading `/api/logs/stream` meanwhile.
fn ingest_rate(bin: &str, total: usize, streams: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let daemon = Daemon::start(bin, dir.path(), &state);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let client_nice = env_usize("BENCH_CLIENT_NICE", 0) as i32;
    let readers: Vec<_> = (0..streams)
        .map(|_| {
            let mut s = TcpStream::connect(&daemon.api).expect("connect a stream");
            write!(s, "GET /api/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::Builder::new()
                .name("sse-client".into())
                .spawn(move || {
                    if client_nice > 0 {
                        // SAFETY: sets this thread's nice value; no memory is passed.
                        unsafe {
                            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, client_nice);
                        }
                    }
                    let mut r = BufReader::with_capacity(64 * 1024, s);
                    let mut line = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        line.clear();
                        match r.read_until(b'\n', &mut line) {
                            Ok(0) => return,
                            Ok(_) if line.starts_with(b"data:") => {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                })
                .expect("a client thread")
        })
        .collect();
    let clients = 4;
    let payloads: Vec<Vec<u8>> = (0..clients)
        .map(|c| {
            (c..total)
                .step_by(clients)
                .flat_map(|i| event(i).into_bytes())
                .collect()
        })
        .collect();
    let socket = dir.path().join("bench.sock");
    let pid = daemon.child.id();
    let (cpu0, writes0, own0) = (cpu_seconds(pid), write_calls(pid), cpu_seconds(std::process::id()));
    let threads0 = [thread_times(pid), thread_times(std::process::id())];
    let t0 = Instant::now();
    let senders: Vec<_> = payloads
        .into_iter()
        .map(|payload| {
            let socket = socket.clone();
            std::thread::Builder::new()
                .name("sender".into())
                .spawn(move || {
                    let mut s = UnixStream::connect(&socket).expect("connect");
                    s.write_all(&payload).expect("send");
                    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                    let mut answer = String::new();
                    s.read_to_string(&mut answer).expect("answer");
                    assert!(answer.contains("\"events\""), "{answer}");
                })
                .expect("a sender thread")
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    let (cpu, writes, own) = (
        cpu_seconds(pid) - cpu0,
        write_calls(pid) - writes0,
        cpu_seconds(std::process::id()) - own0,
    );
    let threads = [thread_times(pid), thread_times(std::process::id())];
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.join();
    }
    println!(
        "  {rate:.0} events/s, {streams} stream clients received {} events in all; daemon {cpu:.2} s CPU, {writes} write calls; bench process (clients, senders) {own:.2} s CPU",
        received.load(Ordering::Relaxed)
    );
    if std::env::var("BENCH_THREADS").is_ok() {
        // Per thread name: CPU time, and time runnable but waiting for a core, during the ingest.
        for (who, (before, after)) in ["daemon", "bench"].iter().zip(threads0.iter().zip(&threads)) {
            let mut line = format!("    {who}:");
            for (name, (run, wait)) in after {
                let (run0, wait0) = before.get(name).copied().unwrap_or_default();
                line += &format!(
                    " {name} {:.2}/{:.2} s",
                    (run - run0) as f64 / 1e9,
                    (wait - wait0) as f64 / 1e9
                );
            }
            println!("{line} (CPU / waiting)");
        }
    }
    drop(daemon);
    rate
}
