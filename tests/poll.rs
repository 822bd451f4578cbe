//! `/poll`: batches, the batch cap, held polls and timeouts.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::Config;
use switchboard_e2e::stuck::wait_for_connections;
use switchboard_e2e::{
    Endpoint, Gateway, assert_envelope, data_of, expect_error, poll, publish, within,
};

async fn start_cursor(gw: &Gateway, topic: &str) -> String {
    let reply = poll(&gw.http_url(&format!("/poll?topic={topic}&timeout=0"))).await;
    assert!(
        reply.messages.is_empty() && reply.reset.is_empty() && !reply.more,
        "{reply:?}"
    );
    assert_eq!(
        reply.positions.keys().collect::<Vec<_>>(),
        [topic],
        "{reply:?}"
    );
    reply.cursor
}

#[tokio::test(flavor = "multi_thread")]
async fn one_poll_returns_everything_missed() {
    let gw = Gateway::start_default().await;
    let cursor = start_cursor(&gw, "b").await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(publish(&gw.http_url("/poll?topic=b"), &json!(n)).await);
    }
    let reply = poll(&gw.http_url(&format!("/poll?topic=b&since={cursor}"))).await;
    assert_eq!(reply.messages.len(), 50, "{reply:?}");
    for (n, (envelope, id)) in reply.messages.iter().zip(&ids).enumerate() {
        assert_envelope(envelope, "b", id, &json!(n));
    }
    assert!(!reply.more, "{reply:?}");
    assert_eq!(reply.positions["b"], ids[49], "{reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_cap_says_more() {
    let config = Config {
        poll_batch: 10,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut cursor = start_cursor(&gw, "c").await;
    for n in 0..25 {
        publish(&gw.http_url("/events?topic=c"), &json!(n)).await;
    }
    let mut got = Vec::new();
    for (expected_len, expected_more) in [(10, true), (10, true), (5, false)] {
        let reply = poll(&gw.http_url(&format!("/poll?topic=c&since={cursor}&timeout=0"))).await;
        assert_eq!(
            (reply.messages.len(), reply.more),
            (expected_len, expected_more),
            "{reply:?}"
        );
        got.extend(data_of(&reply.messages));
        cursor = reply.cursor;
    }
    assert_eq!(got, (0..25).map(|n| json!(n)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn held_poll_is_answered_when_a_message_arrives() {
    let gw = Gateway::start_default().await;
    let cursor = start_cursor(&gw, "h").await;
    let url = gw.http_url(&format!("/poll?topic=h&since={cursor}&timeout=4"));
    let held = tokio::spawn(async move { poll(&url).await });
    // A held poll holds a connection slot: once it does, the message arrives while it waits.
    wait_for_connections(&gw.base(), 1, "the poll to be held").await;
    let id = publish(&gw.http_url("/events?topic=h"), &json!("wake")).await;
    let reply = held.await.expect("poll task");
    // Not woken by the message, the poll would have answered empty at its timeout.
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_envelope(&reply.messages[0], "h", &id, &json!("wake"));
    assert_eq!(reply.positions["h"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn held_poll_without_since_starts_now() {
    let gw = Gateway::start_default().await;
    publish(&gw.http_url("/events?topic=n"), &json!("before")).await;
    let url = gw.http_url("/poll?topic=n&timeout=4");
    let held = tokio::spawn(async move { poll(&url).await });
    // Held, so it has taken its starting position: the next message comes after it.
    wait_for_connections(&gw.base(), 1, "the poll to be held").await;
    let id = publish(&gw.http_url("/events?topic=n"), &json!("after")).await;
    let reply = held.await.expect("poll task");
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_envelope(&reply.messages[0], "n", &id, &json!("after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_honoured() {
    let gw = Gateway::start_default().await;
    let cursor = start_cursor(&gw, "t").await;
    let started = Instant::now();
    // Answered within the client's TIMEOUT, far below the default 25 s: timeout=0.3 was
    // taken; and no sooner than asked (a timer never fires early).
    let reply = poll(&gw.http_url(&format!("/poll?topic=t&since={cursor}&timeout=0.3"))).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "timeout=0.3 answered after {elapsed:?}"
    );
    assert!(reply.messages.is_empty() && !reply.more, "{reply:?}");
    wait_for_connections(&gw.base(), 0, "the answered poll to let go of its slot").await;

    // The empty reply's cursor loses nothing.
    let id = publish(&gw.http_url("/events?topic=t"), &json!(1)).await;
    let reply =
        poll(&gw.http_url(&format!("/poll?topic=t&since={}&timeout=0", reply.cursor))).await;
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_envelope(&reply.messages[0], "t", &id, &json!(1));
}

/// `timeout=0` answers without holding: with no connection slot at all, such a poll is still
/// served (a held one would get `too_many_connections`).
#[tokio::test(flavor = "multi_thread")]
async fn timeout_zero_answers_at_once() {
    let config = Config {
        max_connections: 0,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let cursor = start_cursor(&gw, "z").await;
    let reply = poll(&gw.http_url(&format!("/poll?topic=z&since={cursor}&timeout=0"))).await;
    assert!(reply.messages.is_empty(), "{reply:?}");
    // The same poll allowed to wait needs a slot, and is refused.
    let url = gw.http_url(&format!("/poll?topic=z&since={cursor}&timeout=1"));
    let response = within("the refusal", reqwest::get(&url))
        .await
        .expect("GET");
    expect_error(response, 503, "too_many_connections").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_and_maximum_timeouts() {
    let config = Config {
        poll_timeout: Duration::from_millis(300),
        poll_max_timeout: Duration::from_millis(600),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let cursor = start_cursor(&gw, "d").await;
    // Each is answered within the client's TIMEOUT, far below the 30 s asked for: the maximum
    // applies; and no sooner than the timeout that applies (a timer never fires early).
    for (query, at_least) in [("", 300), ("&timeout=30", 600)] {
        let started = Instant::now();
        let reply = poll(&gw.http_url(&format!("/poll?topic=d&since={cursor}{query}"))).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(at_least),
            "poll{query} answered after {elapsed:?}"
        );
        assert!(reply.messages.is_empty(), "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_topic_poll_cursor_and_positions() {
    let gw = Gateway::start_default().await;
    let reply = poll(&gw.http_url("/poll?topic=x&topic=y&timeout=0")).await;
    let cursor = reply.cursor;
    let x = publish(&gw.http_url("/events?topic=x"), &json!("x")).await;
    let y = publish(&gw.http_url("/events?topic=y"), &json!("y")).await;
    let reply =
        poll(&gw.http_url(&format!("/poll?topic=x&topic=y&since={cursor}&timeout=0"))).await;
    assert_eq!(reply.messages.len(), 2, "{reply:?}");
    assert_eq!(reply.positions["x"], x, "{reply:?}");
    assert_eq!(reply.positions["y"], y, "{reply:?}");
    // Joining the positions gives a cursor equivalent to the reply's cursor.
    let joined = format!("{x}.{y}");
    for since in [&reply.cursor, &joined] {
        let again =
            poll(&gw.http_url(&format!("/poll?topic=x&topic=y&since={since}&timeout=0"))).await;
        assert!(again.messages.is_empty(), "{again:?}");
    }
}
