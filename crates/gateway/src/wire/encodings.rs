//! Each transport's encoding of a message, made once per message and shared by every
//! subscriber on that transport (the cache lives in the message, one typed slot each).

use std::sync::LazyLock;

use axum::extract::ws::Utf8Bytes;
use bytes::{Bytes, BytesMut};
use switchboard_hub::Message;
use switchboard_hub::message::EncodingSlot;

use super::sse::put_event;

static WS_MESSAGE: LazyLock<EncodingSlot<Utf8Bytes>> = LazyLock::new(EncodingSlot::new);
static SSE_EVENT: LazyLock<EncodingSlot<Bytes>> = LazyLock::new(EncodingSlot::new);
static SSE_EVENT_WITH_ID: LazyLock<EncodingSlot<Bytes>> = LazyLock::new(EncodingSlot::new);

/// What a message's WebSocket frame puts in front of the envelope's fields (the envelope's own
/// `{` is left out): clients that want the envelope back strip it ([`envelope_of_ws_message`]).
pub const WS_MESSAGE_PREFIX: &str = "{\"type\":\"message\",";

/// The WebSocket frame text: the envelope with `"type":"message"` in front.
/// Cached as the frame type the socket takes, so sending it is a reference-count increment.
pub fn ws_message(message: &Message) -> Utf8Bytes {
    message.encoded(&WS_MESSAGE, |m| {
        let envelope = std::str::from_utf8(m.envelope()).unwrap_or_default();
        let mut frame = String::with_capacity(envelope.len() + 17);
        frame.push_str(WS_MESSAGE_PREFIX);
        frame.push_str(&envelope[1..]);
        Utf8Bytes::from(frame)
    })
}

/// The envelope inside a message frame written by [`ws_message`], byte for byte; `None` for
/// any other frame.
pub fn envelope_of_ws_message(frame: &str) -> Option<String> {
    frame
        .strip_prefix(WS_MESSAGE_PREFIX)
        .map(|fields| format!("{{{fields}"))
}

/// `event: message` and `data:`, without `id:`, for streams whose id is a cursor over several
/// topics.
pub fn sse_event(message: &Message) -> Bytes {
    message.encoded(&SSE_EVENT, |m| event(m, None))
}

/// The whole SSE event with the message id as `id:`, for single-topic streams.
pub fn sse_event_with_id(message: &Message) -> Bytes {
    message.encoded(&SSE_EVENT_WITH_ID, |m| event(m, Some(m.id())))
}

fn event(message: &Message, id: Option<&str>) -> Bytes {
    let envelope = std::str::from_utf8(message.envelope()).unwrap_or_default();
    let mut out = BytesMut::with_capacity(envelope.len() + 48);
    put_event(&mut out, "message", id, envelope);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_hub::{Data, Position, TopicName};

    #[test]
    fn encodings() {
        let topic = TopicName::new("t").expect("valid");
        let message = Message::new(
            topic,
            Position {
                tag: 1,
                epoch: 2,
                seq: 3,
            },
            9,
            &Data::from_text("x"),
        );
        assert_eq!(
            ws_message(&message).as_str(),
            r#"{"type":"message","topic":"t","id":"1-2-3","data":"x","time":9}"#
        );
        assert_eq!(
            envelope_of_ws_message(&ws_message(&message)).as_deref(),
            std::str::from_utf8(message.envelope()).ok()
        );
        assert_eq!(envelope_of_ws_message(r#"{"type":"pong"}"#), None);
        assert_eq!(
            &sse_event_with_id(&message)[..],
            b"id: 1-2-3\nevent: message\ndata: {\"topic\":\"t\",\"id\":\"1-2-3\",\"data\":\"x\",\"time\":9}\n\n"
        );
        assert_eq!(
            &sse_event(&message)[..],
            b"event: message\ndata: {\"topic\":\"t\",\"id\":\"1-2-3\",\"data\":\"x\",\"time\":9}\n\n"
        );
    }
}
