//! Issue 20: the daemon cannot be wedged, starved or driven from outside. Each test reproduces
//! one finding against the real binary at small settings (a 2 MiB memory budget, 256 KiB lines) so
//! that it runs in seconds, and waits on conditions, never on sleeps.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use crate::common::http::Response;
use crate::common::http::{get, request, request_unix};
use crate::common::{wait_until, Daemon, PATIENCE};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A small budget and line limit: partial lines fill it in a few hundred KB.
const SMALL: &str = "[pipeline]\nmemory_budget = \"2MiB\"\n[socket]\nmax_line_bytes = 262144\nmax_connections = 4000\nidle_timeout = \"10m\"\n";

fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Sends `body` through the library's client on a thread; the answer, or a failure after `patience`.
fn send_within(d: &Daemon, body: Vec<u8>, patience: Duration) -> lngpt_collector::send::Ack {
    let (tx, rx) = mpsc::channel();
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        let _ = tx.send(lngpt_collector::send::send(&socket, &mut &body[..]));
    });
    match rx.recv_timeout(patience) {
        Ok(answer) => answer.expect("send"),
        Err(_) => panic!(
            "no answer within {patience:?}: intake is wedged\n/readyz: {}\n{}",
            get(&d.api(), "/readyz").text(),
            d.log()
        ),
    }
}

/// Connects and writes up to `n` bytes of one line without its newline (whatever the kernel takes
/// without blocking); returns the stream and how much it took.
fn partial_line(d: &Daemon, n: usize) -> (UnixStream, usize) {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_nonblocking(true).unwrap();
    let mut line = b"{\"message\": \"".to_vec();
    line.resize(n, b'x');
    let written = s.write(&line).unwrap_or(0);
    (s, written)
}

/// Whether the daemon holds the server side of the loopback connection from `client_port`
/// (found in /proc/net/tcp by its ports, then among the daemon's descriptors by its inode).
fn server_side_open(d: &Daemon, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| a.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        (f.len() > 9 && port(f[2]) == Some(client_port) && f[9] != "0").then(|| f[9].to_string())
    });
    let Some(inode) = inode else { return false };
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == target))
        })
        .unwrap_or(false)
}

/// A value of `/metrics` without labels.
fn metric(d: &Daemon, name: &str) -> Option<f64> {
    let text = get(&d.api(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn readyz(d: &Daemon) -> Value {
    get(&d.api(), "/readyz").json()
}

#[test]
fn clients_that_leave_mid_line_do_not_wedge_intake() {
    raise_own_fd_limit();
    let d = Daemon::start(SMALL);
    let mut wrote = 0;
    for _ in 0..200 {
        let (s, n) = partial_line(&d, 200_000);
        wrote += u64::from(n > 0);
        drop(s);
    }
    // A new client with one line gets through, and each partial line left behind is a reject.
    let ack = send_within(&d, b"{\"message\": \"after them\"}\n".to_vec(), Duration::from_secs(30));
    assert_eq!((ack.events, ack.rejected), (1, 0));
    d.wait_for_count("api_rejects", wrote);
    wait_until(
        "the budget back to nothing held",
        || (readyz(&d)["intake"]["memory_used"].as_u64() == Some(0)).then_some(()),
        || readyz(&d).to_string(),
    );
}

#[test]
fn many_clients_writing_long_lines_all_get_their_answer() {
    // Each holds part of a line and needs more memory to finish it: a reservation deadlock unless
    // one of them may finish its line past the budget.
    raise_own_fd_limit();
    let d = Daemon::start(SMALL);
    const CLIENTS: usize = 40;
    let line = format!("{{\"message\": \"{}\"}}\n", "y".repeat(200_000));
    // First every client has the start of its first line taken in (40 × 64 KiB reads pass the
    // 2 MiB budget), then each sends the rest: three whole lines.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&line.as_bytes()[..150_000]).unwrap();
        clients.push(s);
    }
    let (tx, rx) = mpsc::channel();
    for mut s in clients {
        let (rest, tx) = (format!("{}{}", &line[150_000..], line.repeat(2)), tx.clone());
        std::thread::spawn(move || {
            let answer = s.write_all(rest.as_bytes()).and_then(|()| {
                s.shutdown(std::net::Shutdown::Write)?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer)
            });
            let _ = tx.send(answer);
        });
    }
    let deadline = Instant::now() + PATIENCE;
    for i in 0..CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{i} of {CLIENTS} clients answered within {PATIENCE:?}\n{}", d.log()))
            .expect("write and read the answer");
        assert_eq!(answer.trim(), "{\"events\":3,\"rejected\":0}");
    }
    assert_eq!(d.count("api_logs"), 3 * CLIENTS as u64);
}

