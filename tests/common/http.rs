//! A small blocking HTTP/1.1 client over `TcpStream` for the API tests: requests with
//! `Connection: close`, chunked bodies decoded, and a reader for Server-Sent Events.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn write_request(s: &mut impl Write, addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    // As a JSON client sends it; a test that checks the type rule gives its own.
    if method == "POST" && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        head.push_str("Content-Type: application/json\r\n");
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(super::PATIENCE)).unwrap();
    write_request(&mut s, addr, method, path, headers, body);
    read_response(BufReader::new(s))
}

/// The same over the API's Unix socket (`Host: localhost`).
pub fn request_unix(
    path: &std::path::Path,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s =
        std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(super::PATIENCE)).unwrap();
    write_request(&mut s, "localhost", method, uri, headers, body);
    read_response(BufReader::new(s))
}

fn read_response(mut r: impl BufRead) -> Response {
    let (status, headers) = read_head(&mut r);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        let mut c = Chunked::new(r);
        while let Some(chunk) = c.next_chunk() {
            body.extend(chunk);
        }
    } else {
        r.read_to_end(&mut body).expect("read body");
    }
    Response { status, headers, body }
}

pub fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// GET that must answer 200 with JSON.
pub fn get_ok(addr: &str, path: &str) -> serde_json::Value {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// Reads a chunked body chunk by chunk.
struct Chunked<R> {
    r: R,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(r: R) -> Self {
        Chunked { r, done: false }
    }

    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            self.done = true;
            return None;
        }
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            self.done = true;
            return None;
        }
        let mut buf = vec![0; size + 2];
        self.r.read_exact(&mut buf).ok()?;
        buf.truncate(size);
        Some(buf)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// An open event stream.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: Chunked<BufReader<TcpStream>>,
    pending: Vec<u8>,
    /// Comments (keep-alives) seen so far.
    pub comments: usize,
}

impl Sse {
    pub fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(super::PATIENCE)).unwrap();
        write_request(&mut s, addr, "GET", path, headers, b"");
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        Sse {
            status,
            headers,
            body: Chunked::new(r),
            pending: Vec::new(),
            comments: 0,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.body.r.get_ref()
    }

    /// Reads until `n` comments (keep-alives) have come in all; events read meanwhile are returned.
    pub fn until_comments(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while self.comments < n {
            match self.next_block() {
                Some(Some(e)) => events.push(e),
                Some(None) => {}
                None => panic!("the stream ended after {} comments", self.comments),
            }
        }
        events
    }

    /// The next event (comments are counted and skipped); None when the stream ended or none came
    /// within the patience (keep-alives do not count: a missing event fails the test, not hangs it).
    pub fn next(&mut self) -> Option<SseEvent> {
        let start = std::time::Instant::now();
        loop {
            if let Some(e) = self.next_block()? {
                return Some(e);
            }
            if start.elapsed() > super::PATIENCE {
                return None;
            }
        }
    }

    /// The next block: an event, or None for a comment; None when the stream ended.
    fn next_block(&mut self) -> Option<Option<SseEvent>> {
        loop {
            if let Some(end) = find(&self.pending, b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                let mut comment_only = true;
                for line in text.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    comment_only = false;
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => event.id = Some(value.to_string()),
                        "event" => event.event = Some(value.to_string()),
                        "data" => data.push(value.to_string()),
                        _ => {}
                    }
                }
                if comment_only {
                    self.comments += 1;
                    return Some(None);
                }
                event.data = data.join("\n");
                return Some(Some(event));
            }
            let chunk = self.body.next_chunk()?;
            self.pending.extend(chunk);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
