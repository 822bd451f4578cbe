//! One WebSocket connection's loop: client frames, deliveries, heartbeats, and how it ends.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use switchboard_hub::{Cursor, Data, Message, TopicName};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use super::client_frame::{ClientFrame, Refused, missing};
use super::close;
use super::publishes::{Answer, Publishes};
use crate::auth::{self, Grant};
use crate::caller::Caller;
use crate::connections::Transport;
use crate::error::{AppError, ErrorCode};
use crate::metrics::{CloseReason, ConnectionMetric, ending};
use crate::publish::{publish_counted, too_large};
use crate::rate::ConnectionLimiter;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::subscription::{Next, Subscription};
use crate::wire::encodings::ws_message;
use crate::wire::frames::{self, Reference, ServerFrame};
use crate::wire::objects::ResetObject;

/// A slow reader gets this long to take a close frame before it is cut off.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session ended, and what to tell the client.
struct Ending {
    code: u16,
    reason: &'static str,
}

/// Most answers to a client's publishes that wait, fed and not written, for its next frames:
/// a client that never stops sending is still answered at least this often.
const MOST_UNWRITTEN_ANSWERS: u8 = 64;

/// The close reason of a slow consumer.
const SLOW_CONSUMER: &str = "slow consumer";

impl Ending {
    /// How metrics count the connection's end.
    fn close_reason(&self) -> CloseReason {
        match self.code {
            close::GOING_AWAY => CloseReason::Shutdown,
            close::TRY_AGAIN_LATER if self.reason == SLOW_CONSUMER => CloseReason::SlowConsumer,
            close::TOKEN_EXPIRED => CloseReason::Auth,
            close::DISCONNECTED => CloseReason::Normal,
            _ => CloseReason::Error,
        }
    }
}

/// One WebSocket connection's state.
pub struct Session {
    state: AppState,
    subscription: Subscription,
    /// Holds this connection's place in `max_connections`.
    _permit: OwnedSemaphorePermit,
    /// The client's address (rate limits) and what it may do; an `auth` frame replaces the
    /// grant.
    caller: Caller,
    /// When the grant runs out; boxed, since most connections have none.
    expiry: Option<Pin<Box<Sleep>>>,
    /// This connection's own publish allowance, when publishes are limited.
    publish_limiter: Option<Box<ConnectionLimiter>>,
    /// The id of the request that opened the connection, for its log lines.
    request_id: Option<RequestId>,
    /// Counts the connection closed, with why, when the session ends.
    counted: Option<ConnectionMetric>,
    /// Publishes read and not yet answered, so that a client need not wait for each `ack`.
    publishes: Publishes,
    /// Answers fed to the socket and not yet written: while the client's next frames are
    /// already here, they wait to share a write.
    unwritten_answers: u8,
}

type SendResult = Result<(), axum::Error>;

impl Session {
    pub fn new(
        state: AppState,
        permit: OwnedSemaphorePermit,
        caller: Caller,
        request_id: Option<RequestId>,
    ) -> Session {
        Session {
            subscription: state.subscription(Transport::Ws),
            expiry: expiry_of(&caller.grant),
            publish_limiter: state.rates.connection_limiter().map(Box::new),
            request_id,
            counted: state.connection_metric(Transport::Ws),
            state,
            _permit: permit,
            caller,
            publishes: Publishes::default(),
            unwritten_answers: 0,
        }
    }

    /// Lists the connection among the live ones, for operators.
    pub fn register(&mut self) {
        self.subscription
            .register(&self.state.live_connections, &self.caller);
    }

