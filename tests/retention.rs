//! Positions that cannot be honoured: an explicit reset before anything else for the topic,
//! then delivery from the oldest retained message.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::stuck::wait_for_health;
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, SseItem, TIMEOUT, WsClient, assert_envelope, assert_reset, poll,
    publish,
};

/// The hub's maintenance interval in tests that wait for messages to age out or topics to be
/// forgotten: each sweep a few milliseconds apart rather than a second.
const SWEEP_OFTEN: Duration = Duration::from_millis(10);

/// A gateway retaining 5 messages per topic, with messages 1..=10 published to `t`.
/// Returns it, the id of message 1 and the retained messages 6..=10.
async fn overflowed() -> (Gateway, String, Vec<(String, Value)>) {
    let config = Config {
        retention_messages: 5,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut published = Vec::new();
    for n in 1..=10 {
        let id = publish(&gw.http_url("/events?topic=t"), &json!(n)).await;
        published.push((id, json!(n)));
    }
    let first = published[0].0.clone();
    (gw, first, published.split_off(5))
}

/// A gateway whose topic `t` holds two messages, and a cursor for `t` from another gateway
/// (another epoch).
async fn restarted() -> (Gateway, String, Vec<(String, Value)>) {
    let old = Gateway::start_default().await;
    let stale = publish(&old.http_url("/events?topic=t"), &json!("old")).await;
    publish(&old.http_url("/events?topic=t"), &json!("old too")).await;
    old.shutdown().await;

    let gw = Gateway::start_default().await;
    let mut current = Vec::new();
    for data in [json!("new 1"), json!("new 2")] {
        current.push((publish(&gw.http_url("/events?topic=t"), &data).await, data));
    }
    (gw, stale, current)
}

async fn ws_reset(gw: &Gateway, cursor: &str, reason: &str, expected: &[(String, Value)]) {
    let mut ws = WsClient::connect(&gw.ws_url(&format!("/ws?topic=t&since={cursor}"))).await;
    let reset = ws.next().await;
    assert_eq!(reset["type"], "reset", "first frame: {reset}");
    assert_reset(&reset, "t", reason);
    let subscribed = ws.next().await;
    assert_eq!(
        subscribed["type"], "subscribed",
        "after the reset: {subscribed}"
    );
    for (id, data) in expected {
        assert_envelope(&ws.next().await, "t", id, data);
    }
    // The in-band subscribe frame resets the same way.
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    ws.send(json!({"type": "subscribe", "topics": ["t"], "since": cursor, "ref": 1}))
        .await;
    let reset = ws.next().await;
    assert_eq!(
        reset["type"], "reset",
        "first frame after subscribe: {reset}"
    );
    assert_reset(&reset, "t", reason);
    assert_eq!(ws.next().await["type"], "subscribed");
    for (id, data) in expected {
        assert_envelope(&ws.next().await, "t", id, data);
    }
}

async fn sse_reset(gw: &Gateway, cursor: &str, reason: &str, expected: &[(String, Value)]) {
    let request = reqwest::Client::new()
        .get(gw.http_url("/events?topic=t"))
        .header("last-event-id", cursor);
    let mut sse = SseClient::open(request).await;
    let Some(SseItem::Retry(_)) = sse.next_item().await else {
        panic!("the stream does not start with retry:")
    };
    let reset = sse.next_event().await;
    assert_eq!(reset.event, "reset", "first event: {reset:?}");
    assert_reset(&reset.json(), "t", reason);
    sse.expect_event("subscribed").await;
    for (id, data) in expected {
        assert_envelope(&sse.message().await, "t", id, data);
    }
}

async fn poll_reset(gw: &Gateway, cursor: &str, reason: &str, expected: &[(String, Value)]) {
    let reply = poll(&gw.http_url(&format!("/poll?topic=t&since={cursor}&timeout=0"))).await;
    assert_eq!(reply.reset.len(), 1, "{reply:?}");
    assert_reset(&reply.reset[0], "t", reason);
    assert_eq!(reply.messages.len(), expected.len(), "{reply:?}");
    for (envelope, (id, data)) in reply.messages.iter().zip(expected) {
        assert_envelope(envelope, "t", id, data);
    }
    assert!(!reply.more, "{reply:?}");
    // The reply's cursor is honoured: no second reset.
    let again =
        poll(&gw.http_url(&format!("/poll?topic=t&since={}&timeout=0", reply.cursor))).await;
    assert!(
        again.reset.is_empty() && again.messages.is_empty(),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_retention_reset() {
    let (gw, cursor, retained) = overflowed().await;
    ws_reset(&gw, &cursor, "retention", &retained).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_retention_reset() {
    let (gw, cursor, retained) = overflowed().await;
    sse_reset(&gw, &cursor, "retention", &retained).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_retention_reset() {
    let (gw, cursor, retained) = overflowed().await;
    poll_reset(&gw, &cursor, "retention", &retained).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_history_lost_reset() {
    let (gw, cursor, current) = restarted().await;
    ws_reset(&gw, &cursor, "history_lost", &current).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_history_lost_reset() {
    let (gw, cursor, current) = restarted().await;
    sse_reset(&gw, &cursor, "history_lost", &current).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_history_lost_reset() {
    let (gw, cursor, current) = restarted().await;
    poll_reset(&gw, &cursor, "history_lost", &current).await;
}

/// Only the topic that needs it gets a reset.
#[tokio::test(flavor = "multi_thread")]
async fn reset_only_for_the_topic_that_needs_it() {
    let (gw, stale_t, retained) = overflowed().await;
    let u = publish(&gw.http_url("/events?topic=u"), &json!("u1")).await;
    let u2 = publish(&gw.http_url("/events?topic=u"), &json!("u2")).await;
    let cursor = format!("{stale_t}.{u}");
    let reply =
        poll(&gw.http_url(&format!("/poll?topic=t&topic=u&since={cursor}&timeout=0"))).await;
    assert_eq!(reply.reset.len(), 1, "{reply:?}");
    assert_reset(&reply.reset[0], "t", "retention");
    assert_eq!(reply.messages.len(), retained.len() + 1, "{reply:?}");
    let u_messages: Vec<_> = reply
        .messages
        .iter()
        .filter(|m| m["topic"] == "u")
        .collect();
    assert_eq!(u_messages.len(), 1, "{reply:?}");
    assert_envelope(u_messages[0], "u", &u2, &json!("u2"));
}

/// The memory budget evicts the oldest messages: a reset, then a contiguous tail.
#[tokio::test(flavor = "multi_thread")]
async fn retention_bytes_budget_resets() {
    let config = Config {
        retention_bytes: 10_000,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let pad = "p".repeat(1000);
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            publish(
                &gw.http_url("/events?topic=t"),
                &json!({"n": n, "pad": pad}),
            )
            .await,
        );
    }
    let reply = poll(&gw.http_url(&format!("/poll?topic=t&since={}&timeout=0", ids[0]))).await;
    assert_eq!(reply.reset.len(), 1, "{reply:?}");
    assert_reset(&reply.reset[0], "t", "retention");
    let numbers: Vec<u64> = reply
        .messages
        .iter()
        .map(|m| m["data"]["n"].as_u64().expect("n"))
        .collect();
    let first = *numbers.first().expect("the newest messages are retained");
    assert!(
        first > 1 && numbers == (first..20).collect::<Vec<_>>(),
        "not a contiguous tail: {numbers:?}"
    );
}

/// The memory budget counts what each transport's encoding of a message takes, not only the
/// message: here a WebSocket frame and the two kinds of SSE event (with an `id:` for a stream
/// of one topic, without for a stream of several) make each delivered message take about four
/// times its envelope, so the budget holds about a quarter as many.
#[tokio::test(flavor = "multi_thread")]
async fn retention_bytes_counts_the_encodings_made_for_subscribers() {
    const BUDGET: usize = 100_000;
    let config = Config {
        retention_bytes: BUDGET,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws?topic=big")).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut one_topic = SseClient::connect(&gw.http_url("/events?topic=big")).await;
    one_topic.expect_event("subscribed").await;
    let mut two_topics = SseClient::connect(&gw.http_url("/events?topic=big&topic=other")).await;
    two_topics.expect_event("subscribed").await;

    let pad = "p".repeat(10_000);
    for n in 0..5 {
        let id = publish(
            &gw.http_url("/events?topic=big"),
            &json!({"n": n, "pad": pad}),
        )
        .await;
        assert_eq!(ws.message().await["id"], id);
        assert_eq!(one_topic.message().await["id"], id);
        assert_eq!(two_topics.expect_event("message").await.json()["id"], id);
    }
    // Five envelopes of 10 kB are half the budget; with their encodings they are twice it.
    // The next publish finds the hub over its budget and has the oldest dropped.
    publish(&gw.http_url("/events?topic=other"), &json!("small")).await;
    let health = wait_for_health(&gw.base(), TIMEOUT, "the budget enforced", |h| {
        h["retained_bytes"]
            .as_u64()
            .is_some_and(|b| b as usize <= BUDGET)
    })
    .await;
    let evicted = health["evicted"]["budget"]
        .as_u64()
        .expect("evicted by budget");
    assert!(
        evicted >= 3,
        "{evicted} messages dropped for the budget: {health}"
    );
    assert!(health["retained_messages"].as_u64() <= Some(3), "{health}");
}

/// `retention_age` drops old messages: a position before them gets a reset.
#[tokio::test(flavor = "multi_thread")]
async fn retention_age_resets() {
    let config = Config {
        retention_age: Duration::from_millis(200),
        maintenance_interval: SWEEP_OFTEN,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let first = publish(&gw.http_url("/events?topic=t"), &json!(1)).await;
    publish(&gw.http_url("/events?topic=t"), &json!(2)).await;
    wait_for_health(&gw.base(), TIMEOUT, "both messages to age out", |h| {
        h["evicted"]["age"] == 2
    })
    .await;
    let reply = poll(&gw.http_url(&format!("/poll?topic=t&since={first}&timeout=0"))).await;
    assert_eq!(reply.reset.len(), 1, "{reply:?}");
    assert_reset(&reply.reset[0], "t", "retention");
    assert!(reply.messages.is_empty(), "{reply:?}");
    // The reply's cursor goes on from there.
    let id = publish(&gw.http_url("/events?topic=t"), &json!(3)).await;
    let next = poll(&gw.http_url(&format!("/poll?topic=t&since={}&timeout=0", reply.cursor))).await;
    assert!(next.reset.is_empty(), "{next:?}");
    assert_eq!(next.messages.len(), 1, "{next:?}");
    assert_envelope(&next.messages[0], "t", &id, &json!(3));
}

/// Messages age out after 100 ms and idle topics are forgotten 200 ms later, swept often.
fn forgetting_soon() -> Config {
    Config {
        retention_age: Duration::from_millis(100),
        idle_topic_ttl: Duration::from_millis(200),
        maintenance_interval: SWEEP_OFTEN,
        ..Config::default()
    }
}

/// A topic forgotten after `idle_topic_ttl` (no subscribers, nothing retained) starts a new
/// epoch: an old position gets `history_lost`.
#[tokio::test(flavor = "multi_thread")]
async fn forgotten_topic_is_history_lost() {
    let gw = Gateway::start(forgetting_soon()).await;
    let id = publish(&gw.http_url("/events?topic=t"), &json!(1)).await;
    wait_for_health(&gw.base(), TIMEOUT, "`t` forgotten", |h| {
        h["topics"] == 0 && h["published"] == 1
    })
    .await;
    let reply = poll(&gw.http_url(&format!("/poll?topic=t&since={id}&timeout=0"))).await;
    assert_eq!(reply.reset.len(), 1, "{reply:?}");
    assert_reset(&reply.reset[0], "t", "history_lost");
    assert!(reply.messages.is_empty(), "{reply:?}");
}

/// Forgetting one topic casts no doubt on another: a starting position taken on a topic with
/// no messages yet still resumes without a reset once an unrelated topic has been forgotten.
#[tokio::test(flavor = "multi_thread")]
async fn forgetting_a_topic_does_not_reset_the_starting_positions_of_others() {
    let gw = Gateway::start(forgetting_soon()).await;
    let start = poll(&gw.http_url("/poll?topic=quiet&timeout=0"))
        .await
        .cursor;
    publish(&gw.http_url("/events?topic=busy"), &json!("soon forgotten")).await;
    wait_for_health(&gw.base(), TIMEOUT, "`busy` forgotten", |h| {
        h["topics"] == 0 && h["published"] == 1
    })
    .await;
    let id = publish(&gw.http_url("/events?topic=quiet"), &json!("first")).await;
    let reply = poll(&gw.http_url(&format!("/poll?topic=quiet&since={start}&timeout=0"))).await;
    assert!(reply.reset.is_empty(), "{reply:?}");
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_eq!(reply.messages[0]["id"], id.as_str());
}
