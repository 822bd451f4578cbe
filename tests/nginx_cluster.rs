//! Behind nginx with several nodes: the shipped site file `deploy/nginx-cluster.conf`, served by a
//! real nginx in front of three in-process gateways (its upstream `server` lines and listen port
//! rewritten, see `tests/support/nginx.rs`). The shared settings (timeouts, headers, buffering)
//! are checked for both site files in `tests/nginx.rs`.
//!
//! The nodes here do not share a Redis: each has its own topics, which shows where nginx sent
//! each request. Delivery across nodes is for the tests of the Redis broker.

use serde_json::{Value, json};
use switchboard_e2e::Transport::{Sse, Ws};
use switchboard_e2e::nginx::{self, Nginx, directive_values};
use switchboard_e2e::{
    Endpoint, Nodes, Subscriber, assert_envelope, json_body, poll, publish, within,
};

/// Three independent nodes and nginx in front of them. nginx is declared first, so it is killed
/// first.
struct Stack {
    nginx: Nginx,
    nodes: Nodes,
}

impl Stack {
    async fn start() -> Stack {
        let nodes = Nodes::start(3, |_| {}).await;
        let nginx = Nginx::start_cluster(&nodes.addrs()).await;
        Stack { nginx, nodes }
    }

    /// How many messages node `index` has accepted (its `/healthz` counter).
    async fn published_on(&self, index: usize) -> u64 {
        let url = self.nodes.node(index).http_url("/healthz");
        let response = within("healthz", reqwest::Client::new().get(&url).send())
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let health = json_body(response).await;
        health["published"]
            .as_u64()
            .unwrap_or_else(|| panic!("no `published` count in {health}"))
    }
}

/// The upstream spreads requests: round-robin with no affinity, connections kept alive, and
/// retries that never resend a publish.
#[test]
fn cluster_site_file_balances_without_sticky_sessions() {
    let site = nginx::cluster_site_file();
    for affinity in ["ip_hash", "hash", "sticky", "least_conn", "random"] {
        assert!(
            directive_values(&site, affinity).is_empty(),
            "{affinity} in the cluster site file: nodes must take turns"
        );
    }
    // The upstream's `server` lines, not the `server {` block.
    let nodes: Vec<String> = directive_values(&site, "server")
        .into_iter()
        .filter(|value| value != "{")
        .collect();
    assert!(nodes.len() >= 2, "several nodes: {nodes:?}");
    assert_eq!(
        directive_values(&site, "keepalive").len(),
        1,
        "upstream keepalive"
    );
    let retries = directive_values(&site, "proxy_next_upstream");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(
        !retries[0].contains("non_idempotent"),
        "a publish must never be sent twice: {retries:?}"
    );
    assert!(retries[0].split_whitespace().any(|w| w == "error"));
}

/// What the tests run: the shipped file with local nodes in place of its own, and nothing else
/// changed but the listen port.
#[test]
fn rewriting_puts_local_nodes_in_the_upstream() {
    let site = nginx::cluster_site_file();
    let rewritten = nginx::rewrite_cluster_site(&site, 4000, &[4001, 4002], None);
    let nodes: Vec<String> = directive_values(&rewritten, "server")
        .into_iter()
        .filter(|value| value != "{")
        .collect();
    let parameters = directive_values(&site, "server")[0]
        .split_once(' ')
        .map(|(_, parameters)| format!(" {parameters}"))
        .unwrap_or_default();
    assert_eq!(
        nodes,
        [
            format!("127.0.0.1:4001{parameters}"),
            format!("127.0.0.1:4002{parameters}")
        ],
        "{rewritten}"
    );
    assert_eq!(
        directive_values(&rewritten, "listen"),
        ["127.0.0.1:4000 default_server"]
    );
    let rest = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| {
                let code = line.trim_start();
                !(code.starts_with("listen ")
                    || code.starts_with("access_log ")
                    || code.starts_with("server ") && code != "server {")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        rest(&rewritten),
        rest(&site),
        "only the listen, server and access_log lines may change"
    );
}

