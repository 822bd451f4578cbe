//! `GET /metrics`, the admin listener and its key, request ids and what the logs may carry.
//!
//! A scrape taken while traffic flows on every transport passes `promtool check metrics` with
//! no findings, and its counters are exactly what the test did; the admin routes are served
//! only where and to whom they should be; JSON log lines carry the request id of the
//! `X-Request-Id` header, which is taken from trusted proxies only; no token or key reaches
//! the logs; a `/readyz` 503 is not logged as an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::{
    Deployment, Endpoint, Gateway, NodeProcess, SseClient, TIMEOUT, WsClient, expect_error,
    json_body, poll, publish, switchboard_bin, within,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The series of a scrape: `name{labels}` as written, and its value.
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("`series value`");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// `GET /metrics` at `base`, asserting a 200 in the Prometheus text format.
async fn scrape(base: &str) -> String {
    let response = within(
        "a scrape",
        reqwest::Client::new().get(format!("{base}/metrics")).send(),
    )
    .await
    .expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET {base}/metrics");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.expect("the scrape")
}

/// Waits until the scrape at `base` shows `name` at `value`.
async fn wait_for(base: &str, name: &str, value: f64) -> BTreeMap<String, f64> {
    wait_until(base, name, |now| now == Some(value)).await
}

