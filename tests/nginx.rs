//! Behind nginx: the shipped site file `deploy/nginx.conf`, served by a real nginx (Debian's
//! `/usr/sbin/nginx`; these tests fail, never skip, without it) in front of an in-process
//! gateway. Every client below talks to nginx, never to the gateway directly (unless it says so).
//!
//! See `tests/support/nginx.rs` for what the test changes in the site file (ports, and the read
//! timeout where a test says so) and what the main configuration around it adds.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::Config;
use switchboard_e2e::Transport::{Poll, Sse, Ws};
use switchboard_e2e::nginx::{self, Nginx, directive_values};
use switchboard_e2e::scenarios::{carry_cursor, publish_to, resume_on};
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, SseItem, WsClient, any_to_any_tests, assert_envelope,
    expect_error, json_body, poll, publish, publish_text, scenario_tests, within, within_for,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A gateway and nginx in front of it. nginx is declared first, so it is killed first.
struct Stack {
    nginx: Nginx,
    gw: Gateway,
}

impl Stack {
    async fn start(config: Config) -> Stack {
        let gw = Gateway::start(config).await;
        let nginx = Nginx::start(gw.addr()).await;
        Stack { nginx, gw }
    }

    async fn start_default() -> Stack {
        Stack::start(Config::default()).await
    }
}

/// Every client of a stack talks to nginx.
impl Endpoint for Stack {
    fn addr(&self) -> SocketAddr {
        self.nginx.addr()
    }
}

// --- The site file itself --------------------------------------------------------------------

/// A duration in nginx syntax (`75s`, `500ms`, `2m`, `30`), or `None`.
fn nginx_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "" | "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number * 60)),
        "h" => Some(Duration::from_secs(number * 3600)),
        _ => None,
    }
}

/// A size in nginx syntax (`128k`, `1m`, `65536`), in bytes, or `None`.
fn nginx_size(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let (number, factor) = match lower.as_bytes().last()? {
        b'k' => (&lower[..lower.len() - 1], 1024),
        b'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        b'g' => (&lower[..lower.len() - 1], 1024 * 1024 * 1024),
        _ => (&lower[..], 1),
    };
    number.parse::<usize>().ok().map(|n| n * factor)
}

/// The shipped timeouts and body size fit the gateway's defaults: nginx must not time out a
/// stream between two heartbeats, nor a held poll, and must let every legal message through.
/// Both site files: one gateway (`nginx.conf`) and several (`nginx-cluster.conf`).
#[test]
fn site_files_fit_the_gateway_defaults() {
    for (name, site) in [
        (nginx::SITE_FILE, nginx::site_file()),
        (nginx::CLUSTER_SITE_FILE, nginx::cluster_site_file()),
    ] {
        site_file_fits_the_gateway_defaults(name, &site);
    }
}

fn site_file_fits_the_gateway_defaults(name: &str, site: &str) {
    let defaults = Config::default();

    let timeouts = directive_values(site, "proxy_read_timeout");
    assert_eq!(
        timeouts.len(),
        1,
        "{name}: one proxy_read_timeout: {timeouts:?}"
    );
    let read_timeout = nginx_duration(&timeouts[0]).unwrap_or_else(|| {
        panic!(
            "{name}: proxy_read_timeout {:?} is not a duration",
            timeouts[0]
        )
    });
    assert!(
        read_timeout > defaults.heartbeat_interval * 2,
        "{name}: proxy_read_timeout {read_timeout:?} must leave room for a late heartbeat \
         (heartbeat_interval {:?})",
        defaults.heartbeat_interval
    );
    assert!(
        read_timeout >= defaults.poll_max_timeout + Duration::from_secs(10),
        "{name}: proxy_read_timeout {read_timeout:?} must exceed poll_max_timeout {:?} with a \
         margin",
        defaults.poll_max_timeout
    );

    let sizes = directive_values(site, "client_max_body_size");
    assert_eq!(
        sizes.len(),
        1,
        "{name}: one client_max_body_size: {sizes:?}"
    );
    let body = nginx_size(&sizes[0])
        .unwrap_or_else(|| panic!("{name}: client_max_body_size {:?} is not a size", sizes[0]));
    assert!(
        body > defaults.max_message_bytes && body <= 4 * defaults.max_message_bytes,
        "{name}: client_max_body_size {body} should sit a little above max_message_bytes {}",
        defaults.max_message_bytes
    );

    for (directive, value) in [
        ("proxy_http_version", "1.1"),
        ("proxy_set_header", "Host $http_host"),
        ("proxy_set_header", "Upgrade $http_upgrade"),
        ("proxy_set_header", "Connection $connection_upgrade"),
        (
            "proxy_set_header",
            "X-Forwarded-For $proxy_add_x_forwarded_for",
        ),
        ("proxy_set_header", "X-Real-IP $remote_addr"),
        ("proxy_set_header", "X-Forwarded-Proto $scheme"),
        ("proxy_buffering", "off"),
        ("gzip", "off"),
    ] {
        let values = directive_values(site, directive);
        assert!(
            values
                .iter()
                .any(|v| v.split_whitespace().eq(value.split_whitespace())),
            "{name}: {directive} {value}; missing from the site file (has {values:?})"
        );
    }
}

