//! `/poll`: batches, the batch cap, held polls and timeouts.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::Config;
use switchboard_e2e::{Endpoint, Gateway, assert_envelope, data_of, poll, publish};

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
    let started = Instant::now();
    let held = tokio::spawn(async move { poll(&url).await });
    // No event tells that the poll is held; give it a moment so the message arrives while it
    // is (the reply is the same either way, only the path through the gateway differs).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = publish(&gw.http_url("/events?topic=h"), &json!("wake")).await;
    let reply = held.await.expect("poll task");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
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
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let reply = poll(&gw.http_url(&format!("/poll?topic=t&since={cursor}&timeout=0.3"))).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "timeout=0.3 answered after {elapsed:?}"
    );
    assert!(reply.messages.is_empty() && !reply.more, "{reply:?}");

    // The empty reply's cursor loses nothing.
    let id = publish(&gw.http_url("/events?topic=t"), &json!(1)).await;
    let reply =
        poll(&gw.http_url(&format!("/poll?topic=t&since={}&timeout=0", reply.cursor))).await;
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_envelope(&reply.messages[0], "t", &id, &json!(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_zero_answers_at_once() {
    let gw = Gateway::start_default().await;
    let cursor = start_cursor(&gw, "z").await;
    let started = Instant::now();
    let reply = poll(&gw.http_url(&format!("/poll?topic=z&since={cursor}&timeout=0"))).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(reply.messages.is_empty(), "{reply:?}");
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
    for (query, at_least, below) in [("", 300, 1200), ("&timeout=30", 600, 2000)] {
        let started = Instant::now();
        let reply = poll(&gw.http_url(&format!("/poll?topic=d&since={cursor}{query}"))).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(at_least) && elapsed < Duration::from_millis(below),
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