/// `deploy/docker-compose.yml` runs the cluster site file as is, so the two must agree: its
/// services are the nodes the upstream names, on the port the image listens on, and the proxy
/// the nodes trust is nginx's address. (Docker is not on the test machines: this reads the text.)
#[test]
fn compose_file_runs_the_nodes_the_cluster_site_file_names() {
    let read = |file: &str| {
        let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    };
    let compose = read("docker-compose.yml");
    let dockerfile = read("Dockerfile");
    let value_of = |key: &str| -> Vec<String> {
        compose
            .lines()
            .filter_map(|line| line.trim().strip_prefix(key))
            .map(|value| value.trim().to_owned())
            .collect()
    };

    let site = nginx::cluster_site_file();
    let nodes: Vec<String> = directive_values(&site, "server")
        .into_iter()
        .filter(|value| value != "{")
        .collect();
    for node in &nodes {
        let address = node.split_whitespace().next().unwrap_or_default();
        let (name, port) = address
            .split_once(':')
            .unwrap_or_else(|| panic!("node {node:?} has no port"));
        assert!(
            compose
                .lines()
                .any(|line| line == format!("  {name}: *gateway")),
            "no gateway service {name:?} in docker-compose.yml"
        );
        assert!(
            dockerfile.contains(&format!("SWITCHBOARD_LISTEN=0.0.0.0:{port}")),
            "the image does not listen on port {port}"
        );
    }
    assert_eq!(
        compose.matches(": *gateway").count(),
        nodes.len(),
        "every gateway service is in the upstream"
    );
    assert!(compose.contains("./nginx-cluster.conf:/etc/nginx/conf.d/default.conf:ro"));
    assert_eq!(
        value_of("SWITCHBOARD_TRUSTED_PROXIES:"),
        value_of("ipv4_address:"),
        "the nodes trust nginx's address"
    );
    assert!(compose.contains(r#"command: ["serve", "--redis", "redis://redis:6379"]"#));
}

/// Six publishes through nginx land two on each node.
#[tokio::test(flavor = "multi_thread")]
async fn requests_take_turns_on_every_node() {
    let stack = Stack::start().await;
    for n in 0..6 {
        publish(&stack.nginx.http_url("/events?topic=turns"), &json!(n)).await;
    }
    for index in 0..3 {
        assert_eq!(
            stack.published_on(index).await,
            2,
            "node {index} did not get its turns"
        );
    }
}

/// A stopped node is passed over: publishes (refused connections, so never sent twice) and polls
/// go to the others, and none fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_node_is_passed_over() {
    let mut stack = Stack::start().await;
    stack.nodes.stop(1).await;
    for n in 0..6 {
        publish(&stack.nginx.http_url("/poll?topic=over"), &json!(n)).await;
        poll(&stack.nginx.http_url("/poll?topic=over&timeout=0")).await;
    }
    let published = stack.published_on(0).await + stack.published_on(2).await;
    assert_eq!(published, 6, "every publish was accepted exactly once");
}

/// A WebSocket upgrade and an SSE stream go through to a node and deliver what is published on
/// it, and only that.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_and_sse_stream_from_a_node() {
    let stack = Stack::start().await;
    for transport in [Ws, Sse] {
        let topic = format!("stream/{transport:?}");
        let mut subscriber =
            Subscriber::open(transport, &stack.nginx.base(), &[&topic], None).await;
        // One message on each node: the subscriber's node is the one whose message arrives.
        let mut ids = Vec::new();
        for index in 0..3 {
            let url = stack
                .nodes
                .node(index)
                .http_url(&format!("/events?topic={topic}"));
            ids.push(publish(&url, &json!(index)).await);
        }
        let first = subscriber.message().await;
        let index = first["data"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or_else(|| panic!("not a node's message: {first}"));
        assert_envelope(&first, &topic, &ids[index], &Value::from(index));
        // Nothing from the other nodes came in between.
        let url = stack
            .nodes
            .node(index)
            .http_url(&format!("/events?topic={topic}"));
        let marker = publish(&url, &json!("marker")).await;
        assert_envelope(
            &subscriber.message().await,
            &topic,
            &marker,
            &json!("marker"),
        );
    }
}
