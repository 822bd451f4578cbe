//! Clients that misbehave on purpose (they send a request and never read the answer, or drip
//! their bytes), and what tests need to watch the gateway's resources while they do.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::{Endpoint, publish, within};

/// The receive buffer a stuck client asks for: the kernel rounds it up a little, and it fills
/// after a few kilobytes.
const SMALL_RECEIVE_BUFFER: u32 = 4096;

/// A connection that sent one request and reads nothing back, ever.
#[derive(Debug)]
pub struct StuckClient {
    stream: TcpStream,
}

impl StuckClient {
    /// Connects with a small receive buffer and sends `head` (a whole request head, or part
    /// of one).
    pub async fn send(addr: SocketAddr, head: &str) -> StuckClient {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(SMALL_RECEIVE_BUFFER)
            .expect("SO_RCVBUF");
        let mut stream = within("connect", socket.connect(addr))
            .await
            .expect("connect");
        stream.write_all(head.as_bytes()).await.expect("send head");
        StuckClient { stream }
    }

    /// A WebSocket handshake for `path`, then nothing read.
    pub async fn websocket(addr: SocketAddr, path: &str) -> StuckClient {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        StuckClient::send(addr, &head).await
    }

    /// A `GET` of `path` as the first request of the connection, then nothing read.
    pub async fn get(addr: SocketAddr, path: &str) -> StuckClient {
        StuckClient::send(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        )
        .await
    }

    /// Sends more bytes on the connection.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The socket, for tests that finally read from it.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// The padding of [`publish_large`]'s messages: a few hundred fill any socket buffer or a
/// retention budget of tens of MiB.
pub const LARGE_MESSAGE_PAD: usize = 60_000;

/// Publishes `count` messages `{"n":N,"pad":"xxx…"}` of about 60 kB to `topic` at `at`.
pub async fn publish_large(at: &impl Endpoint, topic: &str, count: usize) {
    let pad = "x".repeat(LARGE_MESSAGE_PAD);
    for n in 0..count {
        publish(
            &at.http_url(&format!("/events?topic={topic}")),
            &serde_json::json!({"n": n, "pad": pad}),
        )
        .await;
    }
}

/// `GET /healthz` from `base` (`http://host:port`).
pub async fn health(base: &str) -> Value {
    let url = format!("{base}/healthz");
    let response = within("healthz", reqwest::Client::new().get(&url).send())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    within("healthz body", response.json())
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
}

/// Polls `/healthz` until `condition` holds on it, for at most `limit`; returns that reply.
pub async fn wait_for_health(
    base: &str,
    limit: Duration,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let waited = tokio::time::timeout(limit, async {
        loop {
            last = health(base).await;
            if condition(&last) {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        panic!("timed out after {limit:?} waiting for {what}; last /healthz: {last}")
    })
}

/// Waits (at most [`TIMEOUT`](crate::TIMEOUT)) until `/healthz` counts `count` open streams:
/// WebSockets, SSE streams and held polls. A held poll gives no other sign that it is held.
pub async fn wait_for_connections(base: &str, count: u64, what: &str) -> Value {
    wait_for_health(base, crate::TIMEOUT, what, |h| h["connections"] == count).await
}

/// This process's resident memory, in bytes (the gateway under test runs in it).
pub fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}
