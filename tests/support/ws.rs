//! A WebSocket client speaking the JSON frames of `/ws`.

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::within;

/// A connected WebSocket. Frames read while looking for another kind (see
/// [`WsClient::next_of`]) are kept and returned first by the next read.
#[derive(Debug)]
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
}

/// How a WebSocket connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server sent a close frame with this code.
    Code(u16),
    /// The connection ended without a close frame.
    Dropped,
}

impl WsClient {
    /// Connects to `url`; panics if the handshake fails.
    pub async fn connect(url: &str) -> WsClient {
        WsClient::connect_with_origin(url, None).await
    }

    /// Connects to `url` sending `Origin: origin`; panics if the handshake fails.
    pub async fn connect_with_origin(url: &str, origin: Option<&str>) -> WsClient {
        let origin = origin.map(|origin| ("origin", origin));
        WsClient::connect_with(url, origin.as_slice()).await
    }

    /// Connects to `url` with `headers` (see [`WsClient::try_connect_with`]); panics if the
    /// handshake fails.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> WsClient {
        match WsClient::try_connect_with(url, headers).await {
            Ok(client) => client,
            Err(Error::Http(response)) => {
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
                panic!(
                    "WebSocket handshake to {url} refused: {} {body}",
                    response.status()
                )
            }
            Err(e) => panic!("WebSocket handshake to {url} failed: {e}"),
        }
    }

    /// Attempts the handshake; a refusal is `Err(Error::Http(response))`.
    pub async fn try_connect(url: &str, origin: Option<&str>) -> Result<WsClient, Error> {
        let origin = origin.map(|origin| ("origin", origin));
        WsClient::try_connect_with(url, origin.as_slice()).await
    }

    /// Attempts the handshake with `headers` added, each replacing the one of its name that
    /// the handshake would send (`host` included); a refusal is `Err(Error::Http(response))`.
    pub async fn try_connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, Error> {
        let mut request = url.into_client_request()?;
        for &(name, value) in headers {
            let value = HeaderValue::from_str(value).expect("a valid header value");
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
            request.headers_mut().insert(name, value);
        }
        let (stream, _response) = within(
            "WebSocket handshake",
            tokio_tungstenite::connect_async(request),
        )
        .await?;
        Ok(WsClient {
            stream,
            pending: VecDeque::new(),
        })
    }

    /// Asserts that the handshake to `url` is refused; returns the status and JSON body.
    pub async fn expect_refused(url: &str, origin: Option<&str>) -> (u16, Value) {
        let origin = origin.map(|origin| ("origin", origin));
        WsClient::expect_refused_with(url, origin.as_slice()).await
    }

    /// Asserts that the handshake to `url` with `headers` (see [`WsClient::try_connect_with`])
    /// is refused; returns the status and JSON body.
    pub async fn expect_refused_with(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        match WsClient::try_connect_with(url, headers).await {
            Ok(_) => panic!("WebSocket handshake to {url} (with {headers:?}) was accepted"),
            Err(Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                let json = serde_json::from_slice(body).unwrap_or_else(|e| {
                    panic!(
                        "refusal body of {url} is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(body)
                    )
                });
                (response.status().as_u16(), json)
            }
            Err(e) => panic!("WebSocket handshake to {url} failed without a reply: {e}"),
        }
    }

    /// Sends `frame` as a JSON text frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_raw(Message::text(frame.to_string())).await;
    }

    /// Sends any WebSocket message as is.
    pub async fn send_raw(&mut self, message: Message) {
        within("WebSocket send", self.stream.send(message))
            .await
            .expect("WebSocket send");
    }

    /// The next JSON frame; panics on close, timeout or a frame that is not JSON text.
    pub async fn next(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        within("a WebSocket frame", self.read())
            .await
            .unwrap_or_else(|closed| {
                panic!("WebSocket closed ({closed:?}) while a frame was expected")
            })
    }

    /// The next frame whose `type` is `ty`; other frames are kept, in order, for later reads.
    pub async fn next_of(&mut self, ty: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|f| f["type"] == ty) {
            return self.pending.remove(i).expect("index in range");
        }
        loop {
            let frame = within(&format!("a `{ty}` frame"), self.read())
                .await
                .unwrap_or_else(|closed| {
                    panic!("WebSocket closed ({closed:?}) while a `{ty}` frame was expected")
                });
            if frame["type"] == ty {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// The next `message` frame (the envelope with `type`).
    pub async fn message(&mut self) -> Value {
        self.next_of("message").await
    }

    /// Subscribes to `topics` in-band, from `since` if given; returns the `subscribed` frame.
    pub async fn subscribe(&mut self, topics: &[&str], since: Option<&str>) -> Value {
        let mut frame = json!({"type": "subscribe", "topics": topics, "ref": "sub"});
        if let Some(since) = since {
            frame["since"] = since.into();
        }
        self.send(frame).await;
        let subscribed = self.next().await;
        assert_eq!(
            subscribed["type"], "subscribed",
            "answer to subscribe: {subscribed}"
        );
        assert_eq!(subscribed["ref"], "sub", "ref of {subscribed}");
        subscribed
    }

    /// Publishes `data` to `topic` and waits for the ack; returns the message id.
    pub async fn publish(&mut self, topic: &str, data: Value) -> String {
        self.send(json!({"type": "publish", "topic": topic, "data": data, "ref": "pub"}))
            .await;
        let ack = self.next_of_any(&["ack", "error"]).await;
        assert_eq!(ack["type"], "ack", "answer to publish: {ack}");
        assert_eq!(ack["ref"], "pub", "ref of {ack}");
        assert_eq!(ack["topic"], topic, "topic of {ack}");
        ack["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {ack}"))
            .to_owned()
    }

    /// Sends an application `ping` and asserts that the `pong` comes back: the connection
    /// is open and the server still reads it.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "ping", "ref": "alive"})).await;
        let pong = self.next_of("pong").await;
        assert_eq!(pong["ref"], "alive", "ref of {pong}");
    }

    /// Waits for a WebSocket ping from the server (its heartbeat); JSON frames read meanwhile
    /// are kept for later reads.
    pub async fn expect_ping(&mut self) {
        within("a WebSocket ping", async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Ping(_))) => return,
                    Some(Ok(Message::Text(text))) => {
                        let frame = serde_json::from_str(&text).unwrap_or_else(|e| {
                            panic!("WebSocket text frame is not JSON ({e}): {text:?}")
                        });
                        self.pending.push_back(frame);
                    }
                    Some(Ok(Message::Pong(_))) => {}
                    other => panic!("expected a ping, got {other:?}"),
                }
            }
        })
        .await;
    }

    /// Reads until the connection ends; returns the JSON frames read and how it ended.
    /// After a close frame it goes on reading, so that the close reply is sent and the
    /// server sees a clean closing handshake.
    pub async fn read_to_close(&mut self) -> (Vec<Value>, Closed) {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        let closed = within("the WebSocket to close", async {
            loop {
                match self.read().await {
                    Ok(frame) => frames.push(frame),
                    Err(closed) => {
                        while let Some(Ok(_)) = self.stream.next().await {}
                        return closed;
                    }
                }
            }
        })
        .await;
        (frames, closed)
    }

    /// The socket itself, and the frames read but not returned yet: for a client that reads on
    /// its own terms (see [`Follower`](crate::follow::Follower)).
    pub fn into_parts(self) -> (WebSocketStream<MaybeTlsStream<TcpStream>>, VecDeque<Value>) {
        (self.stream, self.pending)
    }

    /// Publishes `data` to `topic` with `ref` set to `reference` and returns the answer, an
    /// `ack` or an `error` frame (frames of other types read meanwhile are kept).
    pub async fn publish_reply(&mut self, topic: &str, data: Value, reference: &str) -> Value {
        self.send(json!({"type": "publish", "topic": topic, "data": data, "ref": reference}))
            .await;
        self.next_of_any(&["ack", "error"]).await
    }

    /// Sends a close frame (a polite client leaving).
    pub async fn close(mut self) {
        let _ = within("WebSocket close", self.stream.close(None)).await;
    }

    /// The next frame whose `type` is one of `types`; others are kept for later reads.
    pub async fn next_of_any(&mut self, types: &[&str]) -> Value {
        if let Some(i) = self
            .pending
            .iter()
            .position(|f| types.iter().any(|t| f["type"] == *t))
        {
            return self.pending.remove(i).expect("index in range");
        }
        loop {
            let frame = within(&format!("a frame of {types:?}"), self.read())
                .await
                .unwrap_or_else(|closed| panic!("WebSocket closed ({closed:?})"));
            if types.iter().any(|t| frame["type"] == *t) {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// Reads one JSON text frame from the socket, skipping pings and pongs.
    async fn read(&mut self) -> Result<Value, Closed> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!("WebSocket text frame is not JSON ({e}): {text:?}")
                    }));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    // A close frame without a status is code 1005 (RFC 6455, 7.1.5).
                    return Err(Closed::Code(frame.map_or(1005, |f| f.code.into())));
                }
                Some(Ok(other)) => panic!("unexpected WebSocket message from server: {other:?}"),
                Some(Err(_)) | None => return Err(Closed::Dropped),
            }
        }
    }
}
