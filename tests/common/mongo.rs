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
pub fn with_options(base: &str) -> String {
    if base.contains('?') {
        format!("{base}&directConnection=true")
    } else {
        format!("{base}/?directConnection=true")
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

/// A TCP proxy in front of a server. `cut()` closes every connection and refuses new ones until
/// `heal()`, like a network partition from the daemon's side; `stall()` keeps connections open but
/// forwards nothing until `heal()`, like a black-holed network.
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, st, l) = (down.clone(), stalled.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if d.load(SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let mut conns = l.lock().unwrap();
                conns.push(client.try_clone().unwrap());
                conns.push(server.try_clone().unwrap());
                drop(conns);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), st.clone());
                pipe(server, client, st.clone());
            }
        });
        Proxy {
            port,
            down,
            stalled,
            live,
        }
    }

    pub fn stall(&self) {
        self.stalled.store(true, SeqCst);
    }

    pub fn cut(&self) {
        self.down.store(true, SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.down.store(false, SeqCst);
        self.stalled.store(false, SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, stalled: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while stalled.load(SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
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
