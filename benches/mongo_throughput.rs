//! Socket → MongoDB throughput, against the driver's own `insert_many` rate on the same server.
//!
//! `cargo bench --bench mongo_throughput` installs and starts the MongoDB stand-in (or uses
//! MONGODB_TEST_URI) and measures, with BENCH_EVENTS (default 100,000) events of about 235 bytes (the socket benchmark's lines):
//!   1. the driver alone: `insert_many` of 1,000 raw documents per call, unordered — the ceiling;
//!   2. the collector: socket → parse → batch → `insert_many`, until SIGTERM returns with all stored;
//!   3. the outbox drain: events queued while MongoDB was unreachable, delivered after it appears;
//!      with and without the restart (from the first batch in MongoDB), against the live rate.
//!
//! Each phase uses a fresh server (the stand-in keeps everything in memory). BENCH_BIN runs another
//! build of the collector (a copy of the binary before a change, for A/B runs).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mongodb::bson::RawDocumentBuf;

mod common;
#[path = "../tests/common/mongo.rs"]
mod mongo;

use common::{env_usize, line};
use mongo::{block_on, count, with_options as direct, MongoServer};

/// Documents stored across the three event collections.
fn stored(client: &mongodb::Client, db: &str) -> u64 {
    ["api_logs", "api_cost", "api_performance"]
        .iter()
        .map(|c| count(client, db, c))
        .sum()
}

/// Starts the collector on `dir` pointing at `uri`; returns it once its socket answers.
fn start_collector(dir: &Path, uri: &str, db: &str) -> (Child, PathBuf) {
    let socket = dir.join("bench.sock");
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[mongodb]\nuri = {:?}\ndatabase = {db:?}\nserver_selection_timeout = \"1s\"\n",
            dir.join("state").display().to_string(),
            socket.display().to_string(),
            direct(uri)
        ),
    )
    .unwrap();
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lngpt-collector").into());
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "collector did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, socket)
}

fn send_all(socket: &Path, payloads: &[Vec<u8>]) -> u64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = payloads
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let mut c = UnixStream::connect(socket).unwrap();
                    c.write_all(p).unwrap();
                    c.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut answer = String::new();
                    c.read_to_string(&mut answer).unwrap();
                    serde_json::from_str::<serde_json::Value>(answer.trim()).unwrap()["events"]
                        .as_u64()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn main() {
    let total = env_usize("BENCH_EVENTS", 100_000);
    let clients = 4;
    let payloads: Vec<Vec<u8>> = (0..clients)
        .map(|c| (c..total).step_by(clients).flat_map(|i| line(i).into_bytes()).collect())
        .collect();

    // 1. The driver alone: the same lines as documents, 1,000 per unordered insert_many.
    let raw_rate = {
        let server = MongoServer::start();
        let client = server.client();
        let coll = client.database("bench_raw").collection::<RawDocumentBuf>("events");
        let docs: Vec<RawDocumentBuf> = (0..total)
            .map(|i| {
                let v: serde_json::Value = serde_json::from_str(&line(i)).unwrap();
                let mut d = mongodb::bson::to_raw_document_buf(&v).unwrap();
                d.append("_id", mongodb::bson::oid::ObjectId::new());
                d
            })
            .collect();
        let t = Instant::now();
        for chunk in docs.chunks(1000) {
            block_on(async { coll.insert_many(chunk).ordered(false).await }).unwrap();
        }
        total as f64 / t.elapsed().as_secs_f64()
    };

    // 2. Socket → collector → MongoDB, until SIGTERM returns with everything stored.
    let live_rate = {
        let server = MongoServer::start();
        let dir = tempfile::tempdir().unwrap();
        let (mut child, socket) = start_collector(dir.path(), &server.uri(), "bench_live");
        let t = Instant::now();
        assert_eq!(send_all(&socket, &payloads) as usize, total);
        common::stop(&mut child);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            stored(&server.client(), "bench_live") as usize,
            total,
            "every event stored"
        );
        total as f64 / secs
    };

    // 3. Outbox drain: MongoDB unreachable while the events arrive, then it appears.
    let drain_rate = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("mongodb://127.0.0.1:{port}");
        let (mut child, socket) = start_collector(dir.path(), &uri, "bench_drain");
        assert_eq!(send_all(&socket, &payloads) as usize, total);
        common::stop(&mut child);
        let server = MongoServer::start_on(port);
        let client = server.client();
        let t = Instant::now();
        let (mut child, _) = start_collector(dir.path(), &uri, "bench_drain");
        // Watched in the outbox (a batch leaves it once MongoDB has it), not by counting in the
        // stand-in, whose counts scan and would compete with the inserts. The drain proper starts
        // with the first batch delivered (after the restart, the connection and the indexes).
        let db = rusqlite::Connection::open_with_flags(
            dir.path().join("state/collector.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the outbox");
        let waiting = || -> usize {
            db.query_row("SELECT coalesce(sum(events), 0) FROM outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(total, |n| n as usize)
        };
        let mut first: Option<(Instant, usize)> = None;
        loop {
            let n = waiting();
            if n < total && first.is_none() {
                first = Some((Instant::now(), total - n));
            }
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let secs = t.elapsed().as_secs_f64();
        common::stop(&mut child);
        assert_eq!(stored(&client, "bench_drain") as usize, total, "every event drained");
        let (t_first, n_first) = first.unwrap_or((t, 0));
        let proper = (total - n_first) as f64 / t_first.elapsed().as_secs_f64().max(1e-3);
        (total as f64 / secs, proper)
    };

    println!("MongoDB stand-in, {total} events of ~235 bytes, insert_many of 1,000 unordered");
    println!("  driver alone (the ceiling):            {raw_rate:>9.0} docs/s");
    println!(
        "  socket -> collector -> MongoDB:        {live_rate:>9.0} events/s  ({:.2}x the driver alone)",
        live_rate / raw_rate
    );
    let (drain_rate, drain_proper) = drain_rate;
    println!("  outbox drain after an outage:          {drain_rate:>9.0} events/s  (includes the restart)");
    println!(
        "  the same, from the first batch stored: {drain_proper:>9.0} events/s  ({:.2}x the live rate)",
        drain_proper / live_rate
    );
}
