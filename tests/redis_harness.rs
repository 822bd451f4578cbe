//! The Redis harness itself (`tests/support/redis.rs`): real `redis-server`s on free ports that
//! start, answer, die with `kill -9`, come back with or without their data, and form a cluster.
//! The multi-node tests rely on each of these behaving as its name says. So do the node helpers
//! (`tests/support/nodes.rs`): several gateways on one Redis, stopped and restarted one at a time.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_e2e::{
    Endpoint, NodeProcess, Nodes, RedisCluster, RedisOptions, RedisServer, assert_serving,
    switchboard_bin, within,
};

#[tokio::test]
async fn a_server_answers_on_its_port_and_kill9_stops_it() {
    let mut redis = RedisServer::start(RedisOptions::new()).await;
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_ne!(redis.port(), 6379, "never the system Redis's port");
    assert_eq!(redis.cli(&["PING"]).await, "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]).await, "OK");
    assert_eq!(redis.cli(&["GET", "k"]).await, "v");
    assert_eq!(
        redis.cli(&["GET", "missing"]).await,
        "",
        "nil prints as nothing"
    );
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "save"]).await,
        "save\n",
        "no snapshots"
    );
    assert!(redis.is_running());

    redis.kill9();
    assert!(!redis.is_running());
    assert!(
        refuses_connections(redis.addr()).await,
        "a killed Redis still listens"
    );
    assert!(redis.try_cli(&["PING"]).await.is_err());
}

#[tokio::test]
async fn two_servers_get_ports_and_directories_of_their_own() {
    let one = RedisServer::start(RedisOptions::new()).await;
    let two = RedisServer::start(RedisOptions::new()).await;
    assert_ne!(one.port(), two.port());
    assert_ne!(one.dir(), two.dir());
    one.cli(&["SET", "who", "one"]).await;
    assert_eq!(two.cli(&["GET", "who"]).await, "");
}

#[tokio::test]
async fn restart_brings_back_what_the_append_only_file_holds() {
    let options = RedisOptions::new()
        .appendonly(true)
        // Every write is on disk before its reply, so kill -9 right after loses nothing.
        .config("appendfsync", "always");
    let mut redis = RedisServer::start(options).await;
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "appendonly"]).await,
        "appendonly\nyes"
    );
    assert_eq!(redis.cli(&["SET", "kept", "across kill -9"]).await, "OK");
    let port = redis.port();

    redis.kill9();
    redis.restart().await;
    assert_eq!(redis.port(), port, "same port after restart");
    assert_eq!(redis.cli(&["GET", "kept"]).await, "across kill -9");

    // restart() of a running server kills it first.
    redis.restart().await;
    assert_eq!(redis.cli(&["GET", "kept"]).await, "across kill -9");

    redis.restart_empty().await;
    assert_eq!(redis.port(), port, "same port after restart_empty");
    assert_eq!(
        redis.cli(&["GET", "kept"]).await,
        "",
        "restart_empty wipes the data"
    );
    assert_eq!(redis.cli(&["DBSIZE"]).await, "0");
}

#[tokio::test]
async fn without_persistence_a_restart_loses_everything() {
    let mut redis = RedisServer::start(RedisOptions::new()).await;
    redis.cli(&["SET", "gone", "soon"]).await;
    redis.restart().await;
    assert_eq!(redis.cli(&["DBSIZE"]).await, "0");
}

