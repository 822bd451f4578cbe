//! Several gateway nodes on a Redis Cluster of three masters (sharded pub/sub, `SSUBSCRIBE` and
//! `SPUBLISH`, routed by slot): the same scenarios as `tests/redis_nodes.rs` on a single Redis,
//! and topics spread over every master. Each test starts a cluster of its own and three
//! in-process nodes on it (`Deployment::on_cluster`).

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_e2e::scenarios::publish_to;
use switchboard_e2e::{
    Deployment, Endpoint, Follower, RedisCluster, Subscriber, TIMEOUT, Transport,
    across_nodes_tests, any_to_any_tests, assert_envelope,
};

// The nine pairs (`ws_to_ws`, … `post_poll_to_poll`), each publishing on node 0 and receiving
// on nodes 1 and 2: see `scenarios::any_to_any_across`.
any_to_any_tests!(across Deployment::on_cluster(3).await);

// Resuming on another node on each transport, one cursor carried across nodes and transports,
// and polls taking turns on every node: see `scenarios`.
across_nodes_tests!(Deployment::on_cluster(3).await);

/// One subscription over topics that live on every master: each topic's keys and channel are in
/// its own slot, and a node subscribes to each channel on the master that serves it.
#[tokio::test(flavor = "multi_thread")]
async fn one_subscription_over_topics_on_every_master() {
    let deployment = Deployment::on_cluster(3).await;
    let topics: Vec<String> = (0..12).map(|n| format!("spread/{n}")).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut subscribers = Vec::new();
    for index in [1, 2] {
        for transport in Transport::ALL {
            let base = deployment.node(index).base();
            subscribers.push(Subscriber::open(transport, &base, &topics, None).await);
        }
    }

    let mut published = Vec::new();
    for (n, topic) in topics.iter().enumerate() {
        let transport = Transport::ALL[n % 3];
        let data = json!(n);
        let id = transport
            .publish(&deployment.node(0).base(), topic, data.clone())
            .await;
        published.push((topic, id, data));
    }
    for master in deployment.redis.nodes() {
        let keys: usize = master
            .cli(&["DBSIZE"])
            .await
            .parse()
            .expect("DBSIZE is a number");
        assert!(keys > 0, "no topic on the master on port {}", master.port());
    }

    // One message per topic: whatever the order across topics, each arrives once.
    for subscriber in &mut subscribers {
        let mut got = subscriber.messages(topics.len()).await;
        got.sort_by_key(|envelope| envelope["data"].as_u64());
        for (envelope, (topic, id, data)) in got.iter().zip(&published) {
            assert_envelope(envelope, topic, id, data);
        }
    }
}

/// How many nodes are subscribed to `topic`'s channel, over every master (only the one that
/// serves the channel's slot has any).
async fn channel_subscribers(deployment: &Deployment<RedisCluster>, topic: &str) -> usize {
    let channel = format!("sb:{{{topic}}}:c");
    let mut total = 0;
    for master in deployment.redis.nodes() {
        // `PUBSUB SHARDNUMSUB channel` prints the channel, then its count.
        let reply = master.cli(&["PUBSUB", "SHARDNUMSUB", &channel]).await;
        let count = reply.lines().nth(1).unwrap_or("0");
        total += count.parse::<usize>().expect("a count");
    }
    total
}

/// Waits until `topic`'s channel has `count` subscribed nodes, for at most `limit`.
async fn wait_channel_subscribers(
    deployment: &Deployment<RedisCluster>,
    topic: &str,
    count: usize,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let now = channel_subscribers(deployment, topic).await;
        if now == count {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{now} nodes subscribed to {topic}'s channel after {limit:?}, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The masters drop every node's sharded pub/sub connection (`CLIENT KILL TYPE pubsub`): each
/// node connects again and subscribes again to the channel of every topic it has subscribers
/// for, and delivery goes on.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_subscribe_again_after_their_pubsub_connections_are_killed() {
    let deployment = Deployment::on_cluster(3).await;
    let mut followers = Vec::new();
    for (index, transport) in [(0, Transport::Ws), (1, Transport::Sse), (2, Transport::Ws)] {
        let base = deployment.node(index).base();
        followers.push(Follower::start(transport, &base, &["k"], None).await);
    }
    wait_channel_subscribers(&deployment, "k", 3, TIMEOUT).await;

    for master in deployment.redis.nodes() {
        master.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    }
    wait_channel_subscribers(&deployment, "k", 3, Duration::from_secs(10)).await;

    let (id, data) = publish_to(deployment.node(1), "k", json!("after")).await;
    for follower in &mut followers {
        assert_envelope(&follower.message().await, "k", &id, &data);
    }
}