#[test]
fn clients_stalled_mid_line_give_way_to_others() {
    raise_own_fd_limit();
    let d = Daemon::start(SMALL);
    // Connected, each part-way through a line, sending nothing more: together over the budget.
    let stalled: Vec<(UnixStream, usize)> = (0..40).map(|_| partial_line(&d, 150_000)).collect();
    let ack = send_within(
        &d,
        b"{\"message\": \"still flowing\"}\n".to_vec(),
        Duration::from_secs(40),
    );
    assert_eq!(ack.events, 1);
    // Those that held memory others waited for had their lines cut: kept as rejects that say why.
    let cut: u64 = wait_until(
        "a cut line in api_rejects",
        || {
            let n: i64 = d
                .db()
                .query_row(
                    "SELECT count(*) FROM api_rejects WHERE doc LIKE '%the line was cut after%socket.line_timeout%'",
                    [],
                    |r| r.get(0),
                )
                .ok()?;
            (n > 0).then_some(n as u64)
        },
        || d.log(),
    );
    assert!(cut <= stalled.len() as u64);
    drop(stalled);
}

#[test]
fn readyz_says_when_intake_is_saturated_and_since_when() {
    let d = Daemon::start(SMALL);
    assert_eq!(readyz(&d)["intake"]["saturated"], false);
    // A locked database: nothing is stored, memory fills, sources wait.
    let locker = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = format!("{{\"message\": \"{}\"}}\n", "z".repeat(10_000)).repeat(400);
    let socket = d.socket.clone();
    let sender = std::thread::spawn(move || lngpt_collector::send::send(&socket, &mut body.as_bytes()));
    let intake = wait_until(
        "intake saturated in /readyz",
        || {
            let r = readyz(&d);
            (r["intake"]["saturated"] == true).then(|| r["intake"].clone())
        },
        || readyz(&d).to_string(),
    );
    let since = intake["since"].as_str().expect("since");
    assert!(since.ends_with('Z') && since.len() >= 20, "{intake}");
    assert!(intake["waiting"].as_u64() >= Some(1), "{intake}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(sender.join().unwrap().expect("send").events, 400);
    wait_until(
        "intake no longer saturated",
        || (readyz(&d)["intake"]["saturated"] == false).then_some(()),
        || readyz(&d).to_string(),
    );
}

#[test]
fn idle_timeout_bounds_a_wait_for_memory_too() {
    let d = Daemon::start(
        "[pipeline]\nmemory_budget = \"2MiB\"\n[socket]\nmax_line_bytes = 262144\nidle_timeout = \"1s\"\n",
    );
    let locker = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // One client fills the budget (its events wait for the store) and goes on writing.
    let mut filler = UnixStream::connect(&d.socket).unwrap();
    let chunk = format!("{{\"message\": \"{}\"}}\n", "f".repeat(10_000)).repeat(100);
    std::thread::spawn(move || while filler.write_all(chunk.as_bytes()).is_ok() {});
    wait_until(
        "the memory budget used up",
        || {
            (metric(&d, "lngpt_collector_memory_used_bytes")? >= metric(&d, "lngpt_collector_memory_limit_bytes")?)
                .then_some(())
        },
        || get(&d.api(), "/metrics").text(),
    );
    // Another client that cannot get memory is answered and let go after idle_timeout, not held
    // for as long as the store is locked.
    let mut waiter = UnixStream::connect(&d.socket).unwrap();
    waiter.write_all(b"{\"message\": \"waits\"}\n").unwrap();
    waiter.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = String::new();
    let started = Instant::now();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&waiter), &mut answer).expect("an answer within 20 s");
    assert_eq!(
        answer.trim(),
        "{\"events\":0,\"rejected\":0}",
        "after {:?}",
        started.elapsed()
    );
    locker.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn stalled_uploads_time_out_and_hold_no_budget_meanwhile() {
    raise_own_fd_limit();
    let d = Daemon::start(&format!("{SMALL}[api]\nbody_timeout = \"2s\"\n"));
    let api = d.api();
    let mut uploads = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&api).unwrap();
        write!(
            s,
            "POST /api/events HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{{\"mess"
        )
        .unwrap();
        uploads.push(s);
    }
    // Meanwhile the socket is not starved of memory.
    let ack = send_within(
        &d,
        b"{\"message\": \"beside them\"}\n".to_vec(),
        Duration::from_secs(10),
    );
    assert_eq!(ack.events, 1);
    let used = readyz(&d)["intake"]["memory_used"].as_u64().unwrap();
    assert!(used < MIB, "{used} bytes of the budget held by 100 stalled uploads");
    // Each is answered 408 and closed once body_timeout passes.
    for mut s in uploads {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("api.body_timeout"), "{answer}");
    }
}