// --- Every transport to every transport, through nginx ---------------------------------------

// The nine pairs (`ws_to_ws`, `ws_to_sse`, … `post_poll_to_poll`): see `scenarios::any_to_any`.
any_to_any_tests!(Stack::start_default().await);

// --- Resuming through nginx ------------------------------------------------------------------

scenario_tests! { Stack::start_default().await;
    ws_resumes_with_since: resume_on(Ws);
    sse_resumes_with_since: resume_on(Sse);
    poll_resumes_with_cursor: resume_on(Poll);

    /// A cursor moves from WebSocket to SSE to poll to WebSocket, all through nginx: each next
    /// transport gets exactly what was published while no one was connected.
    cursor_carries_across_transports: carry_cursor(&[(Ws, Sse), (Sse, Poll), (Poll, Ws), (Ws, Ws)]);
}

/// What a browser's EventSource does after a dropped stream: reconnect with `Last-Event-ID`,
/// which nginx must pass on.
#[tokio::test(flavor = "multi_thread")]
async fn sse_resumes_with_last_event_id_header() {
    let stack = Stack::start_default().await;
    let url = stack.nginx.http_url("/events?topic=l&topic=m");
    let mut sse = SseClient::connect(&url).await;
    sse.expect_event("subscribed").await;
    let seen = [
        publish_to(&stack, "l", json!("l1")).await,
        publish_to(&stack, "m", json!("m1")).await,
    ];
    for (id, data) in &seen {
        let topic = &data.as_str().expect("string")[..1];
        assert_envelope(&sse.message().await, topic, id, data);
    }
    let last_event_id = sse.last_event_id().to_owned();
    drop(sse);

    let missed = [
        publish_to(&stack, "m", json!("m2")).await,
        publish_to(&stack, "l", json!("l2")).await,
    ];
    let request = reqwest::Client::new()
        .get(&url)
        .header("last-event-id", &last_event_id);
    let mut sse = SseClient::open(request).await;
    sse.expect_event("subscribed").await;
    // Order is per topic: sort both by topic.
    let mut got = [sse.message().await, sse.message().await];
    got.sort_by(|x, y| x["topic"].as_str().cmp(&y["topic"].as_str()));
    let [(m2, m2_data), (l2, l2_data)] = &missed;
    assert_envelope(&got[0], "l", l2, l2_data);
    assert_envelope(&got[1], "m", m2, m2_data);
    let live = publish_to(&stack, "l", json!("live")).await;
    assert_envelope(&sse.message().await, "l", &live.0, &live.1);
}

// --- No buffering, no compression ------------------------------------------------------------

