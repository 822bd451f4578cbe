//! Plain HTTP: publishing, long-polling and checking error replies.

use std::collections::BTreeMap;

use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::within;

/// Publishes `data` as `application/json` to `url` (`…/events?topic=T` or `…/poll?topic=T`);
/// asserts a `200 {"topic","id"}` reply and returns the message id.
pub async fn publish(url: &str, data: &Value) -> String {
    let response = within(
        "publish reply",
        reqwest::Client::new().post(url).json(data).send(),
    )
    .await
    .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    publish_reply(url, response).await
}

/// Publishes `text` as `text/plain` (it becomes a JSON string); returns the message id.
pub async fn publish_text(url: &str, text: &str) -> String {
    let request = reqwest::Client::new()
        .post(url)
        .header("content-type", "text/plain")
        .body(text.to_owned());
    let response = within("publish reply", request.send())
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    publish_reply(url, response).await
}

async fn publish_reply(url: &str, response: Response) -> String {
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "POST {url} answered {body}");
    let id = body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("POST {url}: no string `id` in {body}"));
    assert!(!id.is_empty(), "POST {url}: empty id in {body}");
    if let Some(topic) = topic_of(url) {
        assert_eq!(body["topic"], topic.as_str(), "POST {url}: topic in {body}");
    }
    id.to_owned()
}

fn topic_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let mut topics = parsed.query_pairs().filter(|(k, _)| k == "topic");
    let (_, topic) = topics.next()?;
    Some(topic.into_owned())
}

/// A long-poll reply.
#[derive(Debug, Clone, Deserialize)]
pub struct PollReply {
    pub messages: Vec<Value>,
    pub cursor: String,
    pub positions: BTreeMap<String, String>,
    pub reset: Vec<Value>,
    pub more: bool,
}

/// `GET url` on `/poll`; asserts `200` and parses the reply. The URL carries `topic`, `since`
/// and `timeout`; keep `timeout` below [`crate::TIMEOUT`].
pub async fn poll(url: &str) -> PollReply {
    let response = within("poll reply", reqwest::Client::new().get(url).send())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "GET {url} answered {body}");
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("GET {url}: not a poll reply ({e}): {body}"))
}

/// Asserts that `response` is an error reply: `status` and
/// `{"error":{"code":code,"message":"..."}}`.
pub async fn expect_error(response: Response, status: u16, code: &str) {
    let url = response.url().clone();
    let actual = response.status().as_u16();
    let body = json_body(response).await;
    assert_eq!(
        (actual, &body["error"]["code"]),
        (status, &Value::from(code)),
        "{url}: expected {status} {code}, got {actual} {body}"
    );
    assert!(
        body["error"]["message"].is_string(),
        "{url}: error without a message: {body}"
    );
}

/// Asserts that the gateway at `base` (`http://host:port`) still answers `/healthz` with
/// `200 {"status":"ok"}` and still accepts a publish.
pub async fn assert_serving(base: &str) {
    let url = format!("{base}/healthz");
    let response = within("healthz", reqwest::Client::new().get(&url).send())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &Value::from("ok")),
        "GET {url} answered {status} {body}"
    );
    publish(
        &format!("{base}/events?topic=still-serving"),
        &Value::from(1),
    )
    .await;
}

/// The body of `response` as JSON; panics with the raw text if it is not JSON.
pub async fn json_body(response: Response) -> Value {
    let url = response.url().clone();
    let text = within("response body", response.text())
        .await
        .unwrap_or_else(|e| panic!("{url}: reading the body: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {text:?}"))
}
