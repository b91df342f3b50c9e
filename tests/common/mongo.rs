//! A MongoDB for the tests: the MongoDB-compatible stand-in (CongoDB, installed from npm into
//! `target/congodb` on first use), one in-memory server per test, or a real MongoDB when
//! `MONGODB_TEST_URI` is set. Also a TCP proxy that can cut every connection, for outage tests.
//! The MongoDB benchmark uses it too.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use mongodb::bson::{doc, Document};

/// Whether the tests run against a real MongoDB (some assertions hold only there).
pub fn real_mongodb() -> bool {
    std::env::var("MONGODB_TEST_URI").is_ok_and(|u| !u.is_empty())
}

pub struct MongoServer {
    child: Option<Child>,
    /// host:port the daemon should reach (or, for a real MongoDB, the whole URI).
    base_uri: String,
    pub port: u16,
}

fn install() -> &'static Path {
    static INSTALLED: OnceLock<std::path::PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dest = root.join("target/congodb");
        std::fs::create_dir_all(root.join("target")).unwrap();
        // flock: test binaries (or nextest processes) may install at the same time.
        let status = Command::new("flock")
            .arg(root.join("target/congodb.lock"))
            .arg(root.join("testsupport/mongo-server/install.sh"))
            .arg(&dest)
            .status()
            .expect("run testsupport/mongo-server/install.sh (needs node and npm)");
        assert!(status.success(), "installing the MongoDB stand-in failed");
        dest
    })
}

impl MongoServer {
    /// The port it listens on (for a proxy in front of it).
    pub fn tcp_port(&self) -> u16 {
        if real_mongodb() {
            let uri = self.uri();
            let host = uri
                .trim_start_matches("mongodb://")
                .split(['/', '?'])
                .next()
                .unwrap_or_default();
            host.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(27017)
        } else {
            self.port
        }
    }

    pub fn start() -> MongoServer {
        Self::start_on(0)
    }

    /// Starts the stand-in on `port` (0: any free port).
    pub fn start_on(port: u16) -> MongoServer {
        if let Ok(uri) = std::env::var("MONGODB_TEST_URI") {
            if !uri.is_empty() {
                return MongoServer {
                    child: None,
                    base_uri: uri,
                    port: 0,
                };
            }
        }
        let dir = install();
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node server.mjs");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected server output {first:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        MongoServer {
            child: Some(child),
            base_uri: format!("mongodb://{addr}"),
            port,
        }
    }

    /// A URI for `database`, optionally through a proxy on `via_port`.
    pub fn uri(&self) -> String {
        self.base_uri.clone()
    }

    pub fn client(&self) -> mongodb::Client {
        client(&self.base_uri)
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The driver's URI options tests use: talk to the one server directly.
/// The driver's URI options tests use: talk to the one server directly, and poll its state at the
/// usual heartbeat instead of a streaming `hello` that the stand-in answers at once (which made
/// every daemon under test poll it thousands of times a second).
pub fn with_options(base: &str) -> String {
    let options = "directConnection=true&serverMonitoringMode=poll";
    if base.contains('?') {
        format!("{base}&{options}")
    } else {
        format!("{base}/?{options}")
    }
}

pub fn client(base_uri: &str) -> mongodb::Client {
    block_on(mongodb::Client::with_uri_str(with_options(base_uri))).expect("client")
}

/// Runs async driver calls from synchronous tests. One runtime for all, since a client's
/// background monitoring lives in the runtime that created it.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .block_on(f)
}

/// A database name no other test uses.
pub fn unique_db(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t_{}_{}_{}",
        test.chars().take(20).collect::<String>(),
        std::process::id(),
        N.fetch_add(1, SeqCst)
    )
}

pub fn count(client: &mongodb::Client, db: &str, coll: &str) -> u64 {
    block_on(async {
        client
            .database(db)
            .collection::<Document>(coll)
            .count_documents(doc! {})
            .await
    })
    .expect("count")
}

pub fn find_all(client: &mongodb::Client, db: &str, coll: &str) -> Vec<Document> {
    use futures_util::TryStreamExt;
    block_on(async {
        let cursor = client
            .database(db)
            .collection::<Document>(coll)
            .find(doc! {})
            .await
            .expect("find");
        cursor.try_collect().await.expect("collect")
    })
}

