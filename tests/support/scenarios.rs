//! Scenarios written once and run wherever clients can connect: against the gateway itself
//! (`tests/matrix.rs`, `tests/resume.rs`), through nginx (`tests/nginx.rs`), and across several
//! nodes that share a Redis (`tests/redis_nodes.rs`, `tests/redis_cluster.rs`). Each takes the
//! [`Endpoint`]s its clients talk to: one for all of them (`any_to_any`, `resume_on`,
//! `carry_cursor`), or one per client (the `_across` versions, which the others call with the
//! same endpoint everywhere), and fresh gateways behind them.
//!
//! [`any_to_any_tests!`](crate::any_to_any_tests) and [`scenario_tests!`](crate::scenario_tests)
//! turn them into tests.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Endpoint, Ledger, Subscriber, Transport, assert_envelope, now_ms, poll, publish};

/// Where one client of a scenario connects: a transport, on an endpoint.
#[derive(Clone, Copy)]
pub struct Via<'a> {
    pub at: &'a dyn Endpoint,
    pub transport: Transport,
}

/// `transport` on `at`.
pub fn via(at: &dyn Endpoint, transport: Transport) -> Via<'_> {
    Via { at, transport }
}

impl fmt::Debug for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} on {}", self.transport, self.at.addr())
    }
}

/// Publishes `data` to `topic` with `POST /events` at `at`; returns (id, data).
pub async fn publish_to(
    at: &(impl Endpoint + ?Sized),
    topic: &str,
    data: Value,
) -> (String, Value) {
    let id = publish(&at.http_url(&format!("/events?topic={topic}")), &data).await;
    (id, data)
}

/// Publishes the numbers of `range` to `topic`, in order; returns (id, data) of each.
pub async fn publish_range(
    at: &(impl Endpoint + ?Sized),
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
    at: &(impl Endpoint + ?Sized),
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
    any_to_any_across(at, publisher, &[at], receiver).await;
}

/// [`any_to_any`] across nodes: `publisher` publishes on `publish_at`, and a subscriber on
/// `receiver` at each of `receive_at` gets the full envelope, then a second message.
pub async fn any_to_any_across(
    publish_at: &dyn Endpoint,
    publisher: Transport,
    receive_at: &[&dyn Endpoint],
    receiver: Transport,
) {
    let base = publish_at.base();
    let topic = format!("matrix/{publisher:?}-to-{receiver:?}");
    let mut subscribers = Vec::with_capacity(receive_at.len());
    for at in receive_at {
        subscribers.push(Subscriber::open(receiver, &at.base(), &[&topic], None).await);
    }

    let data = json!({"from": format!("{publisher:?}"), "text": "héllo ✓ \"quoted\"", "n": [1, 2.5, null, true]});
    let before = now_ms();
    let id = publisher.publish(&base, &topic, data.clone()).await;
    let after = now_ms();

    for subscriber in &mut subscribers {
        let envelope = subscriber.message().await;
        assert_envelope(&envelope, &topic, &id, &data);
        let time = envelope["time"].as_u64().expect("time");
        assert!(
            (before.saturating_sub(5)..=after + 5).contains(&time),
            "time {time} outside the publish call [{before}, {after}]"
        );
    }

    // And a second one: the streams are still open and still delivering.
    let id = publisher.publish(&base, &topic, json!(2)).await;
    for subscriber in &mut subscribers {
        assert_envelope(&subscriber.message().await, &topic, &id, &json!(2));
    }
}

/// A subscriber on `transport` receives three messages and leaves; resuming from its cursor on
/// the same transport gets exactly the four published meanwhile.
pub async fn resume_on(at: &impl Endpoint, transport: Transport) {
    resume_across(at, at, at, transport).await;
}

/// [`resume_on`] across nodes: the subscriber receives on `first`, resumes on `then`, and every
/// message is published on `publish_at`.
pub async fn resume_across(
    publish_at: &dyn Endpoint,
    first: &dyn Endpoint,
    then: &dyn Endpoint,
    transport: Transport,
) {
    let mut subscriber = Subscriber::open(transport, &first.base(), &["r"], None).await;
    for (id, data) in &publish_range(publish_at, "r", 0..3).await {
        assert_envelope(&subscriber.message().await, "r", id, data);
    }
    let cursor = subscriber.cursor();
    drop(subscriber);

    let missed = publish_range(publish_at, "r", 3..7).await;
    let mut subscriber = Subscriber::open(transport, &then.base(), &["r"], Some(&cursor)).await;
    expect_exactly(publish_at, &mut subscriber, "r", &missed).await;
}

