//! Support for Switchboard's end-to-end tests: an in-process gateway and small, real clients
//! for each transport; for several nodes, real Redis servers and clusters ([`redis`]),
//! gateways sharing them ([`nodes`]), subscribers that read in the background ([`follow`]) and
//! the counting of what many of them received ([`tally`]). Every wait is bounded (by
//! [`TIMEOUT`] unless it says otherwise), so a failing test fails, never hangs.
//!
//! Clients take URLs, not a [`Gateway`], so that a test can point them at anything that speaks
//! the protocol (a proxy in front of the gateway, for instance).

pub mod auth;
pub mod endpoint;
pub mod follow;
pub mod gateway;
pub mod http;
pub mod nginx;
pub mod nodes;
pub mod process;
pub mod raw_ws;
pub mod redis;
pub mod scenarios;
pub mod sse;
pub mod stuck;
pub mod tally;
pub mod transport;
pub mod ws;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use endpoint::Endpoint;
pub use follow::{Follower, Got};
pub use gateway::Gateway;
pub use http::{PollReply, assert_serving, expect_error, json_body, poll, publish, publish_text};
pub use nginx::Nginx;
pub use nodes::{Deployment, NodeProcess, Nodes};
pub use redis::{RedisCluster, RedisOptions, RedisServer};
pub use sse::{SseClient, SseConnection, SseEvent, SseItem};
pub use tally::{Ledger, Rng, Tally};
pub use transport::{Refused, Subscriber, Transport};
pub use ws::WsClient;

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits `fut`, panicking with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(TIMEOUT, what, fut).await
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Milliseconds since the Unix epoch, as in the envelope's `time`.
pub fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("time fits in u64")
}

/// Asserts that `envelope` is the envelope of message `id` on `topic` carrying `data`,
/// accepted by the hub in the last minute. Unknown extra fields are allowed (the spec says
/// clients must ignore them); a WebSocket frame's `type` is one of those.
pub fn assert_envelope(envelope: &Value, topic: &str, id: &str, data: &Value) {
    assert_eq!(envelope["topic"], topic, "envelope topic in {envelope}");
    assert_eq!(envelope["id"], id, "envelope id in {envelope}");
    assert_eq!(&envelope["data"], data, "envelope data in {envelope}");
    let time = envelope["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("envelope time is not an integer in {envelope}"));
    let now = now_ms();
    assert!(
        time <= now + 1_000 && time + 60_000 >= now,
        "envelope time {time} is not close to now ({now}) in {envelope}"
    );
}

/// The `data` of a list of envelopes, in order.
pub fn data_of(envelopes: &[Value]) -> Vec<Value> {
    envelopes.iter().map(|e| e["data"].clone()).collect()
}

/// Asserts that `reset` is the reset object for `topic` with `reason` (a WebSocket frame's
/// `type` and any other extra field are allowed).
pub fn assert_reset(reset: &Value, topic: &str, reason: &str) {
    assert_eq!(
        (&reset["topic"], &reset["reason"]),
        (&Value::from(topic), &Value::from(reason)),
        "reset object: {reset}"
    );
}
