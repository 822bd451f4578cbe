//! A subscriber that reads in the background, as a real client does, and hands the test what it
//! got, when the test asks. For the tests of several nodes where subscribers must stay
//! connected through faults (a WebSocket client answers the server's pings only while it reads,
//! and is closed after two heartbeat intervals of silence), and where many subscribers move
//! between nodes and transports with their cursor.
//!
//! A [`Follower`] keeps the cursor of what the test has *taken* from it (not of what its task
//! has read ahead), so that [`Follower::cursor`] resumes exactly after the last message taken.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::{PollReply, poll};
use crate::sse::{SseClient, SseItem};
use crate::transport::{Transport, query, ws_base};
use crate::ws::WsClient;

/// How long [`Follower::message`] and [`Follower::reset`] wait. Longer than
/// [`TIMEOUT`](crate::TIMEOUT): after a fault, a node may take up to its 5 s position check to
/// notice a message that its channel lost with none after it.
pub const FOLLOW_LIMIT: Duration = Duration::from_secs(12);

/// The `timeout` of a poll follower's requests, in seconds.
const POLL_HOLD: &str = "1";

/// How long a poll follower waits before polling again after a refusal or a failed request.
const POLL_RETRY: Duration = Duration::from_millis(100);

/// The longest one poll request (held `POLL_HOLD`) may take before it is given up and retried.
const POLL_REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// What a follower got next.
#[derive(Debug, Clone)]
pub enum Got {
    /// A message's envelope (without the WebSocket `type`).
    Message(Value),
    /// A reset object, `{"topic","reason"}` (without the WebSocket `type`).
    Reset(Value),
    /// Nothing within the time asked.
    Quiet,
    /// The connection ended, or the gateway answered something no client expects; and why.
    Ended(String),
}

/// What [`Follower::take_until`] took.
#[derive(Debug, Default)]
pub struct Taken {
    /// The messages' envelopes, in order.
    pub messages: Vec<Value>,
    /// Whatever else happened, described.
    pub surprises: Vec<String>,
}

/// What a follower's task hands over.
#[derive(Debug)]
enum Item {
    /// A message or a reset, and the cursor for everything up to it.
    Delivery(Got, String),
    /// A WebSocket `pong`.
    Pong(Value),
    Ended(String),
}

