//! Socket → embedded store throughput of the real binary.
//!
//! `cargo bench --bench socket_throughput` pushes BENCH_EVENTS (default 1,000,000) events of about
//! 250 bytes from BENCH_CLIENTS (default 4) concurrent socket clients into a fresh embedded store,
//! then stops the daemon with SIGTERM, which returns only once everything accepted is stored. It
//! prints events/s, MiB/s, the daemon's peak RSS and CPU time per event (steadier than events/s on
//! a small machine shared with the clients), and checks that every event was stored.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Events in time order, as an app sends them: 1,000 per second of event time.
fn event(i: usize) -> String {
    let (sec, ms) = (i / 1000, i % 1000);
    let stamp = format!(
        "2026-11-26T{:02}:{:02}:{:02}.{ms:03}Z",
        8 + sec / 3600 % 16,
        sec / 60 % 60,
        sec % 60
    );
    let line = match i % 4 {
        0 | 1 => format!(
            r#"{{"type":"log","timestamp":"{stamp}","level":"INFO","message":"API调用成功: stream_chat request {i}","module":"writer","function":"stream_chat","line":218,"extra":{{"model":"glm-4-flash","tokens":{},"chapter":16}}}}"#,
            i % 9000
        ),
        2 => format!(
            r#"{{"type":"cost","created_at":"{stamp}","model":"glm-4-plus","cost":0.65325,"currency_symbol":"￥","input_tokens":9519,"output_tokens":3546,"total_tokens":13065,"provider":"zhipuai","request_id":"req-{i:08}"}}"#,
        ),
        _ => format!(
            r#"{{"type":"performance","timestamp":"{stamp}","response_time":4.069,"status":"success","model":"anthropic/claude-3.5-sonnet","provider":"openrouter","request_id":"req-{i:08}","first_chunk_time":0.792,"chunk_count":796}}"#,
        ),
    };
    line + "\n"
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let total = env_usize("BENCH_EVENTS", 1_000_000);
    let clients = env_usize("BENCH_CLIENTS", 4).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("bench.sock");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n",
            dir.path().join("state").display().to_string(),
            socket.display().to_string()
        ),
    )
    .expect("write config");

    let payloads: Vec<Vec<u8>> = (0..clients)
        .map(|c| {
            (c..total)
                .step_by(clients)
                .flat_map(|i| event(i).into_bytes())
                .collect()
        })
        .collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_lngpt-collector"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    let start = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "collector did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let t0 = Instant::now();
    let senders: Vec<_> = payloads
        .into_iter()
        .map(|payload| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).expect("connect");
                s.write_all(&payload).expect("write");
                s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                let mut answer = String::new();
                s.read_to_string(&mut answer).expect("answer");
                answer
            })
        })
        .collect();
    let mut accepted = 0u64;
    for s in senders {
        let answer = s.join().expect("client thread");
        let v: serde_json::Value = serde_json::from_str(answer.trim()).expect("answer is JSON");
        accepted += v["events"].as_u64().unwrap_or(0);
    }
    let t_accepted = t0.elapsed();
    // SIGTERM drains the queue; the daemon exits only when everything accepted is stored.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let peak_rss_kib = peak_rss_kib(daemon.id());
    let cpu_secs = cpu_seconds(daemon.id());
    let status = daemon.wait().expect("wait");
    let t_stored = t0.elapsed();
    assert!(status.success(), "collector exited with {status}");
    assert_eq!(accepted as usize, total, "every event accepted");

    let db = rusqlite::Connection::open(dir.path().join("state/collector.db")).expect("open db");
    let stored: i64 = ["api_logs", "api_cost", "api_performance"]
        .iter()
        .map(|t| {
            db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0))
                .expect("count")
        })
        .sum();
    assert_eq!(stored as usize, total, "every event stored");

    let secs = t_stored.as_secs_f64();
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "socket -> embedded store: {total} events ({:.0} bytes each), {clients} clients",
        bytes as f64 / total as f64
    );
    println!("  accepted in {:.2}s, stored in {:.2}s", t_accepted.as_secs_f64(), secs);
    println!("  {:.0} events/s, {:.1} MiB/s", total as f64 / secs, mib / secs);
    println!("  peak RSS of the collector: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    println!(
        "  collector CPU: {:.2} µs per event (user + system, all threads)",
        cpu_secs * 1e6 / total as f64
    );
}

/// User + system CPU time of a process so far, from /proc (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// VmHWM: the largest resident set the process has had.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
