//! A steady mixed load over minutes: does the daemon stay flat?
//!
//! `cargo bench --bench steady` starts the release binary (or BENCH_BIN) on a fresh embedded store
//! with the monitor and the budget on (the defaults), and for BENCH_MINUTES (default 10) sends
//! BENCH_RATE (default 1,400) events a second over the socket, timestamped now: half logs, 30 %
//! performance records (15 % of them errors), 20 % costs. Beside it, BENCH_READER:
//!
//! - `page` (the default): what an open page does, every 5 s: the budget, the cost statistics of the
//!   day and of 48 hours by the hour, the performance statistics of 3 hours, the active and resolved
//!   alerts, `/readyz`, the latest rejects, `/metrics`, a search page of 24 hours, and a live stream
//!   (`/api/logs/stream?tail=200`) open the whole time;
//! - `loop`: the same requests one after the other without a pause (queries alone: with
//!   BENCH_RATE=0 nothing is sent);
//! - `none`: no reader.
//!
//! Every BENCH_SAMPLE_SECS (default 30) it prints the daemon's resident memory and the CPU time it
//! used in that interval; at the end the first and last figures side by side. The hour's soak in
//! the README is `BENCH_MINUTES=60 BENCH_SAMPLE_SECS=60 cargo bench --bench steady`.
//!
//! `BENCH_MODE=storm` measures a reconnect storm instead: on a store of BENCH_STORE_EVENTS (default
//! 100,000) logs, it times the ingest of BENCH_INGEST_EVENTS (default 400,000) events from 4 socket
//! clients alone, then again while BENCH_RECONNECTS (default 1,000) stream clients (16 at a time)
//! reconnect with the `Last-Event-ID` of the oldest stored event — each asks for a replay of
//! `api.max_replay` events from the start — read their first bytes and leave; both orders alternate
//! over BENCH_ROUNDS (default 2) and it prints each ingest rate and the ratio.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{cpu_seconds, env_usize};

