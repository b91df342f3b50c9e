//! Socket → MongoDB throughput, against the driver's own `insert_many` rate on the same server.
//!
//! `cargo bench --bench mongo_throughput` installs and starts the MongoDB stand-in (or uses
//! MONGODB_TEST_URI) and measures, with BENCH_EVENTS (default 100,000) events of about 250 bytes:
//!   1. the driver alone: `insert_many` of 1,000 raw documents per call, unordered — the ceiling;
//!   2. the collector: socket → parse → batch → `insert_many`, until SIGTERM returns with all stored;
//!   3. the outbox drain: events queued while MongoDB was unreachable, delivered after it appears.
//!
//! Each phase uses a fresh server (the stand-in keeps everything in memory).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document, RawDocumentBuf};

fn line(i: usize) -> String {
    let (sec, ms) = (i / 1000, i % 1000);
    format!(
        r#"{{"type":"log","timestamp":"2026-11-26T{:02}:{:02}:{:02}.{ms:03}Z","level":"INFO","message":"API调用成功: stream_chat request {i}","module":"writer","function":"stream_chat","line":218,"extra":{{"model":"glm-4-flash","tokens":{},"chapter":16}}}}"#,
        8 + sec / 3600 % 16,
        sec / 60 % 60,
        sec % 60,
        i % 9000
    ) + "\n"
}

struct Server {
    child: Option<Child>,
    uri: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_server(port: u16) -> Server {
    if let Ok(uri) = std::env::var("MONGODB_TEST_URI") {
        return Server { child: None, uri };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = root.join("target/congodb");
    let ok = Command::new("flock")
        .arg(root.join("target/congodb.lock"))
        .arg(root.join("testsupport/mongo-server/install.sh"))
        .arg(&dest)
        .status()
        .expect("install the stand-in")
        .success();
    assert!(ok, "installing the MongoDB stand-in failed");
    let mut child = Command::new("node")
        .arg(dest.join("server.mjs"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().trim_start_matches("listening ").to_string();
    Server {
        child: Some(child),
        uri: format!("mongodb://{addr}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn direct(uri: &str) -> String {
    format!("{uri}/?directConnection=true")
}

fn count(rt: &tokio::runtime::Runtime, client: &mongodb::Client, db: &str) -> u64 {
    rt.block_on(async {
        client
            .database(db)
            .collection::<Document>("api_logs")
            .count_documents(doc! {})
            .await
    })
    .unwrap()
}

/// Starts the collector on `dir` pointing at `uri`; returns it once its socket answers.
fn start_collector(dir: &Path, uri: &str, db: &str) -> (Child, PathBuf) {
    let socket = dir.join("bench.sock");
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[log]\nlevel = \"warn\"\nsummary_interval = \"0\"\n[mongodb]\nuri = {:?}\ndatabase = {db:?}\nserver_selection_timeout = \"1s\"\n",
            dir.join("state").display().to_string(),
            socket.display().to_string(),
            direct(uri)
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lngpt-collector"))
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

fn stop(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

fn main() {
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let clients = 4;
    let rt = runtime();
    let payloads: Vec<Vec<u8>> = (0..clients)
        .map(|c| (c..total).step_by(clients).flat_map(|i| line(i).into_bytes()).collect())
        .collect();

    // 1. The driver alone.
    let raw_rate = {
        let server = start_server(0);
        let client = rt.block_on(mongodb::Client::with_uri_str(direct(&server.uri))).unwrap();
        let coll = client.database("bench_raw").collection::<RawDocumentBuf>("api_logs");
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
            rt.block_on(async { coll.insert_many(chunk).ordered(false).await })
                .unwrap();
        }
        total as f64 / t.elapsed().as_secs_f64()
    };

    // 2. Socket → collector → MongoDB.
    let (live_rate, db) = {
        let server = start_server(0);
        let client = rt.block_on(mongodb::Client::with_uri_str(direct(&server.uri))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = "bench_live".to_string();
        let (mut child, socket) = start_collector(dir.path(), &server.uri, &db);
        let t = Instant::now();
        assert_eq!(send_all(&socket, &payloads) as usize, total);
        stop(&mut child);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(count(&rt, &client, &db) as usize, total, "every event stored");
        (total as f64 / secs, db)
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
        let (mut child, socket) = start_collector(dir.path(), &uri, &db);
        assert_eq!(send_all(&socket, &payloads) as usize, total);
        stop(&mut child);
        let server = start_server(port);
        let client = rt.block_on(mongodb::Client::with_uri_str(direct(&server.uri))).unwrap();
        let t = Instant::now();
        let (mut child, _) = start_collector(dir.path(), &uri, &db);
        while (count(&rt, &client, &db) as usize) < total {
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = t.elapsed().as_secs_f64();
        stop(&mut child);
        total as f64 / secs
    };

    println!("MongoDB stand-in, {total} log events of ~250 bytes, insert_many of 1,000 unordered");
    println!("  driver alone (the ceiling):            {raw_rate:>9.0} docs/s");
    println!(
        "  socket -> collector -> MongoDB:        {live_rate:>9.0} events/s  ({:.2}x the driver alone)",
        live_rate / raw_rate
    );
    println!("  outbox drain after an outage:          {drain_rate:>9.0} events/s  (includes the restart)");
}