/// A subscription on one transport of one node, read by a task of its own. Dropping it closes
/// the connection (or stops polling).
pub struct Follower {
    transport: Transport,
    base: String,
    items: mpsc::UnboundedReceiver<Item>,
    /// Frames for the WebSocket task to send.
    frames: Option<mpsc::UnboundedSender<Value>>,
    /// Items read while looking for a `pong`.
    held: VecDeque<Item>,
    cursor: String,
    /// SSE `: heartbeat` comments, or WebSocket pings from the server, read so far.
    heartbeats: Arc<AtomicUsize>,
    ended: Option<String>,
    pings: usize,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} follower on {}", self.transport, self.base)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Subscribes to `topics` on `transport` at `base` (`http://host:port`), from `since` or
    /// *now*, and returns once the subscription is in place (the `subscribed` frame or event,
    /// the first poll's reply). Resets sent before that are the first things it delivers.
    /// Panics if the subscription is refused.
    pub async fn start(
        transport: Transport,
        base: &str,
        topics: &[&str],
        since: Option<&str>,
    ) -> Follower {
        let (sender, items) = mpsc::unbounded_channel();
        let heartbeats = Arc::new(AtomicUsize::new(0));
        let params = query(topics, since);
        let (cursor, frames, task) = match transport {
            Transport::Ws => {
                let url = ws_base(base, &format!("/ws?{params}"));
                let mut client = WsClient::connect(&url).await;
                let mut resets = Vec::new();
                let subscribed = loop {
                    let frame = client.next().await;
                    match frame["type"].as_str() {
                        Some("reset") => resets.push(without_type(frame)),
                        Some("subscribed") => break frame,
                        _ => panic!("{url}: expected `subscribed` or a `reset`, got {frame}"),
                    }
                };
                let positions: BTreeMap<String, String> =
                    serde_json::from_value(subscribed["positions"].clone())
                        .unwrap_or_else(|e| panic!("bad positions ({e}) in {subscribed}"));
                let cursor = cursor_of(None, &positions);
                for reset in resets {
                    let _ = sender.send(Item::Delivery(Got::Reset(reset), cursor.clone()));
                }
                let (stream, pending) = client.into_parts();
                assert!(
                    pending.is_empty(),
                    "frames before `subscribed`: {pending:?}"
                );
                let (frames, outgoing) = mpsc::unbounded_channel();
                let task = tokio::spawn(follow_ws(
                    stream,
                    positions,
                    outgoing,
                    sender,
                    heartbeats.clone(),
                ));
                (cursor, Some(frames), task)
            }
            Transport::Sse => {
                let url = format!("{base}/events?{params}");
                let mut client = SseClient::connect(&url).await;
                let mut resets = Vec::new();
                let cursor = loop {
                    let event = client.next_event().await;
                    match event.event.as_str() {
                        "reset" => resets.push(event.json()),
                        "subscribed" => break event.id().to_owned(),
                        _ => panic!("{url}: expected `subscribed` or a `reset`, got {event:?}"),
                    }
                };
                for reset in resets {
                    let _ = sender.send(Item::Delivery(Got::Reset(reset), cursor.clone()));
                }
                let task = tokio::spawn(follow_sse(client, sender, heartbeats.clone()));
                (cursor, None, task)
            }
            Transport::Poll => {
                let reply = poll(&format!("{base}/poll?{params}&timeout=0")).await;
                let mut known = BTreeMap::new();
                // Until the first reply is taken whole, topics with messages in it are where
                // `since` put them: keep it in front (of two positions for a topic, the last
                // one wins).
                let prefix = since.filter(|since| !since.is_empty());
                let cursor = deliver_reply(&reply, prefix, &mut known, &sender);
                let url = format!("{base}/poll?{}", query(topics, None));
                let task = tokio::spawn(follow_poll(url, reply.cursor, known, sender));
                (cursor, None, task)
            }
        };
        Follower {
            transport,
            base: base.to_owned(),
            items,
            frames,
            held: VecDeque::new(),
            cursor,
            heartbeats,
            ended: None,
            pings: 0,
            task,
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// `http://host:port` of the node it follows.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The cursor for everything taken so far (its starting cursor before that): resuming from
    /// it delivers what comes after the last message taken.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// How many SSE heartbeat comments, or WebSocket pings from the server, it has read.
    pub fn heartbeats(&self) -> usize {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// The next message or reset, waiting up to `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Got {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(reason) = &self.ended {
                return Got::Ended(reason.clone());
            }
            let item = match self.held.pop_front() {
                Some(item) => item,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.items.recv()).await {
                        Err(_) => return Got::Quiet,
                        Ok(Some(item)) => item,
                        Ok(None) => Item::Ended("its task stopped (it panicked?)".to_owned()),
                    }
                }
            };
            match item {
                Item::Delivery(got, cursor) => {
                    self.cursor = cursor;
                    return got;
                }
                Item::Pong(_) => {}
                Item::Ended(reason) => self.ended = Some(reason),
            }
        }
    }

    /// The next message, within [`FOLLOW_LIMIT`]; panics on anything else.
    pub async fn message(&mut self) -> Value {
        match self.next_within(FOLLOW_LIMIT).await {
            Got::Message(message) => message,
            other => panic!("{self:?}: expected a message, got {other:?}"),
        }
    }

    /// The next reset, within [`FOLLOW_LIMIT`]; panics on anything else.
    pub async fn reset(&mut self) -> Value {
        match self.next_within(FOLLOW_LIMIT).await {
            Got::Reset(reset) => reset,
            other => panic!("{self:?}: expected a reset, got {other:?}"),
        }
    }

    /// Takes messages until every id of `last` has come, or until nothing comes for
    /// [`FOLLOW_LIMIT`]; returns what it took, for [`Ledger::tally`](crate::Ledger::tally).
    /// Anything else it gets (a reset, the end of the connection) is kept in `surprises`.
    pub async fn take_until(&mut self, last: &[String]) -> Taken {
        let mut waiting: BTreeSet<&str> = last.iter().map(String::as_str).collect();
        let mut taken = Taken::default();
        while !waiting.is_empty() {
            match self.next_within(FOLLOW_LIMIT).await {
                Got::Message(message) => {
                    if let Some(id) = message["id"].as_str() {
                        waiting.remove(id);
                    }
                    taken.messages.push(message);
                }
                Got::Reset(reset) => taken.surprises.push(format!("reset {reset}")),
                Got::Quiet => {
                    taken.surprises.push(format!(
                        "nothing for {FOLLOW_LIMIT:?} while waiting for {waiting:?}"
                    ));
                    break;
                }
                Got::Ended(reason) => {
                    taken.surprises.push(format!("ended: {reason}"));
                    break;
                }
            }
        }
        taken
    }

    /// WebSocket only: sends a `ping` frame and waits for its `pong` (messages read meanwhile
    /// are kept for later). Panics if none comes within [`TIMEOUT`](crate::TIMEOUT).
    pub async fn ping(&mut self) {
        self.pings += 1;
        let reference = format!("alive-{}", self.pings);
        let frames = self
            .frames
            .as_ref()
            .expect("ping is for WebSocket followers");
        frames
            .send(json!({"type": "ping", "ref": reference}))
            .expect("the WebSocket task is running");
        let deadline = Instant::now() + crate::TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let item = match tokio::time::timeout(left, self.items.recv()).await {
                Err(_) => panic!("{self:?}: no pong within {:?}", crate::TIMEOUT),
                Ok(None) => panic!("{self:?}: its task stopped"),
                Ok(Some(item)) => item,
            };
            match item {
                Item::Pong(pong) if pong["ref"] == reference.as_str() => return,
                Item::Ended(reason) => panic!("{self:?}: ended ({reason}) while pinged"),
                other => self.held.push_back(other),
            }
        }
    }

    /// Whether its connection is still open (a poll follower: whether it still polls).
    pub fn is_connected(&self) -> bool {
        self.ended.is_none() && !self.task.is_finished()
    }
}

