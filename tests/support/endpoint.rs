//! Where clients connect: the gateway itself, or a proxy in front of it.

use std::net::SocketAddr;

/// Something listening on `127.0.0.1:PORT` that speaks the protocol: an in-process
/// [`Gateway`](crate::Gateway), or an [`Nginx`](crate::Nginx) in front of one. The URLs below
/// are the ones a client of it uses; the scenarios in [`scenarios`](crate::scenarios) run
/// against any of them.
pub trait Endpoint {
    /// `127.0.0.1:PORT`, where it listens.
    fn addr(&self) -> SocketAddr;

    /// `http://127.0.0.1:PORT`, its origin.
    fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The URL of `path_and_query` (which starts with `/`) over HTTP.
    fn http_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr())
    }

    /// The URL of `path_and_query` (which starts with `/`) over WebSocket.
    fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr())
    }
}
