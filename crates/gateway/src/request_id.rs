//! Request ids: every request and stream gets one, in its log lines (the `request_id` field of
//! its span), in the `X-Request-Id` response header and in JSON error bodies. A trusted
//! proxy's `X-Request-Id` is kept, so that one id follows a request through both; anyone
//! else's is replaced, so that a client cannot plant ids in the logs.
//!
//! This layer also logs server faults: a 5xx answer other than 503, which is how the gateway
//! says it is unavailable (not ready, at its limits, shutting down, broker out of reach), a
//! state logged where it arises.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;

/// `X-Request-Id`.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest `X-Request-Id` taken from a proxy.
const MAX_LENGTH: usize = 128;

/// A request's id, in its extensions (for its span) and, while its handler runs, in
/// [`CURRENT`] (for error bodies).
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

tokio::task_local! {
    /// The id of the request being handled, for error bodies made deep in handlers.
    pub static CURRENT: RequestId;
}

/// Where this process's ids start: random, so that ids from different processes (or a
/// restart) do not repeat each other's.
static FIRST: LazyLock<u64> = LazyLock::new(|| RandomState::new().build_hasher().finish());

/// Ids handed out so far.
static ISSUED: AtomicU64 = AtomicU64::new(0);

/// A fresh id: 16 hex digits, unique in this process.
fn fresh() -> HeaderValue {
    let n = FIRST.wrapping_add(ISSUED.fetch_add(1, Ordering::Relaxed));
    HeaderValue::from_str(&format!("{n:016x}"))
        .unwrap_or_else(|e| unreachable!("hex digits are a header value: {e}"))
}

/// The id a trusted proxy sent: printable ASCII without spaces, at most [`MAX_LENGTH`] bytes.
fn from_proxy(request: &Request, config: &Config) -> Option<HeaderValue> {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
    if !config.trusts(peer.ip()) {
        return None;
    }
    let value = request.headers().get(&HEADER)?;
    let valid = (1..=MAX_LENGTH).contains(&value.len())
        && value.as_bytes().iter().all(u8::is_ascii_graphic);
    valid.then(|| value.clone())
}

/// Gives the request its id and puts it on the response; logs server faults.
pub async fn assign(
    State(config): State<Arc<Config>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = RequestId(from_proxy(&request, &config).unwrap_or_else(fresh));
    request.extensions_mut().insert(id.clone());
    let method = request.method().clone();
    // A clone of the URI shares its bytes: no copy unless a fault is logged.
    let uri = request.uri().clone();
    let mut response = CURRENT.scope(id.clone(), next.run(request)).await;
    let status = response.status();
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        let path = uri.path();
        tracing::error!(request_id = id.as_str(), %method, %path, %status, "request failed");
    }
    response.headers_mut().insert(HEADER.clone(), id.0);
    response
}
