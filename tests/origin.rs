//! `allowed_origins`: same-origin and non-browser clients only by default; CORS and WebSocket
//! handshakes for listed origins.

use reqwest::{Client, Method, Response};
use serde_json::json;
use switchboard::Config;
use switchboard_e2e::http::assert_serving;
use switchboard_e2e::{Endpoint, Gateway, SseClient, WsClient, expect_error};

const APP: &str = "http://app.example";
const EVIL: &str = "http://evil.example";

async fn with_origin(method: Method, url: &str, origin: &str) -> Response {
    let mut request = Client::new()
        .request(method.clone(), url)
        .header("origin", origin);
    if method == Method::POST {
        request = request.body("hi");
    }
    request.send().await.expect("request")
}

/// Asserts that `response` carries `Access-Control-Allow-Origin: APP`; `what` names the request.
fn assert_allows_app(response: &Response, what: &str) {
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(APP.as_bytes()),
        "{what}: {:?}",
        response.headers()
    );
}

/// Asserts that `origin` is refused with 403 `origin_not_allowed` on every endpoint.
async fn refused_everywhere(gw: &Gateway, origin: &str) {
    let (status, body) = WsClient::expect_refused(&gw.ws_url("/ws?topic=o"), Some(origin)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("origin_not_allowed")),
        "/ws with Origin {origin}: {body}"
    );
    let requests = [
        (Method::GET, "/events?topic=o"),
        (Method::GET, "/poll?topic=o&timeout=0"),
        (Method::POST, "/events?topic=o"),
        (Method::POST, "/poll?topic=o"),
    ];
    for (method, path) in requests {
        let response = with_origin(method, &gw.http_url(path), origin).await;
        expect_error(response, 403, "origin_not_allowed").await;
    }
}

/// Asserts that `origin` is served on every endpoint.
async fn served_everywhere(gw: &Gateway, origin: &str) {
    let mut ws = WsClient::connect_with_origin(&gw.ws_url("/ws?topic=o"), Some(origin)).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let request = Client::new()
        .get(gw.http_url("/events?topic=o"))
        .header("origin", origin);
    SseClient::open(request)
        .await
        .expect_event("subscribed")
        .await;
    for (method, path) in [
        (Method::GET, "/poll?topic=o&timeout=0"),
        (Method::POST, "/events?topic=o"),
    ] {
        let response = with_origin(method.clone(), &gw.http_url(path), origin).await;
        assert_eq!(
            response.status(),
            200,
            "{method} {path} with Origin {origin}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn default_allows_same_origin_only() {
    let gw = Gateway::start_default().await;
    served_everywhere(&gw, &gw.base()).await;
    for foreign in [EVIL, "null", "http://127.0.0.1:1", "https://app.example"] {
        refused_everywhere(&gw, foreign).await;
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_origin_gets_cors_and_websocket() {
    let config = Config {
        allowed_origins: vec![APP.to_owned()],
        ..Config::default()
    };
    let gw = Gateway::start(config).await;

    for (path, method, headers) in [
        ("/events?topic=o", "GET", "last-event-id"),
        ("/poll?topic=o", "POST", "content-type"),
        ("/poll?topic=o", "GET", ""),
    ] {
        let mut preflight = Client::new()
            .request(Method::OPTIONS, gw.http_url(path))
            .header("origin", APP)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            preflight = preflight.header("access-control-request-headers", headers);
        }
        let response = preflight.send().await.expect("OPTIONS");
        assert!(
            response.status().is_success(),
            "preflight {method} {path}: {}",
            response.status()
        );
        assert_allows_app(&response, &format!("preflight {method} {path}"));
    }

    // The actual requests carry the header too.
    for (method, path) in [
        (Method::GET, "/poll?topic=o&timeout=0"),
        (Method::POST, "/events?topic=o"),
    ] {
        let response = with_origin(method.clone(), &gw.http_url(path), APP).await;
        assert_eq!(response.status(), 200, "{method} {path}");
        assert_allows_app(&response, &format!("{method} {path}"));
    }
    served_everywhere(&gw, APP).await;
    served_everywhere(&gw, &gw.base()).await;
    refused_everywhere(&gw, EVIL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn star_allows_every_origin() {
    let config = Config {
        allowed_origins: vec!["*".to_owned()],
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    served_everywhere(&gw, EVIL).await;
    served_everywhere(&gw, APP).await;
}
