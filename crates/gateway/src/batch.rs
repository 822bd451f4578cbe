//! Publishing a batch: `POST /publish`, newline-delimited JSON `{"topic":…,"data":…}` in, one
//! line per message back, in order. Each message is published or refused on its own; a refusal
//! does not stop the lines after it. For backends that publish many messages: one request, one
//! body read, one reply, instead of one of each per message. Lines are published ahead of
//! their answers (up to [`LINES_IN_FLIGHT`]), so that with a durable store they share commits.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_hub::{Data, Message, TopicName};

use crate::caller::Caller;
use crate::connections::Transport;
use crate::error::{AppError, ErrorCode};
use crate::publish::{publish_counted, read_body, too_large};
use crate::state::AppState;
use crate::wire::batch;

/// Lines of a batch published before the oldest of them is answered. Each holds its message
/// until then, so this bounds what a batch holds beyond its body; with a durable store, it is
/// what one commit can take from one batch.
const LINES_IN_FLIGHT: usize = 256;

/// One line of the request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    topic: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `POST /publish`.
pub async fn publish_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let config = &state.config;
    let body = read_body(&headers, body, config.max_batch_bytes, config.body_timeout).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::new(ErrorCode::BadRequest, "the batch must be UTF-8"))?;
    let mut reply = String::new();
    let mut in_flight = VecDeque::with_capacity(LINES_IN_FLIGHT);
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if in_flight.len() == LINES_IN_FLIGHT {
            let oldest = in_flight
                .pop_front()
                .expect("a full window has an oldest line");
            answer(&mut reply, oldest).await;
        }
        in_flight.push_back(start_line(&state, &caller, line));
    }
    while let Some(oldest) = in_flight.pop_front() {
        answer(&mut reply, oldest).await;
    }
    let mut response = reply.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Adds the answer of a line (its id, or why not) to `reply`, once it has one.
async fn answer(
    reply: &mut String,
    started: Result<impl Future<Output = Result<Arc<Message>, AppError>>, AppError>,
) {
    let published = match started {
        Ok(publishing) => publishing.await,
        Err(refused) => Err(refused),
    };
    match published {
        Ok(message) => batch::put_published(reply, message.topic.as_str(), message.id()),
        Err(error) => batch::put_refused(reply, &error),
    }
}

/// Starts publishing one line's message, or says why not.
fn start_line(
    state: &AppState,
    caller: &Caller,
    line: &str,
) -> Result<impl Future<Output = Result<Arc<Message>, AppError>> + use<>, AppError> {
    let line: Line<'_> = serde_json::from_str(line).map_err(|e| {
        AppError::new(
            ErrorCode::BadJson,
            format!("a line must be {{\"topic\":…,\"data\":…}}: {e}"),
        )
    })?;
    let topic = TopicName::new(line.topic)?;
    caller.grant.check_publish(&topic)?;
    if !caller.grant.is_publish_key() {
        state.rates.check_publish(caller.address, None)?;
    }
    let limit = state.config.max_message_bytes;
    if line.data.get().len() > limit {
        return Err(too_large(limit));
    }
    let data = Data::from_json(line.data.get().as_bytes())?;
    // Counted with the HTTP publishes of `/poll`: it is plain HTTP, like them.
    Ok(publish_counted(state, Transport::Poll, &topic, &data))
}