/// Each SSE event reaches the client as soon as it is published, while the stream stays open.
/// The gateway's heartbeat is long, so nothing else flows that could push a buffer out; the
/// main configuration makes nginx ignore `X-Accel-Buffering` and gzip event streams, so only
/// the site file's own settings keep the stream prompt and plain. (nginx 1.22 happens to pass
/// small chunks of an HTTP/1.1 upstream on at once even with `proxy_buffering on`; it holds
/// them with an HTTP/1.0 upstream. `site_file_fits_the_gateway_defaults` pins the setting.)
#[tokio::test(flavor = "multi_thread")]
async fn sse_events_arrive_promptly_and_uncompressed() {
    const PROMPTLY: Duration = Duration::from_millis(1000);
    let config = Config {
        heartbeat_interval: Duration::from_secs(120),
        ..Config::default()
    };
    let stack = Stack::start(config).await;
    let request = reqwest::Client::new()
        .get(stack.nginx.http_url("/events?topic=prompt"))
        .header("accept-encoding", "gzip");
    let mut sse = within_for(PROMPTLY, "SSE response headers", SseClient::open(request)).await;
    let header = |name: &str| {
        sse.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "Content-Type through nginx: {content_type:?}"
    );
    assert_eq!(
        header("content-encoding"),
        None,
        "the event stream was compressed"
    );
    assert_eq!(header("content-length"), None, "a stream has no length");

    within_for(
        PROMPTLY,
        "the subscribed event",
        sse.expect_event("subscribed"),
    )
    .await;
    for n in 0..3 {
        let (id, data) = publish_to(&stack, "prompt", json!(n)).await;
        let published = Instant::now();
        let envelope = within_for(PROMPTLY, "the event just published", sse.message()).await;
        assert_envelope(&envelope, "prompt", &id, &data);
        let waited = published.elapsed();
        assert!(waited < PROMPTLY, "event {n} took {waited:?} through nginx");
    }
    // The response is still open: nothing was held until the end.
    let late = publish_to(&stack, "prompt", json!("still open")).await;
    assert_envelope(&sse.message().await, "prompt", &late.0, &late.1);
}

// --- Idle connections outlive the proxy's read timeout ---------------------------------------

/// With the site's `proxy_read_timeout` cut to 3 s and the gateway's heartbeat at 1 s, a
/// WebSocket and an SSE stream on which no message flows for more than twice the read timeout
/// are still open and still deliver; a poll held for most of the read timeout is answered by
/// the gateway, not cut by nginx.
#[tokio::test(flavor = "multi_thread")]
async fn idle_streams_outlive_the_proxy_read_timeout() {
    const READ_TIMEOUT: Duration = Duration::from_secs(3);
    const IDLE: Duration = Duration::from_secs(7);
    let config = Config {
        heartbeat_interval: Duration::from_secs(1),
        poll_timeout: Duration::from_secs(2),
        poll_max_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let nginx = Nginx::start_with_read_timeout(gw.addr(), READ_TIMEOUT).await;

    let mut ws = WsClient::connect(&nginx.ws_url("/ws?topic=idle")).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut sse = SseClient::connect(&nginx.http_url("/events?topic=idle")).await;
    sse.expect_event("subscribed").await;

    // Meanwhile, a poll held by the gateway for its full 2 s (the longest it allows) comes
    // back as a normal, empty reply.
    let url = nginx.http_url("/poll?topic=held&timeout=30");
    let held_poll = tokio::spawn(async move {
        let started = Instant::now();
        (poll(&url).await, started.elapsed())
    });

    // Idle: the WebSocket client only answers the server's pings, as browsers do by
    // themselves; the SSE client reads nothing at all.
    let idle_since = Instant::now();
    let mut pings = 0;
    while idle_since.elapsed() < IDLE {
        ws.expect_ping().await;
        pings += 1;
    }
    assert!(pings >= 5, "{pings} pings in {IDLE:?} with a 1 s heartbeat");

    let (reply, held) = held_poll.await.expect("the held poll");
    assert!(reply.messages.is_empty(), "{reply:?}");
    assert!(
        held >= Duration::from_millis(1900),
        "the poll was held {held:?}, not 2 s"
    );

    let (id, data) = {
        let data = json!("after the idle period");
        let id = publish(&nginx.http_url("/events?topic=idle"), &data).await;
        (id, data)
    };
    assert_envelope(&ws.message().await, "idle", &id, &data);
    ws.assert_alive().await;

    let mut heartbeats = 0;
    let envelope = within("the SSE message after the idle period", async {
        loop {
            match sse.next_item().await {
                Some(SseItem::Comment(_)) => heartbeats += 1,
                Some(SseItem::Event(event)) if event.event == "message" => return event.json(),
                Some(other) => panic!("unexpected SSE item after the idle period: {other:?}"),
                None => panic!("the SSE stream ended during the idle period"),
            }
        }
    })
    .await;
    assert_envelope(&envelope, "idle", &id, &data);
    assert!(heartbeats >= 5, "{heartbeats} SSE heartbeats in {IDLE:?}");

    let log = nginx.error_log();
    assert!(
        !log.contains("timed out"),
        "nginx timed something out:\n{log}"
    );
}

// --- Same origin, and limits ------------------------------------------------------------------

/// A page served through nginx connects back through nginx: its `Origin` is nginx's host:port,
/// which only matches the gateway's `Host` if nginx passes the port on (`$http_host`). Other
/// origins are still refused, with the gateway's JSON error.
#[tokio::test(flavor = "multi_thread")]
async fn same_origin_pages_pass_and_others_are_refused() {
    let stack = Stack::start_default().await;
    let own = stack.base();
    let mut ws =
        WsClient::connect_with_origin(&stack.nginx.ws_url("/ws?topic=o"), Some(&own)).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let request = reqwest::Client::new()
        .get(stack.nginx.http_url("/events?topic=o"))
        .header("origin", &own);
    let mut sse = SseClient::open(request).await;
    sse.expect_event("subscribed").await;
    let response = reqwest::Client::new()
        .post(stack.nginx.http_url("/poll?topic=o"))
        .header("origin", &own)
        .json(&json!("same origin"))
        .send()
        .await
        .expect("POST /poll through nginx");
    assert_eq!(response.status(), 200, "same-origin publish through nginx");
    let id = json_body(response).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_envelope(&ws.message().await, "o", &id, &json!("same origin"));
    assert_envelope(&sse.message().await, "o", &id, &json!("same origin"));

    let foreign = "http://evil.example";
    let (status, body) =
        WsClient::expect_refused(&stack.nginx.ws_url("/ws?topic=o"), Some(foreign)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("origin_not_allowed")),
        "{body}"
    );
    let response = reqwest::Client::new()
        .get(stack.nginx.http_url("/events?topic=o"))
        .header("origin", foreign)
        .send()
        .await
        .expect("GET /events through nginx");
    expect_error(response, 403, "origin_not_allowed").await;
}

