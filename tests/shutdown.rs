//! Graceful shutdown: WebSockets closed with 1001, SSE streams ended cleanly, held polls
//! answered, and `run` returns within the grace period.

use std::time::Duration;

use serde_json::json;
use switchboard::Config;
use switchboard_e2e::stuck::wait_for_connections;
use switchboard_e2e::ws::Closed;
use switchboard_e2e::{Endpoint, Gateway, SseClient, SseItem, WsClient, poll, publish};

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_are_ended_cleanly() {
    let config = Config {
        shutdown_grace: Duration::from_secs(3),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let base = gw.base();

    let mut ws = WsClient::connect(&gw.ws_url("/ws?topic=s")).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut sse = SseClient::connect(&gw.http_url("/events?topic=s")).await;
    sse.expect_event("subscribed").await;
    let cursor = poll(&gw.http_url("/poll?topic=s&timeout=0")).await.cursor;
    let held_url = gw.http_url(&format!("/poll?topic=s&since={cursor}&timeout=4"));
    let held = tokio::spawn(async move { poll(&held_url).await });
    // The WebSocket, the SSE stream and the held poll.
    wait_for_connections(&gw.base(), 3, "the poll to be held").await;
    let id = publish(&gw.http_url("/events?topic=s"), &json!("before")).await;
    let held_reply = held.await.expect("poll task");
    assert_eq!(held_reply.messages.len(), 1, "{held_reply:?}");
    // And a second held poll, which the shutdown answers.
    let held_url = gw.http_url(&format!(
        "/poll?topic=s&since={}&timeout=4",
        held_reply.cursor
    ));
    let held = tokio::spawn(async move { poll(&held_url).await });
    assert_eq!(ws.message().await["id"], json!(id));
    assert_eq!(sse.message().await["id"], json!(id));
    // The first poll let go of its slot before it answered; the second is held once it has
    // taken one.
    wait_for_connections(&gw.base(), 3, "the second poll to be held").await;

    let (took, (frames, closed), items, reply) =
        tokio::join!(gw.shutdown(), ws.read_to_close(), sse.read_to_end(), held);

    assert_eq!(
        closed,
        Closed::Code(1001),
        "WebSocket close; frames before it: {frames:?}"
    );
    assert!(frames.is_empty(), "frames before the close: {frames:?}");
    assert!(
        items.iter().all(|item| matches!(item, SseItem::Comment(_))),
        "SSE items before the end: {items:?}"
    );
    let reply = reply.expect("poll task");
    assert!(reply.messages.is_empty(), "{reply:?}");
    assert!(took < Duration::from_secs(3), "run returned after {took:?}");

    // The listener is gone.
    let refused = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "still answering after shutdown: {refused:?}"
    );
}

/// A client that never reads does not hold the gateway up past the grace period.
#[tokio::test(flavor = "multi_thread")]
async fn grace_period_bounds_shutdown() {
    let config = Config {
        shutdown_grace: Duration::from_secs(1),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let _deaf_ws = WsClient::connect(&gw.ws_url("/ws?topic=g")).await;
    let _deaf_sse = SseClient::connect(&gw.http_url("/events?topic=g")).await;
    let took = gw.shutdown().await;
    assert!(
        took < Duration::from_millis(2500),
        "run returned after {took:?}"
    );
}
