//! Publishing a batch: `POST /publish`, newline-delimited JSON `{"topic":…,"data":…}` in, one
//! line per message back, in order. Each message is published or refused on its own; a refusal
//! does not stop the lines after it. For backends that publish many messages: one request, one
//! body read, one reply, instead of one of each per message.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_hub::{Data, TopicName};

use crate::caller::Caller;
use crate::connections::Transport;
use crate::error::{AppError, ErrorCode};
use crate::publish::{publish_counted, read_body, too_large};
use crate::state::AppState;
use crate::wire::batch;

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
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        match publish_line(&state, &caller, line).await {
            Ok((topic, id)) => batch::put_published(&mut reply, topic.as_str(), &id),
            Err(error) => batch::put_refused(&mut reply, &error),
        }
    }
    let mut response = reply.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Publishes one line's message, or says why not.
async fn publish_line(
    state: &AppState,
    caller: &Caller,
    line: &str,
) -> Result<(TopicName, String), AppError> {
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
    let message = publish_counted(state, Transport::Poll, &topic, &data).await?;
    Ok((topic, message.id().to_owned()))
}