/// nginx passes the public `Host` on, so a gateway on loopback refuses it until the name is in
/// `allowed_hosts`, as deploy/README.md says to set; then it answers that name and still
/// refuses a rebound one. `/healthz` answers whatever the host.
#[tokio::test(flavor = "multi_thread")]
async fn allowed_hosts_names_the_public_host_behind_nginx() {
    let page = |host: &str| {
        [
            ("host", host.to_owned()),
            ("origin", format!("http://{host}")),
        ]
    };
    // A request from the page on `http://host`.
    let from_page = |request: reqwest::RequestBuilder, host: &str| {
        let request = page(host)
            .into_iter()
            .fold(request, |request, (name, value)| {
                request.header(name, value)
            });
        within("a reply through nginx", request.send())
    };
    let get = |stack: &Stack, path: &str, host: &str| {
        from_page(reqwest::Client::new().get(stack.http_url(path)), host)
    };

    let default = Stack::start_default().await;
    let public = format!("chat.example:{}", default.addr().port());
    let response = get(&default, "/events?topic=h", &public)
        .await
        .expect("GET /events");
    expect_error(response, 403, "host_not_allowed").await;

    let config = Config {
        allowed_hosts: vec!["chat.example".parse().expect("a host")],
        ..Config::default()
    };
    let stack = Stack::start(config).await;
    let public = format!("chat.example:{}", stack.addr().port());
    let headers = page(&public);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut ws = WsClient::connect_with(&stack.ws_url("/ws?topic=h"), &headers).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut sse = SseClient::from_response(
        get(&stack, "/events?topic=h", &public)
            .await
            .expect("GET /events"),
    )
    .await;
    sse.expect_event("subscribed").await;
    let post = reqwest::Client::new()
        .post(stack.http_url("/events?topic=h"))
        .json(&json!("public"));
    let response = from_page(post, &public).await.expect("POST /events");
    assert_eq!(response.status(), 200, "publish from the public name");
    let id = json_body(response).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_envelope(&ws.message().await, "h", &id, &json!("public"));
    assert_envelope(&sse.message().await, "h", &id, &json!("public"));

    let rebound = format!("rebind.evil.example:{}", stack.addr().port());
    let headers = page(&rebound);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, body) =
        WsClient::expect_refused_with(&stack.ws_url("/ws?topic=h"), &headers).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("host_not_allowed")),
        "{body}"
    );
    let response = get(&stack, "/events?topic=h", &rebound)
        .await
        .expect("GET /events");
    expect_error(response, 403, "host_not_allowed").await;
    let response = get(&stack, "/healthz", &rebound)
        .await
        .expect("GET /healthz");
    assert_eq!(response.status(), 200, "/healthz with a rebound Host");
}

