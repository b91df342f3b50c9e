//! File source throughput of the real binary into the embedded store.
//!
//! `cargo bench --bench file_throughput` measures, with events of about 235 bytes (the same lines as
//! the socket benchmark):
//!   1. tailing: a writer appends BENCH_EVENTS (default 1,000,000) lines at full speed while the
//!      collector tails the file;
//!   2. catch-up: the collector starts on a backlog of BENCH_BACKLOG_MIB (default 1024) MiB;
//!   3. JSON against text: BENCH_PAIRS (default 3) rounds, back to back, of catch-ups of
//!      BENCH_PAIR_EVENTS (default 1,000,000) of the above JSON lines, as many records of the app's
//!      text log (`format = "python"`, 1 % with a traceback), and the same records as JSON lines;
//!      prints the CPU per event of each and the ratios.
//!
//! BENCH_RUNS (default `tail,backlog,pairs`) picks the runs. "Done" is when the file's checkpoint
//! reaches the file's size: checkpoints move only past lines the store has made durable. Prints
//! events/s, MiB/s, the collector's peak RSS and its CPU time (user + system) per event.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;

use common::{cpu_seconds, env_usize, json_record, line, peak_rss_mib, text_line};

fn start(dir: &Path, log: &Path) -> Child {
    start_with(dir, log, "")
}

/// Starts the collector on `log`; `entry` adds keys to its `[[file]]` entry.
fn start_with(dir: &Path, log: &Path, entry: &str) -> Child {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\nenabled = false\n[[file]]\npath = {:?}\npoll_interval = \"100ms\"\n{entry}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("state").display().to_string(),
            log.display().to_string()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_lngpt-collector"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap()
}

/// The durable offset the collector has checkpointed for any file (there is one here).
fn checkpointed(dir: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(dir.join("state/checkpoints.json")) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["files"].as_array().map_or(0, |files| {
        files.iter().filter_map(|f| f["offset"].as_u64()).max().unwrap_or(0)
    })
}

fn wait_until_checkpointed(dir: &Path, size: u64, child: &mut Child) {
    while checkpointed(dir) < size {
        assert!(child.try_wait().unwrap().is_none(), "collector exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the collector; returns its peak RSS in MiB and its CPU seconds (user + system).
fn finish(child: &mut Child) -> (f64, f64) {
    let (rss, cpu) = (peak_rss_mib(child.id()), cpu_seconds(child.id()));
    common::stop(child);
    (rss, cpu)
}

/// Catches up with a backlog of `n` events made by `make`; returns (CPU seconds, wall seconds,
/// bytes). The file and the store are deleted afterwards.
fn catch_up(n: usize, make: fn(usize) -> String, entry: &str) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    let mut bytes = 0u64;
    for i in 0..n {
        let l = make(i);
        bytes += l.len() as u64;
        f.write_all(l.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let t = Instant::now();
    let mut child = start_with(dir.path(), &log, entry);
    wait_until_checkpointed(dir.path(), bytes, &mut child);
    let secs = t.elapsed().as_secs_f64();
    let (_, cpu) = finish(&mut child);
    (cpu, secs, bytes)
}

fn main() {
    let events = env_usize("BENCH_EVENTS", 1_000_000);
    let backlog_mib = env_usize("BENCH_BACKLOG_MIB", 1024);
    let runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "tail,backlog,pairs".into());
    let runs: Vec<&str> = runs.split(',').map(str::trim).collect();

    // 1. Tailing a file appended at full speed.
    if runs.contains(&"tail") {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::File::create(&log).unwrap();
        let mut child = start(dir.path(), &log);
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut bytes = 0u64;
        for chunk in (0..events).collect::<Vec<_>>().chunks(1000) {
            let text: String = chunk.iter().map(|&i| line(i)).collect();
            bytes += text.len() as u64;
            f.write_all(text.as_bytes()).unwrap();
        }
        wait_until_checkpointed(dir.path(), bytes, &mut child);
        let secs = t.elapsed().as_secs_f64();
        let (rss, cpu) = finish(&mut child);
        println!(
            "tailing a file appended at full speed: {events} events ({:.0} bytes each)",
            bytes as f64 / events as f64
        );
        println!(
            "  {:.0} events/s, {:.1} MiB/s, peak RSS {rss:.1} MiB, {:.2} µs CPU per event",
            events as f64 / secs,
            bytes as f64 / 1048576.0 / secs,
            cpu * 1e6 / events as f64
        );
    }

    // 2. Catching up with a backlog.
    if runs.contains(&"backlog") {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        let (mut bytes, mut n) = (0u64, 0usize);
        while bytes < (backlog_mib as u64) << 20 {
            let l = line(n);
            bytes += l.len() as u64;
            n += 1;
            f.write_all(l.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        drop(f);
        let t = Instant::now();
        let mut child = start(dir.path(), &log);
        wait_until_checkpointed(dir.path(), bytes, &mut child);
        let secs = t.elapsed().as_secs_f64();
        let (rss, cpu) = finish(&mut child);
        println!("catching up with a {backlog_mib} MiB backlog: {n} events");
        println!(
            "  {:.0} events/s, {:.1} MiB/s, peak RSS {rss:.1} MiB, {:.2} µs CPU per event",
            n as f64 / secs,
            bytes as f64 / 1048576.0 / secs,
            cpu * 1e6 / n as f64
        );
    }

    // 3. The app's text log against JSON lines, CPU per event, back to back: the benchmark's own
    //    JSON lines (the yardstick), and JSON lines carrying the same records as the text.
    if runs.contains(&"pairs") {
        let n = env_usize("BENCH_PAIR_EVENTS", 1_000_000);
        let pairs = env_usize("BENCH_PAIRS", 3);
        // The last record waits for multiline_timeout before it is complete: short, not to wait.
        let text_entry = "format = \"python\"\nmultiline_timeout = \"100ms\"";
        let (mut ratios, mut same_ratios) = (Vec::new(), Vec::new());
        for p in 1..=pairs {
            let runs = [
                ("JSON lines", catch_up(n, line, "")),
                ("JSON records", catch_up(n, json_record, "")),
                ("text records", catch_up(n, text_line, text_entry)),
            ];
            let us = |(cpu, _, _): (f64, f64, u64)| cpu * 1e6 / n as f64;
            let shown: Vec<String> = runs
                .iter()
                .map(|(what, r)| {
                    format!(
                        "{what} ({:.0} B) {:.2} µs CPU, {:.0}/s",
                        r.2 as f64 / n as f64,
                        us(*r),
                        n as f64 / r.1
                    )
                })
                .collect();
            let text = us(runs[2].1);
            ratios.push(text / us(runs[0].1));
            same_ratios.push(text / us(runs[1].1));
            println!(
                "pair {p}, {n} events each: {}; text/JSON lines {:.2}, text/JSON records {:.2}",
                shown.join("; "),
                ratios[p - 1],
                same_ratios[p - 1]
            );
        }
        for (what, r) in [
            ("JSON lines", &mut ratios),
            ("the same records as JSON", &mut same_ratios),
        ] {
            r.sort_by(f64::total_cmp);
            if let Some(median) = r.get(r.len() / 2) {
                println!("text/{what}, CPU per event, median of {pairs}: {median:.2}");
            }
        }
    }
}
