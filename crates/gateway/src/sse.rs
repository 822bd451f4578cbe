//! Server-Sent Events: `GET /events`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use switchboard_hub::Message;

use crate::auth;
use crate::caller::Caller;
use crate::connections::Transport;
use crate::error::AppError;
use crate::metrics::{CloseReason, ending};
use crate::request::QueryParams;
use crate::state::AppState;
use crate::subscription::{Next, Subscription};
use crate::wire::sse;

/// Messages at hand are written together up to about this size, so one huge write does not
/// hold the connection's memory.
const CHUNK_BYTES: usize = 64 * 1024;

/// `GET /events?topic=A[&topic=B][&since=C]`.
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let params = QueryParams::parse(uri.query());
    let topics = params.required_topics(state.config.max_topics_per_connection)?;
    let cursor = params.cursor(&headers)?;
    caller.grant.check_subscribe(&topics)?;
    state.rates.check_connect(caller.address)?;
    let permit = state.open_connection()?;
    let mut subscription = state.subscription(Transport::Sse);
    subscription.register(&state.live_connections, &caller);
    let resets = subscription.join(&topics, cursor.as_ref(), true).await?;

    let mut prelude = BytesMut::new();
    sse::put_retry(&mut prelude, state.config.sse_retry);
    for (topic, reason) in &resets {
        sse::put_reset(&mut prelude, topic, *reason);
    }
    sse::put_subscribed(
        &mut prelude,
        &subscription.cursor(),
        &subscription.positions(),
    );
    let single_topic = topics.len() == 1;
    tracing::info!(
        topics = topics.len(),
        sub = caller.grant.subject(),
        "sse stream opened"
    );

    let mut counted = state.connection_metric(Transport::Sse);
    let shutdown = state.shutdown.clone();
    let heartbeat_interval = state.config.heartbeat_interval;
    let (write_delay, write_max) = (state.config.write_delay, state.config.write_max_messages);
    let expiry = caller.grant.remaining();
    let stream = async_stream::stream! {
        let _permit = permit;
        yield Ok::<Bytes, Infallible>(prelude.freeze());
        let mut heartbeat = crate::heartbeat::interval(heartbeat_interval);
        let mut expiry = auth::expiry_timer(expiry);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    ending(&mut counted, CloseReason::Shutdown);
                    break;
                }
                () = auth::until(&mut expiry) => {
                    // Told, and ended: the client reconnects with a fresh token and its cursor.
                    ending(&mut counted, CloseReason::Auth);
                    let mut event = BytesMut::new();
                    sse::put_error(&mut event, &auth::expired());
                    yield Ok(event.freeze());
                    break;
                }
                next = subscription.next() => match next {
                    Next::Message(message) => {
                        if !write_delay.is_zero() {
                            // Boxed: most streams have no delay, and carry no timer for it.
                            Box::pin(tokio::time::sleep(write_delay)).await;
                        }
                        yield Ok(coalesce(&mut subscription, message, single_topic, write_max));
                    }
                    Next::Reset(topic, reason) => {
                        let mut event = BytesMut::new();
                        sse::put_reset(&mut event, &topic, reason);
                        yield Ok(event.freeze());
                    }
                    Next::Overflowed => {
                        ending(&mut counted, CloseReason::SlowConsumer);
                        yield Ok(Bytes::from_static(sse::SLOW_CONSUMER));
                        break;
                    }
                    Next::Unavailable(error) => {
                        ending(&mut counted, CloseReason::Error);
                        tracing::warn!("sse stream ended: {}", error.message);
                        break;
                    }
                    Next::Disconnected => {
                        yield Ok(Bytes::from_static(sse::DISCONNECTED));
                        break;
                    }
                },
                _ = heartbeat.tick() => yield Ok(Bytes::from_static(sse::HEARTBEAT)),
            }
        }
    };

    Ok(crate::responses::event_stream(Body::from_stream(stream)))
}

/// One message as an SSE event: on a stream over several topics, its `id:` is the stream's
/// cursor, which recording the message has just moved.
fn event_bytes(subscription: &Subscription, message: &Message, single_topic: bool) -> Bytes {
    if single_topic {
        sse::message_event(message, None)
    } else {
        sse::message_event(message, Some(&subscription.cursor()))
    }
}

/// The message, and others already queued (up to `most` messages and about [`CHUNK_BYTES`]),
/// as one write.
fn coalesce(
    subscription: &mut Subscription,
    first: Arc<Message>,
    single_topic: bool,
    most: usize,
) -> Bytes {
    let first = event_bytes(subscription, &first, single_topic);
    if most < 2 {
        return first;
    }
    let Some(second) = subscription.try_next() else {
        return first;
    };
    let mut chunk = BytesMut::with_capacity(first.len() * 4);
    chunk.put_slice(&first);
    chunk.put_slice(&event_bytes(subscription, &second, single_topic));
    for _ in 2..most {
        if chunk.len() >= CHUNK_BYTES {
            break;
        }
        let Some(message) = subscription.try_next() else {
            break;
        };
        chunk.put_slice(&event_bytes(subscription, &message, single_topic));
    }
    chunk.freeze()
}
