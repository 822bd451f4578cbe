//! Clients with credentials: tokens made here (HS256 with a test secret), and a subscribe or a
//! publish on any transport with a token in any of the places a client may put it, returning
//! what the gateway answered rather than panicking on a refusal.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::http::json_body;
use crate::sse::SseClient;
use crate::transport::Transport;
use crate::ws::WsClient;
use crate::{Endpoint, within};

/// The HS256 secret of the tests' gateways (`jwt_secret`).
pub const SECRET: &str = "the tests' secret, thirty-two bytes or more";

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// An HS256 token of `claims`, signed with `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("a token")
}

/// The audience of the tests' tokens (`jwt_audience`, where a test sets it).
pub const AUDIENCE: &str = "switchboard";

/// A token for `sub` that may subscribe to `subscribe` and publish to `publish` (patterns),
/// for [`AUDIENCE`], expiring in `lifetime` seconds, signed with [`SECRET`].
pub fn token(sub: &str, subscribe: &[&str], publish: &[&str], lifetime: u64) -> String {
    sign(
        &json!({"sub": sub, "aud": AUDIENCE, "exp": now_s() + lifetime,
                "switchboard": {"subscribe": subscribe, "publish": publish}}),
        SECRET,
    )
}

/// Where a client puts its credentials.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer …`
    Header(String),
    /// The `switchboard_token` cookie.
    Cookie(String),
    /// The `access_token` query parameter.
    Query(String),
    /// A WebSocket `auth` frame after connecting (over HTTP, the same as `Header`).
    InBand(String),
}

impl Credentials {
    fn headers(&self, transport: Transport) -> Vec<(&'static str, String)> {
        match self {
            Credentials::Header(token) => vec![("authorization", format!("Bearer {token}"))],
            Credentials::InBand(token) if transport != Transport::Ws => {
                vec![("authorization", format!("Bearer {token}"))]
            }
            Credentials::Cookie(token) => {
                vec![("cookie", format!("theme=dark; switchboard_token={token}"))]
            }
            _ => Vec::new(),
        }
    }

    /// `&access_token=…`, or nothing.
    fn query(&self) -> String {
        match self {
            Credentials::Query(token) => format!("&access_token={token}"),
            _ => String::new(),
        }
    }

    fn request(
        &self,
        transport: Transport,
        builder: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        self.headers(transport)
            .into_iter()
            .fold(builder, |builder, (name, value)| {
                builder.header(name, value)
            })
    }
}

/// How the gateway refused: the HTTP status (`None` for a WebSocket `error` frame) and the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: Option<u16>,
    pub code: String,
    /// The whole answer (the JSON body, or the `error` frame), and `Retry-After` if any.
    pub answer: Value,
    pub retry_after: Option<String>,
}

impl Refusal {
    fn from_frame(frame: Value) -> Refusal {
        Refusal {
            status: None,
            code: frame["code"].as_str().unwrap_or_default().to_owned(),
            answer: frame,
            retry_after: None,
        }
    }

    /// The refusal an error response carries: its status, code, body and `Retry-After`.
    pub async fn from_response(response: reqwest::Response) -> Refusal {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let answer = json_body(response).await;
        Refusal {
            status: Some(status),
            code: answer["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            answer,
            retry_after,
        }
    }
}

/// A subscription that the gateway accepted.
#[derive(Debug)]
pub enum Subscribed {
    Ws(WsClient),
    Sse(SseClient),
    Poll {
        url: String,
        credentials: Credentials,
        cursor: String,
        queued: VecDeque<Value>,
    },
}

/// Opens a WebSocket to `endpoint` with `credentials` (an `InBand` token is sent in an `auth`
/// frame, whose answer must be an `ack`); `path_and_query` is `/ws?…`.
pub async fn connect_ws(
    endpoint: &dyn Endpoint,
    path_and_query: &str,
    credentials: &Credentials,
) -> Result<WsClient, Refusal> {
    let separator = if path_and_query.contains('?') {
        ""
    } else {
        "?"
    };
    let url = endpoint.ws_url(&format!(
        "{path_and_query}{separator}{}",
        credentials.query()
    ));
    let headers = credentials.headers(Transport::Ws);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut ws = match WsClient::try_connect_with(&url, &headers).await {
        Ok(ws) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let answer: Value = serde_json::from_slice(body).expect("a JSON refusal");
            return Err(Refusal {
                status: Some(response.status().as_u16()),
                code: answer["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                answer,
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or_default().to_owned()),
            });
        }
        Err(e) => panic!("WebSocket handshake to {url} failed: {e}"),
    };
    if let Credentials::InBand(token) = credentials {
        ws.send(json!({"type": "auth", "token": token, "ref": "auth"}))
            .await;
        let answer = ws.next_of_any(&["ack", "error"]).await;
        if answer["type"] != "ack" {
            return Err(Refusal::from_frame(answer));
        }
        assert_eq!(answer["ref"], "auth", "{answer}");
    }
    Ok(ws)
}