/// Carries one cursor along `hops`. On each `(first, then)`: a subscriber on `first` resumes
/// from the cursor, receives two new messages and leaves; a subscriber on `then` resumes from
/// its cursor and gets exactly the message published while no one was connected; its cursor
/// is the next hop's.
pub async fn carry_cursor(at: &impl Endpoint, hops: &[(Transport, Transport)]) {
    let hops: Vec<(Via<'_>, Via<'_>)> = hops
        .iter()
        .map(|&(first, then)| (via(at, first), via(at, then)))
        .collect();
    carry_cursor_across(at, &hops).await;
}

/// [`carry_cursor`] across nodes: each subscriber connects where its [`Via`] says, and every
/// message is published on `publish_at`.
pub async fn carry_cursor_across(publish_at: &dyn Endpoint, hops: &[(Via<'_>, Via<'_>)]) {
    let mut cursor: Option<String> = None;
    for (leg, &(first, then)) in hops.iter().enumerate() {
        let mut subscriber =
            Subscriber::open(first.transport, &first.at.base(), &["x"], cursor.as_deref()).await;
        let start = i32::try_from(leg).expect("small") * 10;
        for (id, data) in &publish_range(publish_at, "x", start..start + 2).await {
            assert_envelope(&subscriber.message().await, "x", id, data);
        }
        cursor = Some(subscriber.cursor());
        drop(subscriber);
        // Published while no one is connected: the next subscriber must get these first.
        let away = publish_to(publish_at, "x", json!(format!("away after leg {leg}"))).await;
        let mut next =
            Subscriber::open(then.transport, &then.at.base(), &["x"], cursor.as_deref()).await;
        expect_exactly(publish_at, &mut next, "x", &[away]).await;
        cursor = Some(next.cursor());
    }
}

/// Messages each node publishes in [`polls_round_robin`].
const ROUND_ROBIN_PER_NODE: usize = 30;

