//! Three gateway nodes on one Redis, and Redis failing under them: killed (`kill -9`) mid-stream
//! and restarted with its data or without it, its pub/sub connections killed while messages
//! flow (`CLIENT KILL TYPE pubsub`), a node's subscription dropped by Redis itself for
//! overrunning `client-output-buffer-limit pubsub`. Through all of it, publishes are either
//! refused (`503 broker_unavailable`) or delivered, subscribers stay connected, and every
//! subscriber gets every message exactly once, in order, or is told with a reset.
//!
//! Subscribers are [`Follower`]s, which read in the background as real clients do (a WebSocket
//! answers pings only while it reads). Where Redis is killed the nodes' heartbeat is short, so
//! that heartbeats can be watched while it is down; where many messages flow it is the default,
//! since a WebSocket client answers a ping only once it has read all that was sent before it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::scenarios::{publish_range, publish_to};
use switchboard_e2e::{
    Deployment, Endpoint, Follower, Ledger, Nodes, RedisOptions, RedisServer, TIMEOUT, Transport,
    assert_envelope, assert_reset, json_body, within,
};

/// The nodes' `heartbeat_interval` while Redis is killed: SSE heartbeats and WebSocket pings,
/// and a WebSocket that says nothing for two of them is closed.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a node gets to notice that Redis is gone, or back.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// Three nodes with a short heartbeat on a Redis started with `options`.
async fn deployment(options: RedisOptions) -> Deployment<RedisServer> {
    Deployment::on_redis_with(options, 3, |config| config.heartbeat_interval = HEARTBEAT).await
}

/// Three nodes with the default settings on a Redis started with `options`.
async fn busy_deployment(options: RedisOptions) -> Deployment<RedisServer> {
    Deployment::on_redis_with(options, 3, |_| {}).await
}

/// A Redis that writes every command to its append-only file before answering: `restart`
/// brings back everything that was acknowledged.
fn persistent() -> RedisOptions {
    RedisOptions::new()
        .appendonly(true)
        .config("appendfsync", "always")
}

/// A follower of `topics` on every transport of every node: nine.
async fn follow_everywhere(deployment: &Deployment<RedisServer>, topics: &[&str]) -> Vec<Follower> {
    let mut followers = Vec::new();
    for node in deployment.endpoints() {
        for transport in Transport::ALL {
            followers.push(Follower::start(transport, &node.base(), topics, None).await);
        }
    }
    followers
}

