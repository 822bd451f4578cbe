//! Publishing over HTTP: `POST /events` and `POST /poll`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use switchboard_hub::Data;

use crate::error::{AppError, ErrorCode};
use crate::request::QueryParams;
use crate::state::AppState;

/// `POST /events?topic=T` or `POST /poll?topic=T`: publishes the body, JSON or text.
pub async fn publish(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, AppError> {
    let topic = QueryParams::parse(uri.query()).single_topic()?;
    let limit = state.config.max_message_bytes;
    let body = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            too_large(limit)
        } else {
            AppError::new(
                ErrorCode::BadRequest,
                format!("could not read the body: {e}"),
            )
        }
    })?;
    let data = data_from_body(&headers, &body.to_bytes())?;
    let message = state.broker.publish(&topic, &data).await?;
    Ok(Json(
        serde_json::json!({"topic": topic.as_str(), "id": message.id()}),
    ))
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
