//! Several gateway nodes on one Redis: a message published on any node reaches subscribers on
//! every node, on every transport, and a cursor from one node resumes on any other. Each test
//! starts a `redis-server` of its own and three in-process nodes on it (`Deployment::on_redis`).
//! The same scenarios run on a Redis Cluster in `tests/redis_cluster.rs`; faults are in
//! `tests/redis_faults.rs`, many clients at once in `tests/redis_soak.rs`.

use serde_json::json;
use switchboard_e2e::scenarios::publish_range;
use switchboard_e2e::{
    Deployment, Endpoint, Subscriber, Transport, across_nodes_tests, any_to_any_tests,
    assert_envelope,
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
