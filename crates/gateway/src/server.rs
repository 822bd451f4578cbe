//! Serving the app on a listener until shutdown, then draining within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use switchboard_hub::Hub;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::app;
use crate::config::Config;
use crate::state::AppState;

/// How often the hub applies age retention and the memory budget, and forgets idle topics.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Serves the gateway on `listener` until `shutdown` completes; then stops accepting, ends
/// every stream (WebSockets close with 1001, SSE streams end, held polls answer) and returns
/// when all are done or `shutdown_grace` has passed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    let hub = Arc::new(Hub::new(config.hub_config()));
    let token = CancellationToken::new();
    let state = AppState::new(hub.clone(), config, token.clone());
    let sessions = state.sessions.clone();
    let maintenance = tokio::spawn(async move { hub.maintain(MAINTENANCE_INTERVAL).await });

    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
    });
    let signal = {
        let token = token.clone();
        async move {
            shutdown.await;
            token.cancel();
        }
    };
    let serve = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let serve = async move {
        let result = serve.await;
        sessions.close();
        sessions.wait().await;
        result
    };
    let deadline = async {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = serve => result,
        () = deadline => {
            tracing::warn!("connections still open after the {grace:?} grace period; closing them");
            Ok(())
        }
    };
    maintenance.abort();
    result
}
