//! Accepting connections and serving the app on them until shutdown, then draining within the
//! grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::ServiceExt;

use crate::admin;
use crate::app::{admin_app, app};
use crate::auth::Auth;
use crate::broker;
use crate::config::Config;
use crate::cork;
use crate::error::{AppError, ErrorCode};
use crate::rate::FORGET_INTERVAL;
use crate::socket::ClientSocket;
use crate::state::AppState;
use crate::stream_connection;

/// The largest request head: room for a maximal cursor (8 KiB) in the query string and the
/// same again in `Last-Event-ID`, with ordinary headers.
const READ_BUFFER_MAX: usize = 24 * 1024;

/// File descriptors kept for the gateway itself (listener, logs, the runtime, refusals in
/// progress) when `max_sockets` is fitted under the open-files limit.
const RESERVED_FILES: usize = 256;

/// Sockets over `max_sockets` answered with a 503 at once; beyond that they are closed
/// unanswered, so that refusing cannot itself use up file descriptors.
const REFUSING_AT_ONCE: usize = 64;

/// How long a refused socket is kept to deliver its 503 and read what the client still
/// sends (so that closing does not reset the connection before the client reads the answer).
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Bytes of a refused client's request read and discarded before its socket is closed.
const REFUSAL_DISCARD: usize = 64 * 1024;

/// Serves the gateway on `listener` until `shutdown` completes; then stops accepting, ends
/// every stream (WebSockets close with 1001, SSE streams end, held polls answer) and returns
/// when all are done or `shutdown_grace` has passed. With `admin_listen`, binds it and serves
/// the admin routes there.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin = match config.admin_listen {
        Some(address) => Some(bind_admin(address).await?),
        None => None,
    };
    run_with_admin(listener, admin, config, shutdown).await
}

/// Binds the admin listener at `address`.
pub async fn bind_admin(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {address} (admin_listen): {e}"),
        )
    })
}

/// [`run`], with the admin listener already bound: with one, the admin routes are served on it
/// only (whatever `admin_listen` says, so that it can be bound on port 0); without, on
/// `listener`.
pub async fn run_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    fit_sockets_to_open_files_limit(&mut config);
    config.admin_listen = match &admin {
        Some(admin) => Some(admin.local_addr()?),
        None => None,
    };
    let grace = config.shutdown_grace;
    let auth = Auth::from_config(&config)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    log_access_control(&auth, &config);
    let running = broker::start(&config).await?;
    let token = CancellationToken::new();
    let state = AppState::new(running.broker.clone(), config, token.clone()).with_auth(auth);
    admin::Access::new(&state.config).log(&state.config);
    let rates = state.rates.clone();
    // Stops with this function, however it ends.
    let _forget_idle_addresses = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut every = tokio::time::interval(FORGET_INTERVAL);
        loop {
            every.tick().await;
            rates.forget_idle();
        }
    }));
    // Connections and WebSocket sessions alike: shutdown waits for both.
    let tasks = state.tasks.clone();
    let accepting = Accepting {
        refusals: Refusals::new(state.config.max_sockets),
        state: state.clone(),
    };
    let router = app(state.clone());

    // Cancelled when the shutdown future completes, and also if it panics: a failing signal
    // handler must leave a gateway that stops, not one that can never stop.
    let cancel_on_exit = token.clone().drop_guard();
    tokio::spawn(async move {
        let _cancel_on_exit = cancel_on_exit;
        shutdown.await;
    });
    match admin {
        Some(admin) => {
            let admin_router = admin_app(state.clone(), admin.local_addr()?);
            tokio::join!(
                accepting.until_shutdown(listener, router),
                accepting.until_shutdown(admin, admin_router)
            );
        }
        None => accepting.until_shutdown(listener, router).await,
    }
    tasks.close();
    let drained = tokio::time::timeout(grace, tasks.wait()).await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still open after the {grace:?} grace period; closing them",
            tasks.len()
        );
    }
    drop(running);
    Ok(())
}

/// Says at start-up whether access is controlled, so that an open gateway is a choice.
fn log_access_control(auth: &Auth, config: &Config) {
    if !auth.enabled() {
        tracing::info!(
            "access control is off: anyone who can reach the gateway may subscribe and publish \
             to every topic (set jwt_secret, jwt_public_key or publish_key to turn it on)"
        );
    } else if config.allow_query_token {
        tracing::info!(
            "access control is on; tokens are also accepted in the access_token query parameter"
        );
    } else {
        tracing::info!("access control is on");
    }
}