    /// Runs the connection until the client leaves, fails, or the gateway shuts down. Generic
    /// over the socket so that it can be driven without a network in tests.
    ///
    /// A plain block rather than an `async fn`, whose future would hold the session and the
    /// socket twice (as arguments, and as the locals they are moved into).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future holds its arguments twice: 700 bytes per connection"
    )]
    pub fn run<S>(
        mut self,
        mut socket: S,
        topics: Vec<TopicName>,
        cursor: Option<Cursor>,
    ) -> impl Future<Output = ()> + Send
    where
        S: Sink<WsMessage, Error = axum::Error>
            + Stream<Item = Result<WsMessage, axum::Error>>
            + Unpin
            + Send,
    {
        async move {
            let ended = self.serve(&mut socket, topics, cursor).await;
            if let Some(ended) = &ended {
                ending(&mut self.counted, ended.close_reason());
            }
            if let Some(Ending { code, reason }) = ended {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                };
                let closed = async {
                    socket.send(WsMessage::Close(Some(frame))).await?;
                    // Wait for the client's close, so the connection ends cleanly on both sides.
                    while let Some(Ok(message)) = socket.next().await {
                        if matches!(message, WsMessage::Close(_)) {
                            break;
                        }
                    }
                    Ok::<_, axum::Error>(())
                };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed).await;
            }
        }
    }

    /// The connection's main loop; returns how to close, or `None` when the socket is gone.
    async fn serve<S>(
        &mut self,
        socket: &mut S,
        topics: Vec<TopicName>,
        cursor: Option<Cursor>,
    ) -> Option<Ending>
    where
        S: Sink<WsMessage, Error = axum::Error>
            + Stream<Item = Result<WsMessage, axum::Error>>
            + Unpin,
    {
        // Boxed: it runs once, and would otherwise add its size to the whole session's.
        let subscribed = match topics.is_empty() {
            true => Ok(()),
            false => Box::pin(self.subscribe(&topics, cursor.as_ref(), None, socket)).await,
        };
        if subscribed.is_err() {
            return None;
        }
        let heartbeat_interval = self.state.config.heartbeat_interval;
        let mut heartbeat = crate::heartbeat::interval(heartbeat_interval);
        let mut last_heard = tokio::time::Instant::now();
        let shutdown = self.state.shutdown.clone();
        loop {
            let result = if self.unwritten_answers > 0 {
                // Answers are fed but not written: the client's frames already here are read
                // first, so that a burst's answers share one write. They are written as soon
                // as reading would wait, or once there are `MOST_UNWRITTEN_ANSWERS`.
                let ready = match self.unwritten_answers < MOST_UNWRITTEN_ANSWERS
                    && self.publishes.has_room()
                {
                    true => socket.next().now_or_never(),
                    false => None,
                };
                match ready {
                    Some(incoming) => {
                        last_heard = tokio::time::Instant::now();
                        match Box::pin(self.on_incoming(incoming, socket)).await {
                            ControlFlow::Continue(result) => result,
                            ControlFlow::Break(ending) => return ending,
                        }
                    }
                    None => {
                        self.unwritten_answers = 0;
                        socket.flush().await
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        return Some(Ending { code: close::GOING_AWAY, reason: "gateway shutting down" });
                    }
                    () = auth::until(&mut self.expiry) => {
                        // Told, then closed: the client reconnects with a fresh token and its
                        // cursor.
                        let _ = send_text(socket, auth::expired().frame(None)).await;
                        return Some(Ending { code: close::TOKEN_EXPIRED, reason: "token expired" });
                    }
                    // Boxed, as client frames are below: most sessions never publish.
                    answer = self.publishes.next(), if !self.publishes.is_empty() => {
                        Box::pin(self.send_answers(answer, socket)).await
                    }
                    // Not read while the client has its most publishes in flight: it waits, and
                    // so does what it sends.
                    incoming = socket.next(), if self.publishes.has_room() => {
                        last_heard = tokio::time::Instant::now();
                        // Boxed: client frames are rare next to deliveries, and keeping their
                        // handling out of this loop's state keeps every session small.
                        match Box::pin(self.on_incoming(incoming, socket)).await {
                            ControlFlow::Continue(result) => result,
                            ControlFlow::Break(ending) => return ending,
                        }
                    }
                    next = self.subscription.next() => match next {
                        Next::Message(message) => self.deliver(message, socket).await,
                        Next::Reset(topic, reason) => {
                            send_text(socket, ServerFrame::Reset(ResetObject::new(&topic, reason)).text()).await
                        }
                        Next::Overflowed => {
                            return Some(Ending { code: close::TRY_AGAIN_LATER, reason: SLOW_CONSUMER });
                        }
                        Next::Unavailable(error) => {
                            let request_id = self.request_id.as_ref().map(RequestId::as_str);
                            tracing::warn!(request_id, "websocket ended: {}", error.message);
                            return Some(Ending { code: close::TRY_AGAIN_LATER, reason: "broker unavailable" });
                        }
                        Next::Disconnected => {
                            return Some(Ending { code: close::DISCONNECTED, reason: "disconnected by an operator" });
                        }
                    },
                    _ = heartbeat.tick() => {
                        if last_heard.elapsed() > heartbeat_interval * 2 {
                            return Some(Ending { code: close::HEARTBEAT_TIMEOUT, reason: "heartbeat timeout" });
                        }
                        socket.send(WsMessage::Ping(bytes::Bytes::new())).await
                    }
                }
            };
            if result.is_err() {
                ending(&mut self.counted, CloseReason::Error);
                return None;
            }
        }
    }

    /// Handles what reading the client gave: a frame, a failure, or the end. Breaks with how
    /// to close (`None` when the socket is gone). A publish answered at once is fed, not
    /// written: the loop writes it once no more frames are waiting.
    async fn on_incoming<S>(
        &mut self,
        incoming: Option<Result<WsMessage, axum::Error>>,
        socket: &mut S,
    ) -> ControlFlow<Option<Ending>, SendResult>
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let result = match incoming {
            None => return ControlFlow::Break(None),
            Some(Err(e)) => return ControlFlow::Break(read_failure(&e)),
            Some(Ok(WsMessage::Text(text))) => match self.handle_frame(text.as_str(), socket).await
            {
                Ok(()) => self.feed_answers(None, socket).await,
                handled => handled,
            },
            Some(Ok(WsMessage::Binary(_))) => {
                let error = AppError::new(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text",
                );
                self.send_error(socket, &error, None).await
            }
            Some(Ok(WsMessage::Close(_))) => {
                // Tungstenite has queued the close reply RFC 6455 asks for; it goes out after
                // the answers to publishes the client sent just before its close.
                let _ = socket.flush().await;
                return ControlFlow::Break(None);
            }
            Some(Ok(_)) => Ok(()),
        };
        ControlFlow::Continue(result)
    }

    /// Sends a live message and what else is queued (up to `write_max_messages`), in one
    /// write; with a `write_delay`, after waiting that long for more to queue up.
    async fn deliver<S>(&mut self, first: Arc<Message>, socket: &mut S) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let config = &self.state.config;
        let (delay, most) = (config.write_delay, config.write_max_messages);
        if !delay.is_zero() {
            // Boxed: most sessions have no delay, and carry no timer for it.
            Box::pin(tokio::time::sleep(delay)).await;
        }
        socket.feed(message_frame(&first)).await?;
        for _ in 1..most {
            let Some(message) = self.subscription.try_next() else {
                break;
            };
            socket.feed(message_frame(&message)).await?;
        }
        socket.flush().await
    }

    async fn handle_frame<S>(&mut self, text: &str, socket: &mut S) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(Refused { error, reference }) => {
                return self.send_error(socket, &error, reference.as_ref()).await;
            }
        };
        let reference = frame.reference.clone();
        let publishing = frame.kind().is_ok_and(|kind| kind == "publish");
        match self.act(frame, socket).await {
            Ok(result) => result,
            // Answered in turn with the publishes before it.
            Err(error) if publishing => {
                self.publishes
                    .push(reference, std::future::ready(Err(error)));
                Ok(())
            }
            Err(error) => self.send_error(socket, &error, reference.as_ref()).await,
        }
    }

    /// Sends `first` and every publish's answer ready after it, in one write.
    async fn send_answers<S>(&mut self, first: Answer, socket: &mut S) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        self.feed_answers(Some(first), socket).await?;
        self.unwritten_answers = 0;
        socket.flush().await
    }

    /// Feeds `first` (if any) and every publish's answer ready after it to the socket,
    /// counting them in `unwritten_answers`; writing them is the caller's.
    async fn feed_answers<S>(&mut self, first: Option<Answer>, socket: &mut S) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let mut next = first.or_else(|| self.publishes.next_ready());
        while let Some(Answer { reference, outcome }) = next {
            let text = match outcome {
                Ok(message) => ServerFrame::Ack {
                    reference: reference.as_ref(),
                    topic: message.topic.as_str(),
                    id: message.id(),
                }
                .text(),
                Err(error) => {
                    self.state.count_rejection(error.code);
                    error.frame(reference.as_ref())
                }
            };
            socket.feed(text_frame(text)).await?;
            self.unwritten_answers = self.unwritten_answers.saturating_add(1);
            next = self.publishes.next_ready();
        }
        Ok(())
    }

    /// Sends an error frame, counting the refusal. (`&mut`: the session is not `Sync`.)
    async fn send_error<S>(
        &mut self,
        socket: &mut S,
        error: &AppError,
        reference: Option<&Reference>,
    ) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        self.state.count_rejection(error.code);
        send_text(socket, error.frame(reference)).await
    }

    /// Carries out a client frame. The outer error is the client's (an error frame follows);
    /// the inner one is the socket's.
    async fn act<S>(
        &mut self,
        frame: ClientFrame<'_>,
        socket: &mut S,
    ) -> Result<SendResult, AppError>
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let reference = frame.reference.clone();
        match frame.kind()?.as_str() {
            "publish" => {
                let topic = TopicName::new(&frame.string("topic")?)?;
                self.caller.grant.check_publish(&topic)?;
                if !self.caller.grant.is_publish_key() {
                    self.state
                        .rates
                        .check_publish(self.caller.address, self.publish_limiter.as_deref())?;
                }
                let data = frame.fields.get("data").ok_or_else(|| missing("data"))?;
                let limit = self.state.config.max_message_bytes;
                if data.get().len() > limit {
                    return Err(too_large(limit));
                }
                let data = Data::from_json(data.get().as_bytes())?;
                let published = publish_counted(&self.state, Transport::Ws, &topic, &data);
                self.publishes.push(reference, published);
                Ok(Ok(()))
            }
            "subscribe" => {
                let topics = frame.topics(self.state.config.max_topics_per_connection)?;
                self.caller.grant.check_subscribe(&topics)?;
                let cursor = frame
                    .optional_string("since")?
                    .map(|c| Cursor::parse(&c))
                    .transpose()?;
                Ok(self
                    .subscribe(&topics, cursor.as_ref(), reference, socket)
                    .await)
            }
            "unsubscribe" => {
                let topics = frame.topics(self.state.config.max_topics_per_connection)?;
                self.subscription.leave(&topics);
                let reply = ServerFrame::Unsubscribed {
                    reference: reference.as_ref(),
                    topics: topics.iter().map(|t| t.as_str()).collect(),
                };
                Ok(send_text(socket, reply.text()).await)
            }
            "ping" => {
                let pong = ServerFrame::Pong {
                    reference: reference.as_ref(),
                };
                Ok(send_text(socket, pong.text()).await)
            }
            "auth" => {
                let grant = self.state.auth.grant_for_token(&frame.string("token")?)?;
                Ok(self.authenticate(grant, reference, socket).await)
            }
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown frame type {other:?}; expected publish, subscribe, unsubscribe, \
                     ping or auth"
                ),
            )),
        }
    }

    /// Puts `grant` in force: topics it does not cover are left (`unsubscribed`), its expiry
    /// replaces the old one, and the client gets its `ack`.
    async fn authenticate<S>(
        &mut self,
        grant: Grant,
        reference: Option<Reference>,
        socket: &mut S,
    ) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let not_covered: Vec<TopicName> = self
            .subscription
            .positions()
            .into_iter()
            .map(|(topic, _)| topic)
            .filter(|topic| !grant.may_subscribe(topic.as_str()))
            .collect();
        if !not_covered.is_empty() {
            self.subscription.leave(&not_covered);
            let left = ServerFrame::Unsubscribed {
                reference: None,
                topics: not_covered.iter().map(|t| t.as_str()).collect(),
            };
            socket.feed(text_frame(left.text())).await?;
        }
        self.expiry = expiry_of(&grant);
        self.subscription.set_subject(grant.subject());
        let ack = ServerFrame::AuthAck {
            reference: reference.as_ref(),
            expires: grant.expires(),
        };
        self.caller.grant = grant;
        send_text(socket, ack.text()).await
    }

    /// Joins `topics` and sends, in order: resets, `subscribed`, then the missed messages; or
    /// an error frame when the client asked for something it may not have.
    async fn subscribe<S>(
        &mut self,
        topics: &[TopicName],
        cursor: Option<&Cursor>,
        reference: Option<Reference>,
        socket: &mut S,
    ) -> SendResult
    where
        S: Sink<WsMessage, Error = axum::Error> + Unpin,
    {
        let resets = match self.subscription.join(topics, cursor, true).await {
            Ok(resets) => resets,
            Err(error) => {
                return self.send_error(socket, &error, reference.as_ref()).await;
            }
        };
        for (topic, reason) in &resets {
            let reset = ServerFrame::Reset(ResetObject::new(topic, *reason));
            socket.feed(text_frame(reset.text())).await?;
        }
        let mut positions = self.subscription.positions();
        positions.retain(|(followed, _)| topics.contains(followed));
        let subscribed = frames::subscribed(reference.as_ref(), &positions);
        socket.feed(text_frame(subscribed.text())).await?;
        socket.flush().await
    }
}