fn main() {
    if std::env::var("BENCH_MODE").as_deref() == Ok("storm") {
        return storm();
    }
    let minutes = env_usize("BENCH_MINUTES", 10);
    let rate = env_usize("BENCH_RATE", 1400);
    let sample = Duration::from_secs(env_usize("BENCH_SAMPLE_SECS", 30).max(1) as u64);
    let reader = std::env::var("BENCH_READER").unwrap_or_else(|_| "page".into());
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into());

    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let socket = dir.path().join("steady.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let api = format!("127.0.0.1:{port}");
    let config = dir.path().join("steady.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[api]\nlisten = {api:?}\n",
            state.display().to_string(),
            socket.display().to_string()
        ),
    )
    .expect("write config");
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    let start = Instant::now();
    while TcpStream::connect(&api).is_err() || UnixStream::connect(&socket).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "collector did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    println!("{bin}: {rate} events/s for {minutes} min, reader {reader}");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    if rate > 0 {
        let (stop, sent, socket) = (stop.clone(), sent.clone(), socket.clone());
        threads.push(std::thread::spawn(move || send_steadily(&socket, rate, &stop, &sent)));
    }
    if reader != "none" {
        let pause = if reader == "loop" {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        {
            let (stop, reads, api) = (stop.clone(), reads.clone(), api.clone());
            threads.push(std::thread::spawn(move || read_like_a_page(&api, pause, &stop, &reads)));
        }
        if reader == "page" {
            let (stop, api) = (stop.clone(), api.clone());
            threads.push(std::thread::spawn(move || follow_stream(&api, &stop)));
        }
    }

    let end = Instant::now() + Duration::from_secs(minutes as u64 * 60);
    let mut rows: Vec<(f64, f64, f64)> = Vec::new();
    let mut cpu_before = cpu_seconds(pid);
    let t0 = Instant::now();
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>8}",
        "minute", "RSS MiB", "CPU s/intvl", "events", "reads"
    );
    while Instant::now() < end {
        std::thread::sleep(
            sample
                .min(end.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
        );
        let cpu = cpu_seconds(pid);
        let rss = rss_mib(pid);
        let at = t0.elapsed().as_secs_f64() / 60.0;
        println!(
            "{at:>8.1} {rss:>9.1} {:>12.2} {:>10} {:>8}",
            cpu - cpu_before,
            sent.load(Ordering::Relaxed),
            reads.load(Ordering::Relaxed)
        );
        rows.push((at, rss, cpu - cpu_before));
        cpu_before = cpu;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let peak = rows.iter().map(|r| r.1).fold(0.0, f64::max);
        println!(
            "RSS {:.1} → {:.1} MiB (peak {peak:.1}); CPU per {} s {:.2} → {:.2} s; {} events sent, {} reads",
            first.1,
            last.1,
            sample.as_secs(),
            first.2,
            last.2,
            sent.load(Ordering::Relaxed),
            reads.load(Ordering::Relaxed)
        );
    }
    common::stop(&mut child);
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Event `i`, timestamped now: half logs, 30 % performance (15 % errors), 20 % costs.
fn event(i: u64, t: f64) -> String {
    let model = ["gpt-4o", "glm-4-plus", "claude-3.5-sonnet"][(i % 3) as usize];
    match i % 20 {
        0..=9 => format!(
            r#"{{"type":"log","timestamp":{t:.3},"level":"{}","message":"API调用成功: stream_chat request {i}","module":"writer","extra":{{"model":"{model}","chapter":{}}}}}"#,
            if i % 50 == 0 { "ERROR" } else { "INFO" },
            i % 50
        ),
        10..=15 => format!(
            r#"{{"type":"performance","timestamp":{t:.3},"response_time":{:.3},"status":"{}","model":"{model}","first_chunk_time":0.4}}"#,
            0.3 + (i % 997) as f64 / 100.0,
            if (i / 20) % 100 < 15 { "error" } else { "success" }
        ),
        _ => format!(
            r#"{{"type":"cost","created_at":{t:.3},"model":"{model}","cost":0.0004,"currency_symbol":"$","input_tokens":1200,"output_tokens":300}}"#
        ),
    }
}

/// `rate` events a second, in tenths of a second, on one connection.
fn send_steadily(socket: &std::path::Path, rate: usize, stop: &AtomicBool, sent: &AtomicU64) {
    let mut s = UnixStream::connect(socket).expect("connect");
    let per_tick = (rate / 10).max(1) as u64;
    let mut i = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t = now_secs();
        let mut buf = String::new();
        for _ in 0..per_tick {
            buf.push_str(&event(i, t));
            buf.push('\n');
            i += 1;
        }
        s.write_all(buf.as_bytes()).expect("send");
        sent.store(i, Ordering::Relaxed);
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
}

/// What the page asks every 5 s (all panels, as if each were open).
fn read_like_a_page(api: &str, pause: Duration, stop: &AtomicBool, reads: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        let now = now_secs();
        let iso = |secs: f64| format!("{secs:.3}");
        let paths = [
            "/api/budget".to_string(),
            format!(
                "/api/stats/cost?group_by=model&start_time={}&end_time={}",
                iso(now - 86_400.0),
                iso(now)
            ),
            format!(
                "/api/stats/cost?group_by=hour&start_time={}&end_time={}",
                iso(now - 48.0 * 3600.0),
                iso(now)
            ),
            format!(
                "/api/stats/performance?start_time={}&end_time={}",
                iso(now - 3.0 * 3600.0),
                iso(now)
            ),
            "/api/alerts/active".to_string(),
            "/api/alerts?state=resolved&per_page=15".to_string(),
            "/readyz".to_string(),
            "/api/rejects?per_page=10".to_string(),
            "/metrics".to_string(),
            format!("/api/logs?per_page=50&start_time={}", iso(now - 86_400.0)),
        ];
        for p in &paths {
            get(api, p);
            reads.fetch_add(1, Ordering::Relaxed);
        }
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The page's live tail, open the whole time.
fn follow_stream(api: &str, stop: &AtomicBool) {
    let mut s = TcpStream::connect(api).expect("connect a stream");
    write!(s, "GET /api/logs/stream?tail=200 HTTP/1.1\r\nHost: {api}\r\n\r\n").expect("write");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        if let Ok(0) = r.read_until(b'\n', &mut line) {
            return;
        }
    }
}

/// GET on a fresh connection, read to the end; 200 or 503 (`/readyz`) expected.
fn get(api: &str, path: &str) {
    let Ok(mut s) = TcpStream::connect(api) else { return };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let head = String::from_utf8_lossy(&raw[..raw.len().min(12)]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 503"),
        "GET {path}: {}",
        String::from_utf8_lossy(&raw[..raw.len().min(500)])
    );
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Starts a collector on `dir`; returns the child, the API address and the socket.
fn start(bin: &str, dir: &std::path::Path) -> (std::process::Child, String, std::path::PathBuf) {
    let socket = dir.join("storm.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let api = format!("127.0.0.1:{port}");
    let config = dir.join("storm.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[retention]\napi_logs = \"0\"\napi_cost = \"0\"\napi_performance = \"0\"\n[api]\nlisten = {api:?}\nmax_stream_clients = 1000\n",
            dir.join("state").display().to_string(),
            socket.display().to_string()
        ),
    )
    .expect("write config");
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    let t = Instant::now();
    while TcpStream::connect(&api).is_err() || UnixStream::connect(&socket).is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "collector did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, api, socket)
}

/// Sends `payloads` from one client each; waits for every answer (they come once durable).
fn push(socket: &std::path::Path, payloads: &[Vec<u8>]) -> f64 {
    let t = Instant::now();
    std::thread::scope(|scope| {
        for p in payloads {
            scope.spawn(move || {
                let mut s = UnixStream::connect(socket).expect("connect");
                s.write_all(p).expect("send");
                s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                let mut answer = String::new();
                s.read_to_string(&mut answer).expect("answer");
                assert!(answer.contains("\"events\""), "{answer}");
            });
        }
    });
    t.elapsed().as_secs_f64()
}

fn storm() {
    let store = env_usize("BENCH_STORE_EVENTS", 100_000);
    let total = env_usize("BENCH_INGEST_EVENTS", 400_000);
    let reconnects = env_usize("BENCH_RECONNECTS", 1000);
    let rounds = env_usize("BENCH_ROUNDS", 2).max(1);
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into());
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, api, socket) = start(&bin, dir.path());
    // The stored history the storm replays, and its oldest event's id.
    let mut sse = TcpStream::connect(&api).expect("connect");
    write!(sse, "GET /api/logs/stream HTTP/1.1\r\nHost: {api}\r\n\r\n").expect("write");
    let history: Vec<u8> = (0..store).flat_map(|i| common::line(i * 4).into_bytes()).collect();
    push(&socket, &[history]);
    sse.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut r = BufReader::new(sse);
    let mut line = String::new();
    let oldest = loop {
        line.clear();
        r.read_line(&mut line).expect("the first event");
        if let Some(id) = line.strip_prefix("id: ") {
            break id.trim().to_string();
        }
    };
    drop(r);
    let clients = 4;
    let payloads: Vec<Vec<u8>> = (0..clients)
        .map(|c| {
            (c..total)
                .step_by(clients)
                .flat_map(|i| common::line(store * 4 + i).into_bytes())
                .collect()
        })
        .collect();
    let pid = child.id();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut alone = 0.0;
        let mut with = 0.0;
        for storming in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let stormers: Vec<_> = (0..if storming { 16 } else { 0 })
                .map(|_| {
                    let (stop, done, api, oldest) = (stop.clone(), done.clone(), api.clone(), oldest.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) && done.fetch_add(1, Ordering::Relaxed) < reconnects as u64
                        {
                            let Ok(mut s) = TcpStream::connect(&api) else { continue };
                            let _ = write!(
                                s,
                                "GET /api/logs/stream HTTP/1.1\r\nHost: {api}\r\nLast-Event-ID: {oldest}\r\n\r\n"
                            );
                            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                            let mut head = [0u8; 4096];
                            let _ = s.read(&mut head);
                        }
                    })
                })
                .collect();
            let cpu0 = cpu_seconds(pid);
            let secs = push(&socket, &payloads);
            let cpu = cpu_seconds(pid) - cpu0;
            stop.store(true, Ordering::Relaxed);
            for t in stormers {
                let _ = t.join();
            }
            let rate = total as f64 / secs;
            println!(
                "round {}: ingest of {total} events {}: {rate:.0} events/s, daemon {cpu:.1} s CPU{}",
                round + 1,
                if storming { "during the storm" } else { "alone" },
                if storming {
                    format!(", {} reconnects", done.load(Ordering::Relaxed).min(reconnects as u64))
                } else {
                    String::new()
                }
            );
            if storming {
                with = rate;
            } else {
                alone = rate;
            }
        }
        ratios.push(with / alone);
    }
    println!(
        "{bin}: ingest during a reconnect storm / alone: {:?}",
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>()
    );
    common::stop(&mut child);
}
