//! Long-poll: `GET /poll`. No server-side session: the cursor carries all the state.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use switchboard_hub::Page;

use crate::caller::Caller;
use crate::connections::Transport;
use crate::error::AppError;
use crate::metrics::{CloseReason, ending};
use crate::request::QueryParams;
use crate::state::AppState;
use crate::subscription::{Batch, Next, Subscription};
use crate::wire;

/// `GET /poll?topic=A[&topic=B][&since=C][&timeout=S]`.
pub async fn poll(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let config = &state.config;
    let params = QueryParams::parse(uri.query());
    let topics = params.required_topics(config.max_topics_per_connection)?;
    let cursor = params.cursor(&headers)?;
    caller.grant.check_subscribe(&topics)?;
    state.rates.check_connect(caller.address)?;
    let timeout = params.timeout(config.poll_timeout, config.poll_max_timeout)?;
    // A poll is not held past its token's end: the next one needs a fresh token.
    let timeout = caller
        .grant
        .remaining()
        .map_or(timeout, |remaining| timeout.min(remaining));
    let page = Page {
        messages: config.poll_batch,
        bytes: config.poll_batch_bytes,
    };

    let mut subscription = state.subscription(Transport::Poll);
    // A first look that registers nothing: most polls that carry a cursor end here.
    let resets = subscription.join(&topics, cursor.as_ref(), false).await?;
    let mut batch = subscription.batch(page).await?;
    batch.resets.splice(0..0, resets);
    if !batch.messages.is_empty() || !batch.resets.is_empty() || timeout.is_zero() {
        return Ok(reply(&subscription, batch));
    }

    let _permit = state.open_connection()?;
    // Only a poll that waits is a connection worth listing.
    subscription.register(&state.live_connections, &caller);
    // A poll is a connection while it is held; how long, is the poll hold time.
    let mut held = state.connection_metric(Transport::Poll);
    batch.resets = subscription.go_live().await?;
    let published_meanwhile = subscription.batch(page).await?;
    batch.absorb(published_meanwhile);
    if !batch.messages.is_empty() || !batch.resets.is_empty() {
        return Ok(reply(&subscription, batch));
    }
    let next = tokio::select! {
        next = subscription.next() => Some(next),
        () = tokio::time::sleep(timeout) => None,
        () = state.shutdown.cancelled() => {
            ending(&mut held, CloseReason::Shutdown);
            None
        }
    };
    match next {
        Some(Next::Message(first)) => {
            let rest = Page {
                messages: page.messages - 1,
                bytes: page.bytes.saturating_sub(first.queued_size()),
            };
            batch.messages.push(first);
            let rest = subscription.batch(rest).await?;
            batch.absorb(rest);
        }
        Some(Next::Reset(topic, reason)) => {
            batch.resets.push((topic, reason));
            let rest = subscription.batch(page).await?;
            batch.absorb(rest);
        }
        Some(Next::Unavailable(error)) => {
            ending(&mut held, CloseReason::Error);
            return Err(error);
        }
        // An inbox of at least one message overflows only after delivering it; a poll that
        // an operator ends is answered with what it has.
        Some(Next::Overflowed | Next::Disconnected) | None => {}
    }
    Ok(reply(&subscription, batch))
}

/// The reply: `batch` and where the subscription now stands.
fn reply(subscription: &Subscription, batch: Batch) -> Response {
    let body = wire::poll::reply(
        &batch.messages,
        &subscription.cursor(),
        &subscription.positions(),
        &batch.resets,
        batch.more,
    );
    crate::responses::uncached_json(body)
}