/// The timer of `grant`'s end, if it has one.
fn expiry_of(grant: &Grant) -> Option<Pin<Box<Sleep>>> {
    auth::expiry_timer(grant.remaining())
}

fn text_frame(text: String) -> WsMessage {
    WsMessage::Text(Utf8Bytes::from(text))
}

fn message_frame(message: &Message) -> WsMessage {
    WsMessage::Text(ws_message(message))
}

async fn send_text<S>(socket: &mut S, text: String) -> SendResult
where
    S: Sink<WsMessage, Error = axum::Error> + Unpin,
{
    socket.send(text_frame(text)).await
}

/// How to close after a failed read, by what the client did wrong; `None` when the connection
/// itself failed and there is no one to tell. Tungstenite does not close on a read error, so
/// the session can still send the close frame RFC 6455 asks for.
fn read_failure(error: &axum::Error) -> Option<Ending> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<tungstenite::Error>() {
            return match e {
                tungstenite::Error::Capacity(_) => Some(Ending {
                    code: close::TOO_BIG,
                    reason: "frame too large",
                }),
                tungstenite::Error::Utf8(_) => Some(Ending {
                    code: close::NOT_UTF8,
                    reason: "text is not UTF-8",
                }),
                // The peer closed the TCP connection: nothing can reach it any more.
                tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ) => None,
                tungstenite::Error::Protocol(_) => Some(Ending {
                    code: close::PROTOCOL_ERROR,
                    reason: "protocol error",
                }),
                _ => None,
            };
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use switchboard_hub::Hub;
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Config;

    /// A socket made of channels: what the session sends, what the test feeds it, and how many
    /// messages each write (each flush) carried.
    struct FakeSocket {
        to_client: mpsc::UnboundedSender<WsMessage>,
        from_client: mpsc::UnboundedReceiver<Result<WsMessage, axum::Error>>,
        writes: mpsc::UnboundedSender<usize>,
        fed: usize,
    }

    impl Sink<WsMessage> for FakeSocket {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
            self.fed += 1;
            self.to_client.send(item).map_err(axum::Error::new)
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            let fed = std::mem::take(&mut self.fed);
            if fed > 0 {
                let _ = self.writes.send(fed);
            }
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Stream for FakeSocket {
        type Item = Result<WsMessage, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.from_client.poll_recv(cx)
        }
    }

    struct Client {
        send: mpsc::UnboundedSender<Result<WsMessage, axum::Error>>,
        receive: mpsc::UnboundedReceiver<WsMessage>,
        /// Messages per write, in order.
        writes: mpsc::UnboundedReceiver<usize>,
        state: AppState,
    }

    impl Client {
        fn start(topics: &[&str]) -> Client {
            Client::start_with(topics, Config::default())
        }

        fn start_with(topics: &[&str], config: Config) -> Client {
            let state = AppState::new(
                Arc::new(Hub::new(Default::default())),
                config,
                CancellationToken::new(),
            );
            let (to_client, receive) = mpsc::unbounded_channel();
            let (send, from_client) = mpsc::unbounded_channel();
            let (written, writes) = mpsc::unbounded_channel();
            let permit = Arc::new(Semaphore::new(1))
                .try_acquire_owned()
                .expect("permit");
            let topics = topics
                .iter()
                .map(|t| TopicName::new(t).expect("topic"))
                .collect();
            let caller = Caller {
                address: "127.0.0.1".parse().expect("an address"),
                grant: Grant::everyone(),
            };
            let session = Session::new(state.clone(), permit, caller, None);
            tokio::spawn(session.run(
                FakeSocket {
                    to_client,
                    from_client,
                    writes: written,
                    fed: 0,
                },
                topics,
                None,
            ));
            Client {
                send,
                receive,
                writes,
                state,
            }
        }

        fn send(&self, text: &str) {
            self.send
                .send(Ok(WsMessage::Text(text.into())))
                .expect("session alive");
        }

        async fn next(&mut self) -> serde_json::Value {
            let message = tokio::time::timeout(Duration::from_secs(2), self.receive.recv())
                .await
                .expect("a frame in time")
                .expect("session alive");
            match message {
                WsMessage::Text(text) => serde_json::from_str(text.as_str()).expect("JSON frame"),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Publishes `count` messages (`0`, `1`, …) to `topic` straight into the hub.
    async fn publish_many(state: &AppState, topic: &str, count: usize) {
        let topic = TopicName::new(topic).expect("topic");
        for n in 0..count {
            let data = Data::from_json(n.to_string().as_bytes()).expect("data");
            state
                .broker
                .publish(&topic, &data)
                .await
                .expect("published");
        }
    }

    /// With a write delay, messages that arrive within it go out in one write, at most
    /// `write_max_messages` at a time; without one, the first goes out at once.
    #[tokio::test(start_paused = true)]
    async fn a_write_delay_gathers_messages_into_one_write() {
        let config = Config {
            write_delay: Duration::from_millis(10),
            write_max_messages: 4,
            ..Config::default()
        };
        let mut client = Client::start_with(&["chat"], config);
        assert_eq!(client.next().await["type"], "subscribed");
        assert_eq!(client.writes.recv().await, Some(1), "the subscribed frame");
        publish_many(&client.state, "chat", 1).await;
        // The session has the first message and waits; six more arrive meanwhile.
        tokio::time::sleep(Duration::from_millis(5)).await;
        publish_many(&client.state, "chat", 6).await;
        assert_eq!(client.writes.recv().await, Some(4), "the cap");
        assert_eq!(
            client.writes.recv().await,
            Some(3),
            "the rest, after another delay"
        );
        for n in [0, 0, 1, 2, 3, 4, 5] {
            assert_eq!(client.next().await["data"], n);
        }

        let mut eager = Client::start(&["chat"]);
        assert_eq!(eager.next().await["type"], "subscribed");
        assert_eq!(eager.writes.recv().await, Some(1));
        publish_many(&eager.state, "chat", 1).await;
        assert_eq!(eager.writes.recv().await, Some(1));
    }

    /// Publishes the client has already sent are answered together, in order, at most
    /// `MOST_UNWRITTEN_ANSWERS` to a write; a lone publish is answered at once.
    #[tokio::test]
    async fn a_burst_of_publishes_is_answered_in_one_write() {
        let mut client = Client::start(&[]);
        let burst = usize::from(MOST_UNWRITTEN_ANSWERS) + 6;
        for n in 0..burst {
            // One refused on the way, answered in its turn.
            let topic = if n == 3 { "a b" } else { "t" };
            client.send(&format!(
                r#"{{"type":"publish","topic":"{topic}","data":{n},"ref":{n}}}"#
            ));
        }
        assert_eq!(
            client.writes.recv().await,
            Some(usize::from(MOST_UNWRITTEN_ANSWERS))
        );
        assert_eq!(client.writes.recv().await, Some(6));
        for n in 0..burst {
            let answer = client.next().await;
            let kind = if n == 3 { "error" } else { "ack" };
            assert_eq!(answer["type"], kind, "{answer}");
            assert_eq!(answer["ref"], n, "{answer}");
        }
        client.send(r#"{"type":"publish","topic":"t","data":0,"ref":"lone"}"#);
        assert_eq!(client.writes.recv().await, Some(1));
        assert_eq!(client.next().await["ref"], "lone");
    }

    /// A client that publishes and closes at once still gets its answer.
    #[tokio::test]
    async fn a_publish_just_before_a_close_is_answered() {
        let mut client = Client::start(&[]);
        client.send(r#"{"type":"publish","topic":"t","data":0,"ref":"last"}"#);
        client
            .send
            .send(Ok(WsMessage::Close(None)))
            .expect("session alive");
        assert_eq!(client.writes.recv().await, Some(1), "the ack, written");
        assert_eq!(client.next().await["ref"], "last");
    }

    #[tokio::test]
    async fn subscribe_publish_and_receive() {
        let mut client = Client::start(&["chat"]);
        let subscribed = client.next().await;
        assert_eq!(subscribed["type"], "subscribed");
        assert_eq!(subscribed["topics"], serde_json::json!(["chat"]));
        client.send(r#"{"type":"publish","topic":"chat","data":{"n":1},"ref":7}"#);
        let (first, second) = (client.next().await, client.next().await);
        let (ack, message) = if first["type"] == "ack" {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(ack["ref"], 7);
        assert_eq!(message["type"], "message");
        assert_eq!(message["data"], serde_json::json!({"n": 1}));
        assert_eq!(message["id"], ack["id"]);
    }

    #[tokio::test]
    async fn bad_frames_get_errors_and_the_session_goes_on() {
        let mut client = Client::start(&[]);
        let cases = [
            ("not json", "bad_json", None),
            ("[1]", "bad_request", None),
            (r#"{"ref":"a"}"#, "bad_request", Some("a")),
            (r#"{"type":"dance","ref":"b"}"#, "unknown_type", Some("b")),
            (
                r#"{"type":"publish","topic":"a b","data":1,"ref":"c"}"#,
                "bad_topic",
                Some("c"),
            ),
            (
                r#"{"type":"publish","data":1,"ref":"d"}"#,
                "missing_topic",
                Some("d"),
            ),
            (
                r#"{"type":"publish","topic":"t","ref":"e"}"#,
                "bad_request",
                Some("e"),
            ),
            (
                r#"{"type":"subscribe","topics":[],"ref":"f"}"#,
                "missing_topic",
                Some("f"),
            ),
            (
                r#"{"type":"subscribe","topics":["t"],"since":"nope","ref":"g"}"#,
                "bad_cursor",
                Some("g"),
            ),
        ];
        for (frame, code, reference) in cases {
            client.send(frame);
            let error = client.next().await;
            assert_eq!(error["type"], "error", "{frame}");
            assert_eq!(error["code"], code, "{frame}");
            assert_eq!(error["ref"].as_str(), reference, "{frame}");
        }
        client.send(r#"{"type":"ping","ref":"still here"}"#);
        assert_eq!(
            client.next().await,
            serde_json::json!({"type": "pong", "ref": "still here"})
        );
    }

    #[tokio::test]
    async fn repeated_keys_are_refused_with_the_ref_when_it_is_unambiguous() {
        use serde_json::{Value, json};
        let mut client = Client::start(&["a", "b"]);
        assert_eq!(client.next().await["type"], "subscribed");
        let cases = [
            (
                r#"{"type":"publish","topic":"a","topic":"b","data":1,"ref":"r1"}"#,
                "topic",
                json!("r1"),
            ),
            // The same key, however it is escaped; `ref` before the repeat.
            (
                r#"{"ref":"r2","type":"publish","topic":"a","top\u0069c":"b","data":1}"#,
                "topic",
                json!("r2"),
            ),
            (
                r#"{"type":"subscribe","type":"publish","topics":["a"],"topic":"a","data":1,"ref":3}"#,
                "type",
                json!(3),
            ),
            (
                r#"{"type":"publish","topic":"a","data":1,"data":2}"#,
                "data",
                Value::Null,
            ),
            // Which `ref` to echo is ambiguous: none is.
            (r#"{"type":"ping","ref":"x","ref":"y"}"#, "ref", Value::Null),
        ];
        for (frame, key, reference) in cases {
            client.send(frame);
            let error = client.next().await;
            assert_eq!(error["type"], "error", "{frame}: {error}");
            assert_eq!(error["code"], "bad_request", "{frame}: {error}");
            assert_eq!(
                error["message"],
                format!("duplicate key `{key}`"),
                "{frame}: {error}"
            );
            assert_eq!(error["ref"], reference, "{frame}: {error}");
        }
        // Nothing was published: the next frame is the pong, not a message.
        client.send(r#"{"type":"ping","ref":"end"}"#);
        assert_eq!(client.next().await, json!({"type": "pong", "ref": "end"}));
    }

    #[tokio::test]
    async fn the_topic_limit_wins_over_names_past_it() {
        let mut client = Client::start(&[]);
        let max = client.state.config.max_topics_per_connection;
        // More distinct names than the limit, then one that is no topic at all.
        let mut names: Vec<String> = (0..=max).map(|i| format!("t{i}")).collect();
        names.push("a b".into());
        for kind in ["subscribe", "unsubscribe"] {
            let frame = serde_json::json!({"type": kind, "topics": names, "ref": kind});
            client.send(&frame.to_string());
            let error = client.next().await;
            assert_eq!(error["code"], "too_many_topics", "{kind}: {error}");
            assert_eq!(error["ref"], kind, "{error}");
        }
        // Repeats do not count towards the limit.
        let repeats: Vec<String> = (0..10 * max).map(|i| format!("t{}", i % max)).collect();
        let frame = serde_json::json!({"type": "subscribe", "topics": repeats, "ref": 1});
        client.send(&frame.to_string());
        let subscribed = client.next().await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        assert_eq!(subscribed["topics"].as_array().map(Vec::len), Some(max));
    }

    #[tokio::test]
    async fn oversized_data_is_refused() {
        let mut client = Client::start(&[]);
        let big = "x".repeat(client.state.config.max_message_bytes);
        client.send(&format!(
            r#"{{"type":"publish","topic":"t","data":"{big}","ref":1}}"#
        ));
        assert_eq!(client.next().await["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn broken_frames_close_with_the_codes_of_rfc_6455() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let cases = [
            (tungstenite::Error::Utf8("0xff".into()), 1007),
            (
                tungstenite::Error::Protocol(ProtocolError::UnmaskedFrameFromClient),
                1002,
            ),
            (
                tungstenite::Error::Protocol(ProtocolError::NonZeroReservedBits),
                1002,
            ),
            (
                tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1,
                }),
                1009,
            ),
        ];
        for (error, code) in cases {
            let mut client = Client::start(&[]);
            let described = error.to_string();
            client
                .send
                .send(Err(axum::Error::new(error)))
                .expect("session alive");
            let close = tokio::time::timeout(Duration::from_secs(2), client.receive.recv())
                .await
                .expect("in time");
            match close {
                Some(WsMessage::Close(Some(frame))) => assert_eq!(frame.code, code, "{described}"),
                other => panic!("{described}: expected a close frame, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn shutdown_closes_with_going_away() {
        let mut client = Client::start(&["chat"]);
        client.next().await;
        client.state.shutdown.cancel();
        let close = tokio::time::timeout(Duration::from_secs(2), client.receive.recv())
            .await
            .expect("in time");
        match close {
            Some(WsMessage::Close(Some(frame))) => assert_eq!(frame.code, close::GOING_AWAY),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
