//! The response heads several handlers share: an uncached JSON reply (polls, the admin API) and
//! an event stream (SSE subscriptions, the dashboard's feed).

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;

/// A JSON reply that no cache keeps: it is only true when it is sent.
pub fn uncached_json(json: impl Into<Body>) -> Response {
    let mut response = Response::new(json.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A Server-Sent Events stream of `body`: not cached, and not buffered by nginx
/// (`X-Accel-Buffering: no`), so each event reaches the client when it is written.
pub fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