/// What accepting connections needs, shared by the main and the admin listener.
#[derive(Debug)]
struct Accepting {
    state: AppState,
    refusals: Refusals,
}

impl Accepting {
    /// Accepts connections on `listener` and serves `router` on them until shutdown begins;
    /// then closes the listener.
    async fn until_shutdown(&self, listener: TcpListener, router: Router) {
        let state = &self.state;
        let token = &state.shutdown;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = token.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => match state.sockets.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let socket =
                            ClientSocket::new(stream, state.write_deadlines.clone(), permit);
                        state.tasks.spawn(serve_connection(
                            socket,
                            peer,
                            router.clone(),
                            token.clone(),
                            state.config.header_timeout,
                            state.tasks.clone(),
                        ));
                    }
                    Err(_) => {
                        state.count_rejection(ErrorCode::TooManyConnections);
                        self.refusals.refuse(stream, peer);
                    }
                },
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Raises the process's open-files limit as far as it may go, and lowers `max_sockets` to fit
/// under it, so that the gateway's own limit, with its clear 503, is always the one clients
/// meet, never a failing `accept`.
fn fit_sockets_to_open_files_limit(config: &mut Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(
                "cannot read the open-files limit ({e}); max_sockets is not checked against it"
            );
            return;
        }
    };
    let allowed = limit.saturating_sub(RESERVED_FILES).max(1);
    if config.max_sockets > allowed {
        tracing::warn!(
            "max_sockets lowered from {} to {allowed}: the open-files limit is {limit} and {RESERVED_FILES} are kept for the gateway itself; raise it (systemd: LimitNOFILE) to allow more",
            config.max_sockets
        );
        config.max_sockets = allowed;
    }
}

/// The answer to sockets over `max_sockets`.
#[derive(Debug)]
struct Refusals {
    /// The whole response, made once: a 503 `too_many_connections` that closes the connection.
    response: Bytes,
    /// One permit per refusal in progress.
    in_progress: Arc<Semaphore>,
}

impl Refusals {
    fn new(max_sockets: usize) -> Refusals {
        let error = AppError::new(
            ErrorCode::TooManyConnections,
            format!("the gateway holds its limit of {max_sockets} open sockets; retry later"),
        );
        let body = error.body().to_string();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Refusals {
            response: Bytes::from(response),
            in_progress: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
        }
    }

    /// Answers `stream` with the 503 and closes it, within [`REFUSAL_TIME`].
    fn refuse(&self, mut stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.in_progress.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "socket limit reached; closed unanswered");
            return;
        };
        tracing::debug!(%peer, "socket limit reached; refused");
        let response = self.response.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answered = async {
                stream.write_all(&response).await?;
                stream.shutdown().await?;
                let mut discard = [0u8; 4096];
                let mut read = 0;
                while read < REFUSAL_DISCARD {
                    match stream.read(&mut discard).await? {
                        0 => break,
                        n => read += n,
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            let _ = tokio::time::timeout(REFUSAL_TIME, answered).await;
        });
    }
}

/// Serves HTTP/1.1 (with upgrades, for WebSocket) on one connection; on shutdown, finishes the
/// request in flight and closes. An SSE stream served without hyper goes on in a task of its
/// own, spawned on `tasks`.
async fn serve_connection(
    socket: ClientSocket,
    peer: SocketAddr,
    router: Router,
    token: CancellationToken,
    header_timeout: Duration,
    tasks: TaskTracker,
) {
    // One deadline for the first request head, counted from accept, whichever path reads it.
    let head_deadline = Instant::now() + header_timeout;
    if let Err(e) = socket.stream().set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY: {e}");
    }
    let claim = stream_connection::claim(socket.stream(), READ_BUFFER_MAX);
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
        // This task's future is sized for hyper's connection, which a stream does not use.
        if let Some(stream) = stream_connection::serve(socket, claimed, peer, router).await {
            tasks.spawn(stream);
        }
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
    let (socket, cork) = cork::cork(socket);
    let connection = http
        .serve_connection(TokioIo::new(socket), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = cork.serve(connection.as_mut()) => result,
        () = first_head_missed => {
            tracing::debug!(%peer, "no complete request head within {header_timeout:?}; closing");
            return;
        }
        () = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            cork.serve(connection.as_mut()).await
        }
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, "connection ended: {e}"),
        Err(e) => tracing::debug!(%peer, "connection ended writing: {e}"),
    }
}
