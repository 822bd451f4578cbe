//! A Server-Sent Events client over a streamed HTTP body, with a parser that follows the
//! HTML event-stream rules (CR, LF and CRLF line ends; `event`, `data`, `id`, `retry` fields;
//! comments).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use reqwest::header::{CONNECTION, HOST, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::within;

/// The two ways the gateway serves an SSE stream, which clients must not be able to tell
/// apart (apart from `Connection: close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseConnection {
    /// The stream is the first request of a fresh connection: the gateway claims the
    /// connection and writes the stream itself.
    Fresh,
    /// The stream follows another request on a kept-alive connection: hyper serves it.
    KeptAlive,
}

/// One thing read from an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A `retry:` field, in milliseconds.
    Retry(u64),
    /// A comment line, without the leading `:` and one following space.
    Comment(String),
    /// A dispatched event.
    Event(SseEvent),
}

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `id:` field given in this event's block, if any.
    pub id: Option<String>,
    /// The `data:` lines joined with LF.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }

    /// The `id:` field, which must be present.
    pub fn id(&self) -> &str {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("SSE event has no id: {self:?}"))
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open `/events` stream.
pub struct SseClient {
    headers: HeaderMap,
    body: Body,
    parser: SseParser,
    items: VecDeque<SseItem>,
    ended: bool,
}

