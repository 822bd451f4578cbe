//! The admin API: topics (list, one, delete), connections (list, disconnect). JSON in and
//! out, errors with the gateway's stable codes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use switchboard_hub::TopicName;

use crate::error::{AppError, ErrorCode};
use crate::request::QueryParams;
use crate::responses::uncached_json;
use crate::state::AppState;
use crate::wire::admin::{
    self, ByTransport, ConnectionList, Deleted, Disconnected, Envelopes, Topic, TopicDetail,
    TopicList,
};

/// Rows a list returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

/// The most rows a list returns.
const MAX_LIMIT: usize = 1000;

/// Retained messages `GET /admin/topics/{topic}` shows.
const RECENT_MESSAGES: usize = 10;

/// The admin API's routes, under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/topics", get(list_topics))
        .route(
            "/admin/topics/{topic}",
            get(show_topic).delete(delete_topic),
        )
        .route("/admin/connections", get(list_connections))
        .route("/admin/disconnect", post(disconnect))
}

/// `limit`: a whole number from 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn limit(params: &QueryParams) -> Result<usize, AppError> {
    let Some(text) = params.last("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(AppError::new(
            ErrorCode::BadRequest,
            format!("`limit` must be a whole number from 1 to {MAX_LIMIT}, not {text:?}"),
        )),
    }
}

/// `GET /admin/topics?prefix=P&limit=N`.
async fn list_topics(State(state): State<AppState>, uri: Uri) -> Result<Response, AppError> {
    let params = QueryParams::parse(uri.query());
    let limit = limit(&params)?;
    let prefix = params.last("prefix").unwrap_or_default();
    let (topics, more) = state.broker.topics(prefix, limit).await?;
    let list = TopicList {
        topics: topics.iter().map(Topic::new).collect(),
        more,
    };
    Ok(uncached_json(admin::json(&list)))
}

fn unknown_topic(topic: &TopicName) -> AppError {
    AppError::new(
        ErrorCode::UnknownTopic,
        format!(
            "topic {:?} has neither subscribers on this node nor retained messages",
            topic.as_str()
        ),
    )
}

/// `GET /admin/topics/{topic}`.
async fn show_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Response, AppError> {
    let topic = TopicName::new(&topic)?;
    let Some(found) = state.broker.topic(&topic, RECENT_MESSAGES).await? else {
        return Err(unknown_topic(&topic));
    };
    let detail = TopicDetail {
        topic: Topic::new(&found.stats),
        recent: Envelopes(&found.recent),
    };
    Ok(uncached_json(admin::json(&detail)))
}

/// `DELETE /admin/topics/{topic}`.
async fn delete_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Response, AppError> {
    let topic = TopicName::new(&topic)?;
    if !state.broker.delete(&topic).await? {
        return Err(unknown_topic(&topic));
    }
    tracing::info!(
        topic = topic.as_str(),
        "topic history deleted by an operator"
    );
    Ok(uncached_json(admin::json(&Deleted {
        deleted: topic.as_str(),
    })))
}

/// `GET /admin/connections?topic=T&limit=N`: the oldest connections first.
async fn list_connections(State(state): State<AppState>, uri: Uri) -> Result<Response, AppError> {
    let params = QueryParams::parse(uri.query());
    let limit = limit(&params)?;
    let topic = params.last("topic").map(TopicName::new).transpose()?;
    let mut connections = state.live_connections.all();
    if let Some(topic) = &topic {
        connections.retain(|c| c.topics.lock().contains(topic));
    }
    connections.sort_by_key(|c| c.started);
    let mut count = [0; 3];
    for connection in &connections {
        count[connection.transport.index()] += 1;
    }
    let more = connections.len() > limit;
    let list = ConnectionList {
        count: ByTransport::from_indexed(&count),
        connections: connections
            .iter()
            .take(limit)
            .map(|c| admin::Connection {
                id: c.id(),
                transport: c.transport.as_str(),
                address: c.address.to_string(),
                sub: c.subject.lock().clone(),
                age_seconds: (c.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                queued: c.inbox.queued(),
                topics: c
                    .topics
                    .lock()
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect(),
            })
            .collect(),
        more,
    };
    Ok(uncached_json(admin::json(&list)))
}

/// The body of `POST /admin/disconnect`: whom to disconnect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    /// A connection id from `GET /admin/connections`.
    id: Option<String>,
    /// A token subject: every connection whose token names it.
    sub: Option<String>,
}

/// `POST /admin/disconnect` with `{"id":"…"}`.
async fn disconnect(State(state): State<AppState>, body: Bytes) -> Result<Response, AppError> {
    let request: DisconnectRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::new(
            ErrorCode::BadJson,
            format!("expected {{\"id\":\"…\"}} or {{\"sub\":\"…\"}}: {e}"),
        )
    })?;
    let disconnected = match (request.id, request.sub) {
        (Some(id), None) => {
            let ended = usize::from(state.live_connections.disconnect(&id));
            if ended > 0 {
                tracing::info!(connection = id.as_str(), "connection ended by an operator");
            }
            ended
        }
        (None, Some(sub)) => {
            let ended = state.live_connections.disconnect_subject(&sub);
            tracing::info!(
                sub = sub.as_str(),
                ended,
                "connections ended by an operator"
            );
            ended
        }
        _ => {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                "say whom to disconnect: {\"id\":\"…\"} or {\"sub\":\"…\"}",
            ));
        }
    };
    Ok(uncached_json(admin::json(&Disconnected { disconnected })))
}
