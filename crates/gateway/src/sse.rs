//! Server-Sent Events: `GET /events`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use switchboard_hub::{Message, ResetReason, TopicName};

use crate::encoding::{sse_event, sse_event_with_id};
use crate::error::AppError;
use crate::request::QueryParams;
use crate::state::AppState;
use crate::subscription::{Next, Subscription, reset_json};

/// The comment sent every heartbeat interval, so that proxies and clients see a live stream.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

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
    let mut subscription = state.subscription();
    let resets = subscription.join(&topics, cursor.as_ref(), true).await?;

    let mut prelude = BytesMut::new();
    prelude.put_slice(format!("retry: {}\n\n", state.config.sse_retry.as_millis()).as_bytes());
    for (topic, reason) in &resets {
        put_reset(&mut prelude, topic, *reason);
    }
    let subscribed = serde_json::json!({
        "topics": subscription.topics_json(),
        "positions": subscription.positions_json(),
    });
    put_event(
        &mut prelude,
        "subscribed",
        Some(&subscription.cursor()),
        &subscribed.to_string(),
    );
    let single_topic = topics.len() == 1;
    tracing::info!(topics = topics.len(), "sse stream opened");

    let shutdown = state.shutdown.clone();
    let heartbeat_interval = state.config.heartbeat_interval;
    let stream = async_stream::stream! {
        let _permit = permit;
        yield Ok::<Bytes, Infallible>(prelude.freeze());
        let mut heartbeat = crate::heartbeat::interval(heartbeat_interval);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = subscription.next() => match next {
                    Next::Message(message) => {
                        yield Ok(coalesce(&mut subscription, message, single_topic));
                    }
                    Next::Reset(topic, reason) => {
                        let mut event = BytesMut::new();
                        put_reset(&mut event, &topic, reason);
                        yield Ok(event.freeze());
                    }
                    Next::Overflowed => {
                        yield Ok(Bytes::from_static(b": slow consumer: reconnect with Last-Event-ID\n\n"));
                        break;
                    }
                    Next::Unavailable(error) => {
                        tracing::warn!("sse stream ended: {}", error.message);
                        break;
                    }
                },
                _ = heartbeat.tick() => yield Ok(Bytes::from_static(HEARTBEAT)),
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

/// One message as an SSE event. On a single-topic stream the shared encoding is used as it is;
/// otherwise the `id:` is the cursor over all the stream's topics.
fn event_bytes(subscription: &Subscription, message: &Message, single_topic: bool) -> Bytes {
    if single_topic {
        return sse_event_with_id(message);
    }
    let event = sse_event(message);
    let cursor = subscription.cursor();
    let mut framed = BytesMut::with_capacity(cursor.len() + 5 + event.len());
    framed.put_slice(b"id: ");
    framed.put_slice(cursor.as_bytes());
    framed.put_u8(b'\n');
    framed.put_slice(&event);
    framed.freeze()
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

/// Appends a `reset` event.
fn put_reset(out: &mut BytesMut, topic: &TopicName, reason: ResetReason) {
    put_event(out, "reset", None, &reset_json(topic, reason).to_string());
}

/// Appends an event whose data is one line of JSON.
fn put_event(out: &mut BytesMut, event: &str, id: Option<&str>, json: &str) {
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(json.as_bytes());
    out.put_slice(b"\n\n");
}
