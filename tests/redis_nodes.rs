//! Several gateway nodes on one Redis: a message published on any node reaches subscribers on
//! every node, on every transport, and a cursor from one node resumes on any other. Each test
//! starts a `redis-server` of its own and three in-process nodes on it (`Deployment::on_redis`).
//! The same scenarios run on a Redis Cluster in `tests/redis_cluster.rs`; faults are in
//! `tests/redis_faults.rs`, many clients at once in `tests/redis_soak.rs`.

use std::time::Duration;

use serde_json::json;
use switchboard_e2e::scenarios::publish_range;
use switchboard_e2e::{
    Deployment, Endpoint, RedisOptions, Subscriber, Transport, across_nodes_tests,
    any_to_any_tests, assert_envelope, assert_reset, poll, within,
};

// The nine pairs (`ws_to_ws`, … `post_poll_to_poll`), each publishing on node 0 and receiving
// on nodes 1 and 2: see `scenarios::any_to_any_across`.
any_to_any_tests!(across Deployment::on_redis(3).await);

// Resuming on another node on each transport, one cursor carried across nodes and transports,
// and polls taking turns on every node: see `scenarios`.
across_nodes_tests!(Deployment::on_redis(3).await);

/// Subscribers on every transport of every node each get what every transport of every node
/// publishes, with the same ids, in the order of publication.
#[tokio::test(flavor = "multi_thread")]
async fn every_node_and_transport_to_every_node_and_transport() {
    let deployment = Deployment::on_redis(3).await;
    let mut subscribers = Vec::new();
    for node in deployment.endpoints() {
        for transport in Transport::ALL {
            subscribers.push(Subscriber::open(transport, &node.base(), &["all"], None).await);
        }
    }
    let mut published = Vec::new();
    for node in deployment.endpoints() {
        for transport in Transport::ALL {
            let data = json!(format!("{transport:?} on {}", node.addr()));
            let id = transport.publish(&node.base(), "all", data.clone()).await;
            published.push((id, data));
        }
    }
    for subscriber in &mut subscribers {
        for (id, data) in &published {
            assert_envelope(&subscriber.message().await, "all", id, data);
        }
    }
}

/// A node that has never seen a topic serves its whole retained history, published elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn history_published_on_one_node_is_read_on_another() {
    let deployment = Deployment::on_redis(2).await;
    let history = publish_range(deployment.node(0), "h", 0..5).await;
    let (first, _) = &history[0];
    for transport in Transport::ALL {
        let mut subscriber =
            Subscriber::open(transport, &deployment.node(1).base(), &["h"], Some(first)).await;
        for (id, data) in &history[1..] {
            assert_envelope(&subscriber.message().await, "h", id, data);
        }
    }
}

/// Retention by count applies in Redis as in memory: a cursor from before what was dropped
/// gets a `retention` reset on any node, then what is still retained.
#[tokio::test(flavor = "multi_thread")]
async fn retention_by_count_applies_in_redis() {
    let deployment = Deployment::on_redis_with(RedisOptions::new(), 2, |config| {
        config.retention_messages = 3;
    })
    .await;
    let start = poll(&deployment.node(1).http_url("/poll?topic=r&timeout=0"))
        .await
        .cursor;
    let published = publish_range(deployment.node(0), "r", 0..5).await;
    let url = format!("/poll?topic=r&since={start}&timeout=0");
    let reply = poll(&deployment.node(1).http_url(&url)).await;
    assert_eq!(reply.reset.len(), 1, "{reply:?}");
    assert_reset(&reply.reset[0], "r", "retention");
    let ids: Vec<&str> = reply
        .messages
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let kept: Vec<&str> = published[2..].iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, kept, "the last three");
}

/// Retention by age applies in Redis while the topic stays busy: a message older than
/// `retention_age` is dropped from the front even though newer ones keep the history alive,
/// and a cursor from before it is told so.
#[tokio::test(flavor = "multi_thread")]
async fn retention_by_age_applies_in_redis_on_a_busy_topic() {
    let deployment = Deployment::on_redis_with(RedisOptions::new(), 2, |config| {
        config.retention_age = Duration::from_millis(300);
    })
    .await;
    let before = poll(&deployment.node(1).http_url("/poll?topic=a&timeout=0"))
        .await
        .cursor;
    let (old, _) = &publish_range(deployment.node(0), "a", 0..1).await[0];
    let url = format!("/poll?topic=a&since={before}&timeout=0");
    // Publishing on keeps the history from expiring as a whole: only trimming by age can drop
    // the old message.
    let aged = within("the old message to age out", async {
        let mut n = 1;
        loop {
            publish_range(deployment.node(0), "a", n..n + 1).await;
            n += 1;
            let reply = poll(&deployment.node(1).http_url(&url)).await;
            if !reply.reset.is_empty() {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_reset(&aged.reset[0], "a", "retention");
    assert!(
        !aged.messages.is_empty(),
        "newer messages are retained: {aged:?}"
    );
    assert!(
        aged.messages.iter().all(|m| m["id"] != old.as_str()),
        "{aged:?}"
    );
}
