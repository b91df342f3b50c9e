//! The API's accept loop: `axum::serve`'s (the same HTTP/1 connections, graceful shutdown), with
//! one difference. A connection that turns into a live stream moves to the streams' runtime
//! (`api.stream_nice`): from then on its writes, the kernel's copying and TCP work for every event
//! to every client, run on the streams' low-priority thread, not beside ingest.
//!
//! A connection is a future (hyper's, boxed): it moves by being polled from a task of the other
//! runtime. Its socket stays registered with the server's runtime, whose I/O driver wakes
//! whichever task polled it last.
//!
//! It also guards the HTTP side the way the socket is guarded (issue 20: 2,000 idle connections,
//! 500 half-sent headers and 200 half-sent bodies all stayed open, and 1,100 idle ones starved the
//! Unix socket of descriptors): connections are capped (`api.max_connections`, over all listen
//! addresses, answered 503 past it), headers must arrive within `api.header_timeout` (hyper's
//! timer, which also runs while a keep-alive connection waits for its next request), and a
//! connection with no request being handled and no bytes moving for `api.idle_timeout` (an answer
//! its client stopped reading) is closed. Bodies are the upload handler's to time
//! (`api.body_timeout`).

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::shutdown::CancellationToken;
use tower_service::Service;

use crate::telemetry::RateLimited;

/// How a request reached the server, in its extensions: the `Host` check applies to TCP only
/// (over a Unix socket the file's mode decides who may connect, and `Host` is whatever the client
/// put there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// With the local address the connection came in on.
    Tcp(Option<SocketAddr>),
    Unix,
}

/// A connection's transport, read once when it is accepted.
pub(crate) trait Connected {
    fn transport(&self) -> Transport;
}

impl Connected for tokio::net::TcpStream {
    fn transport(&self) -> Transport {
        Transport::Tcp(self.local_addr().ok())
    }
}

impl Connected for tokio::net::UnixStream {
    fn transport(&self) -> Transport {
        Transport::Unix
    }
}

/// What bounds the HTTP connections, shared by every listen address.
pub(crate) struct Guard {
    slots: Arc<Semaphore>,
    max: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    refused: std::sync::Mutex<RateLimited>,
}

impl Guard {
    pub fn new(max: usize, header_timeout: Duration, idle_timeout: Duration) -> Guard {
        Guard {
            slots: Arc::new(Semaphore::new(max)),
            max,
            header_timeout,
            idle_timeout,
            refused: std::sync::Mutex::new(RateLimited::new(Duration::from_secs(10))),
        }
    }
}

/// When bytes last moved on a connection, and how many requests are being handled on it.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request as under way until its handler has answered.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connection's socket, noting every byte that moves.
struct Tracked<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Set by a handler (found in the request's extensions) whose response is a live stream: its
/// connection then moves to the streams' runtime.
#[derive(Clone, Default)]
pub(crate) struct Lane(Arc<AtomicBool>);

impl Lane {
    pub fn to_streams(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_streams(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves `app` on `listener` until `stop` turns true; then stops accepting, lets every connection
/// finish its request (hyper's graceful shutdown) and returns once all are closed. `streams`:
/// where stream connections go (None: they stay).
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    streams: Option<Handle>,
    guard: Arc<Guard>,
    stop: CancellationToken,
) where
    L: Listener,
    L::Io: Connected,
{
    // Each connection holds a receiver: the sender is closed once all have ended.
    let (close_tx, close_rx) = watch::channel(());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(guard.header_timeout);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        let Ok(slot) = guard.slots.clone().try_acquire_owned() else {
            if let Some(suppressed) = guard.refused.lock().ok().and_then(|mut r| r.ready()) {
                tracing::warn!(
                    "refused an HTTP connection: {} are open (api.max_connections){}",
                    guard.max,
                    RateLimited::note(suppressed)
                );
            }
            tokio::spawn(refuse(io, guard.max));
            continue;
        };
        let transport = io.transport();
        let activity = Activity::new();
        let lane = Lane::default();
        let service = {
            let (app, lane, activity) = (app.clone(), lane.clone(), activity.clone());
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(lane.clone());
                request.extensions_mut().insert(transport);
                let in_flight = InFlight::enter(&activity);
                let mut app = app.clone();
                async move {
                    let response = app.call(request.map(Body::new)).await;
                    drop(in_flight);
                    response
                }
            })
        };
        let io = Tracked {
            io,
            activity: activity.clone(),
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let (stop, close_rx, idle) = (stop.clone(), close_rx.clone(), guard.idle_timeout);
        let served: Served = Box::pin(async move {
            let mut conn = std::pin::pin!(conn);
            loop {
                // No request under way: idle from the last byte; else look again a period later.
                let check_at = if activity.in_flight.load(Ordering::Relaxed) == 0 {
                    activity.last() + idle
                } else {
                    Instant::now() + idle
                };
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                        break;
                    }
                    _ = tokio::time::sleep_until(check_at) => {
                        if activity.in_flight.load(Ordering::Relaxed) == 0 && activity.last().elapsed() >= idle {
                            // Dropping the connection closes it.
                            break;
                        }
                    }
                }
            }
            drop(close_rx);
            drop(slot);
        });
        tokio::spawn(run(served, lane, streams.clone()));
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// Tells a client over the connection cap why it is turned away.
async fn refuse<T: AsyncWrite + Unpin>(mut io: T, max: usize) {
    let body = format!(
        "{{\"success\":false,\"error\":\"too many connections: {max} are open (api.max_connections); try again\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(response.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Polls a connection here until it ends or becomes a stream; a stream goes on in a task of the
/// streams' runtime.
async fn run(mut served: Served, lane: Lane, streams: Option<Handle>) {
    let Some(streams) = streams else {
        return served.await;
    };
    let ended = poll_fn(|cx| match served.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(true),
        // The handler runs inside this poll: a stream's has set the lane by now.
        Poll::Pending if lane.is_streams() => Poll::Ready(false),
        Poll::Pending => Poll::Pending,
    })
    .await;
    if !ended {
        // Polled there at once: its wakers move to that task; nothing that happened meanwhile is
        // lost (readiness and queued chunks are kept, not just signalled).
        streams.spawn(served);
    }
}