/// A TCP proxy in front of a server that speaks MongoDB's wire protocol message by message, so
/// that it can fail the way a network or a server does:
/// - `cut()` closes every connection and refuses new ones until `heal()` (a partition);
/// - `stall()` keeps connections open but forwards nothing until `heal()` (a black hole);
/// - `refuse_inserts(coll, code)` answers every `insert` into `coll` with `ok: 0` and `code`, as
///   MongoDB does for a user without the right role (13, Unauthorized), without forwarding it;
/// - `drop_reply_of_next_inserts(n)` forwards the next `n` inserts, then cuts the connection before
///   their replies arrive: the server applied them, the client does not know.
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    down: AtomicBool,
    stalled: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
    refuse: Mutex<Option<(String, i32)>>,
    /// `insert` commands seen (forwarded or refused), per collection.
    inserts_seen: Mutex<std::collections::HashMap<String, u64>>,
    drop_replies: AtomicU64,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if st.down.load(SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let mut conns = st.live.lock().unwrap();
                conns.push(client.try_clone().unwrap());
                conns.push(server.try_clone().unwrap());
                drop(conns);
                // Both directions write whole messages to the client under one lock, so that a
                // made-up reply never lands in the middle of a real one.
                let to_client = Arc::new(Mutex::new(client.try_clone().unwrap()));
                let lose_next_reply = Arc::new(AtomicBool::new(false));
                relay_requests(
                    client,
                    server.try_clone().unwrap(),
                    to_client.clone(),
                    st.clone(),
                    lose_next_reply.clone(),
                );
                relay_replies(server, to_client, st.clone(), lose_next_reply);
            }
        });
        Proxy { port, state }
    }

    pub fn stall(&self) {
        self.state.stalled.store(true, SeqCst);
    }

    pub fn cut(&self) {
        self.state.down.store(true, SeqCst);
        for s in self.state.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.state.down.store(false, SeqCst);
        self.state.stalled.store(false, SeqCst);
    }

    pub fn refuse_inserts(&self, collection: &str, code: i32) {
        *self.state.refuse.lock().unwrap() = Some((collection.to_string(), code));
    }

    pub fn accept_inserts(&self) {
        *self.state.refuse.lock().unwrap() = None;
    }

    pub fn inserts_seen(&self, collection: &str) -> u64 {
        self.state
            .inserts_seen
            .lock()
            .unwrap()
            .get(collection)
            .copied()
            .unwrap_or(0)
    }

    pub fn drop_reply_of_next_inserts(&self, n: u64) {
        self.state.drop_replies.store(n, SeqCst);
    }
}

/// One wire-protocol message: its header's request id and the whole bytes.
fn read_message(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).ok()?;
    let n = i32::from_le_bytes(len);
    if !(16..=48 << 20).contains(&n) {
        return None;
    }
    let mut msg = vec![0u8; n as usize];
    msg[..4].copy_from_slice(&len);
    from.read_exact(&mut msg[4..]).ok()?;
    Some(msg)
}

/// The body document of an OP_MSG (opcode 2013), if it is one.
fn op_msg_body(msg: &[u8]) -> Option<Document> {
    let opcode = i32::from_le_bytes(msg.get(12..16)?.try_into().ok()?);
    if opcode != 2013 || *msg.get(20)? != 0 {
        return None;
    }
    let len = i32::from_le_bytes(msg.get(21..25)?.try_into().ok()?) as usize;
    Document::from_reader(msg.get(21..21 + len)?).ok()
}

/// An OP_MSG reply to request `request_id` carrying `body`.
fn op_msg_reply(request_id: i32, body: &Document) -> Vec<u8> {
    let mut doc = Vec::new();
    body.to_writer(&mut doc).unwrap();
    let total = 16 + 4 + 1 + doc.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as i32).to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&2013i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&doc);
    out
}

fn wait_while_stalled(state: &ProxyState) {
    while state.stalled.load(SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn relay_requests(
    mut from: TcpStream,
    mut server: TcpStream,
    client: Arc<Mutex<TcpStream>>,
    state: Arc<ProxyState>,
    lose_next_reply: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        while let Some(msg) = read_message(&mut from) {
            wait_while_stalled(&state);
            let insert_into = op_msg_body(&msg).and_then(|b| b.get_str("insert").ok().map(str::to_string));
            if let Some(coll) = &insert_into {
                *state.inserts_seen.lock().unwrap().entry(coll.clone()).or_default() += 1;
                let refuse = state.refuse.lock().unwrap().clone();
                if let Some((refused, code)) = refuse.filter(|(c, _)| c == coll) {
                    let request_id = i32::from_le_bytes(msg[4..8].try_into().unwrap());
                    let reply = op_msg_reply(
                        request_id,
                        &doc! { "ok": 0.0, "errmsg": format!("not authorized to execute command {{ insert: \"{refused}\" }}"), "code": code, "codeName": "Unauthorized" },
                    );
                    if client.lock().unwrap().write_all(&reply).is_err() {
                        break;
                    }
                    continue;
                }
            }
            let drop_reply = insert_into.is_some()
                && state
                    .drop_replies
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if drop_reply {
                // The server applies it; its reply is lost with the connection.
                lose_next_reply.store(true, SeqCst);
            }
            if server.write_all(&msg).is_err() {
                break;
            }
        }
        let _ = server.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn relay_replies(
    mut server: TcpStream,
    client: Arc<Mutex<TcpStream>>,
    state: Arc<ProxyState>,
    lose_next_reply: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        while let Some(msg) = read_message(&mut server) {
            wait_while_stalled(&state);
            if lose_next_reply.swap(false, SeqCst) {
                break;
            }
            if client.lock().unwrap().write_all(&msg).is_err() {
                break;
            }
        }
        let _ = client.lock().unwrap().shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    });
}

/// A TCP port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `[mongodb]` section for a daemon that reaches MongoDB at `base_uri`.
pub fn mongodb_section(base_uri: &str, database: &str, extra: &str) -> String {
    format!(
        "[mongodb]\nuri = {:?}\ndatabase = {database:?}\nserver_selection_timeout = \"1s\"\nconnect_timeout = \"1s\"\n{extra}\n",
        with_options(base_uri)
    )
}
