//! Publishing over HTTP: `POST /events` and `POST /poll`, for clients whose credentials allow
//! it and within the publish rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use switchboard_hub::{Data, Message, TopicName};

use crate::caller::Caller;
use crate::error::{AppError, ErrorCode};
use crate::metrics::Transport;
use crate::request::QueryParams;
use crate::state::AppState;

/// Bytes of an over-size body read and thrown away before its 413 is sent: a client that
/// sends its whole body before reading (browsers' `fetch`, most HTTP libraries) then gets the
/// 413 rather than a reset connection, as with nginx's lingering close.
const DISCARD_BYTES: usize = 1024 * 1024;

/// `POST /events?topic=T` or `POST /poll?topic=T`: publishes the body, JSON or text.
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, AppError> {
    let topic = QueryParams::parse(uri.query()).single_topic()?;
    // Before the body is read: a refused client's body is not worth the wait.
    caller.grant.check_publish(&topic)?;
    if !caller.grant.is_publish_key() {
        state.rates.check_publish(caller.address, None)?;
    }
    let body = read_body(
        &headers,
        body,
        state.config.max_message_bytes,
        state.config.body_timeout,
    )
    .await?;
    let data = data_from_body(&headers, &body)?;
    // The transport whose endpoint took the publish.
    let transport = match uri.path() {
        "/poll" => Transport::Poll,
        _ => Transport::Sse,
    };
    let message = publish_counted(&state, transport, &topic, &data).await?;
    Ok(Json(
        serde_json::json!({"topic": topic.as_str(), "id": message.id()}),
    ))
}

/// Publishes `data` to `topic` for a publisher over `transport`: counted in the gateway's
/// activity, and counted and timed when metrics are on. Every publisher goes through here.
///
/// The publish starts now (see [`Broker::publish`]) and the future owns what it needs: a
/// connection can start several and await them in turn, and with a durable store they share
/// a commit.
///
/// [`Broker::publish`]: switchboard_hub::Broker::publish
pub fn publish_counted(
    state: &AppState,
    transport: Transport,
    topic: &TopicName,
    data: &Data,
) -> impl Future<Output = Result<Arc<Message>, AppError>> + Send + use<> {
    let started = state.metrics.is_some().then(Instant::now);
    let published = state.broker.publish(topic, data);
    let state = state.clone();
    async move {
        let message = published.await?;
        state
            .activity
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let (Some(metrics), Some(started)) = (&state.metrics, started) {
            metrics.published(transport, started.elapsed());
        }
        Ok(message)
    }
}

/// The whole body, if it is at most `limit` bytes and arrives within `timeout`. Over the limit,
/// what the client still sends (up to [`DISCARD_BYTES`]) is read and dropped first.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Too large to be worth reading: answer before the client sends it (with
    // `Expect: 100-continue` it waits for this answer).
    if declared.is_some_and(|length| length > limit + DISCARD_BYTES) {
        return Err(too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut collected = BytesMut::new();
    let mut discarded = 0usize;
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                AppError::new(
                    ErrorCode::BadRequest,
                    format!("could not read the body: {e}"),
                )
            })?;
            if discarded == 0 && collected.len() + chunk.len() <= limit {
                collected.extend_from_slice(&chunk);
                continue;
            }
            discarded += chunk.len();
            if discarded > DISCARD_BYTES {
                break;
            }
        }
        Ok::<(), AppError>(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        AppError::new(
            ErrorCode::RequestTimeout,
            format!("the body did not arrive within {timeout:?}"),
        )
    })??;
    if discarded > 0 {
        return Err(too_large(limit));
    }
    Ok(collected.freeze())
}

pub fn too_large(limit: usize) -> AppError {
    AppError::new(
        ErrorCode::PayloadTooLarge,
        format!("message is larger than the limit of {limit} bytes"),
    )
}

/// JSON bodies are the data; anything else is UTF-8 text that becomes a JSON string.
fn data_from_body(headers: &HeaderMap, body: &[u8]) -> Result<Data, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(Data::from_json(body)?);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| AppError::new(ErrorCode::BadRequest, "a text body must be UTF-8"))?;
    Ok(Data::from_text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().expect("header"));
        headers
    }

    #[test]
    fn json_and_text_bodies() {
        let json = data_from_body(
            &with_type("application/json; charset=utf-8"),
            b" {\"a\": 1} ",
        );
        assert_eq!(json.expect("json").as_json(), r#"{"a":1}"#);
        let form = data_from_body(&with_type("application/x-www-form-urlencoded"), b"hello");
        assert_eq!(form.expect("text").as_json(), r#""hello""#);
        assert_eq!(
            data_from_body(&HeaderMap::new(), b"{")
                .expect("text")
                .as_json(),
            r#""{""#
        );
        let bad = data_from_body(&with_type("application/json"), b"{");
        assert_eq!(bad.map_err(|e| e.code), Err(ErrorCode::BadJson));
        let binary = data_from_body(&HeaderMap::new(), &[0xff, 0xfe]);
        assert_eq!(binary.map_err(|e| e.code), Err(ErrorCode::BadRequest));
    }
}