// ---- The HTTP side: a connection cap shared with the socket's, and header, body, idle timeouts.

/// Reads from `s` until the server closes the connection (or `patience` passes); what it said.
fn until_closed(s: &mut TcpStream, patience: Duration) -> Option<String> {
    s.set_read_timeout(Some(patience)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn half_sent_headers_and_idle_keep_alive_connections_are_closed() {
    let d = Daemon::start("[api]\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"\nkeep_alive = \"1s\"\n");
    let api = d.api();
    let mut half = TcpStream::connect(&api).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut silent = TcpStream::connect(&api).unwrap();
    let mut kept = TcpStream::connect(&api).unwrap();
    write!(kept, "GET /healthz HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
    let started = Instant::now();
    for (what, s) in [("half-sent headers", &mut half), ("no request at all", &mut silent)] {
        until_closed(s, Duration::from_secs(20)).unwrap_or_else(|| panic!("{what}: still open after 20 s"));
    }
    let said = until_closed(&mut kept, Duration::from_secs(20)).expect("an idle keep-alive connection closed");
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(said.contains("alive"), "answered before it was closed: {said}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed too soon: {:?}",
        started.elapsed()
    );
}

#[test]
fn http_connections_are_capped_and_cannot_starve_the_socket_of_descriptors() {
    raise_own_fd_limit();
    // 256 descriptors: HTTP and socket connections share what is left after the reserve.
    let d = Daemon::start_wrapped(
        "[api]\nidle_timeout = \"10m\"\nheader_timeout = \"10m\"\n",
        &["prlimit", "--nofile=256:256"],
    );
    let api = d.api();
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        let Ok(mut s) = TcpStream::connect(&api) else { break };
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    text.starts_with("HTTP/1.1 503") && text.contains("api.max_connections"),
                    "{text}"
                );
                refused += 1;
            }
            _ => open.push(s),
        }
    }
    assert!(refused > 0, "{} HTTP connections open, none refused", open.len());
    assert!(d.open_fds() <= 256);
    // The socket still takes a client.
    let ack = send_within(&d, b"{\"message\": \"through\"}\n".to_vec(), Duration::from_secs(10));
    assert_eq!(ack.events, 1);
    assert!(!d.log().contains("Too many open files"), "{}", d.log());
    drop(open);
}

// ---- Nothing outside gets in: Host, type and Origin of state-changing requests, the token.

