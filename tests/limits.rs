//! `max_connections`, `max_topics_per_connection` and `max_message_bytes`.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::json;
use switchboard::Config;
use switchboard_e2e::http::assert_serving;
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, WsClient, assert_envelope, expect_error, poll, publish, within,
};

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
    let mut sse2 = within("a slot freed by the closed WebSocket", async {
        loop {
            let response = client
                .get(gw.http_url("/events?topic=a"))
                .send()
                .await
                .expect("GET");
            if response.status() == StatusCode::OK {
                break SseClient::from_response(response).await;
            }
            expect_error(response, 503, "too_many_connections").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    sse2.expect_event("subscribed").await;

    // Dropping an SSE stream frees a slot too.
    drop(sse);
    let mut ws2 = within("a slot freed by the dropped SSE stream", async {
        loop {
            match WsClient::try_connect(&gw.ws_url("/ws?topic=a"), None).await {
                Ok(ws) => break ws,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
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
