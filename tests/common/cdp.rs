//! Headless Chromium driven over the DevTools protocol: Debian's `chromium` started on a private
//! profile with `--remote-debugging-port=0`, a page target opened over its HTTP endpoint, and the
//! protocol spoken over a minimal WebSocket client (text frames, masking, continuation, ping) — no
//! browser download and no CDP crate.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{wait_until, PATIENCE};

/// Where the browser is: `CHROMIUM`, else the first of the usual names on `PATH`.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium is not installed, and the page's tests need it: `apt-get install -y chromium` (.ci/run does), \
         or set CHROMIUM to a Chromium or Chrome binary"
    );
}

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `127.0.0.1:PORT` of the DevTools HTTP endpoint.
    pub devtools: String,
}

impl Browser {
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--mute-audio",
            "--hide-scrollbars",
            "--lang=zh-CN",
            "--accept-lang=zh-CN,zh",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        if nix::unistd::geteuid().is_root() {
            // Chromium refuses to run as root with its sandbox (CI runs the tests as root).
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
        let port_file = profile.path().join("DevToolsActivePort");
        let port = wait_until(
            "Chromium's DevToolsActivePort file",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("Chromium exited at start with {status}");
                }
                let text = std::fs::read_to_string(&port_file).ok()?;
                text.lines().next()?.trim().parse::<u16>().ok()
            },
            || "no DevToolsActivePort".into(),
        );
        Browser {
            child,
            _profile: profile,
            devtools: format!("127.0.0.1:{port}"),
        }
    }

    /// A new tab, at about:blank.
    pub fn page(&self) -> Page {
        let target = devtools_json(&self.devtools, "PUT", "/json/new?about:blank");
        let url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("webSocketDebuggerUrl")
            .to_string();
        let page = Page::connect(&url);
        for domain in ["Page", "Runtime", "Log", "Network", "Performance"] {
            page.call(&format!("{domain}.enable"), json!({}));
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group: the wrapper script's Chromium and its helpers.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// A request to the DevTools HTTP endpoint (which keeps the connection open: the body is read by
/// its length).
fn devtools_json(addr: &str, method: &str, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).expect("connect to DevTools");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut len = 0;
    r.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "{method} {path}: {line}");
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("body");
    serde_json::from_slice(&body).expect("JSON")
}

type Replies = Arc<(Mutex<HashMap<u64, Value>>, Condvar)>;

/// One tab's protocol connection. Replies are matched by id; events are kept for the test to read.
pub struct Page {
    writer: Mutex<TcpStream>,
    next_id: AtomicU64,
    replies: Replies,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Page {
    fn connect(url: &str) -> Page {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_at(rest.find('/').expect("a path"));
        let mut stream = TcpStream::connect(host).expect("connect to DevTools");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("handshake answer");
        assert!(line.contains(" 101 "), "WebSocket handshake refused: {line}");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("handshake header");
            if line.trim().is_empty() {
                break;
            }
        }
        let replies: Replies = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let pong = stream.try_clone().expect("clone");
        {
            let (replies, events) = (replies.clone(), events.clone());
            std::thread::spawn(move || {
                let mut pong = pong;
                while let Some(text) = read_message(&mut reader, &mut pong) {
                    let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = msg.get("id").and_then(Value::as_u64) {
                        let (map, cv) = &*replies;
                        map.lock().unwrap().insert(id, msg);
                        cv.notify_all();
                    } else {
                        events.lock().unwrap().push(msg);
                    }
                }
                // Closed: wake any waiter so it reports the failure.
                replies.1.notify_all();
            });
        }
        Page {
            writer: Mutex::new(stream),
            next_id: AtomicU64::new(1),
            replies,
            events,
        }
    }

    /// Calls a protocol method and returns its `result`; a protocol error fails the test.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        write_frame(&mut self.writer.lock().unwrap(), msg.as_bytes());
        let (map, cv) = &*self.replies;
        let deadline = Instant::now() + PATIENCE;
        let mut guard = map.lock().unwrap();
        loop {
            if let Some(reply) = guard.remove(&id) {
                if let Some(err) = reply.get("error") {
                    panic!("{method} failed: {err}");
                }
                return reply["result"].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer to {method} within {PATIENCE:?}");
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Evaluates an expression in the page (promises awaited) and returns its value.
    pub fn eval(&self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{expression}\nthrew: {ex}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Waits until `expression` is truthy (not null, false, 0 or ""), and returns its value. An
    /// expression that throws (the page is still loading) counts as not yet.
    pub fn wait_for(&self, what: &str, expression: &str) -> Value {
        self.wait_for_showing(what, expression, "null")
    }

    /// As [`Page::wait_for`], and on timeout says what `show` evaluates to (the state behind it).
    pub fn wait_for_showing(&self, what: &str, expression: &str, show: &str) -> Value {
        let start = Instant::now();
        let guarded = format!("(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() >= PATIENCE {
                panic!(
                    "timed out waiting for {what} ({expression}); {show}: {}; console: {:?}",
                    self.eval(show),
                    self.console_errors()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The protocol events received so far with this method name.
    pub fn events(&self, method: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == method)
            .cloned()
            .collect()
    }

    pub fn clear_events(&self) {
        self.events.lock().unwrap().clear();
    }

    /// Console errors, uncaught exceptions and failed loads the browser reported.
    pub fn console_errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.events.lock().unwrap().iter() {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.consoleAPICalled") if matches!(p["type"].as_str(), Some("error" | "assert")) => {
                    out.push(format!("console.error: {}", p["args"]))
                }
                Some("Runtime.exceptionThrown") => out.push(format!("exception: {}", p["exceptionDetails"])),
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                    out.push(format!("log: {}", p["entry"]["text"]))
                }
                _ => {}
            }
        }
        out
    }

    /// Every `Performance.getMetrics` figure by name.
    pub fn metrics(&self) -> HashMap<String, f64> {
        let m = self.call("Performance.getMetrics", json!({}));
        m["metrics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["value"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("screenshot data");
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

fn write_frame(w: &mut TcpStream, payload: &[u8]) {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x81); // FIN, text
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    w.write_all(&frame).expect("write a WebSocket frame");
}

fn write_control(w: &mut TcpStream, opcode: u8, payload: &[u8]) {
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    let _ = w.write_all(&frame);
}

/// The next whole text message; None once the connection closes.
fn read_message(r: &mut impl Read, w: &mut TcpStream) -> Option<String> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).ok()?;
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).ok()?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).ok()?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask).ok()?;
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).ok()?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            0x8 => return None,
            0x9 => write_control(w, 0xA, &payload),
            0xA => {}
            _ => {
                message.extend_from_slice(&payload);
                if fin {
                    return Some(String::from_utf8_lossy(&message).into_owned());
                }
            }
        }
    }
}