/// One long-poll client whose requests go to each of `nodes` in turn, with one cursor over two
/// topics, while every node publishes on both (each over another transport in turn): it gets
/// every message exactly once, each topic's in order, and never a reset.
pub async fn polls_round_robin(nodes: &[&dyn Endpoint]) {
    const TOPICS: [&str; 2] = ["rr/a", "rr/b"];
    let query = "topic=rr/a&topic=rr/b";
    let start = poll(&nodes[0].http_url(&format!("/poll?{query}&timeout=0"))).await;
    assert!(start.reset.is_empty(), "{start:?}");
    let mut cursor = start.cursor;

    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(node, at)| {
            let base = at.base();
            tokio::spawn(async move {
                let mut ledger = Ledger::new();
                for n in 0..ROUND_ROBIN_PER_NODE {
                    let topic = TOPICS[n % TOPICS.len()];
                    let transport = Transport::ALL[(node + n) % Transport::ALL.len()];
                    let id = transport
                        .publish(&base, topic, json!({"node": node, "n": n}))
                        .await;
                    ledger.record(topic, &id);
                }
                ledger
            })
        })
        .collect();

    let total = ROUND_ROBIN_PER_NODE * nodes.len();
    let limit = Duration::from_secs(30);
    let started = Instant::now();
    let mut received = Vec::new();
    let mut turn = 0;
    while received.len() < total && started.elapsed() < limit {
        let at = nodes[turn % nodes.len()];
        turn += 1;
        let reply = poll(&at.http_url(&format!("/poll?{query}&since={cursor}&timeout=1"))).await;
        assert!(
            reply.reset.is_empty(),
            "poll {turn} on {}: {reply:?}",
            at.addr()
        );
        received.extend(reply.messages);
        cursor = reply.cursor;
    }
    let mut ledger = Ledger::new();
    for publisher in publishers {
        ledger.extend(publisher.await.expect("a publisher failed"));
    }
    // Nothing more is waiting, on any node.
    for at in nodes {
        let reply = poll(&at.http_url(&format!("/poll?{query}&since={cursor}&timeout=0"))).await;
        received.extend(reply.messages);
    }
    let tally = ledger.tally(&received);
    assert!(tally.is_exact(), "{tally} after {turn} polls");
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
/// `post_poll_to_ws`, …), each against a fresh `$start`, an expression awaited in the test.
///
/// - `any_to_any_tests!($start)`: `$start` gives an [`Endpoint`]; each test runs
///   [`any_to_any`](crate::scenarios::any_to_any) on it.
/// - `any_to_any_tests!(across $start)`: `$start` gives nodes that share their topics, with a
///   method `node(index)` giving each node's [`Endpoint`] (such as
///   [`Deployment`](crate::Deployment)); each test publishes on node 0 and receives on nodes 1
///   and 2 ([`any_to_any_across`](crate::scenarios::any_to_any_across)).
#[macro_export]
macro_rules! any_to_any_tests {
    (@pairs $mode:tt $start:expr; $($name:ident: $publisher:ident -> $receiver:ident;)*) => {$(
        #[::tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let at = $start;
            $crate::any_to_any_tests!(@run $mode at $publisher $receiver);
        }
    )*};
    (@run same $at:ident $publisher:ident $receiver:ident) => {
        $crate::scenarios::any_to_any(
            &$at,
            $crate::Transport::$publisher,
            $crate::Transport::$receiver,
        )
        .await
    };
    (@run across $at:ident $publisher:ident $receiver:ident) => {
        $crate::scenarios::any_to_any_across(
            $at.node(0),
            $crate::Transport::$publisher,
            &[$at.node(1) as &dyn $crate::Endpoint, $at.node(2)],
            $crate::Transport::$receiver,
        )
        .await
    };
    (@all $mode:tt $start:expr) => {
        $crate::any_to_any_tests! { @pairs $mode $start;
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
    (across $start:expr) => {
        $crate::any_to_any_tests! { @all across $start }
    };
    ($start:expr) => {
        $crate::any_to_any_tests! { @all same $start }
    };
}

/// The scenarios across three nodes that share their topics, each test against a fresh `$start`,
/// an expression awaited in the test that gives something with a method `node(index)` (such as
/// [`Deployment`](crate::Deployment)):
///
/// - resuming on another node, on each transport ([`resume_across`](crate::scenarios::resume_across));
/// - one cursor carried SSE → poll → WebSocket → SSE → poll → WebSocket, each step on another
///   node ([`carry_cursor_across`](crate::scenarios::carry_cursor_across));
/// - polls taking turns on every node with one cursor while every node publishes
///   ([`polls_round_robin`](crate::scenarios::polls_round_robin)).
#[macro_export]
macro_rules! across_nodes_tests {
    (@resume $start:expr; $($name:ident: $transport:ident;)*) => {$(
        #[::tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let nodes = $start;
            $crate::scenarios::resume_across(
                nodes.node(0),
                nodes.node(1),
                nodes.node(2),
                $crate::Transport::$transport,
            )
            .await;
        }
    )*};
    ($start:expr) => {
        $crate::across_nodes_tests! { @resume $start;
            ws_resumes_on_another_node: Ws;
            sse_resumes_on_another_node: Sse;
            poll_resumes_on_another_node: Poll;
        }

        #[::tokio::test(flavor = "multi_thread")]
        async fn cursor_carries_across_nodes_and_transports() {
            use $crate::Transport::{Poll, Sse, Ws};
            use $crate::scenarios::via;
            let nodes = $start;
            let node = |index| nodes.node(index) as &dyn $crate::Endpoint;
            let hops = [
                (via(node(0), Sse), via(node(1), Poll)),
                (via(node(2), Ws), via(node(0), Sse)),
                (via(node(1), Poll), via(node(2), Ws)),
            ];
            $crate::scenarios::carry_cursor_across(node(2), &hops).await;
        }

        #[::tokio::test(flavor = "multi_thread")]
        async fn polls_round_robin_over_the_nodes_with_one_cursor() {
            let nodes = $start;
            let endpoints = [0, 1, 2].map(|index| nodes.node(index) as &dyn $crate::Endpoint);
            $crate::scenarios::polls_round_robin(&endpoints).await;
        }
    };
}