#[tokio::test]
async fn extra_settings_reach_the_server() {
    let options = RedisOptions::new().config("client-output-buffer-limit", "pubsub 1mb 512kb 10");
    let redis = RedisServer::start(options).await;
    let limits = redis
        .cli(&["CONFIG", "GET", "client-output-buffer-limit"])
        .await;
    assert!(
        limits.contains("pubsub 1048576 524288 10"),
        "client-output-buffer-limit: {limits}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_comes_up_and_serves_keys_in_every_slot_range() {
    let cluster = within_start(RedisCluster::start(3)).await;
    assert_eq!(cluster.urls().len(), 3);
    for node in cluster.nodes() {
        let info = node.cli(&["CLUSTER", "INFO"]).await;
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_size:3"), "three masters: {info}");
    }

    // Enough keys that every master holds some: their slots are spread over all of them.
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        assert_eq!(
            cluster.cli(&["SET", key, &format!("value of {key}")]).await,
            "OK"
        );
    }
    for key in &keys {
        assert_eq!(cluster.cli(&["GET", key]).await, format!("value of {key}"));
    }
    for node in cluster.nodes() {
        let held: usize = node
            .cli(&["DBSIZE"])
            .await
            .parse()
            .expect("DBSIZE is a number");
        assert!(held > 0, "node on port {} holds no key", node.port());
    }

    let nodes = Nodes::on_cluster(&cluster, 2).await;
    for index in 0..nodes.len() {
        assert_eq!(nodes.config(index).redis_cluster, cluster.urls());
        assert_eq!(nodes.config(index).redis, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cluster_node_comes_back_with_its_data() {
    let options = RedisOptions::new()
        .appendonly(true)
        .config("appendfsync", "always");
    let mut cluster = within_start(RedisCluster::start_with(3, options)).await;
    assert_eq!(cluster.cli(&["SET", "survivor", "yes"]).await, "OK");
    let mut owner = None;
    for (index, node) in cluster.nodes().iter().enumerate() {
        if node.cli(&["DBSIZE"]).await == "1" {
            owner = Some(index);
        }
    }
    let owner = owner.expect("one node holds the key");

    cluster.node_mut(owner).kill9();
    cluster.node_mut(owner).restart().await;
    cluster.wait_ok().await;
    assert_eq!(cluster.cli(&["GET", "survivor"]).await, "yes");
}

// --- Gateway nodes ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn nodes_share_one_redis_and_stop_and_restart_one_at_a_time() {
    let redis = RedisServer::start(RedisOptions::new()).await;
    let mut nodes = Nodes::on_redis(&redis, 3).await;
    assert_eq!(nodes.len(), 3);
    let addrs = nodes.addrs();
    assert!(
        addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2],
        "a port each: {addrs:?}"
    );
    for index in 0..3 {
        assert_eq!(nodes.config(index).redis, Some(redis.url()));
        assert_serving(&nodes.node(index).base()).await;
    }

    nodes.stop(1).await;
    assert!(!nodes.is_running(1));
    assert!(
        refuses_connections(nodes.addr(1)).await,
        "node 1 still listens"
    );
    assert_eq!(nodes.running().count(), 2);
    assert_serving(&nodes.node(0).base()).await;
    assert_serving(&nodes.node(2).base()).await;

    nodes.restart(1).await;
    assert_eq!(nodes.node(1).addr(), addrs[1], "back on its port");
    assert_serving(&nodes.node(1).base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_process_serves_dies_with_kill9_and_comes_back_on_its_port() {
    let redis = RedisServer::start(RedisOptions::new()).await;
    let mut node = NodeProcess::start(
        switchboard_bin!(),
        &["--redis", &redis.url(), "--shutdown-grace", "2s"],
    )
    .await;
    let addr = node.addr();
    assert_ne!(addr.port(), 0);
    assert_serving(&node.base()).await;

    node.kill9();
    assert!(!node.is_running());
    assert!(
        refuses_connections(addr).await,
        "a killed node still listens"
    );

    node.restart().await;
    assert_eq!(node.addr(), addr, "back on its port");
    assert_serving(&node.base()).await;

    node.sigterm();
    let exit = node.exit_within(Duration::from_secs(10)).await;
    assert!(exit.success(), "SIGTERM: exited with {exit}");
    assert!(node.log().contains("SIGTERM"), "the log: {}", node.log());
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    within("a connection attempt", tokio::net::TcpStream::connect(addr))
        .await
        .is_err()
}

/// Cluster start-up has bounds of its own ([`switchboard_e2e::redis::START_LIMIT`] per step);
/// this bounds the whole.
async fn within_start<F: std::future::Future>(start: F) -> F::Output {
    switchboard_e2e::within_for(Duration::from_secs(90), "the cluster to start", start).await
}
