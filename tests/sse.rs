//! `/events`: headers, the stream's framing, heartbeats and content safety, each on a fresh
//! connection (written by the gateway itself) and on a kept-alive one (written by hyper).

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::Config;
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, SseConnection, SseItem, assert_envelope, publish, publish_text,
    sse_connection_tests,
};

sse_connection_tests!(
    headers_retry_first_then_subscribed,
    default_retry_is_2000,
    heartbeat_comments_at_the_configured_interval,
    content_cannot_break_the_stream,
    json_with_raw_newlines_stays_on_one_line,
    message_id_is_the_cursor,
);

async fn headers_retry_first_then_subscribed(connection: SseConnection) {
    let config = Config {
        sse_retry: Duration::from_millis(1500),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut sse = SseClient::connect_on(connection, &gw.http_url("/events?topic=h&topic=i")).await;

    let header = |name: &str| {
        sse.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let content_type = header("content-type");
    assert!(
        content_type.starts_with("text/event-stream"),
        "Content-Type: {content_type}"
    );
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("x-accel-buffering"), "no");

    assert_eq!(
        sse.next_item().await,
        Some(SseItem::Retry(1500)),
        "first item"
    );
    let subscribed = sse.next_event().await;
    assert_eq!(subscribed.event, "subscribed", "{subscribed:?}");
    assert!(!subscribed.id().is_empty(), "{subscribed:?}");
    let data = subscribed.json();
    assert_eq!(data["topics"], json!(["h", "i"]), "{data}");
    for topic in ["h", "i"] {
        assert!(
            data["positions"][topic].is_string(),
            "position of {topic} in {data}"
        );
    }
}

async fn default_retry_is_2000(connection: SseConnection) {
    let gw = Gateway::start_default().await;
    let mut sse = SseClient::connect_on(connection, &gw.http_url("/events?topic=r")).await;
    assert_eq!(sse.next_item().await, Some(SseItem::Retry(2000)));
}

async fn heartbeat_comments_at_the_configured_interval(connection: SseConnection) {
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut sse = SseClient::connect_on(connection, &gw.http_url("/events?topic=hb")).await;
    sse.expect_event("subscribed").await;
    let started = Instant::now();
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match sse.next_item().await {
            Some(SseItem::Comment(text)) => {
                assert_eq!(text, "heartbeat");
                heartbeats += 1;
            }
            other => panic!("expected only heartbeats on a quiet stream, got {other:?}"),
        }
    }
    // Each came within the client's TIMEOUT, far below the default 15 s: the setting was
    // taken; and not faster than it says.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350),
        "3 heartbeats at 200 ms took {elapsed:?}"
    );
}

/// Text full of line breaks and field-like lines arrives as exactly one message event with
/// exactly that data.
async fn content_cannot_break_the_stream(connection: SseConnection) {
    let gw = Gateway::start_default().await;
    let mut sse = SseClient::connect_on(connection, &gw.http_url("/events?topic=safe")).await;
    sse.expect_event("subscribed").await;
    let nasty = "one\rtwo\nthree\r\nfour\n\ndata: fake\nevent: x\nid: 1\n: comment\r\rretry: 1\n";
    let id = publish_text(&gw.http_url("/events?topic=safe"), nasty).await;
    let marker = publish_text(&gw.http_url("/events?topic=safe"), "marker").await;

    let event = sse.next_event().await;
    assert_eq!(event.event, "message", "{event:?}");
    assert!(
        !event.data.contains('\n'),
        "data spans several lines: {event:?}"
    );
    assert_envelope(&event.json(), "safe", &id, &json!(nasty));
    assert_eq!(event.id(), id);
    // The very next item is the marker: nothing was injected.
    match sse.next_item().await {
        Some(SseItem::Event(event)) => {
            assert_envelope(&event.json(), "safe", &marker, &json!("marker"));
        }
        other => panic!("expected the marker event, got {other:?}"),
    }
}

async fn json_with_raw_newlines_stays_on_one_line(connection: SseConnection) {
    let gw = Gateway::start_default().await;
    let mut sse = SseClient::connect_on(connection, &gw.http_url("/events?topic=j")).await;
    sse.expect_event("subscribed").await;
    let body = "{\n  \"a\": [1,\r\n 2],\r  \"b\" :\n\"x y\"\n}\n";
    let response = reqwest::Client::new()
        .post(gw.http_url("/events?topic=j"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let event = sse.expect_event("message").await;
    assert!(
        !event.data.contains('\n'),
        "data spans several lines: {event:?}"
    );
    assert!(
        event.data.contains(r#""data":{"a":[1,2],"b":"x y"}"#),
        "data is not the published JSON without insignificant white space: {}",
        event.data
    );
}

/// The `id:` of a message event on a single-topic stream is the message id; a reconnect with
/// it (`Last-Event-ID`) continues after it.
async fn message_id_is_the_cursor(connection: SseConnection) {
    let gw = Gateway::start_default().await;
    let mut sse = SseClient::connect_on(connection, &gw.http_url("/events?topic=k")).await;
    sse.expect_event("subscribed").await;
    let id = publish(&gw.http_url("/events?topic=k"), &json!(1)).await;
    let event = sse.expect_event("message").await;
    assert_eq!(event.id(), id);
    assert_eq!(sse.last_event_id(), id);
}
