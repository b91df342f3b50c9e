//! `POST /api/events`: JSON lines over HTTP, for apps that cannot reach the Unix socket (another
//! container). The same parser, redaction and rejects as the socket, and the socket's rules: the
//! upload is admitted to the memory budget before every read of its body (a full budget slows the
//! upload, nothing is dropped), and the answer `{"events":N,"rejected":M}` comes only once every
//! one of those events is durable.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;

use super::{Api, ApiError};
use crate::pipeline::budget::Reservation;
use crate::source::client::ClientLines;
use crate::source::Ingest;

/// Budget admitted before each read of the body, as the socket does.
const READ_BUFFER: usize = 64 * 1024;

/// Why reading the body stopped early.
enum Cut {
    TooLarge,
    Stopping,
    /// The client went away or the body was malformed.
    Broken(String),
}

pub async fn post_events(State(api): State<Api>, body: Body) -> Response {
    let gate = match api.inner.ingest.lock().ok().and_then(|g| g.clone()) {
        Some(gate) => gate,
        None => {
            return ApiError::unavailable(
                "the collector is shutting down and accepts no more events; retry against the restarted collector",
            )
            .into_response()
        }
    };
    let mut upload = Upload::new(gate.ingest.clone());
    let cut = upload.read(&api, body).await;
    // Answer only for what is durable, whatever cut the upload short.
    upload.lines.durable().await;
    drop(gate);
    let tally = upload.lines.tally();
    let counts = json!({"events": tally.events, "rejected": tally.rejected});
    match cut {
        None => Json(json!({"success": true, "events": tally.events, "rejected": tally.rejected})).into_response(),
        Some(cut) => {
            let (status, why) = match cut {
                Cut::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over api.max_body_bytes ({})", api.config().max_body_bytes),
                ),
                Cut::Stopping => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the collector is shutting down".to_string(),
                ),
                Cut::Broken(e) => (StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")),
            };
            let message = format!(
                "{why}; the lines before that point are stored ({} events, {} rejected), the rest was not read: send it again",
                counts["events"], counts["rejected"]
            );
            (
                status,
                Json(json!({"success": false, "error": message, "events": counts["events"], "rejected": counts["rejected"]})),
            )
                .into_response()
        }
    }
}

/// One upload's progress.
struct Upload {
    lines: ClientLines,
}

impl Upload {
    fn new(ingest: Ingest) -> Upload {
        Upload {
            lines: ClientLines::new(ingest),
        }
    }

    /// Reads and queues the body; None when it was read to its end.
    async fn read(&mut self, api: &Api, body: Body) -> Option<Cut> {
        let limit = api.config().max_body_bytes.0;
        let mut stopping = api.inner.stopping.clone();
        let mut stream = body.into_data_stream();
        let mut read = 0u64;
        let cut = loop {
            let reservation = tokio::select! {
                biased;
                _ = stopping.wait_for(|s| *s) => break Some(Cut::Stopping),
                r = self.lines.ingest().budget().admit(READ_BUFFER) => r,
            };
            let next = tokio::select! {
                biased;
                _ = stopping.wait_for(|s| *s) => break Some(Cut::Stopping),
                next = stream.next() => next,
            };
            let bytes = match next {
                None => break None,
                Some(Err(e)) => break Some(Cut::Broken(e.to_string())),
                Some(Ok(bytes)) => bytes,
            };
            read += bytes.len() as u64;
            if read > limit {
                break Some(Cut::TooLarge);
            }
            if self.queue(&bytes, reservation).await.is_err() {
                break Some(Cut::Stopping);
            }
        };
        if matches!(cut, None | Some(Cut::Stopping)) {
            self.lines.finish_partial_line().await;
        }
        cut
    }

    async fn queue(&mut self, bytes: &[u8], reservation: Reservation) -> Result<(), ()> {
        let mut events = self.lines.decode(bytes, None);
        self.lines.submit(&mut events, reservation).await
    }
}