/// A message of exactly `max_message_bytes` passes nginx; one byte more gets the gateway's JSON
/// `413` (nginx's own limit sits above the gateway's); a huge body is stopped by nginx.
#[tokio::test(flavor = "multi_thread")]
async fn message_size_limits_through_nginx() {
    let stack = Stack::start_default().await;
    let limit = Config::default().max_message_bytes;
    let url = stack.nginx.http_url("/events?topic=big");
    let mut ws = WsClient::connect(&stack.nginx.ws_url("/ws?topic=big")).await;
    assert_eq!(ws.next().await["type"], "subscribed");

    let text = "a".repeat(limit);
    let id = publish_text(&url, &text).await;
    assert_envelope(&ws.message().await, "big", &id, &json!(text));

    let too_big = |len: usize| {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "text/plain")
            .body("b".repeat(len))
            .send()
    };
    let response = within("an oversized publish", too_big(limit + 1))
        .await
        .expect("POST through nginx");
    expect_error(response, 413, "payload_too_large").await;

    let response = within("a huge publish", too_big(4 * 1024 * 1024))
        .await
        .expect("POST through nginx");
    assert_eq!(response.status(), 413, "nginx stops a 4 MiB body");

    // A WebSocket publish near the limit goes through nginx's upgraded connection untouched.
    let data = json!("c".repeat(limit - 2));
    let id = ws.publish("big", data.clone()).await;
    assert_envelope(&ws.message().await, "big", &id, &data);
}

// --- The client's address ---------------------------------------------------------------------

/// The (path, client) of each `request` span the gateway opened on one thread: the address
/// the gateway logs and uses as the client's.
#[derive(Debug, Clone, Default)]
struct SeenClients(Arc<Mutex<Vec<(String, String)>>>);

thread_local! {
    /// Where [`SpanCapture`] records the spans opened on this thread, if anywhere.
    static CAPTURE: std::cell::RefCell<Option<SeenClients>> = const { std::cell::RefCell::new(None) };
}

impl SeenClients {
    /// Starts recording the `request` spans opened on this thread. Tests using it run on a
    /// current-thread runtime, so the in-process gateway's spans are opened on this thread too.
    ///
    /// The recorder is the process-wide subscriber, not a thread's default (`set_default`):
    /// with one scoped subscriber alive, tracing caches a callsite's interest from whichever
    /// thread reaches it first, so a span first opened on a thread without a subscriber would
    /// never reach the scoped one.
    fn capture() -> SeenClients {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            tracing::subscriber::set_global_default(SpanCapture::default())
                .expect("no other global subscriber in this test binary");
        });
        let seen = SeenClients::default();
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(seen.clone()));
        seen
    }

    /// The clients of the `request` spans for `path` since the last call.
    fn take(&self, path: &str) -> Vec<String> {
        let mut seen = self.0.lock().expect("lock");
        let (matching, _): (Vec<_>, Vec<_>) = seen.drain(..).partition(|(p, _)| p == path);
        matching.into_iter().map(|(_, client)| client).collect()
    }
}

/// Reads the `path` and `client` fields of the gateway's `request` spans.
#[derive(Debug, Default)]
struct SpanCapture {
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct SpanFields {
    path: String,
    client: String,
}

impl tracing::field::Visit for SpanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        match field.name() {
            "path" => self.path = format!("{value:?}"),
            "client" => self.client = format!("{value:?}"),
            _ => {}
        }
    }
}

