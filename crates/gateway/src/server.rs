//! Accepting connections and serving the app on them until shutdown, then draining within the
//! grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use switchboard_hub::Hub;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::app;
use crate::config::Config;
use crate::state::AppState;
use crate::stream_connection;

/// How often the hub applies age retention and the memory budget, and forgets idle topics.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// The largest request head: room for a maximal cursor (8 KiB) in the query string and the
/// same again in `Last-Event-ID`, with ordinary headers.
const READ_BUFFER_MAX: usize = 24 * 1024;

/// Serves the gateway on `listener` until `shutdown` completes; then stops accepting, ends
/// every stream (WebSockets close with 1001, SSE streams end, held polls answer) and returns
/// when all are done or `shutdown_grace` has passed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    let header_timeout = config.header_timeout;
    let hub = Arc::new(Hub::new(config.hub_config()));
    let token = CancellationToken::new();
    let state = AppState::new(hub.clone(), config, token.clone());
    // Connections and WebSocket sessions alike: shutdown waits for both.
    let tasks = state.tasks.clone();
    let maintenance = tokio::spawn(async move { hub.maintain(MAINTENANCE_INTERVAL).await });
    let router = app(state);

    let signal = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = token.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    token.clone(),
                    header_timeout,
                ));
            }
            // Out of file descriptors and the like: pause rather than spin.
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tasks.close();
    let drained = tokio::time::timeout(grace, tasks.wait()).await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still open after the {grace:?} grace period; closing them",
            tasks.len()
        );
    }
    maintenance.abort();
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades, for WebSocket) on one connection; on shutdown, finishes the
/// request in flight and closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    token: CancellationToken,
    header_timeout: Duration,
) {
    // One deadline for the first request head, counted from accept, whichever path reads it.
    let head_deadline = Instant::now() + header_timeout;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY: {e}");
    }
    let claim = stream_connection::claim(&stream, READ_BUFFER_MAX);
    let claimed = tokio::select! {
        claimed = tokio::time::timeout_at(head_deadline, claim) => match claimed {
            Ok(claimed) => claimed,
            Err(_) => {
                tracing::debug!(%peer, "no request within {header_timeout:?}; closing");
                return;
            }
        },
        () = token.cancelled() => return,
    };
    if let Some(claimed) = claimed {
        stream_connection::serve(stream, claimed, peer, router).await;
        return;
    }
    // hyper starts its header timeout afresh for every head (so it also closes kept-alive
    // connections that stay idle that long); the first head gets only what remains of the
    // deadline, which `first_head_missed` enforces.
    let head_received = Arc::new(AtomicBool::new(false));
    let service = router.map_request({
        let head_received = head_received.clone();
        move |request: hyper::Request<Incoming>| {
            head_received.store(true, Ordering::Relaxed);
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        }
    });
    let first_head_missed = async {
        tokio::time::sleep_until(head_deadline).await;
        if head_received.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(READ_BUFFER_MAX);
    let connection = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = first_head_missed => {
            tracing::debug!(%peer, "no complete request head within {header_timeout:?}; closing");
            return;
        }
        () = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
