//! Each transport's encoding of a message, made once per message and shared by every
//! subscriber on that transport (the cache lives in the message).

use axum::extract::ws::Utf8Bytes;
use bytes::{BufMut, Bytes, BytesMut};
use switchboard_hub::Message;

const WS_MESSAGE: usize = 0;
const SSE_EVENT: usize = 1;
const SSE_EVENT_WITH_ID: usize = 2;

/// The WebSocket frame text: the envelope with `"type":"message"` in front.
/// Cached as the frame type the socket takes, so sending it is a reference-count increment.
pub fn ws_message(message: &Message) -> Utf8Bytes {
    message.encoded(WS_MESSAGE, |m| {
        let envelope = std::str::from_utf8(m.envelope()).unwrap_or_default();
        let mut frame = String::with_capacity(envelope.len() + 17);
        frame.push_str("{\"type\":\"message\",");
        frame.push_str(&envelope[1..]);
        Utf8Bytes::from(frame)
    })
}

/// `event: message` and `data:` lines, without `id:`, for streams whose id is a cursor over
/// several topics.
pub fn sse_event(message: &Message) -> Bytes {
    message.encoded(SSE_EVENT, |m| {
        let envelope = m.envelope();
        let mut event = BytesMut::with_capacity(envelope.len() + 24);
        event.put_slice(b"event: message\ndata: ");
        event.put_slice(envelope);
        event.put_slice(b"\n\n");
        event.freeze()
    })
}

/// The whole SSE event with the message id as `id:`, for single-topic streams.
pub fn sse_event_with_id(message: &Message) -> Bytes {
    message.encoded(SSE_EVENT_WITH_ID, |m| {
        let event = sse_event(m);
        let mut framed = BytesMut::with_capacity(event.len() + m.id().len() + 5);
        framed.put_slice(b"id: ");
        framed.put_slice(m.id().as_bytes());
        framed.put_u8(b'\n');
        framed.put_slice(&event);
        framed.freeze()
    })
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
            &sse_event_with_id(&message)[..],
            b"id: 1-2-3\nevent: message\ndata: {\"topic\":\"t\",\"id\":\"1-2-3\",\"data\":\"x\",\"time\":9}\n\n"
        );
    }
}
