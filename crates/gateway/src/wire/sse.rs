//! The event stream (`docs/PROTOCOL.md`, "Server-Sent Events"): the one event writer, and the
//! stream's own events and comments.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use switchboard_hub::{Message, Position, ResetReason, TopicName};

use super::encodings::{sse_event, sse_event_with_id};
use super::objects::{ErrorDetail, Positions, ResetObject, TopicNames, to_json};
use crate::error::AppError;

/// The comment sent every heartbeat interval, so that proxies and clients see a live stream.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// The comment that ends the stream of a client too far behind.
pub const SLOW_CONSUMER: &[u8] = b": slow consumer: reconnect with Last-Event-ID\n\n";

/// The comment that ends a stream an operator disconnected.
pub const DISCONNECTED: &[u8] = b": disconnected by an operator\n\n";

/// A comment line (what follows `:` is ignored by clients), on one line.
pub fn comment(text: &str) -> String {
    format!(": {}\n\n", text.replace(['\r', '\n'], " "))
}

/// Appends one event whose data is one line (JSON never spans lines here).
pub fn put_event(out: &mut BytesMut, event: &str, id: Option<&str>, data: &str) {
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.as_bytes());
    out.put_slice(b"\n\n");
}

/// `event: error` with the error object (`{"code":…,"message":…}`), before the stream ends.
pub fn put_error(out: &mut BytesMut, error: &AppError) {
    put_event(
        out,
        "error",
        None,
        &to_json(&ErrorDetail {
            code: error.code.as_str(),
            message: &error.message,
            request_id: None,
        }),
    );
}

/// `retry:` first, so that a client knows how long to wait before reconnecting.
pub fn put_retry(out: &mut BytesMut, retry: Duration) {
    out.put_slice(b"retry: ");
    out.put_slice(retry.as_millis().to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// `event: reset` with the reset object.
pub fn put_reset(out: &mut BytesMut, topic: &TopicName, reason: ResetReason) {
    put_event(
        out,
        "reset",
        None,
        &to_json(&ResetObject::new(topic, reason)),
    );
}

#[derive(Serialize)]
struct Subscribed<'a> {
    topics: TopicNames<'a>,
    positions: Positions<'a>,
}

/// `event: subscribed`, whose `id:` is the stream's starting cursor.
pub fn put_subscribed(out: &mut BytesMut, cursor: &str, positions: &[(TopicName, Position)]) {
    let data = to_json(&Subscribed {
        topics: TopicNames(positions),
        positions: Positions(positions),
    });
    put_event(out, "subscribed", Some(cursor), &data);
}

/// A message as an event. On a single-topic stream the shared encoding is used as it is;
/// otherwise the `id:` is `cursor`, the stream's cursor over all its topics.
pub fn message_event(message: &Message, cursor: Option<&str>) -> Bytes {
    let Some(cursor) = cursor else {
        return sse_event_with_id(message);
    };
    let event = sse_event(message);
    let mut framed = BytesMut::with_capacity(cursor.len() + 5 + event.len());
    framed.put_slice(b"id: ");
    framed.put_slice(cursor.as_bytes());
    framed.put_u8(b'\n');
    framed.put_slice(&event);
    framed.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream's opening as PROTOCOL.md shows it.
    #[test]
    fn events_read_as_in_the_protocol() {
        let chat = TopicName::new("chat").expect("valid");
        let position = Position {
            tag: 1,
            epoch: 2,
            seq: 3,
        };
        let mut out = BytesMut::new();
        put_retry(&mut out, Duration::from_secs(2));
        put_reset(&mut out, &chat, ResetReason::HistoryLost);
        put_subscribed(&mut out, "1-2-3", &[(chat, position)]);
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            "retry: 2000\n\n\
             event: reset\ndata: {\"topic\":\"chat\",\"reason\":\"history_lost\"}\n\n\
             id: 1-2-3\nevent: subscribed\ndata: {\"topics\":[\"chat\"],\"positions\":{\"chat\":\"1-2-3\"}}\n\n"
        );
    }
}
