//! Server-Sent Events: `GET /events`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use switchboard_hub::Message;

use crate::error::AppError;
use crate::metrics::{CloseReason, Transport, ending};
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
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let params = QueryParams::parse(uri.query());
    let topics = params.required_topics(state.config.max_topics_per_connection)?;
    let cursor = params.cursor(&headers)?;
    let permit = state.open_connection()?;
    let mut subscription = state.subscription(Transport::Sse);
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
    tracing::info!(topics = topics.len(), "sse stream opened");

    let mut counted = state.connection_metric(Transport::Sse);
    let shutdown = state.shutdown.clone();
    let heartbeat_interval = state.config.heartbeat_interval;
    let stream = async_stream::stream! {
        let _permit = permit;
        yield Ok::<Bytes, Infallible>(prelude.freeze());
        let mut heartbeat = crate::heartbeat::interval(heartbeat_interval);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    ending(&mut counted, CloseReason::Shutdown);
                    break;
                }
                next = subscription.next() => match next {
                    Next::Message(message) => {
                        yield Ok(coalesce(&mut subscription, message, single_topic));
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
                },
                _ = heartbeat.tick() => yield Ok(Bytes::from_static(sse::HEARTBEAT)),
            }
        }
    };

    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
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

/// The message, and every other one already queued, as one write.
fn coalesce(subscription: &mut Subscription, first: Arc<Message>, single_topic: bool) -> Bytes {
    let first = event_bytes(subscription, &first, single_topic);
    let Some(second) = subscription.try_next() else {
        return first;
    };
    let mut chunk = BytesMut::with_capacity(first.len() * 4);
    chunk.put_slice(&first);
    chunk.put_slice(&event_bytes(subscription, &second, single_topic));
    while chunk.len() < CHUNK_BYTES {
        let Some(message) = subscription.try_next() else {
            break;
        };
        chunk.put_slice(&event_bytes(subscription, &message, single_topic));
    }
    chunk.freeze()
}
