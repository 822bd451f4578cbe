//! Every rejection the gateway makes, with its stable code, as HTTP responses and as
//! WebSocket error frames.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_hub::{BrokerError, CursorError, DataError, TopicError};

use crate::wire::frames::{Reference, ServerFrame};
use crate::wire::objects::{ErrorBody, ErrorDetail, to_json};

/// The stable error codes of `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadTopic,
    MissingTopic,
    TooManyTopics,
    BadCursor,
    BadJson,
    UnknownType,
    BadRequest,
    OriginNotAllowed,
    HostNotAllowed,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    TooManyConnections,
    ShuttingDown,
    BrokerUnavailable,
    Unauthorized,
    Forbidden,
    TokenExpired,
    RateLimited,
    UnknownTopic,
}

impl ErrorCode {
    /// Every code: for the test that holds docs/PROTOCOL.md to them, and for metrics.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadTopic,
        ErrorCode::MissingTopic,
        ErrorCode::TooManyTopics,
        ErrorCode::BadCursor,
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadRequest,
        ErrorCode::OriginNotAllowed,
        ErrorCode::HostNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::TooManyConnections,
        ErrorCode::ShuttingDown,
        ErrorCode::BrokerUnavailable,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TokenExpired,
        ErrorCode::RateLimited,
        ErrorCode::UnknownTopic,
    ];

    /// Where the code stands in [`ErrorCode::ALL`]; exhaustive, so that a new code cannot be
    /// left out of it.
    pub fn index(self) -> usize {
        match self {
            ErrorCode::BadTopic => 0,
            ErrorCode::MissingTopic => 1,
            ErrorCode::TooManyTopics => 2,
            ErrorCode::BadCursor => 3,
            ErrorCode::BadJson => 4,
            ErrorCode::UnknownType => 5,
            ErrorCode::BadRequest => 6,
            ErrorCode::OriginNotAllowed => 7,
            ErrorCode::HostNotAllowed => 8,
            ErrorCode::NotFound => 9,
            ErrorCode::MethodNotAllowed => 10,
            ErrorCode::PayloadTooLarge => 11,
            ErrorCode::RequestTimeout => 12,
            ErrorCode::TooManyConnections => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::BrokerUnavailable => 15,
            ErrorCode::Unauthorized => 16,
            ErrorCode::Forbidden => 17,
            ErrorCode::TokenExpired => 18,
            ErrorCode::RateLimited => 19,
            ErrorCode::UnknownTopic => 20,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::MissingTopic => "missing_topic",
            ErrorCode::TooManyTopics => "too_many_topics",
            ErrorCode::BadCursor => "bad_cursor",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::BrokerUnavailable => "broker_unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnknownTopic => "unknown_topic",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::OriginNotAllowed | ErrorCode::HostNotAllowed | ErrorCode::Forbidden => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotFound | ErrorCode::UnknownTopic => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::TooManyConnections
            | ErrorCode::ShuttingDown
            | ErrorCode::BrokerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A rejected request: a code for programs and a message for people.
#[derive(Debug, Clone)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    /// When the client may try again (`rate_limited`): `Retry-After`, or `retry_after` in a
    /// WebSocket error frame.
    pub retry_after: Option<std::time::Duration>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, wait: std::time::Duration) -> AppError {
        self.retry_after = Some(wait);
        self
    }

    /// Whole seconds to wait, rounded up, as `Retry-After` has them.
    fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after
            .map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    /// The JSON body: `{"error":{"code":…,"message":…}}`.
    pub fn body(&self) -> String {
        self.body_for(None)
    }

    /// The JSON body, with the id of the request it answers if there is one.
    fn body_for(&self, request_id: Option<&str>) -> String {
        to_json(&ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
                request_id,
            },
        })
    }

    /// The WebSocket frame: `{"type":"error","ref":…,"code":…,"message":…}`.
    pub fn frame(&self, reference: Option<&Reference>) -> String {
        ServerFrame::Error {
            reference,
            code: self.code.as_str(),
            message: &self.message,
            retry_after: self.retry_after_seconds(),
        }
        .text()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = crate::request_id::CURRENT
            .try_with(|id| self.body_for(Some(id.as_str())))
            .unwrap_or_else(|_| self.body());
        let mut response = (
            self.code.status(),
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after_seconds() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        // For the count of rejections by code (`/metrics`).
        response.extensions_mut().insert(self.code);
        // The rest of the request may still be on its way: the connection cannot be reused.
        if matches!(
            self.code,
            ErrorCode::PayloadTooLarge | ErrorCode::RequestTimeout
        ) {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<TopicError> for AppError {
    fn from(e: TopicError) -> Self {
        AppError::new(ErrorCode::BadTopic, e.to_string())
    }
}

impl From<CursorError> for AppError {
    fn from(e: CursorError) -> Self {
        AppError::new(ErrorCode::BadCursor, e.to_string())
    }
}

impl From<DataError> for AppError {
    fn from(e: DataError) -> Self {
        AppError::new(ErrorCode::BadJson, e.to_string())
    }
}

impl From<BrokerError> for AppError {
    fn from(e: BrokerError) -> Self {
        AppError::new(ErrorCode::BrokerUnavailable, e.to_string())
    }
}