/// A WebSocket frame without its `type`.
fn without_type(mut frame: Value) -> Value {
    if let Some(fields) = frame.as_object_mut() {
        fields.remove("type");
    }
    frame
}

/// `prefix` and then every position in `positions`, joined with `.`.
fn cursor_of(prefix: Option<&str>, positions: &BTreeMap<String, String>) -> String {
    prefix
        .into_iter()
        .chain(positions.values().map(String::as_str))
        .collect::<Vec<_>>()
        .join(".")
}

async fn follow_ws(
    mut stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    mut positions: BTreeMap<String, String>,
    mut outgoing: mpsc::UnboundedReceiver<Value>,
    sender: mpsc::UnboundedSender<Item>,
    heartbeats: Arc<AtomicUsize>,
) {
    let ended = |reason: String| {
        let _ = sender.send(Item::Ended(reason));
    };
    loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let Some(frame) = frame else { return };
                if let Err(e) = stream.send(Message::text(frame.to_string())).await {
                    return ended(format!("sending failed: {e}"));
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = match serde_json::from_str(&text) {
                        Ok(frame) => frame,
                        Err(e) => return ended(format!("a frame that is not JSON ({e}): {text}")),
                    };
                    match frame["type"].as_str() {
                        Some("message") => {
                            let (Some(topic), Some(id)) = (frame["topic"].as_str(), frame["id"].as_str()) else {
                                return ended(format!("a message without topic or id: {frame}"));
                            };
                            positions.insert(topic.to_owned(), id.to_owned());
                            let cursor = cursor_of(None, &positions);
                            let _ = sender.send(Item::Delivery(Got::Message(without_type(frame)), cursor));
                        }
                        Some("reset") => {
                            let cursor = cursor_of(None, &positions);
                            let _ = sender.send(Item::Delivery(Got::Reset(without_type(frame)), cursor));
                        }
                        Some("pong") => {
                            let _ = sender.send(Item::Pong(frame));
                        }
                        _ => return ended(format!("an unexpected frame: {frame}")),
                    }
                }
                // tungstenite queues the pong itself, and sends it with the next read or write.
                Some(Ok(Message::Ping(_))) => {
                    heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return ended(format!("closed by the server with {code}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return ended(format!("the connection failed: {e}")),
                None => return ended("the connection ended".to_owned()),
            },
        }
    }
}

