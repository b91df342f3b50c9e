//! The collector against rsyslog on the same lines, in the same run (issues 13 and 23).
//!
//! `cargo bench --bench peer_rsyslog` runs two loads (BENCH_LOAD, default `acceptance,mix`), each
//! alternately against
//!   * the collector at its default settings: socket → parse, check, redact → the embedded SQLite store,
//!     indexed and queryable;
//!   * rsyslog: `imptcp` on a Unix path → `mmjsonparse` (the raw line, no cookie) → `omfile` writing
//!     `$!all-json` to a flat file; "done" is when the file holds every line.
//!
//! `acceptance` is the load the project's ingest is judged by (issue 23): BENCH_EVENTS (default
//! 1,000,000) log events of about 300 bytes (Chinese text, an `extra` object of four fields, a distinct
//! `extra.req`), written over ONE connection (BENCH_ACCEPT_CLIENTS) in writes of 64 KiB as fast as the
//! receiver takes them, then a half-close; the collector's config holds only `state_dir`, `[socket]
//! path` and `[api] listen`; "done" is when `SELECT count(*) FROM api_logs`, polled every 200 ms from
//! another connection, reaches the total (BENCH_DONE=ack waits for the connection's answer instead,
//! which comes once every event is durable); rsyslog's file is polled every 200 ms too.
//! `mix` is issue 13's: lines of about 235 bytes (half logs, a quarter cost, a quarter performance
//! records) from BENCH_CLIENTS clients (default `1,4`) in one write each; done when every client
//! has its answer (then SIGTERM, and every event is counted in the store).
//!
//! For each it prints events/s, the peak RSS (VmHWM) and the CPU time (user + system, all threads) per
//! event when done, then the ratios. BENCH_ROUNDS (default 1) repeats the runs; the order rotates per
//! round. BENCH_OURS_CONFIG appends TOML to the collector's config, for trying a setting against the
//! defaults; BENCH_BIN runs another build of the collector; BENCH_BIN_B (and/or BENCH_OURS_CONFIG_B)
//! adds a second collector, "B", to every round, for A/B runs of a change (B/A ratios are printed);
//! BENCH_PEER=off leaves rsyslog out.
//!
//! rsyslogd is looked for in RSYSLOGD, on PATH, in /usr/sbin, and unpacked under
//! `target/peer/rsyslog` (Debian's package, when it cannot be installed):
//! ```sh
//! mkdir -p target/peer/rsyslog && cd target/peer && apt-get download rsyslog libestr0 libfastjson4 liblognorm5 \
//!   && for d in *.deb; do dpkg -x "$d" rsyslog; done
//! ```
//! Without it (and without BENCH_PEER=off) the benchmark prints why and exits 0: it is never part of the
//! test suite.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{cpu_seconds, env_usize, line, peak_rss_mib};

/// How rsyslogd is started: the binary, and for an unpacked package its modules and libraries.
struct Peer {
    rsyslogd: PathBuf,
    modules: Option<PathBuf>,
    libs: Option<PathBuf>,
}

