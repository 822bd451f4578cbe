//! `POST /publish`: many messages in one request, one reply line per message in order; each
//! message published or refused on its own; subscribers on every transport get them in order.

use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::auth::{Credentials, SECRET, subscribe, token};
use switchboard_e2e::{Endpoint, Gateway, Transport, within};

/// Posts `body` to `/publish` with `bearer` if given; the status and the reply's lines.
async fn post_batch(gateway: &Gateway, body: String, bearer: Option<&str>) -> (u16, Vec<Value>) {
    let mut request = reqwest::Client::new()
        .post(gateway.http_url("/publish"))
        .header("content-type", "application/x-ndjson")
        .body(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = within("batch reply", request.send())
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").cloned();
    let text = within("batch body", response.text()).await.expect("a body");
    if status == 200 {
        assert_eq!(
            content_type.expect("a content type"),
            "application/x-ndjson",
            "{text}"
        );
    }
    let lines = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    (status, lines)
}

#[tokio::test]
async fn a_batch_reaches_every_transport_in_order() {
    let gateway = Gateway::start_default().await;
    let mut subscribers = Vec::new();
    for transport in Transport::ALL {
        for topic in ["a", "b"] {
            let subscriber = subscribe(&gateway, transport, topic, None, &Credentials::None)
                .await
                .expect("subscribed");
            subscribers.push((topic, subscriber));
        }
    }
    let lines: Vec<Value> = (0..200)
        .map(|n| json!({"topic": if n % 3 == 0 { "b" } else { "a" }, "data": {"n": n}}))
        .collect();
    let body: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let (status, reply) = post_batch(&gateway, body, None).await;
    assert_eq!(status, 200);
    assert_eq!(reply.len(), lines.len());
    for (line, answer) in lines.iter().zip(&reply) {
        assert_eq!(answer["topic"], line["topic"], "{answer}");
        assert!(answer["id"].is_string(), "{answer}");
    }
    for (topic, subscriber) in &mut subscribers {
        for (line, answer) in lines
            .iter()
            .zip(&reply)
            .filter(|(l, _)| l["topic"] == *topic)
        {
            let got = subscriber.message().await;
            assert_eq!((&got["id"], &got["data"]), (&answer["id"], &line["data"]));
        }
    }
}

#[tokio::test]
async fn each_line_is_published_or_refused_on_its_own() {
    let gateway = Gateway::start(Config {
        max_message_bytes: 16,
        ..Config::default()
    })
    .await;
    let body = [
        r#"{"topic":"t","data":1}"#,
        "",
        "not json",
        r#"{"topic":"no spaces","data":2}"#,
        r#"{"topic":"t","data":"more than sixteen bytes"}"#,
        r#"{"topic":"t"}"#,
        r#"{"topic":"t","topic":"u","data":3}"#,
        r#"{"topic":"t","data":4,"extra":true}"#,
        r#"  {"topic":"t","data":{"last":true}}  "#,
    ]
    .join("\n");
    let (status, reply) = post_batch(&gateway, body, None).await;
    assert_eq!(status, 200);
    let codes: Vec<&str> = reply
        .iter()
        .map(|line| line["error"]["code"].as_str().unwrap_or("published"))
        .collect();
    assert_eq!(
        codes,
        [
            "published",
            "bad_json",
            "bad_topic",
            "payload_too_large",
            "bad_json",
            "bad_json",
            "bad_json",
            "published"
        ],
        "{reply:?}"
    );
    // Both published messages are retained, in order, and nothing else.
    let first = reply[0]["id"].as_str().expect("an id");
    let resumed =
        switchboard_e2e::poll(&gateway.http_url(&format!("/poll?topic=t&since={first}&timeout=0")))
            .await;
    assert_eq!(resumed.messages.len(), 1);
    assert_eq!(resumed.messages[0]["data"], json!({"last": true}));
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let gateway = Gateway::start(Config {
        max_batch_bytes: 1024,
        ..Config::default()
    })
    .await;
    let body = format!("{}\n", json!({"topic": "t", "data": "x".repeat(2000)}));
    let (status, reply) = post_batch(&gateway, body, None).await;
    assert_eq!(status, 413);
    assert_eq!(reply[0]["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn credentials_are_checked_line_by_line() {
    let gateway = Gateway::start(Config {
        jwt_secret: Some(SECRET.into()),
        publish_key: vec!["backend".into()],
        ..Config::default()
    })
    .await;
    let body = [
        r#"{"topic":"chat","data":1}"#,
        r#"{"topic":"admin","data":2}"#,
    ]
    .join("\n");
    let (_, anonymous) = post_batch(&gateway, body.clone(), None).await;
    assert_eq!(anonymous[0]["error"]["code"], "unauthorized");
    assert_eq!(anonymous[1]["error"]["code"], "unauthorized");
    let ann = token("ann", &[], &["chat"], 600);
    let (_, with_token) = post_batch(&gateway, body.clone(), Some(&ann)).await;
    assert!(with_token[0]["id"].is_string(), "{with_token:?}");
    assert_eq!(with_token[1]["error"]["code"], "forbidden");
    let (_, with_key) = post_batch(&gateway, body, Some("backend")).await;
    assert!(
        with_key.iter().all(|line| line["id"].is_string()),
        "{with_key:?}"
    );
    let (status, refused) = post_batch(&gateway, String::new(), Some("wrong")).await;
    assert_eq!(
        (status, &refused[0]["error"]["code"]),
        (401, &json!("unauthorized"))
    );
}