fn silences(d: &Daemon) -> usize {
    get(&d.api(), "/api/alerts/silences").json()["silences"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_foreign_host_is_refused_and_cross_site_requests_change_nothing() {
    let d = Daemon::start("");
    let api = d.api();
    // DNS rebinding: the page's own name, pointed at 127.0.0.1.
    for path in ["/api/logs", "/", "/readyz"] {
        let r = request(&api, "GET", path, &[("Host", "evil.example:8787")], b"");
        assert_eq!(r.status, 421, "{path}: {}", r.text());
    }
    let r = request(&api, "GET", "/api/logs", &[("Host", "evil.example")], b"");
    assert!(r.text().contains("api.allowed_hosts"), "{}", r.text());
    for host in ["localhost:8787", "127.0.0.1", "[::1]:1"] {
        assert_eq!(
            request(&api, "GET", "/healthz", &[("Host", host)], b"").status,
            200,
            "{host}"
        );
    }
    // A form or text/plain post that a browser sends without asking.
    let silence = br#"{"rule": "budget", "duration": "30d"}"#;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = request(&api, "POST", "/api/alerts/silences", &[("Content-Type", ct)], silence);
        assert_eq!(r.status, 415, "{ct}: {}", r.text());
    }
    let cost = br#"{"type": "api_cost", "model": "gpt-4o", "cost": 1000000, "currency": "$"}
"#;
    let r = request(&api, "POST", "/api/events", &[("Content-Type", "text/plain")], cost);
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.text().contains("application/x-ndjson"), "{}", r.text());
    // JSON from another site's page: refused by its Origin.
    let r = request(
        &api,
        "POST",
        "/api/alerts/silences",
        &[("Content-Type", "application/json"), ("Origin", "https://evil.example")],
        silence,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(silences(&d), 0, "nothing was silenced");
    assert_eq!(d.count("api_cost"), 0, "no cost was stored");
    // The collector's own page, and tools that say JSON, still work.
    let r = request(
        &api,
        "POST",
        "/api/alerts/silences",
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Origin", &format!("http://{api}")),
        ],
        silence,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["silence"]["id"].as_str().unwrap().to_string();
    let r = request(
        &api,
        "DELETE",
        &format!("/api/alerts/silences/{id}"),
        &[("Origin", &format!("http://{api}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        &api,
        "POST",
        "/api/events",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"message\": \"ok\"}\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn configured_origins_may_delete_and_the_bearer_scheme_is_case_insensitive() {
    let token = "0123456789abcdef0123";
    let d = Daemon::start(&format!(
        "[api]\ntoken = \"{token}\"\ncors_origins = [\"https://novel.example.com\"]\nallowed_hosts = [\"collector\"]\n"
    ));
    let api = d.api();
    let preflight = request(
        &api,
        "OPTIONS",
        "/api/alerts/silences/x",
        &[
            ("Origin", "https://novel.example.com"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
        b"",
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_string();
    assert!(methods.contains("DELETE"), "{methods}");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {token}");
        let r = request(
            &api,
            "GET",
            "/api/budget",
            &[("Authorization", &auth), ("Host", "collector:8787")],
            b"",
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    // With the token, a tool needs no particular type (a browser cannot send the token cross-site).
    let auth = format!("Bearer {token}");
    let r = request(
        &api,
        "POST",
        "/api/events",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        b"{\"message\": \"ok\"}\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(&api, "GET", "/api/budget", &[("Authorization", "Basic abc")], b"");
    assert_eq!(r.status, 401);
}

// ---- The API on several addresses, one of them a Unix socket.

#[test]
fn the_api_answers_on_a_tcp_port_and_a_unix_socket_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/api.sock");
    let d = Daemon::start(&format!(
        "[api]\nlisten = [\"127.0.0.1:0\", \"unix:{}\"]\n",
        sock.display()
    ));
    let tcp = get(&d.api(), "/api/budget");
    assert_eq!(tcp.status, 200, "{}", tcp.text());
    let unix = request_unix(&sock, "GET", "/api/budget", &[], b"");
    assert_eq!(unix.status, 200, "{}", unix.text());
    assert_eq!(tcp.json()["allowed"], unix.json()["allowed"]);
    // Any Host over the socket (no browser reaches it), and the socket's file mode.
    let r = request_unix(&sock, "GET", "/healthz", &[("Host", "collector")], b"");
    assert_eq!(r.status, 200);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(d.log().contains(&format!("unix:{}", sock.display())), "{}", d.log());
}

// ---- SIGHUP: [api]'s access rules apply at once, the rest is named.

#[test]
fn a_reload_rotates_the_api_token_and_names_what_needs_a_restart() {
    let (old, new) = ("old-token-0123456789", "new-token-0123456789");
    let d = Daemon::start(&format!("[api]\ntoken = \"{old}\"\n"));
    let api = d.api();
    let with = |t: &str| {
        request(
            &api,
            "GET",
            "/api/budget",
            &[("Authorization", &format!("Bearer {t}"))],
            b"",
        )
        .status
    };
    assert_eq!((with(old), with(new)), (200, 401));
    let config = std::fs::read_to_string(&d.config).unwrap();
    let changed = config
        .replace(old, new)
        .replace("[api]\n", "[api]\nmax_connections = 77\n");
    std::fs::write(&d.config, changed).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for_log("SIGHUP: reloaded");
    assert_eq!((with(old), with(new)), (401, 200), "{}", d.log());
    d.wait_for_log("api.max_connections");
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("take effect after a restart"))
        .unwrap_or_default();
    assert!(
        line.contains("api.max_connections") && !line.contains("api.token"),
        "{log}"
    );
}

// ---- Smaller items.

#[test]
fn forged_cursors_bad_states_and_oversized_silences_are_the_callers_mistake() {
    let d = Daemon::start("");
    let api = d.api();
    for cursor in ["1795680598120_zz", "1795680598120_6745a1b2c3d4e5f60718293a", "x_1"] {
        let r = get(&api, &format!("/api/logs?cursor={cursor}"));
        assert_eq!(r.status, 400, "{cursor}: {}", r.text());
        assert!(r.text().contains("next_cursor"), "{}", r.text());
    }
    let r = get(&api, "/api/alerts?state=bogus");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("firing or resolved"), "{}", r.text());
    let post = |body: String| request(&api, "POST", "/api/alerts/silences", &[], body.as_bytes());
    let r = post(format!(
        r#"{{"rule": "budget", "duration": "1h", "comment": "{}"}}"#,
        "c".repeat(1001)
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("`comment`"), "{}", r.text());
    let labels: Vec<String> = (0..21).map(|i| format!("\"l{i}\": \"v\"")).collect();
    let r = post(format!(r#"{{"labels": {{{}}}, "duration": "1h"}}"#, labels.join(",")));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(format!(r#"{{"rule": "{}", "duration": "1h"}}"#, "r".repeat(300)));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(format!(
        r#"{{"rule": "budget", "duration": "1h", "comment": "{}"}}"#,
        "c".repeat(20_000)
    ));
    assert_eq!(r.status, 413, "{}", r.text());
    for i in 0..100 {
        let r = post(format!(r#"{{"rule": "r{i}", "duration": "1h"}}"#));
        assert_eq!(r.status, 201, "{i}: {}", r.text());
    }
    let r = post(r#"{"rule": "one more", "duration": "1h"}"#.to_string());
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("DELETE /api/alerts/silences/"), "{}", r.text());
}

// ---- Everything at once (the issue's "done when").

/// How long the hostile-load test runs: `LNGPT_HOSTILE_SECS` (5 by default, so that `cargo test`
/// stays quick; `LNGPT_HOSTILE_SECS=60 cargo test --test it guard::hostile` is the minute-long form).
fn hostile_duration() -> Duration {
    let secs = std::env::var("LNGPT_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// The daemon's RSS bound under the hostile load: the 2 MiB budget, a partial line per client
/// caught mid-line for `line_timeout`, a few hundred connections' buffers and tasks, and the fixed
/// overhead `tests/backpressure.rs` measures (about 20 MiB idle). A functional bound, generous for
/// a busy 2-core machine, not a performance target.
const HOSTILE_RSS_BOUND: u64 = 160 * MIB;

#[test]
fn under_hostile_load_a_well_behaved_client_loses_nothing_and_memory_stays_bounded() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    raise_own_fd_limit();
    let d = Daemon::start(&format!(
        "{SMALL}line_timeout = \"1s\"\n[api]\nbody_timeout = \"2s\"\nheader_timeout = \"2s\"\nidle_timeout = \"2s\"\nkeep_alive = \"1s\"\n"
    ));
    let api = d.api();
    let until = Instant::now() + hostile_duration();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    let running = {
        let stop = stop.clone();
        move || !stop.load(Ordering::Relaxed) && Instant::now() < until
    };
    // Socket clients that stop mid-line: half leave, half stay connected and silent.
    {
        let (socket, running) = (d.socket.clone(), running.clone());
        attackers.push(std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut line = b"{\"message\": \"".to_vec();
            line.resize(150_000, b'x');
            for i in 0.. {
                if !running() {
                    break;
                }
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    continue;
                };
                s.set_nonblocking(true).unwrap();
                let _ = s.write(&line);
                if i % 2 == 0 {
                    held.push_back(s);
                    if held.len() > 50 {
                        held.pop_front();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    // HTTP: uploads that stall, half-sent headers, idle connections, cross-site writes.
    {
        let (api, running, refused) = (api.clone(), running.clone(), refused.clone());
        attackers.push(std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            for i in 0.. {
                if !running() {
                    break;
                }
                let Ok(mut s) = TcpStream::connect(&api) else { continue };
                let _ = match i % 4 {
                    0 => write!(s, "POST /api/events HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{{\"mess"),
                    1 => write!(s, "GET /api/logs HTTP/1.1\r\nHost: {api}\r\nX-Half: "),
                    2 => Ok(()),
                    _ => {
                        let path = if i % 8 == 3 { "/api/alerts/silences" } else { "/api/events" };
                        let body = if i % 8 == 3 {
                            r#"{"rule": "budget", "duration": "30d"}"#.to_string()
                        } else {
                            "{\"type\": \"api_cost\", \"model\": \"gpt-4o\", \"cost\": 1000000, \"currency\": \"$\"}\n".to_string()
                        };
                        let r = request(&api, "POST", path, &[("Content-Type", "text/plain"), ("Origin", "https://evil.example")], body.as_bytes());
                        assert!(r.status == 415 || r.status == 403 || r.status == 503, "{}: {}", r.status, r.text());
                        refused.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                };
                held.push_back(s);
                if held.len() > 300 {
                    held.pop_front();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    // The app: batches of lines, each answered once durable.
    let mut acked = 0u64;
    let mut peak = 0;
    let mut batch = 0;
    while Instant::now() < until {
        let body: String = (0..20)
            .map(|i| format!("{{\"message\": \"good {batch} {i}\"}}\n"))
            .collect();
        let ack = send_within(&d, body.into_bytes(), Duration::from_secs(30));
        assert_eq!((ack.events, ack.rejected), (20, 0), "batch {batch}");
        acked += ack.events;
        batch += 1;
        peak = peak.max(d.rss().0);
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().expect("an attacker thread failed");
    }
    peak = peak.max(d.rss().1);
    eprintln!(
        "hostile load for {:?}: {acked} events acknowledged in {batch} batches, {} cross-site writes refused, peak RSS {} MiB",
        hostile_duration(),
        refused.load(Ordering::Relaxed),
        peak / MIB
    );
    assert!(batch >= 3, "only {batch} batches got through");
    let stored: i64 = d
        .db()
        .query_row("SELECT count(*) FROM api_logs WHERE doc LIKE '%\"good %'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored as u64, acked, "every acknowledged event is stored, once");
    assert_eq!(d.count("api_logs"), acked, "nothing else got in");
    assert_eq!(d.count("api_cost"), 0, "no cross-site cost");
    assert_eq!(silences(&d), 0, "no cross-site silence");
    assert!(
        peak < HOSTILE_RSS_BOUND,
        "peak RSS {} MiB, over the bound of {} MiB",
        peak / MIB,
        HOSTILE_RSS_BOUND / MIB
    );
}

#[test]
fn a_response_the_client_stops_reading_is_closed_after_the_idle_timeout() {
    // A keep-alive connection waiting for its next request is closed by the header timeout (the
    // test above); this one has its answer under way and the client does not read it.
    let d = Daemon::start("[api]\nidle_timeout = \"2s\"\nkeep_alive = \"1s\"\n");
    let body = format!("{{\"message\": \"{}\"}}\n", "m".repeat(20_000)).repeat(1000);
    assert_eq!(d.send(body.as_bytes()).events, 1000);
    let api = d.api();
    let mut s = TcpStream::connect(&api).unwrap();
    write!(s, "GET /api/logs?per_page=1000 HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
    // 20 MB of answer, more than the kernel's buffers hold: its writes stop moving.
    let port = s.local_addr().unwrap().port();
    wait_until(
        "the connection accepted",
        || server_side_open(&d, port).then_some(()),
        || d.log(),
    );
    wait_until(
        "the stalled connection closed",
        || (!server_side_open(&d, port)).then_some(()),
        || d.log(),
    );
    drop(s);
}
