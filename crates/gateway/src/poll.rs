//! Long-poll: `GET /poll`. No server-side session: the cursor carries all the state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use switchboard_hub::{Message, Received};

use crate::error::AppError;
use crate::request::QueryParams;
use crate::state::AppState;
use crate::subscription::{Joined, Subscription, reset_json};

/// `GET /poll?topic=A[&topic=B][&since=C][&timeout=S]`.
pub async fn poll(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let config = &state.config;
    let params = QueryParams::parse(uri.query());
    let topics = params.required_topics(config.max_topics_per_connection)?;
    let cursor = params.cursor(&headers)?;
    let timeout = params.timeout(config.poll_timeout, config.poll_max_timeout)?;
    let batch = config.poll_batch;

    let mut subscription = state.subscription();
    // A first look that registers nothing: most polls that carry a cursor end here.
    let mut joined = subscription
        .join(&topics, cursor.as_ref(), false, batch)
        .await?;
    if !joined.messages.is_empty() || !joined.resets.is_empty() || timeout.is_zero() {
        return Ok(reply(&mut subscription, joined));
    }

    let _permit = state.open_connection()?;
    joined = subscription.go_live().await?;
    if !joined.messages.is_empty() {
        joined.more |= joined.messages.len() > batch;
        joined.messages.truncate(batch);
        return Ok(reply(&mut subscription, joined));
    }
    tokio::select! {
        received = subscription.next() => {
            if let Received::Message(message) = received {
                joined.messages.push(message);
                while joined.messages.len() < batch {
                    let Some(message) = subscription.try_next() else { break };
                    joined.messages.push(message);
                }
            }
        }
        () = tokio::time::sleep(timeout) => {}
        () = state.shutdown.cancelled() => {}
    }
    // Messages taken from the inbox are recorded as they are taken.
    Ok(reply_recorded(&subscription, joined))
}

/// The reply for messages the subscription has not recorded yet (a backlog).
fn reply(subscription: &mut Subscription, joined: Joined) -> Response {
    for message in &joined.messages {
        subscription.record(message);
    }
    reply_recorded(subscription, joined)
}

/// `{"messages":[…],"cursor":…,"positions":{…},"reset":[…],"more":…}`, with each envelope
/// copied in as the bytes it was encoded to at publish time.
fn reply_recorded(subscription: &Subscription, joined: Joined) -> Response {
    let messages: &[Arc<Message>] = &joined.messages;
    let size: usize = messages.iter().map(|m| m.envelope().len() + 1).sum();
    let mut body = BytesMut::with_capacity(size + 256);
    body.put_slice(b"{\"messages\":[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(message.envelope());
    }
    let resets: Vec<_> = joined
        .resets
        .iter()
        .map(|(t, r)| reset_json(t, *r))
        .collect();
    let rest = serde_json::json!({
        "cursor": subscription.cursor(),
        "positions": subscription.positions_json(),
        "reset": resets,
        "more": joined.more,
    })
    .to_string();
    body.put_slice(b"],");
    body.put_slice(&rest.as_bytes()[1..]);
    let mut response = body.freeze().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