/// Waits until the scrape at `base` shows `name` with a value that `good` accepts.
async fn wait_until(
    base: &str,
    name: &str,
    good: impl Fn(Option<f64>) -> bool,
) -> BTreeMap<String, f64> {
    within(&format!("{name} to change"), async {
        loop {
            let now = series(&scrape(base).await);
            if good(now.get(name).copied()) {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Runs `promtool check metrics` on `text`; panics on any finding, lint included.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; make test-deps installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool ran");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {:?}\n{findings}\non:\n{text}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_during_traffic_passes_promtool_and_counts_what_happened() {
    let gw = Gateway::start_default().await;
    let base = gw.base();
    let mut ws = WsClient::connect(&gw.ws_url("/ws?topic=m")).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut sse = SseClient::connect(&gw.http_url("/events?topic=m")).await;
    assert_eq!(sse.next_event().await.event, "subscribed");

    // A poll held on a topic of its own, and traffic on `m` from every transport, while
    // scrapes are taken.
    let held_url = gw.http_url("/poll?topic=held&timeout=4");
    let held = tokio::spawn(async move { poll(&held_url).await });
    wait_for(&base, r#"switchboard_connections{transport="poll"}"#, 1.0).await;
    let flow = tokio::spawn({
        let url = gw.http_url("/events?topic=m");
        async move {
            for n in 0..50 {
                publish(&url, &json!(n)).await;
            }
        }
    });
    let mut scrapes = 0;
    while !flow.is_finished() || scrapes == 0 {
        promtool(&scrape(&base).await);
        scrapes += 1;
    }
    flow.await.expect("the flow of publishes");
    for n in 0..3 {
        publish(&gw.http_url("/events?topic=m"), &json!(n)).await;
    }
    for n in 0..2 {
        publish(&gw.http_url("/poll?topic=m"), &json!(n)).await;
    }
    ws.publish("m", json!("over ws")).await;
    publish(&gw.http_url("/poll?topic=held"), &json!("for the poll")).await;
    assert_eq!(held.await.expect("the held poll").messages.len(), 1);
    for _ in 0..56 {
        ws.message().await;
        sse.message().await;
    }
    // Refusals: one over HTTP, one in a WebSocket error frame.
    let bad = reqwest::get(gw.http_url("/poll?topic=a%20b"))
        .await
        .expect("GET");
    expect_error(bad, 400, "bad_topic").await;
    ws.send(json!({"type": "nonsense"})).await;
    assert_eq!(ws.next_of("error").await["code"], "unknown_type");
    // A position past the end of `m`'s history: a `history_lost` reset, then all of `m`.
    let last = ws_last_id(&mut ws).await;
    let (prefix, _) = last.rsplit_once('-').expect("tag-epoch-seq");
    let reset = poll(&gw.http_url(&format!("/poll?topic=m&since={prefix}-999&timeout=0"))).await;
    assert_eq!(reset.reset.len(), 1, "{reset:?}");
    assert_eq!(reset.messages.len(), 56);

    let text = scrape(&base).await;
    promtool(&text);
    let got = series(&text);
    let expected = [
        (
            r#"switchboard_messages_published_total{transport="sse"}"#,
            53.0,
        ),
        (
            r#"switchboard_messages_published_total{transport="poll"}"#,
            3.0,
        ),
        (
            r#"switchboard_messages_published_total{transport="ws"}"#,
            1.0,
        ),
        ("switchboard_publish_duration_seconds_count", 57.0),
        (r#"switchboard_deliveries_total{transport="ws"}"#, 56.0),
        (r#"switchboard_deliveries_total{transport="sse"}"#, 56.0),
        (r#"switchboard_deliveries_total{transport="poll"}"#, 57.0),
        (
            r#"switchboard_connections_opened_total{transport="ws"}"#,
            1.0,
        ),
        (
            r#"switchboard_connections_opened_total{transport="sse"}"#,
            1.0,
        ),
        (
            r#"switchboard_connections_opened_total{transport="poll"}"#,
            1.0,
        ),
        (r#"switchboard_connections{transport="ws"}"#, 1.0),
        (r#"switchboard_connections{transport="sse"}"#, 1.0),
        (r#"switchboard_connections{transport="poll"}"#, 0.0),
        (
            r#"switchboard_connections_closed_total{reason="normal",transport="poll"}"#,
            1.0,
        ),
        ("switchboard_poll_hold_seconds_count", 1.0),
        (r#"switchboard_poll_hold_seconds_bucket{le="+Inf"}"#, 1.0),
        (r#"switchboard_rejected_total{code="bad_topic"}"#, 1.0),
        (r#"switchboard_rejected_total{code="unknown_type"}"#, 1.0),
        (r#"switchboard_resets_total{reason="history_lost"}"#, 1.0),
        (r#"switchboard_resets_total{reason="retention"}"#, 0.0),
        ("switchboard_topics", 2.0),
        ("switchboard_retained_messages", 57.0),
        ("switchboard_broker_up", 1.0),
        (r#"switchboard_evictions_total{cause="count"}"#, 0.0),
        (
            r#"switchboard_slow_consumer_disconnects_total{cause="queue_full"}"#,
            0.0,
        ),
    ];
    for (name, value) in expected {
        assert_eq!(got.get(name), Some(&value), "{name} in\n{text}");
    }
    assert!(got["switchboard_retained_bytes"] > 0.0);
    // Every refusal counted is one the test made.
    let rejected: f64 = got
        .iter()
        .filter(|(name, _)| name.starts_with("switchboard_rejected_total"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(rejected, 2.0, "{text}");

    // A client that leaves is a normal close.
    ws.close().await;
    wait_for(
        &base,
        r#"switchboard_connections_closed_total{reason="normal",transport="ws"}"#,
        1.0,
    )
    .await;
}

/// The id of the last message `ws` delivered, from a fresh `subscribe` of `m` with no cursor.
async fn ws_last_id(ws: &mut WsClient) -> String {
    let subscribed = ws.subscribe(&["m"], None).await;
    subscribed["positions"]["m"]
        .as_str()
        .expect("a position")
        .to_owned()
}

/// With a data directory, the store's commits and retained bytes are series of their own; a
/// disk publish is no Redis round trip.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_data_directory_the_store_series_count_its_commits() {
    let dir =
        std::env::temp_dir().join(format!("switchboard-metrics-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gw = Gateway::start(Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    })
    .await;
    let base = gw.base();
    // A new directory's first commit records when it was made.
    let first = wait_until(&base, "switchboard_store_commits_total", |commits| {
        commits == Some(1.0)
    })
    .await;
    assert_eq!(first["switchboard_store_retained_bytes"], 0.0);
    let commits_before = first["switchboard_store_commits_total"];
    // One at a time: each publish is answered once its own commit is durable.
    for n in 0..5 {
        publish(&gw.http_url("/events?topic=d"), &json!(n)).await;
    }
    let text = scrape(&base).await;
    promtool(&text);
    let got = series(&text);
    assert_eq!(
        got["switchboard_store_commits_total"] - commits_before,
        5.0,
        "{text}"
    );
    assert!(got["switchboard_store_retained_bytes"] > 0.0, "{text}");
    assert_eq!(got["switchboard_publish_duration_seconds_count"], 5.0);
    assert!(
        !text.contains("switchboard_broker_round_trip_seconds"),
        "a disk publish is not a Redis round trip:\n{text}"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_redis_the_broker_series_follow_the_link() {
    let mut deployment = Deployment::on_redis(2).await;
    let (subscribing, publishing) = (deployment.node(0).base(), deployment.node(1).base());
    let mut ws = WsClient::connect(&deployment.node(0).ws_url("/ws?topic=r")).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    for n in 0..3 {
        publish(&format!("{publishing}/events?topic=r"), &json!(n)).await;
    }
    for _ in 0..3 {
        ws.message().await;
    }
    let text = scrape(&publishing).await;
    promtool(&text);
    let got = series(&text);
    assert_eq!(
        got["switchboard_broker_round_trip_seconds_count"], 3.0,
        "{text}"
    );
    assert_eq!(got["switchboard_publish_duration_seconds_count"], 3.0);
    assert_eq!(got["switchboard_broker_up"], 1.0);
    let text = scrape(&subscribing).await;
    promtool(&text);
    let got = series(&text);
    assert_eq!(got[r#"switchboard_deliveries_total{transport="ws"}"#], 3.0);
    assert_eq!(got["switchboard_topics"], 1.0, "live topics: {text}");
    assert_eq!(got["switchboard_broker_round_trip_seconds_count"], 0.0);
    let resyncs = got["switchboard_broker_resyncs_total"];

    // The link goes down and comes back: the node re-reads its live topics.
    deployment.redis.kill9();
    wait_for(&subscribing, "switchboard_broker_up", 0.0).await;
    deployment.redis.restart().await;
    wait_for(&subscribing, "switchboard_broker_up", 1.0).await;
    wait_until(&subscribing, "switchboard_broker_resyncs_total", |now| {
        now.is_some_and(|now| now > resyncs)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_off_are_not_served() {
    let gw = Gateway::start(Config {
        metrics: false,
        ..Config::default()
    })
    .await;
    let response = reqwest::get(gw.http_url("/metrics")).await.expect("GET");
    expect_error(response, 404, "not_found").await;
}

/// A gateway on loopback with its admin routes on `admin` (bound by the caller).
struct WithAdmin {
    main: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl WithAdmin {
    async fn start(admin_bind: &str, mut config: Config) -> WithAdmin {
        let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind(admin_bind).await.expect("bind admin");
        let main_addr = main.local_addr().expect("address");
        let mut admin_addr = admin.local_addr().expect("address");
        config.listen = main_addr;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(switchboard::server::run_with_admin(
            main,
            Some(admin),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        // Reached over loopback whatever it is bound to.
        admin_addr.set_ip([127, 0, 0, 1].into());
        WithAdmin {
            main: main_addr,
            admin: admin_addr,
            _stop: stop,
        }
    }

    async fn get(&self, on: SocketAddr, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("http://{on}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        within("an answer", request.send()).await.expect("GET")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_serves_the_admin_routes_and_nothing_else() {
    let gw = WithAdmin::start("127.0.0.1:0", Config::default()).await;
    let on_main = gw.get(gw.main, "/metrics", &[]).await;
    expect_error(on_main, 404, "not_found").await;
    assert_eq!(gw.get(gw.admin, "/metrics", &[]).await.status(), 200);
    let not_admin = gw.get(gw.admin, "/events?topic=a", &[]).await;
    expect_error(not_admin, 404, "not_found").await;
    let healthz = gw.get(gw.main, "/healthz", &[]).await;
    assert_eq!(healthz.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_key_the_admin_routes_need_it() {
    let config = Config {
        admin_key: Some("s3cret-admin-key".parse().expect("a key")),
        ..Config::default()
    };
    // On the main listener (no admin_listen) and on an admin listener alike.
    let main_only = Gateway::start(config.clone()).await;
    let gw = WithAdmin::start("127.0.0.1:0", config).await;
    for url in [
        main_only.http_url("/metrics"),
        format!("http://{}/metrics", gw.admin),
    ] {
        let client = reqwest::Client::new();
        for wrong in [
            None,
            Some("Bearer s3cret-admin-ke"),
            Some("Basic s3cret-admin-key"),
        ] {
            let mut request = client.get(&url);
            if let Some(wrong) = wrong {
                request = request.header("authorization", wrong);
            }
            let response = request.send().await.expect("GET");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let id = response.headers()["x-request-id"].clone();
            let body = json_body(response).await;
            assert_eq!(body["error"]["code"], "unauthorized", "{wrong:?}: {body}");
            assert_eq!(body["error"]["request_id"], id.to_str().expect("text"));
        }
        let right = client
            .get(&url)
            .header("authorization", "Bearer s3cret-admin-key")
            .send()
            .await
            .expect("GET");
        assert_eq!(right.status(), 200, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_only_loopback_clients_on_a_loopback_address_get_in() {
    let config = Config {
        trusted_proxies: vec!["127.0.0.1".parse().expect("an address")],
        ..Config::default()
    };
    let gw = WithAdmin::start("127.0.0.1:0", config.clone()).await;
    assert_eq!(gw.get(gw.admin, "/metrics", &[]).await.status(), 200);
    // A remote client, as a trusted proxy on the same machine reports it.
    let proxied = gw
        .get(gw.admin, "/metrics", &[("x-forwarded-for", "203.0.113.7")])
        .await;
    expect_error(proxied, 403, "forbidden").await;
    // Bound to every interface: refused even to loopback clients.
    let open = WithAdmin::start("0.0.0.0:0", config).await;
    let refused = open.get(open.admin, "/metrics", &[]).await;
    expect_error(refused, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn x_request_id_is_taken_from_trusted_proxies_only() {
    let direct = Gateway::start_default().await;
    let behind = Gateway::start(Config {
        trusted_proxies: vec!["127.0.0.1".parse().expect("an address")],
        ..Config::default()
    })
    .await;
    let ask = |gw: &Gateway, id: &str| {
        reqwest::Client::new()
            .get(gw.http_url("/healthz"))
            .header("x-request-id", id)
            .send()
    };
    let ignored = ask(&direct, "from-the-client").await.expect("GET");
    let fresh = ignored.headers()["x-request-id"].to_str().expect("text");
    assert_ne!(fresh, "from-the-client");
    assert_eq!(fresh.len(), 16, "{fresh}");
    let kept = ask(&behind, "from-the-proxy-42").await.expect("GET");
    assert_eq!(kept.headers()["x-request-id"], "from-the-proxy-42");
    let unfit = ask(&behind, &"x".repeat(129)).await.expect("GET");
    assert_eq!(unfit.headers()["x-request-id"].len(), 16);
    // Two requests, two ids.
    let first = reqwest::get(direct.http_url("/healthz"))
        .await
        .expect("GET");
    let second = reqwest::get(direct.http_url("/healthz"))
        .await
        .expect("GET");
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"]
    );
}

/// The log lines of `node` that are JSON objects, once one of them satisfies `until`.
async fn json_lines_until(node: &NodeProcess, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    within_log(node, || {
        let lines: Vec<Value> = node
            .log()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect();
        lines.iter().any(&until).then_some(lines)
    })
    .await
}

/// Polls the node's log until `found` returns something.
async fn within_log<T>(node: &NodeProcess, found: impl Fn() -> Option<T>) -> T {
    let waited = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(found) = found() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("not in the log within {TIMEOUT:?}:\n{}", node.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_carry_the_request_id() {
    let node = NodeProcess::start(
        switchboard_bin!(),
        &["--log-format", "json", "--trusted-proxies", "127.0.0.1"],
    )
    .await;
    let stream = SseClient::open(
        reqwest::Client::new()
            .get(node.http_url("/events?topic=logged"))
            .header("x-request-id", "trace-me-7"),
    )
    .await;
    assert_eq!(stream.headers()["x-request-id"], "trace-me-7");
    let lines = json_lines_until(&node, |line| {
        line["fields"]["message"] == "sse stream opened"
    })
    .await;
    let opened = lines
        .iter()
        .find(|line| line["fields"]["message"] == "sse stream opened")
        .expect("found");
    assert_eq!(opened["span"]["request_id"], "trace-me-7", "{opened}");
    assert_eq!(opened["level"], "INFO");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_keys_never_reach_the_logs() {
    const SECRETS: [&str; 5] = [
        "secret-token-1",
        "secret-bearer-2",
        "secret-cookie-3",
        "secret-wrong-key-4",
        "secret-admin-key-5",
    ];
    // Debug level: every request's span and its start and end are logged.
    let node = NodeProcess::start_with_env(
        switchboard_bin!(),
        &["--admin-key", SECRETS[4], "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let client = reqwest::Client::new();
    let url = node.http_url(&format!(
        "/poll?topic=t&timeout=0&access_token={}",
        SECRETS[0]
    ));
    client
        .get(&url)
        .header("authorization", format!("Bearer {}", SECRETS[1]))
        .header("cookie", format!("session={}", SECRETS[2]))
        .send()
        .await
        .expect("GET");
    let refused = client
        .get(node.http_url("/metrics"))
        .header("authorization", format!("Bearer {}", SECRETS[3]))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 401);
    let last_id = refused.headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_owned();
    // Once the last request's lines are there, everything before them is.
    json_lines_until(&node, |line| line["span"]["request_id"] == last_id.as_str()).await;
    let log = node.log();
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unready_node_answering_readyz_logs_no_error() {
    // A Redis that is not there: the node serves, but is not ready.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let redis = format!("redis://{}", unused.local_addr().expect("address"));
    drop(unused);
    let node = NodeProcess::start_with_env(
        switchboard_bin!(),
        &["--redis", &redis, "--log-format", "json"],
        &[("RUST_LOG", "info,switchboard=debug,tower_http=debug")],
    )
    .await;
    let response = reqwest::get(node.http_url("/readyz")).await.expect("GET");
    assert_eq!(response.status(), 503);
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_owned();
    let lines = json_lines_until(&node, |line| {
        line["span"]["request_id"] == id.as_str()
            && line["fields"]["message"] == "finished processing request"
    })
    .await;
    let errors: Vec<&Value> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR" && l["span"]["request_id"] == id.as_str())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