impl tracing::Subscriber for SpanCapture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_span() && metadata.name() == "request"
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        CAPTURE.with(|capture| {
            if let Some(seen) = &*capture.borrow() {
                let mut fields = SpanFields::default();
                span.record(&mut fields);
                seen.0
                    .lock()
                    .expect("lock")
                    .push((fields.path, fields.client));
            }
        });
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::span::Id::from_u64(id + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The address the test's client connects from: another loopback address than nginx's
/// 127.0.0.1, so that "the client" and "the proxy" can be told apart.
const CLIENT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const SPOOFED: &str = "203.0.113.66";

/// `GET url` from [`CLIENT_IP`], claiming to be [`SPOOFED`] in `X-Forwarded-For` and
/// `X-Real-IP`; asserts a 200.
async fn spoofed_get(url: &str) {
    let client = reqwest::Client::builder()
        .local_address(CLIENT_IP)
        .build()
        .expect("HTTP client");
    let response = within(
        "a spoofed request",
        client
            .get(url)
            .header("x-forwarded-for", SPOOFED)
            .header("x-real-ip", SPOOFED)
            .send(),
    )
    .await
    .unwrap_or_else(|e| panic!("GET {url} from {CLIENT_IP}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
}

/// A WebSocket handshake to `target` from [`CLIENT_IP`], claiming to be [`SPOOFED`].
async fn spoofed_ws(target: SocketAddr, path: &str) {
    let mut request = format!("ws://{target}{path}")
        .into_client_request()
        .expect("request");
    for name in ["x-forwarded-for", "x-real-ip"] {
        request
            .headers_mut()
            .insert(name, SPOOFED.parse().expect("header value"));
    }
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(CLIENT_IP, 0))
        .unwrap_or_else(|e| panic!("bind {CLIENT_IP}: {e}"));
    let stream = within("TCP connect", socket.connect(target))
        .await
        .expect("connect");
    let (ws, response) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    drop(ws);
}

/// Behind a trusted nginx, the gateway sees the real client (the address nginx accepted the
/// connection from), not what the client claims in `X-Forwarded-For` or `X-Real-IP`.
#[tokio::test]
async fn client_address_is_the_real_client_behind_trusted_nginx() {
    let seen = SeenClients::capture();
    let config = Config {
        trusted_proxies: vec!["127.0.0.1".parse().expect("proxy")],
        ..Config::default()
    };
    let stack = Stack::start(config).await;

    spoofed_get(&stack.nginx.http_url("/poll?topic=who&timeout=0")).await;
    assert_eq!(
        seen.take("/poll"),
        [CLIENT_IP.to_string()],
        "poll through nginx"
    );

    spoofed_ws(stack.nginx.addr(), "/ws?topic=who").await;
    assert_eq!(
        seen.take("/ws"),
        [CLIENT_IP.to_string()],
        "WebSocket through nginx"
    );

    // Straight to the gateway, bypassing nginx: the peer is not a trusted proxy, so its
    // headers are not believed either.
    spoofed_get(&stack.gw.http_url("/poll?topic=who&timeout=0")).await;
    assert_eq!(
        seen.take("/poll"),
        [CLIENT_IP.to_string()],
        "poll straight to the gateway"
    );
}

/// When the gateway does not trust nginx, forwarded headers count for nothing: the client is
/// nginx itself, never the address a client wrote in `X-Forwarded-For`.
#[tokio::test]
async fn spoofed_forwarded_for_is_ignored_without_trust() {
    let seen = SeenClients::capture();
    let stack = Stack::start_default().await;
    assert!(Config::default().trusted_proxies.is_empty());

    spoofed_get(&stack.nginx.http_url("/poll?topic=who&timeout=0")).await;
    assert_eq!(
        seen.take("/poll"),
        ["127.0.0.1"],
        "poll through an untrusted nginx"
    );

    spoofed_ws(stack.nginx.addr(), "/ws?topic=who").await;
    assert_eq!(
        seen.take("/ws"),
        ["127.0.0.1"],
        "WebSocket through an untrusted nginx"
    );
}
