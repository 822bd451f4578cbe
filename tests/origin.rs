//! `allowed_origins`: same-origin and non-browser clients only by default; CORS and WebSocket
//! handshakes for listed origins. `allowed_hosts`: pages on names the gateway does not serve
//! are refused, however well their `Origin` matches their `Host` (DNS rebinding).

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::json;
use switchboard::Config;
use switchboard_e2e::http::assert_serving;
use switchboard_e2e::{Endpoint, Gateway, SseClient, WsClient, expect_error, within};

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
        // Tokens: polls and publishes from pages carry `Authorization: Bearer`.
        ("/poll?topic=o", "GET", "authorization"),
        ("/events?topic=o", "POST", "authorization,content-type"),
        ("/publish", "POST", "authorization,content-type"),
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
        let allowed = response
            .headers()
            .get("access-control-allow-headers")
            .map(|v| v.to_str().expect("ASCII").to_ascii_lowercase())
            .unwrap_or_default();
        for header in headers.split(',').filter(|h| !h.is_empty()) {
            assert!(
                allowed.split(',').any(|a| a.trim() == header),
                "preflight {method} {path}: {header} not in {allowed:?}"
            );
        }
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

/// A page on a listed origin can read `Retry-After` of a `429 rate_limited`: without
/// `Access-Control-Expose-Headers` a browser hides it from cross-origin scripts.
#[tokio::test(flavor = "multi_thread")]
async fn a_listed_origin_can_read_when_to_retry_after_a_rate_limit() {
    let mut config = Config {
        allowed_origins: vec![APP.to_owned()],
        ..Config::default()
    };
    config.connect_rate = Some("1/h".parse().expect("a rate"));
    config.connect_burst = Some(1);
    let gw = Gateway::start(config).await;
    let url = gw.http_url("/poll?topic=o&timeout=0");
    assert_eq!(with_origin(Method::GET, &url, APP).await.status(), 200);
    let refused = with_origin(Method::GET, &url, APP).await;
    assert_eq!(refused.status(), 429);
    assert_allows_app(&refused, "the refused poll");
    let exposed = refused
        .headers()
        .get("access-control-expose-headers")
        .map(|v| v.to_str().expect("ASCII").to_ascii_lowercase())
        .unwrap_or_default();
    assert!(
        exposed.split(',').any(|h| h.trim() == "retry-after"),
        "exposed: {exposed:?}"
    );
    assert!(refused.headers().contains_key("retry-after"));
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

// --- allowed_hosts ---------------------------------------------------------------------------

/// The name of a page whose author made it resolve to the gateway's address.
const REBIND: &str = "rebind.evil.example";

/// What a page on `http://host` sends: `Host: host` and its own origin, which agree.
fn page_headers(host: &str) -> [(&'static str, String); 2] {
    [
        ("host", host.to_owned()),
        ("origin", format!("http://{host}")),
    ]
}

/// `method url` as the page on `http://host` sends it.
fn as_page_on(method: Method, url: &str, host: &str) -> RequestBuilder {
    let mut request = Client::new().request(method.clone(), url);
    for (name, value) in page_headers(host) {
        request = request.header(name, value);
    }
    match method {
        Method::POST => request.body("hi"),
        Method::OPTIONS => request.header("access-control-request-method", "GET"),
        _ => request,
    }
}

/// Every route but `/healthz`, as `(method, path)`; `/ws` is tried apart.
const HTTP_ROUTES: [(Method, &str); 8] = [
    (Method::GET, "/events?topic=o"),
    (Method::GET, "/poll?topic=o&timeout=0"),
    (Method::POST, "/events?topic=o"),
    (Method::POST, "/poll?topic=o"),
    (Method::OPTIONS, "/events?topic=o"),
    (Method::GET, "/"),
    (Method::GET, "/switchboard.js"),
    (Method::GET, "/no-such-path"),
];

/// Asserts that a page on `http://host` is refused with 403 `host_not_allowed` on every route
/// but `/healthz`, which answers whatever the host.
async fn host_refused_everywhere(gw: &Gateway, host: &str) {
    let headers = page_headers(host);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, body) = WsClient::expect_refused_with(&gw.ws_url("/ws?topic=o"), &headers).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("host_not_allowed")),
        "/ws with Host {host}: {body}"
    );
    for (method, path) in HTTP_ROUTES {
        let response = within(
            "a reply",
            as_page_on(method, &gw.http_url(path), host).send(),
        )
        .await
        .expect("request");
        expect_error(response, 403, "host_not_allowed").await;
    }
    let health = within(
        "/healthz",
        as_page_on(Method::GET, &gw.http_url("/healthz"), host).send(),
    )
    .await
    .expect("GET /healthz");
    assert_eq!(health.status(), 200, "/healthz with Host {host}");
}

/// Asserts that a page on `http://host` is served on every route.
async fn host_served_everywhere(gw: &Gateway, host: &str) {
    let headers = page_headers(host);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut ws = WsClient::connect_with(&gw.ws_url("/ws?topic=o"), &headers).await;
    assert_eq!(
        ws.next().await["type"],
        "subscribed",
        "/ws with Host {host}"
    );
    SseClient::open(as_page_on(
        Method::GET,
        &gw.http_url("/events?topic=o"),
        host,
    ))
    .await
    .expect_event("subscribed")
    .await;
    for (method, path) in HTTP_ROUTES {
        if path == "/events?topic=o" && method == Method::GET {
            continue;
        }
        let response = within(
            "a reply",
            as_page_on(method.clone(), &gw.http_url(path), host).send(),
        )
        .await
        .expect("request");
        let expected = if path == "/no-such-path" { 404 } else { 200 };
        assert_eq!(
            response.status(),
            expected,
            "{method} {path} with Host {host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn default_on_loopback_refuses_rebound_names_and_serves_loopback_ones() {
    let gw = Gateway::start_default().await;
    let port = gw.addr().port();
    host_refused_everywhere(&gw, &format!("{REBIND}:{port}")).await;
    host_refused_everywhere(&gw, REBIND).await;
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("app.localhost:{port}"),
    ] {
        host_served_everywhere(&gw, &host).await;
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_hosts_replace_the_loopback_default() {
    let config = Config {
        allowed_hosts: vec!["chat.example".parse().expect("a host")],
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let port = gw.addr().port();
    host_served_everywhere(&gw, &format!("chat.example:{port}")).await;
    host_served_everywhere(&gw, "chat.example").await;
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("{REBIND}:{port}"),
    ] {
        host_refused_everywhere(&gw, &host).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn star_allows_every_host() {
    let config = Config {
        allowed_hosts: vec!["*".parse().expect("a pattern")],
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    host_served_everywhere(&gw, &format!("{REBIND}:{}", gw.addr().port())).await;
}
