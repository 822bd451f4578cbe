//! The demo page and the browser client: built into the binary, or served from a directory.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower_http::services::ServeDir;

use crate::error::{AppError, ErrorCode};

/// `static/`, embedded at build time so the binary runs from any directory.
#[derive(rust_embed::RustEmbed)]
#[folder = "../../static"]
struct Embedded;

/// Serves the files, falling back to a JSON 404 for unknown paths.
pub fn router(dir: Option<&Path>) -> Router {
    match dir {
        Some(dir) => Router::new().fallback_service(
            ServeDir::new(dir).fallback(tower::service_fn(|_| async { Ok(not_found()) })),
        ),
        None => Router::new().fallback(embedded),
    }
}

pub fn not_found() -> Response {
    AppError::new(
        ErrorCode::NotFound,
        "no such path; see docs/PROTOCOL.md for the endpoints",
    )
    .into_response()
}

async fn embedded(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    let Some(file) = Embedded::get(&path) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..8]));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut response = Response::new(Body::from(file.data));
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
