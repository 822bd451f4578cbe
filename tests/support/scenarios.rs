//! Scenarios written once and run wherever clients can connect: against the gateway itself
//! (`tests/matrix.rs`, `tests/resume.rs`) and through nginx (`tests/nginx.rs`). Each takes the
//! [`Endpoint`] every client of the scenario talks to, and a fresh gateway behind it.
//!
//! [`any_to_any_tests!`](crate::any_to_any_tests) and [`scenario_tests!`](crate::scenario_tests)
//! turn them into tests.

use std::ops::Range;

use serde_json::{Value, json};

use crate::{Endpoint, Subscriber, Transport, assert_envelope, now_ms, publish};

/// Publishes `data` to `topic` with `POST /events` at `at`; returns (id, data).
pub async fn publish_to(at: &impl Endpoint, topic: &str, data: Value) -> (String, Value) {
    let id = publish(&at.http_url(&format!("/events?topic={topic}")), &data).await;
    (id, data)
}

/// Publishes the numbers of `range` to `topic`, in order; returns (id, data) of each.
pub async fn publish_range(
    at: &impl Endpoint,
    topic: &str,
    range: Range<i32>,
) -> Vec<(String, Value)> {
    let mut published = Vec::new();
    for n in range {
        published.push(publish_to(at, topic, json!(n)).await);
    }
    published
}

/// Asserts that `subscriber` delivers exactly `expected` on `topic` and then, after a marker
/// is published, the marker: nothing missing, nothing repeated, nothing extra.
pub async fn expect_exactly(
    at: &impl Endpoint,
    subscriber: &mut Subscriber,
    topic: &str,
    expected: &[(String, Value)],
) {
    for (id, data) in expected {
        assert_envelope(&subscriber.message().await, topic, id, data);
    }
    let (id, data) = publish_to(at, topic, json!("marker")).await;
    assert_envelope(&subscriber.message().await, topic, &id, &data);
}

/// `publisher` publishes and a subscriber on `receiver` gets the full envelope, stamped during
/// the publish call; then a second message, on the same still-open subscription.
pub async fn any_to_any(at: &impl Endpoint, publisher: Transport, receiver: Transport) {
    let base = at.base();
    let topic = format!("matrix/{publisher:?}-to-{receiver:?}");
    let mut subscriber = Subscriber::open(receiver, &base, &[&topic], None).await;

    let data = json!({"from": format!("{publisher:?}"), "text": "héllo ✓ \"quoted\"", "n": [1, 2.5, null, true]});
    let before = now_ms();
    let id = publisher.publish(&base, &topic, data.clone()).await;
    let after = now_ms();

    let envelope = subscriber.message().await;
    assert_envelope(&envelope, &topic, &id, &data);
    let time = envelope["time"].as_u64().expect("time");
    assert!(
        (before.saturating_sub(5)..=after + 5).contains(&time),
        "time {time} outside the publish call [{before}, {after}]"
    );

    // And a second one: the stream is still open and still delivering.
    let id = publisher.publish(&base, &topic, json!(2)).await;
    assert_envelope(&subscriber.message().await, &topic, &id, &json!(2));
}

/// A subscriber on `transport` receives three messages and leaves; resuming from its cursor on
/// the same transport gets exactly the four published meanwhile.
pub async fn resume_on(at: &impl Endpoint, transport: Transport) {
    let base = at.base();
    let mut subscriber = Subscriber::open(transport, &base, &["r"], None).await;
    for (id, data) in &publish_range(at, "r", 0..3).await {
        assert_envelope(&subscriber.message().await, "r", id, data);
    }
    let cursor = subscriber.cursor();
    drop(subscriber);

    let missed = publish_range(at, "r", 3..7).await;
    let mut subscriber = Subscriber::open(transport, &base, &["r"], Some(&cursor)).await;
    expect_exactly(at, &mut subscriber, "r", &missed).await;
}

/// Carries one cursor along `hops`. On each `(first, then)`: a subscriber on `first` resumes
/// from the cursor, receives two new messages and leaves; a subscriber on `then` resumes from
/// its cursor and gets exactly the message published while no one was connected; its cursor
/// is the next hop's.
pub async fn carry_cursor(at: &impl Endpoint, hops: &[(Transport, Transport)]) {
    let base = at.base();
    let mut cursor: Option<String> = None;
    for (leg, &(first, then)) in hops.iter().enumerate() {
        let mut subscriber = Subscriber::open(first, &base, &["x"], cursor.as_deref()).await;
        let start = i32::try_from(leg).expect("small") * 10;
        for (id, data) in &publish_range(at, "x", start..start + 2).await {
            assert_envelope(&subscriber.message().await, "x", id, data);
        }
        cursor = Some(subscriber.cursor());
        drop(subscriber);
        // Published while no one is connected: the next subscriber must get these first.
        let away = publish_to(at, "x", json!(format!("away after leg {leg}"))).await;
        let mut next = Subscriber::open(then, &base, &["x"], cursor.as_deref()).await;
        expect_exactly(at, &mut next, "x", &[away]).await;
        cursor = Some(next.cursor());
    }
}

/// One multi-thread test per line, each running a scenario against a fresh `$start` (an
/// expression, awaited in the test, giving an [`Endpoint`]):
///
/// ```text
/// scenario_tests! { Gateway::start_default().await;
///     /// Doc comments and attributes are kept.
///     ws_resumes_with_since: resume_on(Transport::Ws);
/// }
/// ```
///
/// runs `resume_on(&endpoint, Transport::Ws)`. The scenario is named as in the caller's scope.
#[macro_export]
macro_rules! scenario_tests {
    ($start:expr; $($(#[$meta:meta])* $name:ident: $scenario:ident($($arg:expr),* $(,)?);)*) => {$(
        $(#[$meta])*
        #[::tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let at = $start;
            $scenario(&at, $($arg),*).await;
        }
    )*};
}

/// The 3×3 publish → receive matrix: one test per pair of transports (`ws_to_sse`,
/// `post_poll_to_ws`, …), each running [`any_to_any`] against a fresh `$start`, an expression
/// awaited in the test that gives an [`Endpoint`].
#[macro_export]
macro_rules! any_to_any_tests {
    (@pairs $start:expr; $($name:ident: $publisher:ident -> $receiver:ident;)*) => {$(
        #[::tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let at = $start;
            $crate::scenarios::any_to_any(
                &at,
                $crate::Transport::$publisher,
                $crate::Transport::$receiver,
            )
            .await;
        }
    )*};
    ($start:expr) => {
        $crate::any_to_any_tests! { @pairs $start;
            ws_to_ws: Ws -> Ws;
            ws_to_sse: Ws -> Sse;
            ws_to_poll: Ws -> Poll;
            post_events_to_ws: Sse -> Ws;
            post_events_to_sse: Sse -> Sse;
            post_events_to_poll: Sse -> Poll;
            post_poll_to_ws: Poll -> Ws;
            post_poll_to_sse: Poll -> Sse;
            post_poll_to_poll: Poll -> Poll;
        }
    };
}