/// Waits until `/readyz` on `node` answers `status`, for at most [`READY_LIMIT`]; returns its
/// JSON body.
async fn wait_readyz(node: &dyn Endpoint, status: u16) -> Value {
    let url = node.http_url("/readyz");
    let started = Instant::now();
    loop {
        let response = within("/readyz", reqwest::Client::new().get(&url).send())
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let now = response.status().as_u16();
        let body = json_body(response).await;
        if now == status {
            return body;
        }
        assert!(
            started.elapsed() < READY_LIMIT,
            "GET {url} still answers {now} {body} after {READY_LIMIT:?}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` answers `/healthz`, for at most [`READY_LIMIT`].
async fn wait_serving(node: &dyn Endpoint) {
    let url = node.http_url("/healthz");
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("an HTTP client");
    while client.get(&url).send().await.is_err() {
        assert!(
            started.elapsed() < READY_LIMIT,
            "GET {url} unanswered after {READY_LIMIT:?}"
        );
    }
}

/// Every node's `/readyz` answers 503 with a JSON reason.
async fn expect_every_node_unready(deployment: &Deployment<RedisServer>) {
    for node in deployment.endpoints() {
        let body = wait_readyz(node, 503).await;
        assert_eq!(body["status"], "unready", "{body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "no reason in {body}");
    }
}

/// Every node's `/readyz` answers `200 {"status":"ready"}`.
async fn expect_every_node_ready(deployment: &Deployment<RedisServer>) {
    for node in deployment.endpoints() {
        let body = wait_readyz(node, 200).await;
        assert_eq!(body, json!({"status": "ready"}));
    }
}

/// One message on `topic` from each node, each over another transport: (id, data) of each.
async fn publish_from_every_node(
    deployment: &Deployment<RedisServer>,
    topic: &str,
    label: &str,
) -> Vec<(String, Value)> {
    let mut published = Vec::new();
    for (index, node) in deployment.endpoints().into_iter().enumerate() {
        let transport = Transport::ALL[index % Transport::ALL.len()];
        let data = json!(format!("{label} from node {index} over {transport:?}"));
        let id = transport.publish(&node.base(), topic, data.clone()).await;
        published.push((id, data));
    }
    published
}

/// Every transport of every node refuses a publish with `broker_unavailable`: a `503` with the
/// JSON error, or a WebSocket `error` frame with the publish's `ref`. All at once: each takes up
/// to the broker's command timeout.
async fn expect_publishes_refused(deployment: &Deployment<RedisServer>, topic: &str) {
    let attempts: Vec<_> = deployment
        .endpoints()
        .into_iter()
        .flat_map(|node| Transport::ALL.map(|transport| (node.base(), transport)))
        .map(|(base, transport)| {
            let topic = topic.to_owned();
            tokio::spawn(async move {
                let refused = transport
                    .try_publish(&base, &topic, json!("while Redis is down"))
                    .await
                    .expect_err("a publish accepted while Redis is down");
                (base, transport, refused)
            })
        })
        .collect();
    for attempt in attempts {
        let (base, transport, refused) = attempt.await.expect("a publish attempt panicked");
        assert_eq!(
            refused.code, "broker_unavailable",
            "{transport:?} on {base}: {refused:?}"
        );
        match transport {
            Transport::Ws => {
                assert_eq!(refused.status, None, "{refused:?}");
                assert_eq!(refused.answer["type"], "error", "{refused:?}");
                assert_eq!(refused.answer["ref"], "try", "{refused:?}");
            }
            Transport::Sse | Transport::Poll => {
                assert_eq!(
                    refused.status,
                    Some(503),
                    "{transport:?} on {base}: {refused:?}"
                )
            }
        }
        assert!(
            refused.answer.to_string().contains("message"),
            "no message in {refused:?}"
        );
    }
}

/// WebSocket and SSE followers are still connected: WebSockets answer a `ping` with a `pong`,
/// and every stream gets two more heartbeats (the server's pings, SSE comments).
async fn expect_streams_alive(followers: &mut [Follower]) {
    let streams = |followers: &mut [Follower]| -> Vec<usize> {
        followers
            .iter()
            .enumerate()
            .filter(|(_, f)| f.transport() != Transport::Poll)
            .map(|(index, _)| index)
            .collect()
    };
    let marks: Vec<usize> = followers.iter().map(Follower::heartbeats).collect();
    for index in streams(followers) {
        if followers[index].transport() == Transport::Ws {
            followers[index].ping().await;
        }
    }
    let started = Instant::now();
    for index in streams(followers) {
        let follower = &followers[index];
        while follower.heartbeats() < marks[index] + 2 {
            assert!(
                started.elapsed() < TIMEOUT,
                "{follower:?}: fewer than 2 heartbeats in {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(follower.is_connected(), "{follower:?} was disconnected");
    }
}

/// Redis is killed while subscribers on every transport of every node are streaming, and comes
/// back with its data: meanwhile publishes are refused, nodes are unready and streams stay
/// open; afterwards nodes are ready, every subscriber gets what is published with no loss and
/// no reset, and a client resuming from before the kill gets exactly what it missed.
#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_stream_then_restarted_with_its_data() {
    let mut deployment = deployment(persistent()).await;
    let mut followers = follow_everywhere(&deployment, &["f"]).await;
    let before = publish_range(deployment.node(0), "f", 0..3).await;
    for follower in &mut followers {
        for (id, data) in &before {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }
    // A client that stopped after the first message, before the kill.
    let pre_kill_cursor = before[0].0.clone();

    deployment.redis.kill9();
    expect_every_node_unready(&deployment).await;
    expect_publishes_refused(&deployment, "f").await;
    expect_streams_alive(&mut followers).await;

    deployment.redis.restart().await;
    expect_every_node_ready(&deployment).await;
    let after = publish_from_every_node(&deployment, "f", "after the restart").await;
    for follower in &mut followers {
        for (id, data) in &after {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }

    // Clients that stopped before the kill resume on every transport, each on another node:
    // exactly what they missed, then a message published now, and nothing else in between.
    let mut resumed = Vec::new();
    for (index, transport) in Transport::ALL.into_iter().enumerate() {
        let base = deployment.node(index).base();
        resumed.push(Follower::start(transport, &base, &["f"], Some(&pre_kill_cursor)).await);
    }
    let now = publish_to(deployment.node(0), "f", json!("now")).await;
    for follower in &mut resumed {
        for (id, data) in before[1..].iter().chain(&after).chain([&now]) {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }
}

/// Nodes started while their Redis is down serve but are unready and refuse publishes; once
/// Redis starts, they connect on their own, become ready and carry messages between them.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_started_before_redis_connect_once_it_starts() {
    let mut redis = RedisServer::start(RedisOptions::new()).await;
    redis.kill9();
    let nodes = Nodes::on_redis(&redis, 2).await;
    let mut deployment = Deployment { nodes, redis };
    // A node gives Redis a few seconds at start-up before it serves without it.
    for node in deployment.endpoints() {
        wait_serving(node).await;
    }
    expect_every_node_unready(&deployment).await;
    expect_publishes_refused(&deployment, "f").await;

    deployment.redis.restart().await;
    expect_every_node_ready(&deployment).await;
    let mut followers = follow_everywhere(&deployment, &["f"]).await;
    let published = publish_from_every_node(&deployment, "f", "once Redis is up").await;
    for follower in &mut followers {
        for (id, data) in &published {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }
}

/// Redis is killed and comes back empty (its data lost): every subscriber, on every transport of
/// every node, is told `history_lost` before the first message of the new history, then gets
/// all of it; a client resuming from before the kill is told the same.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_empty_every_subscriber_is_told_history_lost() {
    let mut deployment = deployment(RedisOptions::new()).await;
    let mut followers = follow_everywhere(&deployment, &["f"]).await;
    let before = publish_range(deployment.node(0), "f", 0..3).await;
    for follower in &mut followers {
        for (id, data) in &before {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }
    let pre_kill_cursor = before[2].0.clone();

    deployment.redis.kill9();
    expect_every_node_unready(&deployment).await;
    deployment.redis.restart_empty().await;
    expect_every_node_ready(&deployment).await;

    let after = publish_from_every_node(&deployment, "f", "new history").await;
    for follower in &mut followers {
        assert_reset(&follower.reset().await, "f", "history_lost");
        for (id, data) in &after {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }
    for (index, transport) in Transport::ALL.into_iter().enumerate() {
        let url = deployment.node(index).base();
        let mut follower = Follower::start(transport, &url, &["f"], Some(&pre_kill_cursor)).await;
        assert_reset(&follower.reset().await, "f", "history_lost");
        for (id, data) in &after {
            assert_envelope(&follower.message().await, "f", id, data);
        }
    }
}

/// How many nodes are subscribed to `topic`'s channel (`PUBSUB NUMSUB`).
async fn channel_subscribers(redis: &RedisServer, topic: &str) -> usize {
    let reply = redis
        .cli(&["PUBSUB", "NUMSUB", &format!("sb:{{{topic}}}:c")])
        .await;
    // The channel, then its count.
    let count = reply.lines().nth(1).unwrap_or("0");
    count.parse().expect("a count")
}

/// Redis drops every node's pub/sub connection: each node connects again and subscribes again
/// to the channels of the topics it has subscribers for.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_subscribe_again_after_their_pubsub_connections_are_killed() {
    let deployment = busy_deployment(RedisOptions::new()).await;
    let mut followers = follow_everywhere(&deployment, &["k"]).await;
    let wait_for_three = || async {
        let started = Instant::now();
        while channel_subscribers(&deployment.redis, "k").await != 3 {
            assert!(
                started.elapsed() < READY_LIMIT,
                "not every node subscribed to k's channel"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for_three().await;
    let killed = deployment
        .redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await;
    assert_eq!(killed, "3", "one pub/sub connection per node");
    wait_for_three().await;

    let (id, data) = publish_to(deployment.node(2), "k", json!("after")).await;
    for follower in &mut followers {
        assert_envelope(&follower.message().await, "k", &id, &data);
    }
}

/// `publishers` tasks publish `each` messages apiece on `topics`, each message on the next node
/// and transport in turn, with `size` bytes of padding; returns what they published.
fn spawn_publishers(
    deployment: &Deployment<RedisServer>,
    topics: &'static [&'static str],
    publishers: usize,
    each: usize,
    size: usize,
) -> Vec<tokio::task::JoinHandle<Ledger>> {
    let bases: Vec<String> = deployment.endpoints().iter().map(|n| n.base()).collect();
    (0..publishers)
        .map(|publisher| {
            let bases = bases.clone();
            tokio::spawn(async move {
                let mut ledger = Ledger::new();
                for n in 0..each {
                    let turn = publisher + n;
                    let topic = topics[turn % topics.len()];
                    let transport = Transport::ALL[turn % Transport::ALL.len()];
                    let base = &bases[(turn / Transport::ALL.len()) % bases.len()];
                    let data = json!({"p": publisher, "n": n, "pad": "x".repeat(size)});
                    let id = transport.publish(base, topic, data).await;
                    ledger.record(topic, &id);
                }
                ledger
            })
        })
        .collect()
}

/// What `publishers` published.
async fn join_publishers(publishers: Vec<tokio::task::JoinHandle<Ledger>>) -> Ledger {
    let mut ledger = Ledger::new();
    for publisher in publishers {
        ledger.extend(publisher.await.expect("a publisher failed"));
    }
    ledger
}

/// Publishes one last message on each topic, records it, and returns their ids.
async fn publish_last(
    deployment: &Deployment<RedisServer>,
    topics: &[&str],
    ledger: &mut Ledger,
) -> Vec<String> {
    let mut last = Vec::new();
    for topic in topics {
        let (id, _) = publish_to(deployment.node(0), topic, json!("last")).await;
        ledger.record(topic, &id);
        last.push(id);
    }
    last
}

/// Every follower has every message of `ledger` exactly once, each topic's in order, and
/// nothing else happened to it; prints every follower's tally otherwise.
async fn expect_every_message_once(followers: &mut [Follower], ledger: &Ledger, last: &[String]) {
    let mut report = Vec::new();
    let mut exact = true;
    for follower in followers {
        let taken = follower.take_until(last).await;
        let tally = ledger.tally(&taken.messages);
        exact &= tally.is_exact() && taken.surprises.is_empty();
        report.push(format!("{follower:?}: {tally}; {:?}", taken.surprises));
    }
    assert!(
        exact,
        "{} messages published:\n{}",
        ledger.len(),
        report.join("\n")
    );
}

/// Messages flow from every node while Redis keeps killing every node's pub/sub connection:
/// every subscriber on every transport of every node gets every message exactly once, in
/// order (the nodes fill what their channels lost from the streams).
#[tokio::test(flavor = "multi_thread")]
async fn pubsub_connections_killed_while_messages_flow() {
    const TOPICS: &[&str] = &["ck/a", "ck/b"];
    let deployment = busy_deployment(RedisOptions::new()).await;
    let mut followers = follow_everywhere(&deployment, TOPICS).await;
    let publishers = spawn_publishers(&deployment, TOPICS, 3, 100, 0);

    let mut kills = 0;
    let mut connections_killed = 0;
    while !publishers.iter().all(|p| p.is_finished()) {
        assert!(kills < 2_000, "the publishers never finished");
        let killed = deployment
            .redis
            .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .await;
        connections_killed += killed.parse::<usize>().expect("a count");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        connections_killed >= 3,
        "only {connections_killed} pub/sub connections killed in {kills} tries"
    );

    let mut ledger = join_publishers(publishers).await;
    let last = publish_last(&deployment, TOPICS, &mut ledger).await;
    expect_every_message_once(&mut followers, &ledger, &last).await;
}

/// What Redis logs when it drops a client for its output buffer.
const OUTPUT_BUFFER_DROP: &str = "for overcoming of output buffer limits";

/// Redis drops a node's pub/sub connection itself: large messages published in bursts overrun
/// `client-output-buffer-limit pubsub`. Every subscriber still gets every message exactly
/// once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn pubsub_output_buffer_limit_drops_a_node_subscription() {
    const TOPICS: &[&str] = &["big"];
    let options = RedisOptions::new().config("client-output-buffer-limit", "pubsub 64kb 32kb 1");
    let deployment = Deployment::on_redis_with(options, 3, |config| {
        // Catching up after a drop queues many large messages at once: not a slow consumer.
        config.send_queue_bytes = 64 << 20;
    })
    .await;
    let mut followers = follow_everywhere(&deployment, TOPICS).await;
    // Four publishers at once, 60 KB a message: several arrive in one turn of Redis's event
    // loop, and their copies for a node's pub/sub connection overrun its 64 KB limit. In
    // rounds, until Redis says it dropped one (the first round nearly always does).
    let mut ledger = Ledger::new();
    for round in 1.. {
        let publishers = spawn_publishers(&deployment, TOPICS, 4, 10, 60_000);
        ledger.extend(join_publishers(publishers).await);
        if deployment.redis.log().contains(OUTPUT_BUFFER_DROP) {
            break;
        }
        assert!(
            round < 5,
            "Redis dropped no pub/sub connection for {} messages",
            ledger.len()
        );
    }
    let last = publish_last(&deployment, TOPICS, &mut ledger).await;
    expect_every_message_once(&mut followers, &ledger, &last).await;
}