impl fmt::Debug for SseClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseClient")
            .field("headers", &self.headers)
            .field("items", &self.items)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl SseClient {
    /// `GET url`; panics unless the answer is `200`.
    pub async fn connect(url: &str) -> SseClient {
        SseClient::open(reqwest::Client::new().get(url)).await
    }

    /// `GET url` on a connection of the given kind; panics unless the answer is `200`.
    pub async fn connect_on(connection: SseConnection, url: &str) -> SseClient {
        match connection {
            SseConnection::Fresh => SseClient::connect(url).await,
            SseConnection::KeptAlive => SseClient::connect_kept_alive(url).await,
        }
    }

    /// `GET url` as the second request of a connection, after a `GET /healthz` on it; panics
    /// unless the answer is `200`, or if it says `Connection: close`, which only a stream on a
    /// fresh connection does.
    ///
    /// A single hyper connection rather than a pooled `reqwest::Client`: a pool may open a new
    /// connection while the first is still on its way back to it.
    pub async fn connect_kept_alive(url: &str) -> SseClient {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let host = parsed.host_str().expect("a URL with a host");
        let port = parsed.port_or_known_default().expect("an http URL");
        let authority = format!("{host}:{port}");
        let path_and_query = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let stream = within("TCP connect", TcpStream::connect((host, port)))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {authority}: {e}"));
        let (mut sender, connection) = within(
            "HTTP/1.1 handshake",
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let get = |path_and_query: &str| {
            hyper::Request::get(path_and_query)
                .header(HOST, authority.as_str())
                .body(String::new())
                .expect("a valid request")
        };

        let health = within("/healthz answer", sender.send_request(get("/healthz")))
            .await
            .expect("GET /healthz");
        let health = reqwest::Response::from(health.map(reqwest::Body::wrap));
        within("/healthz body", health.bytes())
            .await
            .expect("the /healthz body");
        // Ready again once the connection has finished the first exchange and is kept alive.
        within("the connection to be ready again", sender.ready())
            .await
            .expect("the connection is kept alive after /healthz");

        let response = within(
            "SSE response headers",
            sender.send_request(get(&path_and_query)),
        )
        .await
        .unwrap_or_else(|e| panic!("SSE request failed: {e}"));
        let status = response.status();
        let response = reqwest::Response::from(response.map(reqwest::Body::wrap));
        if status != StatusCode::OK {
            let body = within("SSE error body", response.text())
                .await
                .unwrap_or_default();
            panic!("GET {url} after /healthz answered {status} {body}");
        }
        let connection = response.headers().get(CONNECTION);
        assert!(
            connection.is_none_or(|value| !value.as_bytes().eq_ignore_ascii_case(b"close")),
            "GET {url} after /healthz was served as on a fresh connection: {:?}",
            response.headers()
        );
        SseClient::from_response(response).await
    }

    /// Sends `request` (a GET with whatever headers the test needs); panics unless the
    /// answer is `200`.
    pub async fn open(request: RequestBuilder) -> SseClient {
        let response = within("SSE response headers", request.send())
            .await
            .unwrap_or_else(|e| panic!("SSE request failed: {e}"));
        SseClient::from_response(response).await
    }

    /// Reads the stream of `response`; panics unless it is a `200`.
    pub async fn from_response(response: Response) -> SseClient {
        let status = response.status();
        if status != StatusCode::OK {
            let url = response.url().clone();
            let body = within("SSE error body", response.text())
                .await
                .unwrap_or_default();
            panic!("GET {url} answered {status} {body}");
        }
        SseClient {
            headers: response.headers().clone(),
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::default(),
            items: VecDeque::new(),
            ended: false,
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The last event id seen, as a browser would send it in `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    /// The next item, or `None` when the response has ended cleanly. Panics if the body fails
    /// or nothing arrives within [`crate::TIMEOUT`].
    pub async fn next_item(&mut self) -> Option<SseItem> {
        within("an SSE item", self.read_item()).await
    }

    /// The next event, skipping `retry:` and comments; panics if the stream ends.
    pub async fn next_event(&mut self) -> SseEvent {
        within("an SSE event", async {
            loop {
                match self.read_item().await {
                    Some(SseItem::Event(event)) => return event,
                    Some(_) => {}
                    None => panic!("SSE stream ended while an event was expected"),
                }
            }
        })
        .await
    }

    /// The next event, asserting that it is an `event: name`.
    pub async fn expect_event(&mut self, name: &str) -> SseEvent {
        let event = self.next_event().await;
        assert_eq!(event.event, name, "SSE event: {event:?}");
        event
    }

    /// The next `event: message`: its envelope, after checking that the event has an `id:`.
    pub async fn message(&mut self) -> Value {
        let event = self.expect_event("message").await;
        event.id();
        event.json()
    }

    /// Reads until the response ends cleanly; returns what was read.
    pub async fn read_to_end(&mut self) -> Vec<SseItem> {
        within("the SSE stream to end", async {
            let mut items = Vec::new();
            while let Some(item) = self.read_item().await {
                items.push(item);
            }
            items
        })
        .await
    }

    async fn read_item(&mut self) -> Option<SseItem> {
        self.try_read_item()
            .await
            .unwrap_or_else(|e| panic!("SSE body failed (not a clean end): {e}"))
    }

    /// The next item, `Ok(None)` when the response has ended cleanly, an error when the body
    /// failed. Waits as long as it takes (the caller bounds it); cancel-safe.
    pub async fn try_read_item(&mut self) -> Result<Option<SseItem>, reqwest::Error> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(Some(item));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.parser.feed(&chunk, &mut self.items),
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
    }
}

/// Runs each listed test, an `async fn(SseConnection)`, once per [`SseConnection`]: as
/// `fresh_connection::NAME` and `kept_alive_connection::NAME`, so a failure names its path.
///
/// ```text
/// async fn default_retry_is_2000(connection: SseConnection) { ... }
/// sse_connection_tests!(default_retry_is_2000, ...);
/// ```
#[macro_export]
macro_rules! sse_connection_tests {
    ($($name:ident),* $(,)?) => {
        mod fresh_connection {$(
            #[::tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name($crate::SseConnection::Fresh).await;
            }
        )*}
        mod kept_alive_connection {$(
            #[::tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name($crate::SseConnection::KeptAlive).await;
            }
        )*}
    };
}

/// The event-stream parser, fed with chunks cut anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    event: String,
    data: String,
    id: Option<String>,
    last_event_id: String,
}

impl SseParser {
    /// Parses `chunk`, appending every complete item to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut VecDeque<SseItem>) {
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = String::from_utf8(std::mem::take(&mut self.line))
                        .unwrap_or_else(|e| panic!("SSE line is not UTF-8: {e}"));
                    self.line_done(&line, out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
    }

    fn line_done(&mut self, line: &str, out: &mut VecDeque<SseItem>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            out.push_back(SseItem::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_owned());
                value.clone_into(&mut self.last_event_id);
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    out.push_back(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseItem>) {
        let event = std::mem::take(&mut self.event);
        let id = self.id.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        out.push_back(SseItem::Event(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            id,
            data,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &str, piece: usize) -> Vec<SseItem> {
        let mut parser = SseParser::default();
        let mut out = VecDeque::new();
        for chunk in text.as_bytes().chunks(piece) {
            parser.feed(chunk, &mut out);
        }
        out.into()
    }

    fn event(event: &str, id: Option<&str>, data: &str) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.to_owned(),
            id: id.map(str::to_owned),
            data: data.to_owned(),
        })
    }

    #[test]
    fn every_line_end_and_every_cut() {
        let text = "retry: 2000\r\n\r\n: heartbeat\revent: subscribed\nid: c1\r\ndata: {}\r\r\
                    data:a\ndata: b\r\n\n";
        for piece in 1..=text.len() {
            assert_eq!(
                parse_in_pieces(text, piece),
                vec![
                    SseItem::Retry(2000),
                    SseItem::Comment("heartbeat".to_owned()),
                    event("subscribed", Some("c1"), "{}"),
                    event("message", None, "a\nb"),
                ],
                "cut every {piece} bytes"
            );
        }
    }

    #[test]
    fn blank_data_block_is_not_dispatched_and_last_id_persists() {
        let mut parser = SseParser::default();
        let mut out = VecDeque::new();
        parser.feed(b"id: 7\nevent: x\n\ndata: y\n\n", &mut out);
        assert_eq!(Vec::from(out), vec![event("message", None, "y")]);
        assert_eq!(parser.last_event_id, "7");
    }
}
