//! One allowlist of origins for every browser-facing endpoint: the `Origin` check (which also
//! stops cross-site WebSocket hijacking) and CORS.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// Whether a request with these headers may proceed: no `Origin` (not a browser, or a
/// same-origin GET), the gateway's own origin, or a listed one.
pub fn is_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    is_listed(origin, allowed) || is_same_origin(origin, headers)
}

fn is_listed(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The page was served by this gateway: the origin's host and port are the request's `Host`.
fn is_same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|host| !authority.is_empty() && host.eq_ignore_ascii_case(authority))
}

/// Middleware: rejects requests from origins that are not allowed.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_allowed(request.headers(), &state.config.allowed_origins) {
        return next.run(request).await;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    let message = format!(
        "origin {:?} is not allowed; add it to allowed_origins",
        origin.unwrap_or("(not text)")
    );
    axum::response::IntoResponse::into_response(AppError::new(ErrorCode::OriginNotAllowed, message))
}

/// CORS for `/events` and `/poll`, from the same allowlist.
pub fn cors(allowed: &[String]) -> CorsLayer {
    let allowed = allowed.to_vec();
    let allow_origin = AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        origin
            .to_str()
            .is_ok_and(|origin| is_listed(origin, &allowed))
    });
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("last-event-id"),
        ])
        // A page on another origin reads when to try again after `429 rate_limited`.
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().expect("host"));
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().expect("origin"));
        }
        headers
    }

    #[test]
    fn default_allows_same_origin_and_non_browsers_only() {
        let none: &[String] = &[];
        assert!(is_allowed(&headers(None, "gw:8080"), none));
        assert!(is_allowed(
            &headers(Some("http://gw:8080"), "gw:8080"),
            none
        ));
        assert!(is_allowed(
            &headers(Some("https://GW:8080"), "gw:8080"),
            none
        ));
        assert!(!is_allowed(
            &headers(Some("http://evil.example"), "gw:8080"),
            none
        ));
        assert!(!is_allowed(
            &headers(Some("http://gw:9999"), "gw:8080"),
            none
        ));
        assert!(!is_allowed(&headers(Some("null"), "gw:8080"), none));
    }

    #[test]
    fn listed_origins_and_wildcard() {
        let list = vec!["https://app.example/".to_string()];
        assert!(is_allowed(
            &headers(Some("https://app.example"), "gw"),
            &list
        ));
        assert!(!is_allowed(
            &headers(Some("http://app.example"), "gw"),
            &list
        ));
        assert!(is_allowed(
            &headers(Some("http://any.example"), "gw"),
            &["*".to_string()]
        ));
    }
}
