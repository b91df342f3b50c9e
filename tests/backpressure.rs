//! Memory and file descriptors stay bounded whatever clients do: a byte budget with back-pressure,
//! a connection cap below the open-files limit, and idle timeouts. Against the real binary.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common::{wait_until, Daemon, PATIENCE};

const MIB: u64 = 1 << 20;
/// What the daemon uses besides its budget: code, runtime threads, SQLite's page cache (4 MiB),
/// allocator slack. Measured idle at about 20 MiB; the bound leaves room for a busy allocator.
const FIXED_OVERHEAD: u64 = 48 * MIB;

fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[test]
fn many_clients_holding_huge_partial_lines_stay_within_the_budget() {
    raise_own_fd_limit();
    const CLIENTS: usize = 500;
    let d = Daemon::start("[socket]\nmax_connections = 4000\nidle_timeout = \"3s\"\n");
    let partial = vec![b'x'; 999_000];
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_nonblocking(true).unwrap();
        // Whatever the kernel takes; the rest would wait for the daemon to read, which it must not.
        let _ = s.write(&partial);
        clients.push(s);
    }
    // Give the daemon every chance to read what it is offered.
    let until = Instant::now() + Duration::from_secs(2);
    let mut peak = 0;
    while Instant::now() < until {
        peak = peak.max(d.rss().1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let bound = 16 * MIB + FIXED_OVERHEAD;
    eprintln!("peak RSS {} MiB", peak / MIB);
    assert!(
        peak < bound,
        "peak RSS {} MiB with {CLIENTS} partial lines of 999 KB; bound {} MiB",
        peak / MIB,
        bound / MIB
    );
    // Once the idle clients time out, a normal client gets through.
    let ack = d.send(b"{\"message\": \"after the flood\"}\n");
    assert_eq!(ack.events, 1);
    drop(clients);
}

#[test]
fn big_lines_into_a_locked_database_wait_instead_of_filling_memory() {
    let d = Daemon::start("[pipeline]\nmax_wait = \"5s\"\n");
    // Another process holds the write lock: the daemon's writes fail and are retried.
    let locker = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let line = format!("{{\"message\": \"{}\"}}\n", "y".repeat(1_000_000));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let socket = d.socket.clone();
            let body = line.repeat(30);
            std::thread::spawn(move || lngpt_collector::send::send(&socket, &mut body.as_bytes()))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(4);
    let mut peak = 0;
    while Instant::now() < until {
        peak = peak.max(d.rss().1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak < 16 * MIB + FIXED_OVERHEAD,
        "peak RSS {} MiB while 120 lines of 1 MB wait for a locked database",
        peak / MIB
    );
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    for s in senders {
        assert_eq!(s.join().unwrap().expect("send").events, 30);
    }
    assert_eq!(d.count("api_logs"), 120, "nothing lost once the lock is gone");
}

#[test]
fn a_small_budget_with_long_batches_still_flows() {
    // Part-filled batches must not hold the budget until max_wait: they are flushed when it runs short.
    let d = Daemon::start(
        "[pipeline]\nmemory_budget = \"1MiB\"\nmax_batch = 10000\nmax_wait = \"5s\"\n[socket]\nmax_line_bytes = 65536\n",
    );
    let body: String = (0..20_000)
        .map(|i| format!("{{\"message\": \"line {i}\"}}\n"))
        .collect();
    let started = Instant::now();
    let ack = d.send(body.as_bytes());
    assert_eq!(ack.events, 20_000);
    // At one batch per max_wait this would take over a minute.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn out_of_descriptors_refuses_clearly_quietly_and_recovers() {
    raise_own_fd_limit();
    let d = Daemon::start_wrapped("[socket]\nidle_timeout = \"0\"\n", &["prlimit", "--nofile=256:256"]);
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..2_000 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut answer = [0u8; 256];
        match s.read(&mut answer) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&answer[..n]);
                assert!(text.contains("too many connections"), "{text}");
                refused += 1;
            }
            _ => idle.push(s),
        }
        if refused > 20 {
            break;
        }
    }
    assert!(d.open_fds() <= 256);
    assert!(refused > 0, "the cap sits below the open-files limit");
    let err = lngpt_collector::send::send(&d.socket, &mut &b"{\"message\": \"x\"}\n"[..]).unwrap_err();
    assert!(err.contains("too many connections"), "{err}");
    // Load drops: the next client gets through at once.
    drop(idle);
    let ack = wait_until(
        "a send once the idle clients are gone",
        || lngpt_collector::send::send(&d.socket, &mut &b"{\"message\": \"x\"}\n"[..]).ok(),
        || d.log(),
    );
    assert_eq!(ack.events, 1);
    let warnings = d.log().matches("refused a connection").count();
    assert!(
        warnings <= 2,
        "the warning is rate-limited, logged {warnings} times:\n{}",
        d.log()
    );
}

#[test]
fn idle_clients_are_closed_after_the_idle_timeout() {
    let d = Daemon::start("[socket]\nidle_timeout = \"300ms\"\n");
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"{\"message\": \"one\"}\n{\"message\": \"partial").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    // The partial line is not dropped silently: it is kept as a reject.
    assert_eq!(answer.trim(), r#"{"events":1,"rejected":1}"#);
    assert_eq!(d.count("api_logs"), 1);
}