fn find_peer() -> Option<Peer> {
    let plain = |p: PathBuf| Peer {
        rsyslogd: p,
        modules: None,
        libs: None,
    };
    if let Ok(p) = std::env::var("RSYSLOGD") {
        return Some(plain(PathBuf::from(p)));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file());
    if let Some(p) = on_path {
        return Some(plain(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peer/rsyslog");
    let bin = root.join("usr/sbin/rsyslogd");
    if !bin.is_file() {
        return None;
    }
    let multiarch = std::fs::read_dir(root.join("usr/lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("rsyslog").is_dir())?;
    Some(Peer {
        rsyslogd: bin,
        modules: Some(multiarch.join("rsyslog")),
        libs: Some(multiarch),
    })
}

/// One measured run: events/s, peak RSS in MiB, CPU µs per event.
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    rss: f64,
    cpu_us: f64,
    /// RssAnon, RssFile (code and other mapped files), RssShmem (SQLite's WAL index) in MiB, when done.
    parts: [f64; 3],
}

/// RssAnon, RssFile and RssShmem of a process now, in MiB.
fn rss_parts(pid: u32) -> [f64; 3] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    [field("RssAnon:"), field("RssFile:"), field("RssShmem:")]
}

/// How a load is sent and when it is done.
#[derive(Clone, Copy, PartialEq)]
enum Done {
    /// Every client has its answer (each comes once the client's events are durable).
    Answers,
    /// `SELECT count(*)` of the event tables reaches the total, polled every 200 ms.
    Count,
}

struct Load {
    name: &'static str,
    /// One payload per client.
    payloads: Vec<Vec<u8>>,
    total: usize,
    /// Bytes per write(2): 0 writes each payload at once.
    chunk: usize,
    done: Done,
    /// The event tables counted when `done` is `Count`.
    tables: &'static [&'static str],
    /// The config holds only where it listens (the acceptance load's "defaults").
    bare_config: bool,
}

const POLL: Duration = Duration::from_millis(200);

/// Event `i` of the acceptance load: `mkdata.py`'s line, about 300 bytes.
fn acceptance_line(i: usize) -> String {
    format!(
        "{{\"type\":\"log\",\"timestamp\":\"2026-11-26T08:00:00.123Z\",\"level\":\"INFO\",\
         \"message\":\"开始API调用 model=gpt-4o tokens=1234\",\"module\":\"lngpt.api\",\
         \"function\":\"stream_chat\",\"line\":42,\"extra\":{{\"model\":\"gpt-4o\",\"tokens\":1234,\
         \"req\":\"r{i:09}\",\"host\":\"app-01\"}}}}\n"
    )
}

fn connect_when_up(socket: &Path, child: &mut Child, what: &str) {
    let start = Instant::now();
    while UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Each client writes its payload (in writes of `chunk` bytes), half-closes, and (when `answer`)
/// reads the reply: the events it says are stored.
fn client(socket: &Path, payload: &[u8], chunk: usize, answer: bool) -> u64 {
    let mut c = UnixStream::connect(socket).expect("connect");
    let chunk = if chunk == 0 { payload.len().max(1) } else { chunk };
    for part in payload.chunks(chunk) {
        c.write_all(part).expect("write");
    }
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    if !answer {
        return 0;
    }
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("answer");
    let v: serde_json::Value = serde_json::from_str(reply.trim()).expect("answer is JSON");
    v["events"].as_u64().unwrap_or(0)
}

/// Rows in `tables` of the SQLite file at `db`, 0 while it cannot be read yet.
fn count_rows(db: &Path, tables: &[&str]) -> usize {
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    tables
        .iter()
        .map(|t| {
            conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0))
                .unwrap_or(0) as usize
        })
        .sum()
}

fn ours(load: &Load, bin: &str, extra_config: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("ours.sock");
    let config = dir.path().join("ours.toml");
    let state = dir.path().join("state");
    // Default settings: only where it listens (and, for issue 13's load, how much it logs).
    let log = if load.bare_config {
        ""
    } else {
        "[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n"
    };
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n{log}[api]\nlisten = \"127.0.0.1:0\"\n{extra_config}\n",
            state.display().to_string(),
            socket.display().to_string(),
        ),
    )
    .expect("write config");
    let mut daemon = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    connect_when_up(&socket, &mut daemon, "the collector");
    let db = state.join("collector.db");
    let pid = daemon.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let (accepted, secs, cpu, rss, parts) = std::thread::scope(|s| {
        let clients: Vec<_> = load
            .payloads
            .iter()
            .map(|p| s.spawn(|| client(&socket, p, load.chunk, true)))
            .collect();
        if load.done == Done::Count {
            while count_rows(&db, load.tables) < load.total {
                assert!(t0.elapsed() < Duration::from_secs(600), "the collector stalled");
                std::thread::sleep(POLL);
            }
        }
        let now = || {
            (
                t0.elapsed().as_secs_f64(),
                cpu_seconds(pid) - cpu0,
                peak_rss_mib(pid),
                rss_parts(pid),
            )
        };
        let at_count = now();
        let accepted: u64 = clients.into_iter().map(|h| h.join().expect("client thread")).sum();
        let (secs, cpu, rss, parts) = match load.done {
            Done::Count => at_count,
            Done::Answers => now(),
        };
        (accepted, secs, cpu, rss, parts)
    });
    common::stop(&mut daemon);
    assert_eq!(accepted as usize, load.total, "every event acknowledged");
    let stored = common::stored_events(&db);
    assert_eq!(stored, load.total, "every event stored");
    Run {
        rate: load.total as f64 / secs,
        rss,
        cpu_us: cpu * 1e6 / load.total as f64,
        parts,
    }
}

