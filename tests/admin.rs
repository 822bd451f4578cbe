//! The admin API on a real gateway with real clients on every transport: topics (list, one,
//! delete with a reset to every subscriber, who then resume from the new history),
//! connections (counts, ids, topics, disconnecting each transport), limits, prefixes and
//! errors. The gateway has no admin key: on loopback the API is open.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_e2e::{
    Endpoint, Follower, Gateway, Got, TIMEOUT, Transport, assert_reset, expect_error, json_body,
    poll, publish, within,
};

const TRANSPORTS: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

async fn get(gw: &Gateway, path: &str) -> Value {
    let response = within("admin reply", reqwest::get(gw.http_url(path)))
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "GET {path}");
    json_body(response).await
}

async fn request(
    method: reqwest::Method,
    gw: &Gateway,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, gw.http_url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    within("admin reply", request.send())
        .await
        .expect("request")
}

/// Asks `path` until `ready` holds of the reply; the admin API is what the test observes.
async fn wait_for(gw: &Gateway, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    within(what, async {
        loop {
            let reply = get(gw, path).await;
            if ready(&reply) {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A poll held on `topic` (from `since`), answered within the test's limit.
fn held_poll(
    gw: &Gateway,
    topic: &str,
    since: Option<&str>,
) -> tokio::task::JoinHandle<switchboard_e2e::PollReply> {
    let mut url = gw.http_url(&format!("/poll?topic={topic}&timeout=4"));
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    tokio::spawn(async move { poll(&url).await })
}

#[tokio::test]
async fn topics_show_subscribers_retention_positions_and_rate() {
    let gw = Gateway::start_default().await;
    let ws = Follower::start(Transport::Ws, &gw.base(), &["room.a"], None).await;
    let sse = Follower::start(Transport::Sse, &gw.base(), &["room.a"], None).await;
    let held = held_poll(&gw, "room.a", None);
    let url = gw.http_url("/events?topic=room.b");
    let first = publish(&url, &json!({"n": 1})).await;
    let last = publish(&url, &json!({"n": 2})).await;
    publish(&gw.http_url("/events?topic=other"), &json!(0)).await;

    let listed = wait_for(&gw, "/admin/topics?prefix=room.", "a held poll", |r| {
        r["topics"][0]["subscribers"]["poll"] == 1
    })
    .await;
    assert_eq!(
        listed["topics"][0],
        json!({"topic":"room.a","subscribers":{"ws":1,"sse":1,"poll":1},
               "retained":{"messages":0,"bytes":0},"first":null,"last":null,"rate_per_second":0.0})
    );
    let b = &listed["topics"][1];
    assert_eq!(b["topic"], "room.b");
    assert_eq!(b["subscribers"], json!({"ws":0,"sse":0,"poll":0}));
    assert_eq!(b["retained"]["messages"], 2);
    assert!(b["retained"]["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!((&b["first"], &b["last"]), (&json!(first), &json!(last)));
    assert_eq!(b["rate_per_second"], 0.03);
    assert_eq!(listed["more"], false);
    assert_eq!(listed["topics"].as_array().map(Vec::len), Some(2));

    // Sorted by name, cut at the limit.
    let all = get(&gw, "/admin/topics?limit=2").await;
    let names: Vec<&str> = all["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["topic"].as_str().expect("name"))
        .collect();
    assert_eq!(
        (names, &all["more"]),
        (vec!["other", "room.a"], &json!(true))
    );

    // One topic: the same, with its last messages as clients receive them.
    let one = get(&gw, "/admin/topics/room.b").await;
    assert_eq!(one["retained"], b["retained"]);
    assert_eq!(one["recent"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        (&one["recent"][1]["id"], &one["recent"][1]["data"]),
        (&json!(last), &json!({"n": 2}))
    );
    drop((ws, sse));
    held.abort();
}

#[tokio::test]
async fn admin_errors_have_stable_codes() {
    let gw = Gateway::start_default().await;
    expect_error(
        request(reqwest::Method::GET, &gw, "/admin/topics/nobody", None).await,
        404,
        "unknown_topic",
    )
    .await;
    expect_error(
        request(reqwest::Method::DELETE, &gw, "/admin/topics/nobody", None).await,
        404,
        "unknown_topic",
    )
    .await;
    expect_error(
        request(reqwest::Method::GET, &gw, "/admin/topics/bad%20name", None).await,
        400,
        "bad_topic",
    )
    .await;
    for limit in ["0", "1001", "x"] {
        let path = format!("/admin/topics?limit={limit}");
        expect_error(
            request(reqwest::Method::GET, &gw, &path, None).await,
            400,
            "bad_request",
        )
        .await;
        let path = format!("/admin/connections?limit={limit}");
        expect_error(
            request(reqwest::Method::GET, &gw, &path, None).await,
            400,
            "bad_request",
        )
        .await;
    }
    expect_error(
        request(
            reqwest::Method::GET,
            &gw,
            "/admin/connections?topic=a%20b",
            None,
        )
        .await,
        400,
        "bad_topic",
    )
    .await;
    let disconnect = |body| request(reqwest::Method::POST, &gw, "/admin/disconnect", Some(body));
    expect_error(disconnect(json!({"who": 1})).await, 400, "bad_json").await;
    expect_error(disconnect(json!({})).await, 400, "bad_request").await;
    let none = json_body(disconnect(json!({"id": "ws-999"})).await).await;
    assert_eq!(none, json!({"disconnected": 0}));
    expect_error(
        request(reqwest::Method::PUT, &gw, "/admin/topics", None).await,
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_topic_resets_every_transport_which_then_resumes() {
    let gw = Gateway::start_default().await;
    let url = gw.http_url("/events?topic=doomed");
    let old = publish(&url, &json!("old")).await;
    let mut ws = Follower::start(Transport::Ws, &gw.base(), &["doomed"], Some(&old)).await;
    let mut sse = Follower::start(Transport::Sse, &gw.base(), &["doomed"], Some(&old)).await;
    let held = held_poll(&gw, "doomed", Some(&old));
    wait_for(
        &gw,
        "/admin/connections?topic=doomed",
        "three subscribers",
        |r| r["count"] == json!({"ws":1,"sse":1,"poll":1}),
    )
    .await;

    let deleted = request(reqwest::Method::DELETE, &gw, "/admin/topics/doomed", None).await;
    assert_eq!(json_body(deleted).await, json!({"deleted": "doomed"}));
    assert_reset(&ws.reset().await, "doomed", "deleted");
    assert_reset(&sse.reset().await, "doomed", "deleted");
    let reply = within("the held poll's answer", held)
        .await
        .expect("poll task");
    assert_eq!(reply.reset.len(), 1);
    assert_reset(&reply.reset[0], "doomed", "deleted");
    assert!(reply.messages.is_empty());

    // The history is gone; what follows is the new one, seen by everyone.
    let topic = get(&gw, "/admin/topics/doomed").await;
    assert_eq!(topic["retained"]["messages"], 0);
    let new = publish(&url, &json!("new")).await;
    assert!(new.ends_with("-1"), "the new history starts at 1: {new}");
    assert_eq!(ws.message().await["id"], new);
    assert_eq!(sse.message().await["id"], new);
    let next = poll(&gw.http_url(&format!(
        "/poll?topic=doomed&since={}&timeout=0",
        reply.cursor
    )))
    .await;
    assert_eq!(next.messages.len(), 1);
    assert_eq!(next.messages[0]["id"], new);
    // A client that comes back with a position of the old history is told it is gone.
    let late = poll(&gw.http_url(&format!("/poll?topic=doomed&since={old}&timeout=0"))).await;
    assert_reset(&late.reset[0], "doomed", "history_lost");
    let stats = get(&gw, "/admin/stats").await;
    assert!(stats["resets"].as_u64().expect("resets") >= 4, "{stats}");
}

#[tokio::test]
async fn connections_are_listed_and_each_transport_can_be_disconnected() {
    let gw = Gateway::start_default().await;
    let mut ws = Follower::start(Transport::Ws, &gw.base(), &["a", "b"], None).await;
    let mut sse = Follower::start(Transport::Sse, &gw.base(), &["a"], None).await;
    let held = held_poll(&gw, "b", None);
    let all = wait_for(&gw, "/admin/connections", "three connections", |r| {
        r["count"] == json!({"ws":1,"sse":1,"poll":1})
    })
    .await;
    assert_eq!(all["more"], false);
    let connections = all["connections"].as_array().expect("connections");
    let of = |transport: &str| {
        connections
            .iter()
            .find(|c| c["transport"] == transport)
            .unwrap_or_else(|| panic!("{transport} in {all}"))
            .clone()
    };
    let (ws_entry, sse_entry, poll_entry) = (of("ws"), of("sse"), of("poll"));
    assert_eq!(ws_entry["topics"], json!(["a", "b"]));
    assert_eq!(sse_entry["topics"], json!(["a"]));
    assert_eq!(poll_entry["topics"], json!(["b"]));
    for entry in [&ws_entry, &sse_entry, &poll_entry] {
        assert_eq!(entry["address"], "127.0.0.1");
        assert_eq!(entry["queued"], 0);
        assert!(entry["age_seconds"].as_f64().expect("age") < TIMEOUT.as_secs_f64() * 2.0);
    }
    // By topic, and cut at the limit.
    let on_a = get(&gw, "/admin/connections?topic=a").await;
    assert_eq!(on_a["count"], json!({"ws":1,"sse":1,"poll":0}));
    let one = get(&gw, "/admin/connections?limit=1").await;
    assert_eq!(
        (one["connections"].as_array().map(Vec::len), &one["more"]),
        (Some(1), &json!(true))
    );
    // The topics list counts the same subscribers.
    let topics = get(&gw, "/admin/topics").await;
    assert_eq!(
        topics["topics"][1]["subscribers"],
        json!({"ws":1,"sse":0,"poll":1})
    );

    let disconnect = |id: Value| {
        request(
            reqwest::Method::POST,
            &gw,
            "/admin/disconnect",
            Some(json!({"id": id})),
        )
    };
    assert_eq!(
        json_body(disconnect(ws_entry["id"].clone()).await).await,
        json!({"disconnected":1})
    );
    match ws.next_within(TIMEOUT).await {
        Got::Ended(reason) => assert!(reason.contains("4002"), "closed with 4002: {reason}"),
        other => panic!("the WebSocket should be closed, got {other:?}"),
    }
    assert_eq!(
        json_body(disconnect(sse_entry["id"].clone()).await).await,
        json!({"disconnected":1})
    );
    assert!(
        matches!(sse.next_within(TIMEOUT).await, Got::Ended(_)),
        "the stream should end"
    );
    assert_eq!(
        json_body(disconnect(poll_entry["id"].clone()).await).await,
        json!({"disconnected":1})
    );
    let reply = within("the held poll's answer", held)
        .await
        .expect("poll task");
    assert!(reply.messages.is_empty() && reply.reset.is_empty());
    wait_for(&gw, "/admin/connections", "no connections", |r| {
        r["count"] == json!({"ws":0,"sse":0,"poll":0})
    })
    .await;
    assert_eq!(get(&gw, "/admin/stats").await["disconnected"], 3);
}

#[tokio::test]
async fn the_stats_stream_counts_what_flows() {
    let gw = Gateway::start_default().await;
    let mut subscribers = Vec::new();
    for transport in TRANSPORTS {
        subscribers.push(Follower::start(transport, &gw.base(), &["busy"], None).await);
    }
    let mut stream = switchboard_e2e::SseClient::connect(&gw.http_url("/admin/stream")).await;
    let first = stream.next_event().await;
    assert_eq!(first.event, "stats");
    let before = first.json();
    for n in 0..5 {
        publish(&gw.http_url("/events?topic=busy"), &json!(n)).await;
    }
    for subscriber in &mut subscribers {
        for _ in 0..5 {
            subscriber.message().await;
        }
    }
    let after = within("a snapshot with the deliveries", async {
        loop {
            let stats = stream.next_event().await.json();
            let delivered = |s: &Value, t: &str| s["deliveries"][t].as_u64().unwrap_or(0);
            if ["ws", "sse", "poll"]
                .iter()
                .all(|t| delivered(&stats, t) >= delivered(&before, t) + 5)
            {
                return stats;
            }
        }
    })
    .await;
    assert_eq!(
        after["published"].as_u64(),
        Some(before["published"].as_u64().expect("published") + 5)
    );
    assert_eq!(after["topics"][0]["topic"], "busy");
    assert_eq!(after["connections"]["ws"], 1);
    assert_eq!(after["connections"]["sse"], 1);
    let page = within("the dashboard", reqwest::get(gw.http_url("/dashboard")))
        .await
        .expect("GET");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("page").contains("/admin/stream"));
}

/// With Redis, retained history is Redis's (the same from every node) and subscribers are each
/// node's own; a delete resets this node's subscribers at once (`deleted`) and other nodes'
/// before the new history's first message (`history_lost`).
#[tokio::test(flavor = "multi_thread")]
async fn on_redis_each_node_shows_its_subscribers_and_the_shared_history() {
    let deployment = switchboard_e2e::Deployment::on_redis(2).await;
    let (one, two) = (deployment.node(0), deployment.node(1));
    let mut ws = Follower::start(Transport::Ws, &one.base(), &["shared"], None).await;
    let mut sse = Follower::start(Transport::Sse, &two.base(), &["shared"], None).await;
    let url = one.http_url("/events?topic=shared");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(publish(&url, &json!(n)).await);
    }
    for id in &ids {
        assert_eq!(&ws.message().await["id"], id);
        assert_eq!(&sse.message().await["id"], id);
    }
    let get_on = |node: &Gateway, path: &str| {
        let url = node.http_url(path);
        async move {
            let response = within("admin reply", reqwest::get(url)).await.expect("GET");
            assert_eq!(response.status(), 200);
            json_body(response).await
        }
    };
    let on_one = get_on(one, "/admin/topics/shared").await;
    let on_two = get_on(two, "/admin/topics/shared").await;
    assert_eq!(on_one["subscribers"], json!({"ws":1,"sse":0,"poll":0}));
    assert_eq!(on_two["subscribers"], json!({"ws":0,"sse":1,"poll":0}));
    for topic in [&on_one, &on_two] {
        assert_eq!(topic["retained"]["messages"], 3);
        assert!(topic["retained"]["bytes"].as_u64().expect("bytes") > 0);
        assert_eq!(
            (&topic["first"], &topic["last"]),
            (&json!(ids[0]), &json!(ids[2]))
        );
        let recent: Vec<&Value> = topic["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .map(|m| &m["id"])
            .collect();
        let expected: Vec<Value> = ids.iter().map(|id| json!(id)).collect();
        assert_eq!(recent, expected.iter().collect::<Vec<_>>());
        assert_eq!(topic["recent"][2]["data"], 2);
    }
    let listed = get_on(two, "/admin/topics").await;
    assert_eq!(listed["topics"][0]["topic"], "shared");

    let deleted = request(reqwest::Method::DELETE, one, "/admin/topics/shared", None).await;
    assert_eq!(json_body(deleted).await, json!({"deleted": "shared"}));
    assert_reset(&ws.reset().await, "shared", "deleted");
    assert_eq!(
        get_on(two, "/admin/topics/shared").await["retained"]["messages"],
        0
    );
    let new = publish(&url, &json!("new")).await;
    assert!(new.ends_with("-1"), "the new history starts at 1: {new}");
    assert_eq!(ws.message().await["id"], new);
    assert_reset(&sse.reset().await, "shared", "history_lost");
    assert_eq!(sse.message().await["id"], new);
    expect_error(
        request(reqwest::Method::DELETE, two, "/admin/topics/never", None).await,
        404,
        "unknown_topic",
    )
    .await;
}
