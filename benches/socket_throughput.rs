//! Socket → embedded store throughput of the real binary.
//!
//! `cargo bench --bench socket_throughput` pushes BENCH_EVENTS (default 1,000,000) events of about
//! 250 bytes from BENCH_CLIENTS (default 4) concurrent socket clients into a fresh embedded store,
//! then stops the daemon with SIGTERM, which returns only once everything accepted is stored. It
//! prints events/s, MiB/s, the daemon's peak RSS and CPU time per event (steadier than events/s on
//! a small machine shared with the clients), and checks that every event was stored.
//! BENCH_MONITOR=off runs it with the monitor off, for the on/off comparison in the README.
//! BENCH_BIN runs another build of the collector (for A/B comparisons).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{cpu_seconds, env_usize, line as event, peak_rss_mib};

fn main() {
    let total = env_usize("BENCH_EVENTS", 1_000_000);
    let clients = env_usize("BENCH_CLIENTS", 4).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("bench.sock");
    let config = dir.path().join("bench.toml");
    let monitor = std::env::var("BENCH_MONITOR").map_or(true, |v| v != "off");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[monitor]\nenabled = {monitor}\n[api]\nlisten = \"127.0.0.1:0\"\n",
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

    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into());
    let mut daemon = Command::new(bin)
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
    let peak_rss = peak_rss_mib(daemon.id());
    let cpu_secs = cpu_seconds(daemon.id());
    let status = daemon.wait().expect("wait");
    let t_stored = t0.elapsed();
    assert!(status.success(), "collector exited with {status}");
    assert_eq!(accepted as usize, total, "every event accepted");

    let stored = common::stored_events(&dir.path().join("state/collector.db"));
    assert_eq!(stored, total, "every event stored");

    let secs = t_stored.as_secs_f64();
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "socket -> embedded store: {total} events ({:.0} bytes each), {clients} clients, monitor {}",
        bytes as f64 / total as f64,
        if monitor { "on" } else { "off" }
    );
    println!("  accepted in {:.2}s, stored in {:.2}s", t_accepted.as_secs_f64(), secs);
    println!("  {:.0} events/s, {:.1} MiB/s", total as f64 / secs, mib / secs);
    println!("  peak RSS of the collector: {peak_rss:.1} MiB");
    println!(
        "  collector CPU: {:.2} µs per event (user + system, all threads)",
        cpu_secs * 1e6 / total as f64
    );
}
