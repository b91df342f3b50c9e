//! `POST /api/events`: JSON lines over HTTP, for apps that cannot reach the Unix socket (another
//! container). The same parser, redaction and rejects as the socket, and the socket's rules: the
//! upload is admitted to the memory budget before every read of its body (a full budget slows the
//! upload, nothing is dropped), and the answer `{"events":N,"rejected":M}` comes only once every
//! one of those events is durable.
//!
//! Admission reserves nothing while the body's next bytes are awaited: what arrives is charged as
//! it is, so an upload that stalls holds only its partial line (300 stalled uploads once held 64
//! KiB each, the whole budget). A body that sends nothing for `api.body_timeout`, or stops mid-line
//! for `socket.line_timeout` while others wait for memory, is answered 408 and let go. Like a
//! socket connection, an upload part-way through a line takes the budget's line lane rather than
//! wait for memory while holding it.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;

use super::{Api, ApiError};
use crate::pipeline::memory::Reservation;
use crate::source::client::ClientLines;
use crate::source::Ingest;

/// Why reading the body stopped early.
enum Cut {
    TooLarge,
    Stopping,
    /// Nothing came for `api.body_timeout`, or a line stalled while memory was short.
    TimedOut(String),
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
                Cut::TimedOut(why) => (StatusCode::REQUEST_TIMEOUT, why),
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

/// Why the body's next bytes did not come.
enum Stall {
    /// A started line paused too long while memory was short.
    Line,
    /// Nothing for `api.body_timeout`.
    Body,
    Broken(String),
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
        let body_timeout = api.config().body_timeout.0;
        let line_timeout = api.inner.line_timeout;
        let budget = self.lines.ingest().memory().clone();
        let stopping = api.inner.stopping.clone();
        let mut stream = body.into_data_stream();
        let mut read = 0u64;
        let mut lane: Option<crate::pipeline::memory::LanePermit> = None;
        let cut = loop {
            // Memory first, reserving nothing: the next bytes are charged as they come.
            if lane.is_none() {
                let growing = self.lines.line_growing();
                tokio::select! {
                    biased;
                    _ = stopping.cancelled() => break Some(Cut::Stopping),
                    r = budget.admit(0) => drop(r),
                    permit = budget.line_lane(), if growing => lane = Some(permit),
                    _ = tokio::time::sleep(body_timeout) => break Some(Cut::TimedOut(format!(
                        "no memory could be had for the upload within api.body_timeout ({})",
                        api.config().body_timeout
                    ))),
                }
            }
            let started = tokio::time::Instant::now();
            let next = loop {
                let holding = self.lines.partial_bytes() > 0;
                let wait = if lane.is_some() {
                    crate::source::socket::LANE_PATIENCE
                } else if holding {
                    line_timeout.min(body_timeout)
                } else {
                    body_timeout
                };
                let next = tokio::select! {
                    biased;
                    _ = stopping.cancelled() => break None,
                    next = tokio::time::timeout(wait, stream.next()) => next,
                };
                if next.is_err() && lane.is_some() {
                    // Its client is not blocked on us: the lane goes to the next in line.
                    lane = None;
                    continue;
                }
                match next {
                    Ok(None) => break Some(None),
                    Ok(Some(Ok(bytes))) => break Some(Some(Ok(bytes))),
                    Ok(Some(Err(e))) => break Some(Some(Err(Stall::Broken(e.to_string())))),
                    Err(_) if holding && started.elapsed() >= line_timeout && budget.has_waiters() => {
                        break Some(Some(Err(Stall::Line)));
                    }
                    Err(_) if started.elapsed() >= body_timeout => break Some(Some(Err(Stall::Body))),
                    Err(_) => {}
                }
            };
            let bytes = match next {
                None => break Some(Cut::Stopping),
                Some(None) => break None,
                Some(Some(Err(Stall::Line))) => {
                    break Some(Cut::TimedOut(format!(
                        "the upload sent no more of a started line for socket.line_timeout ({}) while other clients waited for the memory it held",
                        crate::units::HumanDuration(line_timeout)
                    )))
                }
                Some(Some(Err(Stall::Body))) => {
                    break Some(Cut::TimedOut(format!(
                        "the body sent nothing for api.body_timeout ({})",
                        api.config().body_timeout
                    )))
                }
                Some(Some(Err(Stall::Broken(e)))) => break Some(Cut::Broken(e)),
                Some(Some(Ok(bytes))) => bytes,
            };
            read += bytes.len() as u64;
            if read > limit {
                break Some(Cut::TooLarge);
            }
            let reservation = budget.force(bytes.len());
            if self.queue(&bytes, reservation).await.is_err() {
                break Some(Cut::Stopping);
            }
            if lane.is_some() && !self.lines.line_growing() {
                lane = None;
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
