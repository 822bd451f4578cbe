//! Every error of PROTOCOL.md's error table that a request can provoke on its own: the status
//! and `code`, and afterwards the gateway still serves. WebSocket error frames leave the
//! connection usable; an over-limit frame closes it with 1009.

use reqwest::{Client, Method};
use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::http::assert_serving;
use switchboard_e2e::ws::Closed;
use switchboard_e2e::{Endpoint, Gateway, WsClient, data_of, expect_error, poll, publish};
use tokio_tungstenite::tungstenite::Message;

/// `(method, path)` of every endpoint that takes a topic.
const TOPIC_ENDPOINTS: [(&str, &str); 4] = [
    ("POST", "/events"),
    ("POST", "/poll"),
    ("GET", "/events"),
    ("GET", "/poll"),
];

async fn send(gw: &Gateway, method: &str, path_and_query: &str) -> reqwest::Response {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = Client::new().request(method.clone(), gw.http_url(path_and_query));
    if method == Method::POST {
        request = request.body("x");
    }
    if path_and_query.starts_with("/poll") && method == Method::GET {
        request = request.query(&[("timeout", "0")]);
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_topic() {
    let gw = Gateway::start_default().await;
    let too_long = "x".repeat(129);
    for topic in [
        "a%20b",
        "",
        too_long.as_str(),
        "a%23b",
        "caf%C3%A9",
        "a%2Cb",
        "a%00",
    ] {
        for (method, path) in TOPIC_ENDPOINTS {
            let response = send(&gw, method, &format!("{path}?topic={topic}")).await;
            expect_error(response, 400, "bad_topic").await;
        }
    }
    assert_serving(&gw.base()).await;
    // The edges of the rule are accepted: 128 characters, every allowed character.
    let longest = "y".repeat(128);
    for topic in [longest.as_str(), "AZaz09._-:@/", "a"] {
        publish(&gw.http_url(&format!("/events?topic={topic}")), &json!(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_topic() {
    let gw = Gateway::start_default().await;
    for (method, path) in TOPIC_ENDPOINTS {
        expect_error(send(&gw, method, path).await, 400, "missing_topic").await;
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_topics_on_publish_is_bad_request() {
    let gw = Gateway::start_default().await;
    for path in ["/events", "/poll"] {
        let response = send(&gw, "POST", &format!("{path}?topic=a&topic=b")).await;
        expect_error(response, 400, "bad_request").await;
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cursor() {
    let gw = Gateway::start_default().await;
    let good = publish(&gw.http_url("/events?topic=c"), &json!(1)).await;
    // Longer than 8 KiB, though made of valid positions.
    let too_long = vec![good.as_str(); 8 * 1024 / good.len() + 2].join(".");
    assert!(too_long.len() > 8 * 1024);
    let client = Client::new();
    // (as a query parameter, as a header)
    let cursors = [
        ("%21bad%21", Some("!bad!")),
        ("%20", None),
        ("a%2Fb", Some("a/b")),
        (too_long.as_str(), Some(too_long.as_str())),
    ];
    for (in_query, in_header) in cursors {
        for path in ["/events", "/poll"] {
            let url = gw.http_url(&format!("{path}?topic=c&timeout=0&since={in_query}"));
            expect_error(
                client.get(url).send().await.expect("GET"),
                400,
                "bad_cursor",
            )
            .await;
        }
        let url = gw.http_url(&format!("/events?topic=c&lastEventId={in_query}"));
        expect_error(
            client.get(url).send().await.expect("GET"),
            400,
            "bad_cursor",
        )
        .await;
        if let Some(header) = in_header {
            let request = client
                .get(gw.http_url("/events?topic=c"))
                .header("last-event-id", header);
            expect_error(request.send().await.expect("GET"), 400, "bad_cursor").await;
        }
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_json_and_content_types() {
    let gw = Gateway::start_default().await;
    let client = Client::new();
    for path in ["/events", "/poll"] {
        let url = gw.http_url(&format!("{path}?topic=j"));
        for content_type in ["application/json", "application/json; charset=utf-8"] {
            let request = client
                .post(&url)
                .header("content-type", content_type)
                .body("{\"a\": ");
            expect_error(request.send().await.expect("POST"), 400, "bad_json").await;
        }
        // Text that is not UTF-8.
        let request = client
            .post(&url)
            .header("content-type", "text/plain")
            .body(vec![b'h', 0xff, 0xfe]);
        expect_error(request.send().await.expect("POST"), 400, "bad_request").await;
    }
    assert_serving(&gw.base()).await;

    // What is accepted: JSON with parameters, text without a content type.
    let start = poll(&gw.http_url("/poll?topic=j&timeout=0")).await.cursor;
    let request = client
        .post(gw.http_url("/events?topic=j"))
        .header("content-type", "application/json; charset=utf-8")
        .body(" {\"a\" : [1, 2]} ");
    assert_eq!(request.send().await.expect("POST").status(), 200);
    let request = client.post(gw.http_url("/poll?topic=j")).body("plain text");
    assert_eq!(request.send().await.expect("POST").status(), 200);
    let reply = poll(&gw.http_url(&format!("/poll?topic=j&since={start}&timeout=0"))).await;
    let data: Vec<Value> = reply.messages.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(
        data,
        [json!({"a": [1, 2]}), json!("plain text")],
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_poll_timeout() {
    let gw = Gateway::start_default().await;
    for timeout in ["abc", "-1", "1s", "0x10"] {
        let url = gw.http_url(&format!("/poll?topic=p&timeout={timeout}"));
        let response = Client::new().get(url).send().await.expect("GET");
        expect_error(response, 400, "bad_request").await;
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found() {
    let gw = Gateway::start_default().await;
    for path in ["/nope", "/events/x", "/wss"] {
        let response = Client::new()
            .get(gw.http_url(path))
            .send()
            .await
            .expect("GET");
        expect_error(response, 404, "not_found").await;
    }
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn method_not_allowed_lists_allowed_methods() {
    let gw = Gateway::start_default().await;
    let cases = [
        ("DELETE", "/events?topic=m", &["GET", "POST"][..]),
        ("PUT", "/poll?topic=m", &["GET", "POST"][..]),
        ("POST", "/ws", &["GET"][..]),
        ("POST", "/healthz", &["GET"][..]),
    ];
    for (method, path, allowed) in cases {
        let response = send(&gw, method, path).await;
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        for m in allowed {
            assert!(
                allow.split(',').any(|a| a.trim() == *m),
                "{method} {path}: Allow: {allow} lacks {m}"
            );
        }
        expect_error(response, 405, "method_not_allowed").await;
    }
    assert_serving(&gw.base()).await;
}

/// Sends `frame` on a fresh connection to a gateway with `max_message_bytes` = 1024 and
/// asserts the answer: an `error` frame with `code` echoing `reference` (if given). Then the
/// connection still answers a ping, the rejected frame subscribed and published nothing, and
/// the gateway serves another client.
async fn ws_rejects(frame: Message, code: &str, reference: Option<Value>) {
    let config = Config {
        max_message_bytes: 1024,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let start = poll(&gw.http_url("/poll?topic=ok&timeout=0")).await.cursor;
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    ws.send_raw(frame).await;
    let error = ws.next().await;
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("error"), &json!(code)),
        "expected an error frame {code}: {error}"
    );
    assert!(error["message"].is_string(), "no message: {error}");
    if let Some(reference) = reference {
        assert_eq!(error["ref"], reference, "ref of {error}");
    }
    ws.assert_alive().await;

    let subscribed = ws.subscribe(&["ok"], None).await;
    assert_eq!(subscribed["topics"], json!(["ok"]), "{subscribed}");
    let id = publish(&gw.http_url("/events?topic=ok"), &json!("after")).await;
    let message = ws.next().await;
    assert_eq!(
        (&message["type"], &message["id"], &message["data"]),
        (&json!("message"), &json!(id), &json!("after")),
        "the first frame after the subscription"
    );
    let reply = poll(&gw.http_url(&format!("/poll?topic=ok&since={start}&timeout=0"))).await;
    assert_eq!(
        data_of(&reply.messages),
        [json!("after")],
        "published on topic ok"
    );
    assert_serving(&gw.base()).await;
    WsClient::connect(&gw.ws_url("/ws"))
        .await
        .assert_alive()
        .await;
}

fn text(frame: Value) -> Message {
    Message::text(frame.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_bad_json() {
    ws_rejects(Message::text("{\"type\": "), "bad_json", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_unknown_type() {
    let frame = text(json!({"type": "shout", "ref": "u"}));
    ws_rejects(frame, "unknown_type", Some(json!("u"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_missing_data() {
    let frame = text(json!({"type": "publish", "topic": "ok", "ref": "m1"}));
    ws_rejects(frame, "bad_request", Some(json!("m1"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_missing_type() {
    ws_rejects(text(json!({"ref": "m2"})), "bad_request", Some(json!("m2"))).await;
}

/// A missing topic has its own code (`missing_topic`: "a request that needs a topic has none").
#[tokio::test(flavor = "multi_thread")]
async fn ws_missing_topic() {
    let frame = text(json!({"type": "publish", "data": 1, "ref": "m3"}));
    ws_rejects(frame, "missing_topic", Some(json!("m3"))).await;
    let frame = text(json!({"type": "subscribe", "ref": "m4"}));
    ws_rejects(frame, "missing_topic", Some(json!("m4"))).await;
}

/// A repeated key would otherwise be read as its last value: refused, whatever its value.
#[tokio::test(flavor = "multi_thread")]
async fn ws_duplicate_key() {
    let frame =
        Message::text(r#"{"type":"publish","topic":"ok","topic":"elsewhere","data":1,"ref":"d"}"#);
    ws_rejects(frame, "bad_request", Some(json!("d"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_ref_of_the_wrong_kind() {
    let frame = text(json!({"type": "ping", "ref": ["not", "a", "ref"]}));
    ws_rejects(frame, "bad_request", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_binary_frame() {
    let frame = Message::binary(b"{\"type\":\"ping\"}".to_vec());
    ws_rejects(frame, "bad_request", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_bad_topic() {
    let frame = text(json!({"type": "subscribe", "topics": ["ok", "a b"], "ref": 5}));
    ws_rejects(frame, "bad_topic", Some(json!(5))).await;
    let frame = text(json!({"type": "publish", "topic": "", "data": 1, "ref": "t"}));
    ws_rejects(frame, "bad_topic", Some(json!("t"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_bad_cursor() {
    let frame = text(json!({"type": "subscribe", "topics": ["ok"], "since": "!bad!", "ref": "c"}));
    ws_rejects(frame, "bad_cursor", Some(json!("c"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_payload_too_large() {
    let data = "x".repeat(1100);
    let frame = text(json!({"type": "publish", "topic": "ok", "data": data, "ref": "big"}));
    ws_rejects(frame, "payload_too_large", Some(json!("big"))).await;
}

/// A frame over `max_message_bytes` + 1 KiB closes the connection with 1009.
#[tokio::test(flavor = "multi_thread")]
async fn ws_frame_over_the_limit_closes_with_1009() {
    let config = Config {
        max_message_bytes: 1024,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    // Just under the frame limit: an error frame, not a close.
    let data = "x".repeat(1900);
    ws.send(json!({"type": "publish", "topic": "ok", "data": data}))
        .await;
    assert_eq!(ws.next().await["code"], "payload_too_large");

    ws.send_raw(Message::text("x".repeat(1024 + 1024 + 1)))
        .await;
    let (frames, closed) = ws.read_to_close().await;
    assert_eq!(
        closed,
        Closed::Code(1009),
        "frames before the close: {frames:?}"
    );
    assert_serving(&gw.base()).await;
    WsClient::connect(&gw.ws_url("/ws"))
        .await
        .assert_alive()
        .await;
}
