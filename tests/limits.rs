//! `max_connections`, `max_topics_per_connection`, `max_message_bytes` and `header_timeout`.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::json;
use switchboard::Config;
use switchboard_e2e::http::assert_serving;
use switchboard_e2e::stuck::wait_for_connections;
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, WsClient, assert_envelope, expect_error, poll, publish,
    within_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_counts_ws_sse_and_held_polls() {
    let config = Config {
        max_connections: 2,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws?topic=a")).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut sse = SseClient::connect(&gw.http_url("/events?topic=a")).await;
    sse.expect_event("subscribed").await;

    let (status, body) = WsClient::expect_refused(&gw.ws_url("/ws?topic=a"), None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("too_many_connections")),
        "{body}"
    );
    let client = Client::new();
    let response = client
        .get(gw.http_url("/events?topic=a"))
        .send()
        .await
        .expect("GET");
    expect_error(response, 503, "too_many_connections").await;
    let response = client
        .get(gw.http_url("/poll?topic=a&timeout=3"))
        .send()
        .await
        .expect("GET");
    expect_error(response, 503, "too_many_connections").await;

    // Publishing is not a connection, and the open streams are served.
    let id = publish(&gw.http_url("/events?topic=a"), &json!("full")).await;
    assert_envelope(&ws.message().await, "a", &id, &json!("full"));
    assert_envelope(&sse.message().await, "a", &id, &json!("full"));

    // Closing a WebSocket frees a slot (the gateway notices the close asynchronously).
    ws.close().await;
    wait_for_connections(&gw.base(), 1, "the closed WebSocket's slot to be freed").await;
    let mut sse2 = SseClient::connect(&gw.http_url("/events?topic=a")).await;
    sse2.expect_event("subscribed").await;

    // Dropping an SSE stream frees a slot too.
    drop(sse);
    wait_for_connections(&gw.base(), 1, "the dropped SSE stream's slot to be freed").await;
    let mut ws2 = WsClient::connect(&gw.ws_url("/ws?topic=a")).await;
    assert_eq!(ws2.next().await["type"], "subscribed");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_topics_per_connection() {
    let config = Config {
        max_topics_per_connection: 3,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let three = "topic=a&topic=b&topic=c";
    let four = "topic=a&topic=b&topic=c&topic=d";
    let client = Client::new();

    let reply = poll(&gw.http_url(&format!("/poll?{three}&timeout=0"))).await;
    assert_eq!(reply.positions.len(), 3, "{reply:?}");
    let response = client
        .get(gw.http_url(&format!("/poll?{four}&timeout=0")))
        .send()
        .await
        .expect("GET");
    expect_error(response, 400, "too_many_topics").await;
    SseClient::connect(&gw.http_url(&format!("/events?{three}")))
        .await
        .expect_event("subscribed")
        .await;
    let response = client
        .get(gw.http_url(&format!("/events?{four}")))
        .send()
        .await
        .expect("GET");
    expect_error(response, 400, "too_many_topics").await;

    // Too many topics in the WebSocket URL: refused at the handshake or an error frame.
    match WsClient::try_connect(&gw.ws_url(&format!("/ws?{four}")), None).await {
        Ok(mut ws) => {
            let frame = ws.next().await;
            assert_eq!(
                (&frame["type"], &frame["code"]),
                (&json!("error"), &json!("too_many_topics")),
                "{frame}"
            );
        }
        Err(_) => {
            let (status, body) =
                WsClient::expect_refused(&gw.ws_url(&format!("/ws?{four}")), None).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (400, &json!("too_many_topics"))
            );
        }
    }

    // In-band: the limit counts the connection's topics, not one frame's.
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    ws.subscribe(&["a", "b"], None).await;
    ws.send(json!({"type": "subscribe", "topics": ["c", "d"], "ref": "over"}))
        .await;
    let frame = ws.next().await;
    assert_eq!(
        (&frame["type"], &frame["code"], &frame["ref"]),
        (&json!("error"), &json!("too_many_topics"), &json!("over")),
        "{frame}"
    );
    ws.assert_alive().await;
    ws.subscribe(&["a", "c"], None).await; // a again does not count twice
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_message_bytes_on_http() {
    let config = Config {
        max_message_bytes: 1024,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let client = Client::new();
    for path in ["/events", "/poll"] {
        let url = gw.http_url(&format!("{path}?topic=big"));
        let text = client
            .post(&url)
            .body("x".repeat(1025))
            .send()
            .await
            .expect("POST");
        expect_error(text, 413, "payload_too_large").await;
        let over = format!("\"{}\"", "y".repeat(1024 - 1));
        let json = client
            .post(&url)
            .header("content-type", "application/json")
            .body(over)
            .send()
            .await
            .expect("POST");
        expect_error(json, 413, "payload_too_large").await;
        // Exactly max_message_bytes is not over.
        let at_limit = format!("\"{}\"", "z".repeat(1024 - 2));
        let json = client
            .post(&url)
            .header("content-type", "application/json")
            .body(at_limit)
            .send()
            .await
            .expect("POST");
        assert_eq!(
            json.status(),
            StatusCode::OK,
            "a 1024-byte body was refused"
        );
    }
    assert_serving(&gw.base()).await;
}

/// Reads (and drops) whatever the gateway sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) {
    let mut buffer = [0u8; 1024];
    // A reset is a close as well.
    while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
}

/// A connection that sends nothing, or part of a request head, is closed once `header_timeout`
/// has passed since it connected: one deadline for the head, not one for the gateway's look at
/// the first bytes and then another for the HTTP layer. On paused time, with the default
/// timeout: the clock moves only when everything waits, straight to the next deadline, so the
/// close comes at exactly 30 s of it (a second deadline would make it 60).
#[tokio::test(start_paused = true)]
async fn header_timeout_is_one_deadline_from_connecting() {
    let header_timeout = Config::default().header_timeout;
    assert_eq!(
        header_timeout,
        Duration::from_secs(30),
        "the documented default"
    );
    let gw = Gateway::start(Config::default()).await;
    for (what, sent) in [
        ("nothing", &b""[..]),
        ("part of a request line", b"GET /ev"),
        ("part of an SSE head", b"GET /events?topic=t HTTP/1.1\r\n"),
    ] {
        let connected = tokio::time::Instant::now();
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        stream.write_all(sent).await.expect("write");
        within_for(
            header_timeout * 3,
            &format!("the gateway to close a connection that sent {what}"),
            read_to_close(&mut stream),
        )
        .await;
        assert_eq!(
            connected.elapsed(),
            header_timeout,
            "a connection that sent {what} was not closed at the header timeout"
        );
    }
}

/// A kept-alive connection that sends no further request is closed after `header_timeout`
/// (paused time, as above).
#[tokio::test(start_paused = true)]
async fn header_timeout_closes_idle_kept_alive_connections() {
    let header_timeout = Config::default().header_timeout;
    let gw = Gateway::start(Config::default()).await;
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr());
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).ends_with('}') {
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..n]);
    }
    let answered = tokio::time::Instant::now();
    within_for(
        header_timeout * 3,
        "the gateway to close an idle kept-alive connection",
        read_to_close(&mut stream),
    )
    .await;
    assert_eq!(answered.elapsed(), header_timeout);
}
