//! A tiny HTTP/1.1 receiver on loopback for webhook tests: records every request with the time it
//! arrived, and answers as the test scripts it (a status, headers and body; or never).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    /// Path and raw query, e.g. `/robot/send?access_token=x&timestamp=1&sign=a%2Bb`.
    pub target: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter's value as sent (still percent-encoded).
    pub fn raw_query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// How to answer a request.
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request and never answer (the connection stays open until the receiver stops).
    Hang,
}

impl Reply {
    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200, "ok")
    }
}

/// Decides the answer to request number `n` (0-based).
pub type Script = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    /// Hung connections, held open until the receiver is dropped.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Receiver {
    pub fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        Self::on(
            TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"),
            Arc::new(script),
        )
    }

    /// Listens on a port chosen earlier (a receiver that comes up late).
    pub fn start_on(port: u16, script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the port again");
        Self::on(listener, Arc::new(script))
    }

    fn on(listener: TcpListener, script: Script) -> Receiver {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (r, s, h) = (received.clone(), stop.clone(), held.clone());
        std::thread::spawn(move || {
            let count = Arc::new(Mutex::new(0usize));
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, h, script, count) = (r.clone(), h.clone(), script.clone(), count.clone());
                        std::thread::spawn(move || serve(stream, &r, &h, &script, &count));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Receiver {
            addr,
            received,
            stop,
            held,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn serve(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    held: &Mutex<Vec<TcpStream>>,
    script: &Script,
    count: &Mutex<usize>,
) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Received {
        at: Instant::now(),
        method,
        target,
        headers,
        body,
    };
    let n = {
        let mut c = count.lock().unwrap();
        *c += 1;
        *c - 1
    };
    let reply = script(&request, n);
    received.lock().unwrap().push(request);
    let mut stream = stream;
    match reply {
        Reply::Hang => held.lock().unwrap().push(stream),
        Reply::Respond { status, headers, body } => {
            let mut head = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
    }
}

/// The `(rule, state, id)` of each notification in a `generic` webhook body.
pub fn generic_notifications(r: &Received) -> Vec<(String, String, String)> {
    let body = r.json();
    body["data"]["notifications"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["rule"].as_str().unwrap_or("").to_string(),
                        n["state"].as_str().unwrap_or("").to_string(),
                        n["id"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
