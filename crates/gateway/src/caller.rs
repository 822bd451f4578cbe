//! Who sent a request: the client's real address, and what its credentials allow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::auth::Grant;
use crate::client_addr::client_ip;
use crate::error::AppError;
use crate::state::AppState;

/// The client behind a request. Extracting it refuses credentials that are given but wrong
/// (`401`), so a handler that takes one has a client it can ask questions of.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address, behind trusted proxies: what rate limits count by.
    pub address: IpAddr,
    /// What the client may do.
    pub grant: Grant,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, AppError> {
        // Every connection's requests carry their peer (`server.rs`, `stream_connection.rs`);
        // one driven without a socket counts as an unknown address.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |info| info.0);
        let address = client_ip(peer, &parts.headers, &state.config);
        let grant = state.auth.grant(&parts.headers, parts.uri.query())?;
        Ok(Caller { address, grant })
    }
}
