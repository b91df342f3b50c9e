//! The API's accept loop: `axum::serve`'s (the same HTTP/1 connections, graceful shutdown), with
//! one difference. A connection that turns into a live stream moves to the streams' runtime
//! (`api.stream_nice`): from then on its writes, the kernel's copying and TCP work for every event
//! to every client, run on the streams' low-priority thread, not beside ingest.
//!
//! A connection is a future (hyper's, boxed): it moves by being polled from a task of the other
//! runtime. Its socket stays registered with the server's runtime, whose I/O driver wakes
//! whichever task polled it last.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::extract::Request;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tower_service::Service;

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

/// Serves `app` until `signal`; then stops accepting, lets every connection finish its request
/// (hyper's graceful shutdown) and returns once all are closed. `streams`: where stream
/// connections go (None: they stay).
pub(crate) async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    streams: Option<Handle>,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    // Closed (its receiver dropped) once `signal` fires.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(signal_rx);
    });
    // Each connection holds a receiver: the sender is closed once all have ended.
    let (close_tx, close_rx) = watch::channel(());
    let builder = Builder::new(TokioExecutor::new());
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = signal_tx.closed() => break,
        };
        let lane = Lane::default();
        let service = {
            let (app, lane) = (app.clone(), lane.clone());
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(lane.clone());
                let mut app = app.clone();
                async move { app.call(request.map(Body::new)).await }
            })
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let (signal_tx, close_rx) = (signal_tx.clone(), close_rx.clone());
        let served: Served = Box::pin(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = signal_tx.closed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(close_rx);
        });
        tokio::spawn(run(served, lane, streams.clone()));
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
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
