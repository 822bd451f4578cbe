//! Slow consumers: a client that stops reading is dropped (WebSocket close 1013, the SSE
//! response ends) instead of holding the gateway up; it resumes with its cursor and loses
//! nothing; other clients are unaffected.

use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::ws::Closed;
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, SseItem, Subscriber, Transport, WsClient, publish,
};

/// Messages and their padding: far more than socket buffers and the send queue hold.
const COUNT: usize = 400;
const PAD: usize = 60_000;

fn slow_config() -> Config {
    Config {
        send_queue: 16,
        retention_messages: 2 * COUNT,
        ..Config::default()
    }
}

/// Publishes `COUNT` large messages to `s` while a healthy subscriber on `transport` reads
/// them all; asserts that it got every one, in order.
async fn flood(gw: &Gateway, transport: Transport) {
    let mut healthy = Subscriber::open(transport, &gw.base(), &["s"], None).await;
    let reader = tokio::spawn(async move { healthy.messages(COUNT).await });
    let pad = "x".repeat(PAD);
    for n in 0..COUNT {
        publish(
            &gw.http_url("/events?topic=s"),
            &json!({"n": n, "pad": pad}),
        )
        .await;
    }
    let got = reader.await.expect("healthy reader");
    assert_eq!(
        numbers(&got),
        (0..COUNT).collect::<Vec<_>>(),
        "healthy client"
    );
}

fn numbers(envelopes: &[Value]) -> Vec<usize> {
    envelopes
        .iter()
        .map(|e| usize::try_from(e["data"]["n"].as_u64().expect("n")).expect("small"))
        .collect()
}

/// Resumes from `cursor` on `transport` and asserts that it gets exactly `from..COUNT`.
async fn resume_rest(gw: &Gateway, transport: Transport, cursor: &str, from: usize) {
    let mut subscriber = Subscriber::open(transport, &gw.base(), &["s"], Some(cursor)).await;
    let rest = subscriber.messages(COUNT - from).await;
    assert_eq!(
        numbers(&rest),
        (from..COUNT).collect::<Vec<_>>(),
        "after resuming"
    );
    let id = publish(&gw.http_url("/events?topic=s"), &json!({"n": COUNT})).await;
    assert_eq!(
        subscriber.message().await["id"],
        json!(id),
        "nothing after the rest"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_slow_consumer_is_closed_with_1013_and_resumes() {
    let gw = Gateway::start(slow_config()).await;
    let mut slow = WsClient::connect(&gw.ws_url("/ws?topic=s")).await;
    let subscribed = slow.next().await;
    let start = subscribed["positions"]["s"]
        .as_str()
        .expect("position")
        .to_owned();

    flood(&gw, Transport::Ws).await;

    let (frames, closed) = slow.read_to_close().await;
    assert_eq!(closed, Closed::Code(1013), "after {} frames", frames.len());
    assert!(frames.len() < COUNT, "the slow client was not dropped");
    assert_eq!(numbers(&frames), (0..frames.len()).collect::<Vec<_>>());
    let cursor = frames
        .last()
        .map_or(start, |f| f["id"].as_str().expect("id").to_owned());
    resume_rest(&gw, Transport::Ws, &cursor, frames.len()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_slow_consumer_stream_ends_and_resumes() {
    let gw = Gateway::start(slow_config()).await;
    let mut slow = SseClient::connect(&gw.http_url("/events?topic=s")).await;
    slow.expect_event("subscribed").await;

    flood(&gw, Transport::Sse).await;

    let items = slow.read_to_end().await;
    let messages: Vec<Value> = items
        .iter()
        .filter_map(|item| match item {
            SseItem::Event(event) if event.event == "message" => Some(event.json()),
            _ => None,
        })
        .collect();
    assert!(messages.len() < COUNT, "the slow client was not dropped");
    assert_eq!(numbers(&messages), (0..messages.len()).collect::<Vec<_>>());
    let cursor = slow.last_event_id().to_owned();
    resume_rest(&gw, Transport::Sse, &cursor, messages.len()).await;
}