/// Subscribes to `topic` over `transport` with `credentials`, from `since` if given.
pub async fn subscribe(
    endpoint: &dyn Endpoint,
    transport: Transport,
    topic: &str,
    since: Option<&str>,
    credentials: &Credentials,
) -> Result<Subscribed, Refusal> {
    let since_query = since.map(|s| format!("&since={s}")).unwrap_or_default();
    match transport {
        Transport::Ws => {
            if let Credentials::InBand(_) = credentials {
                let mut ws = connect_ws(endpoint, "/ws", credentials).await?;
                let mut frame = json!({"type": "subscribe", "topics": [topic], "ref": "sub"});
                if let Some(since) = since {
                    frame["since"] = since.into();
                }
                ws.send(frame).await;
                let answer = ws.next_of_any(&["subscribed", "error"]).await;
                return match answer["type"] == "subscribed" {
                    true => Ok(Subscribed::Ws(ws)),
                    false => Err(Refusal::from_frame(answer)),
                };
            }
            let path = format!("/ws?topic={topic}{since_query}");
            let mut ws = connect_ws(endpoint, &path, credentials).await?;
            let subscribed = ws.next_of("subscribed").await;
            assert_eq!(subscribed["topics"], json!([topic]), "{subscribed}");
            Ok(Subscribed::Ws(ws))
        }
        Transport::Sse => {
            let url = endpoint.http_url(&format!(
                "/events?topic={topic}{since_query}{}",
                credentials.query()
            ));
            let request = credentials.request(transport, reqwest::Client::new().get(&url));
            let response = within("SSE response", request.send())
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            if response.status() != 200 {
                return Err(Refusal::from_response(response).await);
            }
            let mut sse = SseClient::from_response(response).await;
            sse.expect_event("subscribed").await;
            Ok(Subscribed::Sse(sse))
        }
        Transport::Poll => {
            let url = endpoint.http_url(&format!("/poll?topic={topic}{}", credentials.query()));
            let first = format!("{url}{since_query}&timeout=0");
            let request = credentials.request(transport, reqwest::Client::new().get(&first));
            let response = within("poll reply", request.send())
                .await
                .unwrap_or_else(|e| panic!("GET {first}: {e}"));
            if response.status() != 200 {
                return Err(Refusal::from_response(response).await);
            }
            let reply = json_body(response).await;
            Ok(Subscribed::Poll {
                url,
                credentials: credentials.clone(),
                cursor: reply["cursor"].as_str().expect("a cursor").to_owned(),
                queued: reply["messages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into(),
            })
        }
    }
}

impl Subscribed {
    /// The next message's envelope; a poll asks again (with its credentials) until one comes,
    /// and panics if the gateway refuses a poll.
    pub async fn message(&mut self) -> Value {
        match self {
            Subscribed::Ws(ws) => {
                let mut message = ws.message().await;
                message.as_object_mut().expect("an object").remove("type");
                message
            }
            Subscribed::Sse(sse) => sse.message().await,
            Subscribed::Poll { .. } => match self.poll().await {
                Ok(message) => message,
                Err(refusal) => panic!("poll refused: {refusal:?}"),
            },
        }
    }

    /// The next message of a poll subscription, or the refusal of the poll that asked for it.
    pub async fn poll(&mut self) -> Result<Value, Refusal> {
        let Subscribed::Poll {
            url,
            credentials,
            cursor,
            queued,
        } = self
        else {
            panic!("not a poll subscription");
        };
        loop {
            if let Some(message) = queued.pop_front() {
                return Ok(message);
            }
            let next = format!("{url}&since={cursor}&timeout=3");
            let request = credentials.request(Transport::Poll, reqwest::Client::new().get(&next));
            let response = within("poll reply", request.send())
                .await
                .unwrap_or_else(|e| panic!("GET {next}: {e}"));
            if response.status() != 200 {
                return Err(Refusal::from_response(response).await);
            }
            let reply = json_body(response).await;
            *cursor = reply["cursor"].as_str().expect("a cursor").to_owned();
            queued.extend(reply["messages"].as_array().cloned().unwrap_or_default());
        }
    }

    /// Gives a poll subscription new credentials, as a client with a fresh token would.
    pub fn set_credentials(&mut self, fresh: Credentials) {
        if let Subscribed::Poll { credentials, .. } = self {
            *credentials = fresh;
        }
    }
}

/// Publishes `data` to `topic` over `transport` with `credentials`; the message id, or the
/// refusal. A WebSocket publish is made on a connection of its own.
pub async fn publish(
    endpoint: &dyn Endpoint,
    transport: Transport,
    topic: &str,
    data: Value,
    credentials: &Credentials,
) -> Result<String, Refusal> {
    match transport {
        Transport::Ws => {
            let mut ws = connect_ws(endpoint, "/ws", credentials).await?;
            let answer = publish_on(&mut ws, topic, data).await;
            ws.close().await;
            answer
        }
        Transport::Sse | Transport::Poll => {
            let path = if transport == Transport::Sse {
                "events"
            } else {
                "poll"
            };
            let url = endpoint.http_url(&format!("/{path}?topic={topic}{}", credentials.query()));
            let request =
                credentials.request(transport, reqwest::Client::new().post(&url).json(&data));
            let response = within("publish reply", request.send())
                .await
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            if response.status() != 200 {
                return Err(Refusal::from_response(response).await);
            }
            let reply = json_body(response).await;
            Ok(reply["id"].as_str().expect("an id").to_owned())
        }
    }
}

/// Publishes on an open WebSocket: the id, or the `error` frame's refusal.
pub async fn publish_on(ws: &mut WsClient, topic: &str, data: Value) -> Result<String, Refusal> {
    let answer = ws.publish_reply(topic, data, "pub").await;
    match answer["type"] == "ack" {
        true => Ok(answer["id"].as_str().expect("an id").to_owned()),
        false => Err(Refusal::from_frame(answer)),
    }
}
