//! The collector against rsyslog on the same lines, in the same run (issue 13).
//!
//! `cargo bench --bench peer_rsyslog` sends BENCH_EVENTS (default 1,000,000) lines of about 235 bytes
//! (the socket benchmark's) over Unix stream sockets, from BENCH_CLIENTS clients (default `1,4`: one run
//! with one client, one with four), alternately to
//!   * the collector at its default settings: socket → parse, check, redact → the embedded SQLite store,
//!     indexed and queryable; "done" is when every client has its answer, which comes only once its
//!     events are durable (then SIGTERM, and every event is counted in the store);
//!   * rsyslog: `imptcp` on a Unix path → `mmjsonparse` (the raw line, no cookie) → `omfile` writing
//!     `$!all-json` to a flat file; "done" is when the file holds every line (rsyslog writes each
//!     batch at its end).
//!
//! For each it prints events/s, the peak RSS (VmHWM) and the CPU time (user + system, all threads) per
//! event, then the ratios. BENCH_ROUNDS (default 1) repeats the pairs; the order alternates per round.
//! BENCH_OURS_CONFIG appends TOML to the collector's config (sections the default leaves out), for
//! trying a setting against the defaults; BENCH_BIN runs another build of the collector (a copy of
//! the binary before a change, for A/B runs); BENCH_PEER=off runs the collector alone.
//!
//! rsyslogd is looked for in RSYSLOGD, on PATH, in /usr/sbin, and unpacked under
//! `target/peer/rsyslog` (Debian's package, when it cannot be installed):
//! ```sh
//! mkdir -p target/peer/rsyslog && cd target/peer && apt-get download rsyslog libestr0 libfastjson4 liblognorm5 \
//!   && for d in *.deb; do dpkg -x "$d" rsyslog; done
//! ```
//! Without it the benchmark prints why and exits 0: it is never part of the test suite.

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

/// Each client writes its whole payload, half-closes, and (when `answer`) reads the reply.
fn send(socket: &Path, payloads: &[Vec<u8>], answer: bool) -> u64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = payloads
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let mut c = UnixStream::connect(socket).expect("connect");
                    c.write_all(p).expect("write");
                    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
                    if !answer {
                        return 0;
                    }
                    let mut reply = String::new();
                    c.read_to_string(&mut reply).expect("answer");
                    let v: serde_json::Value = serde_json::from_str(reply.trim()).expect("answer is JSON");
                    v["events"].as_u64().unwrap_or(0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).sum()
    })
}

fn ours(payloads: &[Vec<u8>], total: usize) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("ours.sock");
    let config = dir.path().join("ours.toml");
    // Default settings: only where it listens and how much it logs.
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[api]\nlisten = \"127.0.0.1:0\"\n{}\n",
            dir.path().join("state").display().to_string(),
            socket.display().to_string(),
            std::env::var("BENCH_OURS_CONFIG").unwrap_or_default()
        ),
    )
    .expect("write config");
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into());
    let mut daemon = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the collector");
    connect_when_up(&socket, &mut daemon, "the collector");
    let cpu0 = cpu_seconds(daemon.id());
    let t0 = Instant::now();
    let accepted = send(&socket, payloads, true);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(daemon.id()) - cpu0;
    let rss = peak_rss_mib(daemon.id());
    common::stop(&mut daemon);
    assert_eq!(accepted as usize, total, "every event acknowledged");
    let stored = common::stored_events(&dir.path().join("state/collector.db"));
    assert_eq!(stored, total, "every event stored");
    Run {
        rate: total as f64 / secs,
        rss,
        cpu_us: cpu * 1e6 / total as f64,
    }
}

fn peer(p: &Peer, payloads: &[Vec<u8>], total: usize) -> Run {
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
    let cpu0 = cpu_seconds(child.id());
    let t0 = Instant::now();
    send(&socket, payloads, false);
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
    while lines < total {
        file.seek(SeekFrom::Start(pos)).expect("seek");
        let n = file.read(&mut buf).expect("read the output");
        if n == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "rsyslog stalled at {lines} lines"
            );
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        pos += n as u64;
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id()) - cpu0;
    let rss = peak_rss_mib(child.id());
    common::stop(&mut child);
    assert_eq!(lines, total, "rsyslog wrote every line once");
    Run {
        rate: total as f64 / secs,
        rss,
        cpu_us: cpu * 1e6 / total as f64,
    }
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
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|&c| c > 0)
        .collect();
    let lines: Vec<String> = (0..total).map(line).collect();
    let bytes: usize = lines.iter().map(String::len).sum();
    match &p {
        Some(p) => println!(
            "collector (socket -> SQLite, default settings) against rsyslog ({}: imptcp on a Unix path -> mmjsonparse -> file)",
            p.rsyslogd.display()
        ),
        None => println!("collector (socket -> SQLite, default settings) alone (BENCH_PEER=off)"),
    }
    println!(
        "{total} events of {:.0} bytes, {rounds} round(s)",
        bytes as f64 / total as f64
    );
    let show = |who: &str, r: Run| {
        println!(
            "  {who:<10} {:>9.0} events/s  peak RSS {:>5.1} MiB  CPU {:.2} µs/event",
            r.rate, r.rss, r.cpu_us
        )
    };
    for &n in &clients {
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|c| lines[c..].iter().step_by(n).flat_map(|l| l.bytes()).collect())
            .collect();
        for round in 0..rounds {
            let (a, b) = match &p {
                None => (ours(&payloads, total), None),
                Some(p) if round % 2 == 0 => {
                    let a = ours(&payloads, total);
                    (a, Some(peer(p, &payloads, total)))
                }
                Some(p) => {
                    let b = peer(p, &payloads, total);
                    (ours(&payloads, total), Some(b))
                }
            };
            println!("{n} client(s), round {}:", round + 1);
            show("collector:", a);
            if let Some(b) = b {
                show("rsyslog:", b);
                println!(
                    "  collector / rsyslog: {:.2}x events/s, {:.2}x peak RSS, {:.2}x CPU per event",
                    a.rate / b.rate,
                    a.rss / b.rss,
                    a.cpu_us / b.cpu_us
                );
            }
        }
    }
}
