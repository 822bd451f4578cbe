//! WebSocket: `GET /ws`. One task per connection reads client frames, delivers messages and
//! sends heartbeats; everything ends together.
//!
//! - this file: the upgrade, and the close codes;
//! - `session`: the connection's loop;
//! - `client_frame`: reading what the client sends;
//! - `publishes`: the client's publishes in flight, answered in order.
//!
//! What the server sends is in [`crate::wire`].

mod client_frame;
mod publishes;
mod session;

pub use session::Session;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;

use crate::caller::Caller;
use crate::error::{AppError, ErrorCode};
use crate::request::QueryParams;
use crate::state::AppState;

/// Room for a frame's own fields (`type`, `topic`, `ref`) on top of the data limit.
const FRAME_OVERHEAD: usize = 1024;

/// Bytes read from the socket at a time. Tungstenite's default is 128 KiB per connection, and
/// it clears the whole buffer before each read; client frames are small, and memory per idle
/// connection matters more.
const READ_BUFFER: usize = 1024;

/// Messages are written once this many bytes are buffered, or at the end of a batch.
const WRITE_BUFFER: usize = 16 * 1024;

/// Close codes the gateway sends (see docs/PROTOCOL.md).
pub(crate) mod close {
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    pub(crate) const NOT_UTF8: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
    /// A slow consumer, or a broker out of reach: reconnect with the cursor.
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
    pub(crate) const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The connection's token ran out and no fresh one came in time.
    pub(crate) const TOKEN_EXPIRED: u16 = 4001;
    /// An operator ended the connection (`POST /admin/disconnect`).
    pub(crate) const DISCONNECTED: u16 = 4002;

    /// Every code above, for the test that holds docs/PROTOCOL.md to them.
    #[cfg(test)]
    pub(crate) const ALL: [u16; 8] = [
        GOING_AWAY,
        PROTOCOL_ERROR,
        NOT_UTF8,
        TOO_BIG,
        TRY_AGAIN_LATER,
        HEARTBEAT_TIMEOUT,
        TOKEN_EXPIRED,
        DISCONNECTED,
    ];
}

/// `GET /ws[?topic=A&topic=B][&since=C]`. The query and the credentials are checked before the
/// upgrade, so a bad topic or cursor is an HTTP 400, and a topic the client may not follow a
/// 401 or 403, rather than a socket that opens and closes. A client without credentials may
/// open one and authenticate in-band.
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let upgrade = upgrade.map_err(|e| {
        AppError::new(
            ErrorCode::BadRequest,
            format!("GET /ws needs a WebSocket upgrade: {e}"),
        )
    })?;
    let params = QueryParams::parse(uri.query());
    let topics = params.topics(state.config.max_topics_per_connection)?;
    let cursor = params.cursor(&headers)?;
    caller.grant.check_subscribe(&topics)?;
    state.rates.check_connect(caller.address)?;
    let permit = state.open_connection()?;
    tracing::info!(
        topics = topics.len(),
        sub = caller.grant.subject(),
        "websocket opened"
    );
    let frame_limit = state.config.max_message_bytes + FRAME_OVERHEAD;
    // The session outlives the request and its span; it keeps the request id for its logs
    // (a span kept for the connection's life would cost every idle WebSocket half a KiB).
    let request_id = crate::request_id::CURRENT.try_with(Clone::clone).ok();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| {
            // The session runs in a task of its own, holding nothing but its own future: the
            // task axum spawns for the upgrade keeps this closure and the upgrade's state for
            // as long as the future it is given runs, which would cost every connection
            // several hundred bytes more.
            let mut session = Session::new(state.clone(), permit, caller, request_id);
            session.register();
            state.tasks.spawn(session.run(socket, topics, cursor));
            std::future::ready(())
        }))
}
