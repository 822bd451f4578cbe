//! The three transports behind one interface, for tests that run the same scenario on each
//! (the publish/receive matrix, resuming, moving a cursor from one transport to another).

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use crate::http::{json_body, poll, publish};
use crate::sse::SseClient;
use crate::within;
use crate::ws::WsClient;

/// A transport of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `/ws`
    Ws,
    /// `/events`
    Sse,
    /// `/poll`
    Poll,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

    /// Publishes `data` to `topic` on the gateway at `base` (`http://host:port`): a WebSocket
    /// `publish` frame, `POST /events` or `POST /poll`. Returns the message id.
    pub async fn publish(self, base: &str, topic: &str, data: Value) -> String {
        match self {
            Transport::Ws => {
                let mut ws = WsClient::connect(&ws_base(base, "/ws")).await;
                let id = ws.publish(topic, data).await;
                ws.close().await;
                id
            }
            Transport::Sse => publish(&format!("{base}/events?topic={topic}"), &data).await,
            Transport::Poll => publish(&format!("{base}/poll?topic={topic}"), &data).await,
        }
    }
}

/// A publish the gateway refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The HTTP status; `None` on WebSocket, which answers with an `error` frame.
    pub status: Option<u16>,
    /// The error code.
    pub code: String,
    /// The whole answer: the JSON error body, or the `error` frame.
    pub answer: Value,
}

impl Transport {
    /// Publishes as [`publish`](Self::publish) does, and returns the id, or how the gateway
    /// refused it. A WebSocket publish is sent with `ref` `"try"`.
    pub async fn try_publish(
        self,
        base: &str,
        topic: &str,
        data: Value,
    ) -> Result<String, Refused> {
        let path = match self {
            Transport::Ws => {
                let mut ws = WsClient::connect(&ws_base(base, "/ws")).await;
                let answer = ws.publish_reply(topic, data, "try").await;
                ws.close().await;
                if answer["type"] == "ack" {
                    let id = answer["id"].as_str().expect("an ack has an id").to_owned();
                    return Ok(id);
                }
                let code = answer["code"].as_str().unwrap_or_default().to_owned();
                return Err(Refused {
                    status: None,
                    code,
                    answer,
                });
            }
            Transport::Sse => "events",
            Transport::Poll => "poll",
        };
        let url = format!("{base}/{path}?topic={topic}");
        let response = within(
            "publish reply",
            reqwest::Client::new().post(&url).json(&data).send(),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status().as_u16();
        let answer = json_body(response).await;
        if status == 200 {
            let id = answer["id"]
                .as_str()
                .unwrap_or_else(|| panic!("POST {url}: {answer}"));
            return Ok(id.to_owned());
        }
        let code = answer["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Err(Refused {
            status: Some(status),
            code,
            answer,
        })
    }
}

pub(crate) fn ws_base(base: &str, path_and_query: &str) -> String {
    let authority = base
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("base URL {base:?} is not http://"));
    format!("ws://{authority}{path_and_query}")
}

pub(crate) fn query(topics: &[&str], since: Option<&str>) -> String {
    let mut query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    if let Some(since) = since {
        query.push(format!("since={since}"));
    }
    query.join("&")
}

/// A subscription on one transport, with the cursor it would resume from.
#[derive(Debug)]
pub enum Subscriber {
    Ws {
        client: WsClient,
        /// The latest position per topic: the starting positions, then message ids.
        positions: BTreeMap<String, String>,
    },
    Sse(SseClient),
    Poll {
        /// `http://host:port/poll?topic=…` without `since` and `timeout`.
        url: String,
        cursor: String,
        received: VecDeque<Value>,
    },
}

impl Subscriber {
    /// Subscribes to `topics` from `since` (or *now*) and returns once the subscription is in
    /// place: after the `subscribed` frame or event, or the first poll reply (`timeout=0`).
    /// Panics on a reset: a resume that should lose nothing must not get one.
    pub async fn open(
        transport: Transport,
        base: &str,
        topics: &[&str],
        since: Option<&str>,
    ) -> Subscriber {
        let query = query(topics, since);
        match transport {
            Transport::Ws => {
                let mut client = WsClient::connect(&ws_base(base, &format!("/ws?{query}"))).await;
                let subscribed = client.next().await;
                assert_eq!(
                    subscribed["type"], "subscribed",
                    "first frame: {subscribed}"
                );
                let positions = serde_json::from_value(subscribed["positions"].clone())
                    .unwrap_or_else(|e| panic!("bad positions ({e}) in {subscribed}"));
                Subscriber::Ws { client, positions }
            }
            Transport::Sse => {
                let mut client = SseClient::connect(&format!("{base}/events?{query}")).await;
                let subscribed = client.next_event().await;
                assert_eq!(
                    subscribed.event, "subscribed",
                    "first event: {subscribed:?}"
                );
                subscribed.id();
                Subscriber::Sse(client)
            }
            Transport::Poll => {
                let url = format!("{base}/poll?{}", self::query(topics, None));
                let reply = poll(&format!("{base}/poll?{query}&timeout=0")).await;
                assert!(reply.reset.is_empty(), "unexpected reset: {reply:?}");
                Subscriber::Poll {
                    url,
                    cursor: reply.cursor,
                    received: reply.messages.into(),
                }
            }
        }
    }

    /// The next message's envelope (without the WebSocket `type`).
    pub async fn message(&mut self) -> Value {
        match self {
            Subscriber::Ws { client, positions } => {
                let mut frame = client.next().await;
                assert_eq!(
                    frame["type"], "message",
                    "expected a message frame: {frame}"
                );
                let envelope = frame.as_object_mut().expect("frame is an object");
                envelope.remove("type");
                let topic = envelope["topic"].as_str().expect("topic").to_owned();
                let id = envelope["id"].as_str().expect("id").to_owned();
                positions.insert(topic, id);
                frame
            }
            Subscriber::Sse(client) => client.message().await,
            Subscriber::Poll {
                url,
                cursor,
                received,
            } => {
                while received.is_empty() {
                    let reply = poll(&format!("{url}&since={cursor}&timeout=3")).await;
                    assert!(reply.reset.is_empty(), "unexpected reset: {reply:?}");
                    *cursor = reply.cursor;
                    received.extend(reply.messages);
                }
                received.pop_front().expect("not empty")
            }
        }
    }

    /// The next `n` messages.
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut messages = Vec::with_capacity(n);
        for _ in 0..n {
            messages.push(self.message().await);
        }
        messages
    }

    /// The cursor for everything received so far, on every topic of the subscription: the
    /// WebSocket positions joined with `.`, the SSE last event id, or the poll cursor.
    /// (A poll subscriber's cursor may run ahead of messages not yet taken with `message`.)
    pub fn cursor(&self) -> String {
        match self {
            Subscriber::Ws { positions, .. } => {
                positions.values().cloned().collect::<Vec<_>>().join(".")
            }
            Subscriber::Sse(client) => client.last_event_id().to_owned(),
            Subscriber::Poll {
                cursor, received, ..
            } => {
                assert!(
                    received.is_empty(),
                    "messages of the last poll not taken yet"
                );
                cursor.clone()
            }
        }
    }
}