async fn follow_sse(
    mut client: SseClient,
    sender: mpsc::UnboundedSender<Item>,
    heartbeats: Arc<AtomicUsize>,
) {
    let ended = |reason: String| {
        let _ = sender.send(Item::Ended(reason));
    };
    loop {
        match client.try_read_item().await {
            Ok(Some(SseItem::Event(event))) => {
                let json: Value = match serde_json::from_str(&event.data) {
                    Ok(json) => json,
                    Err(e) => return ended(format!("an event that is not JSON ({e}): {event:?}")),
                };
                match (event.event.as_str(), &event.id) {
                    ("message", Some(id)) => {
                        let _ = sender.send(Item::Delivery(Got::Message(json), id.clone()));
                    }
                    ("reset", None) => {
                        let cursor = client.last_event_id().to_owned();
                        let _ = sender.send(Item::Delivery(Got::Reset(json), cursor));
                    }
                    _ => return ended(format!("an unexpected event: {event:?}")),
                }
            }
            Ok(Some(SseItem::Comment(comment))) => {
                if comment == "heartbeat" {
                    heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Some(SseItem::Retry(_))) => {}
            Ok(None) => return ended("the stream ended".to_owned()),
            Err(e) => return ended(format!("the stream failed: {e}")),
        }
    }
}

/// Hands over a poll reply's resets and messages, each with the cursor for everything up to
/// it, and updates `known` (the position of every topic so far). Returns the cursor before any
/// of them. `prefix` goes in front of every cursor (see [`Follower::start`]).
fn deliver_reply(
    reply: &PollReply,
    prefix: Option<&str>,
    known: &mut BTreeMap<String, String>,
    sender: &mpsc::UnboundedSender<Item>,
) -> String {
    let with_messages: BTreeSet<&str> = reply
        .messages
        .iter()
        .filter_map(|m| m["topic"].as_str())
        .collect();
    // A topic without messages here is where the reply says from the start: resets (to a new
    // epoch) included.
    for (topic, position) in &reply.positions {
        if !with_messages.contains(topic.as_str()) {
            known.insert(topic.clone(), position.clone());
        }
    }
    let before = cursor_of(prefix, known);
    for reset in &reply.reset {
        let _ = sender.send(Item::Delivery(
            Got::Reset(reset.clone()),
            cursor_of(prefix, known),
        ));
    }
    for message in &reply.messages {
        if let (Some(topic), Some(id)) = (message["topic"].as_str(), message["id"].as_str()) {
            known.insert(topic.to_owned(), id.to_owned());
        }
        let _ = sender.send(Item::Delivery(
            Got::Message(message.clone()),
            cursor_of(prefix, known),
        ));
    }
    known.extend(reply.positions.clone());
    before
}

/// Polls `url` (`…/poll?topic=…`) from `cursor` for ever, retrying refusals (`503`, while the
/// broker is out of reach) and failed requests.
async fn follow_poll(
    url: String,
    mut cursor: String,
    mut known: BTreeMap<String, String>,
    sender: mpsc::UnboundedSender<Item>,
) {
    let client = reqwest::Client::new();
    loop {
        let request = format!("{url}&since={cursor}&timeout={POLL_HOLD}");
        let answer = tokio::time::timeout(POLL_REQUEST_LIMIT, async {
            let response = client.get(&request).send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .await;
        let (status, body) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(POLL_RETRY).await;
                continue;
            }
        };
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(POLL_RETRY).await;
            continue;
        }
        let reply: PollReply = match serde_json::from_str(&body) {
            Ok(reply) if status == reqwest::StatusCode::OK => reply,
            _ => {
                let _ = sender.send(Item::Ended(format!(
                    "GET {request} answered {status} {body}"
                )));
                return;
            }
        };
        deliver_reply(&reply, None, &mut known, &sender);
        cursor = reply.cursor;
    }
}
