//! `lngpt-collector send`: JSON lines from stdin to a running collector, for scripts and tests.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::Deserialize;

/// The collector's answer when a client closes its side of the connection, sent once every line it
/// accepted is durable.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Ack {
    pub events: u64,
    pub rejected: u64,
}

/// What the collector says when it turns a client away (too many connections).
#[derive(Deserialize)]
struct Refusal {
    error: String,
}

/// Sends everything `input` yields and waits for the collector's count of what it accepted.
pub fn send(socket: &Path, input: &mut impl Read) -> Result<Ack, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "nobody is listening on {} ({e}); is lngpt-collector running, and is this its socket.path?",
            socket.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "not allowed to connect to {} ({e}); is this user in the socket's group?",
            socket.display()
        ),
        _ => format!("cannot connect to {}: {e}", socket.display()),
    })?;
    // A collector that stops mid-way closes the connection; its answer still says what it took.
    let copy_error = io::copy(input, &mut stream).err();
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    // The last line is the answer; earlier ones answer sync lines the input may hold.
    let last = answer.trim().lines().last().unwrap_or("");
    if let Ok(Refusal { error }) = serde_json::from_str::<Refusal>(last) {
        return Err(format!("the collector refused the connection: {error}"));
    }
    match (serde_json::from_str::<Ack>(last), copy_error) {
        (Ok(ack), None) => Ok(ack),
        (Ok(ack), Some(e)) => Err(format!(
            "the collector closed the connection while lines were still being sent ({e}); it accepted {} events and rejected {} lines before that",
            ack.events, ack.rejected
        )),
        (Err(_), Some(e)) => Err(format!("sending to {} failed: {e}", socket.display())),
        (Err(_), None) => Err(format!(
            "the collector did not confirm the lines ({}); it may have stopped, so some of them may not be stored",
            read.err().map_or_else(|| format!("answer {answer:?}"), |e| e.to_string())
        )),
    }
}