fn peer(p: &Peer, load: &Load) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let socket = d.join("peer.sock");
    let out = d.join("out.jsonl");
    let conf = d.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}")
module(load="imptcp")
module(load="mmjsonparse")
template(name="flat" type="string" string="%$!all-json%\n")
ruleset(name="bench") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  action(type="omfile" file="{out}" template="flat")
}}
input(type="imptcp" path="{socket}" unlink="on" ruleset="bench")
"#,
            work = d.display(),
            out = out.display(),
            socket = socket.display()
        ),
    )
    .expect("write rsyslog.conf");
    let mut cmd = Command::new(&p.rsyslogd);
    cmd.arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(d.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(m) = &p.modules {
        cmd.arg("-M").arg(m);
    }
    if let Some(l) = &p.libs {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    let mut child = cmd.spawn().expect("start rsyslogd");
    connect_when_up(&socket, &mut child, "rsyslogd");
    let pid = child.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let poll = match load.done {
        Done::Count => POLL,
        Done::Answers => Duration::from_millis(2),
    };
    let (lines, secs, cpu, rss, parts) = std::thread::scope(|s| {
        for p in &load.payloads {
            s.spawn(|| client(&socket, p, load.chunk, false));
        }
        // Done when the file holds every line.
        let (mut lines, mut buf) = (0usize, vec![0u8; 1 << 20]);
        let mut file = loop {
            if let Ok(f) = std::fs::File::open(&out) {
                break f;
            }
            assert!(t0.elapsed() < Duration::from_secs(600), "rsyslog wrote nothing");
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut pos = 0u64;
        while lines < load.total {
            file.seek(SeekFrom::Start(pos)).expect("seek");
            let n = file.read(&mut buf).expect("read the output");
            if n == 0 {
                assert!(
                    t0.elapsed() < Duration::from_secs(600),
                    "rsyslog stalled at {lines} lines"
                );
                std::thread::sleep(poll);
                continue;
            }
            pos += n as u64;
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
        (
            lines,
            t0.elapsed().as_secs_f64(),
            cpu_seconds(pid) - cpu0,
            peak_rss_mib(pid),
            rss_parts(pid),
        )
    });
    common::stop(&mut child);
    assert_eq!(lines, load.total, "rsyslog wrote every line once");
    Run {
        rate: load.total as f64 / secs,
        rss,
        cpu_us: cpu * 1e6 / load.total as f64,
        parts,
    }
}

fn loads(total: usize) -> Vec<Load> {
    let names = std::env::var("BENCH_LOAD").unwrap_or_else(|_| "acceptance,mix".into());
    let mut out = Vec::new();
    for name in names.split(',').map(str::trim) {
        let (lines, clients, chunk, done, tables, bare_config, name): (Vec<String>, String, _, _, &[&str], _, _) =
            match name {
                "acceptance" => (
                    (0..total).map(acceptance_line).collect(),
                    std::env::var("BENCH_ACCEPT_CLIENTS").unwrap_or_else(|_| "1".into()),
                    1 << 16,
                    Done::Count,
                    &["api_logs"],
                    true,
                    "acceptance",
                ),
                "mix" => (
                    (0..total).map(line).collect(),
                    std::env::var("BENCH_CLIENTS").unwrap_or_else(|_| "1,4".into()),
                    0,
                    Done::Answers,
                    &["api_logs", "api_cost", "api_performance"],
                    false,
                    "mix",
                ),
                other => panic!("BENCH_LOAD: unknown load {other:?} (acceptance, mix)"),
            };
        let done = match std::env::var("BENCH_DONE").as_deref() {
            Ok("ack") => Done::Answers,
            Ok("count") => Done::Count,
            _ => done,
        };
        for n in clients
            .split(',')
            .filter_map(|c| c.trim().parse::<usize>().ok())
            .filter(|&c| c > 0)
        {
            let payloads = (0..n)
                .map(|c| lines[c..].iter().step_by(n).flat_map(|l| l.bytes()).collect())
                .collect();
            out.push(Load {
                name,
                payloads,
                total,
                chunk,
                done,
                tables,
                bare_config,
            });
        }
    }
    out
}

fn main() {
    let alone = std::env::var("BENCH_PEER").is_ok_and(|v| v == "off");
    let p = find_peer();
    if p.is_none() && !alone {
        println!(
            "peer_rsyslog: SKIPPED: rsyslogd not found (RSYSLOGD, PATH, /usr/sbin, target/peer/rsyslog). \
             Install it (apt-get install rsyslog) or unpack Debian's package: mkdir -p target/peer/rsyslog && cd target/peer \
             && apt-get download rsyslog libestr0 libfastjson4 liblognorm5 && for d in *.deb; do dpkg -x \"$d\" rsyslog; done"
        );
        return;
    }
    let p = p.filter(|_| !alone);
    let total = env_usize("BENCH_EVENTS", 1_000_000);
    let rounds = env_usize("BENCH_ROUNDS", 1).max(1);
    let bin_a = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into());
    let config_a = std::env::var("BENCH_OURS_CONFIG").unwrap_or_default();
    let b = match (std::env::var("BENCH_BIN_B"), std::env::var("BENCH_OURS_CONFIG_B")) {
        (Err(_), Err(_)) => None,
        (bin, config) => Some((
            bin.unwrap_or_else(|_| bin_a.clone()),
            config.unwrap_or_else(|_| config_a.clone()),
        )),
    };
    match &p {
        Some(p) => println!(
            "collector (socket -> SQLite, default settings) against rsyslog ({}: imptcp on a Unix path -> mmjsonparse -> file)",
            p.rsyslogd.display()
        ),
        None => println!("collector (socket -> SQLite, default settings) alone (BENCH_PEER=off)"),
    }
    println!("A: {bin_a} {config_a:?}");
    if let Some((bin, config)) = &b {
        println!("B: {bin} {config:?}");
    }
    let show = |who: &str, r: Run| {
        println!(
            "  {who:<12} {:>9.0} events/s  peak RSS {:>5.1} MiB  CPU {:.2} µs/event  (when done: anon {:.1}, file {:.1}, shmem {:.1} MiB)",
            r.rate, r.rss, r.cpu_us, r.parts[0], r.parts[1], r.parts[2]
        )
    };
    let ratio = |what: &str, a: Run, b: Run| {
        println!(
            "  {what}: {:.2}x events/s, {:.2}x peak RSS, {:.2}x CPU per event",
            a.rate / b.rate,
            a.rss / b.rss,
            a.cpu_us / b.cpu_us
        )
    };
    for load in loads(total) {
        let bytes: usize = load.payloads.iter().map(Vec::len).sum();
        println!(
            "load {}: {} events of {:.0} bytes, {} client(s), done by {}, {rounds} round(s)",
            load.name,
            load.total,
            bytes as f64 / load.total as f64,
            load.payloads.len(),
            match load.done {
                Done::Count => "count(*)",
                Done::Answers => "the answers",
            }
        );
        for round in 0..rounds {
            // Who runs: A, then B and the peer if there are; the order rotates per round.
            let mut who: Vec<&str> = vec!["A"];
            if b.is_some() {
                who.push("B");
            }
            if p.is_some() {
                who.push("rsyslog");
            }
            let k = round % who.len();
            who.rotate_left(k);
            let mut runs: Vec<(&str, Run)> = Vec::new();
            for w in &who {
                let r = match *w {
                    "A" => ours(&load, &bin_a, &config_a),
                    "B" => {
                        let (bin, config) = b.as_ref().expect("B");
                        ours(&load, bin, config)
                    }
                    _ => peer(p.as_ref().expect("peer"), &load),
                };
                runs.push((w, r));
            }
            let get = |w: &str| runs.iter().find(|(n, _)| *n == w).map(|(_, r)| *r);
            println!(
                "{} {} client(s), round {} (order {}):",
                load.name,
                load.payloads.len(),
                round + 1,
                who.join(", ")
            );
            for (w, r) in &runs {
                let label = match *w {
                    "A" if b.is_some() => "collector A:",
                    "A" => "collector:",
                    "B" => "collector B:",
                    _ => "rsyslog:",
                };
                show(label, *r);
            }
            let (a, bb, peer_run) = (get("A").expect("A"), get("B"), get("rsyslog"));
            if let Some(pr) = peer_run {
                ratio(
                    if bb.is_some() {
                        "A / rsyslog"
                    } else {
                        "collector / rsyslog"
                    },
                    a,
                    pr,
                );
                if let Some(bb) = bb {
                    ratio("B / rsyslog", bb, pr);
                }
            }
            if let Some(bb) = bb {
                ratio("B / A", bb, a);
            }
        }
    }
}
