//! What the gateway sends, as a client reads it: WebSocket frames, SSE events and poll
//! replies (docs/PROTOCOL.md). The gateway writes them with the types in `crate::wire`; the
//! tests below read exactly what those types write, so the two cannot drift apart.
//!
//! Envelopes are kept as the text the gateway sent, so that `sub` prints them byte for byte.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::wire::encodings::envelope_of_ws_message;

/// The fields of an envelope the client needs (the rest it passes on untouched).
#[derive(Debug, Deserialize)]
pub struct EnvelopeHead {
    pub topic: String,
    pub id: String,
}

impl EnvelopeHead {
    pub fn of(envelope: &str) -> Result<EnvelopeHead, String> {
        serde_json::from_str(envelope).map_err(|e| format!("not an envelope ({e}): {envelope}"))
    }
}

/// `{"topic":…,"reason":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Reset {
    pub topic: String,
    pub reason: String,
}

/// A topic's position, by topic name.
pub type Positions = HashMap<String, String>;

/// A WebSocket frame from the gateway.
#[derive(Debug)]
pub enum WsFrame {
    /// A message, as its envelope's text.
    Message(String),
    Subscribed(Positions),
    Reset(Reset),
    Error {
        code: String,
        message: String,
    },
    /// A frame the subscriber has no use for (`ack`, `pong`, a type added later).
    Other,
}

/// The frames other than messages, as they are tagged.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Tagged {
    Subscribed {
        positions: Positions,
    },
    Reset(Reset),
    Error {
        code: String,
        message: String,
    },
    #[serde(other)]
    Other,
}

impl WsFrame {
    pub fn parse(text: &str) -> Result<WsFrame, String> {
        // The gateway's own framing first: the envelope is then the frame minus its prefix.
        if let Some(envelope) = envelope_of_ws_message(text) {
            return Ok(WsFrame::Message(envelope));
        }
        let tagged: Tagged = match serde_json::from_str(text) {
            Ok(tagged) => tagged,
            Err(_) => return message_in_another_order(text),
        };
        Ok(match tagged {
            Tagged::Subscribed { positions } => WsFrame::Subscribed(positions),
            Tagged::Reset(reset) => WsFrame::Reset(reset),
            Tagged::Error { code, message } => WsFrame::Error { code, message },
            Tagged::Other => message_in_another_order(text)?,
        })
    }
}

/// A message frame whose `type` is not where this gateway puts it (another implementation of
/// the protocol): the envelope is the frame without `type`, in the frame's order.
fn message_in_another_order(text: &str) -> Result<WsFrame, String> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON frame ({e}): {text}"))?;
    if fields.get("type").and_then(|t| t.as_str()) != Some("message") {
        return Ok(WsFrame::Other);
    }
    fields.shift_remove("type");
    serde_json::to_string(&fields)
        .map(WsFrame::Message)
        .map_err(|e| format!("cannot re-encode a message ({e}): {text}"))
}

/// `event: subscribed`'s data.
#[derive(Debug, Deserialize)]
pub struct SseSubscribed {
    pub positions: Positions,
}

/// A poll reply, its envelopes as sent.
#[derive(Debug, Deserialize)]
pub struct PollReply<'a> {
    #[serde(borrow)]
    pub messages: Vec<&'a RawValue>,
    pub positions: Positions,
    pub reset: Vec<Reset>,
    pub more: bool,
}

/// One thing read from an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event: its name (`message` when none is given) and its data.
    Event { name: String, data: String },
    /// A comment line, without the `:` (`heartbeat`, `slow consumer…`).
    Comment(String),
}

/// Reads an event stream (the WHATWG rules the gateway's output needs: `event`, `data`,
/// comments; `id` and `retry` are not needed, since positions come with every message).
#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    /// The event being read.
    name: Option<String>,
    data: Option<String>,
}

/// The longest line accepted: an envelope of the largest message the gateway takes (16 MiB)
/// and then some. A stream that sends more without a line break is not the gateway.
const MAX_LINE: usize = 17 << 20;

impl SseReader {
    /// Feeds bytes as they arrived; complete items are appended to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) -> Result<(), String> {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&chunk[..end]);
            chunk = &chunk[end + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line =
                String::from_utf8(line).map_err(|_| "the event stream is not UTF-8".to_owned())?;
            self.line(line, out);
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > MAX_LINE {
            return Err(format!("an event stream line longer than {MAX_LINE} bytes"));
        }
        Ok(())
    }

    fn line(&mut self, line: String, out: &mut Vec<SseItem>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                let name = self.name.take().unwrap_or_else(|| "message".into());
                out.push(SseItem::Event { name, data });
            }
            self.name = None;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(SseItem::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use bytes::BytesMut;
    use switchboard_hub::{Data, Message, Position, ResetReason, TopicName};

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid")
    }

    fn message(name: &str, seq: u64, data: &Data) -> std::sync::Arc<Message> {
        let position = Position {
            tag: 7,
            epoch: 8,
            seq,
        };
        Message::new(topic(name), position, 1_763_800_000_123, data)
    }

    fn envelope(message: &Message) -> String {
        String::from_utf8(message.envelope().to_vec()).expect("utf-8")
    }

    /// Every WebSocket frame the gateway writes reads back as what it means.
    #[test]
    fn ws_frames_read_back() {
        let data = Data::from_json(br#"{"n": 1.50, "s":"a\"b"}"#).expect("json");
        let m = message("chat", 3, &data);
        match WsFrame::parse(&wire::encodings::ws_message(&m)) {
            Ok(WsFrame::Message(text)) => assert_eq!(text, envelope(&m)),
            other => panic!("{other:?}"),
        }
        let positions = [(topic("a"), Position::parse("1-2-3").expect("valid"))];
        match WsFrame::parse(&wire::frames::subscribed(None, &positions).text()) {
            Ok(WsFrame::Subscribed(read)) => assert_eq!(read["a"], "1-2-3"),
            other => panic!("{other:?}"),
        }
        let a = topic("a");
        let reset = wire::frames::ServerFrame::Reset(wire::objects::ResetObject::new(
            &a,
            ResetReason::HistoryLost,
        ));
        match WsFrame::parse(&reset.text()) {
            Ok(WsFrame::Reset(read)) => assert_eq!(
                read,
                Reset {
                    topic: "a".into(),
                    reason: "history_lost".into()
                }
            ),
            other => panic!("{other:?}"),
        }
        let error = wire::frames::ServerFrame::Error {
            reference: None,
            code: "bad_cursor",
            message: "no",
            retry_after: None,
        };
        assert!(matches!(
            WsFrame::parse(&error.text()),
            Ok(WsFrame::Error { code, .. }) if code == "bad_cursor"
        ));
        let pong = wire::frames::ServerFrame::Pong { reference: None };
        assert!(matches!(WsFrame::parse(&pong.text()), Ok(WsFrame::Other)));
        assert!(WsFrame::parse("not json").is_err());
    }

    #[test]
    fn a_message_frame_in_another_order_gives_the_envelope_without_type() {
        let frame =
            r#"{"topic":"t","type":"message","id":"1-2-3","data":[1,{"b":2,"a":1}],"time":5}"#;
        match WsFrame::parse(frame) {
            Ok(WsFrame::Message(text)) => assert_eq!(
                text,
                r#"{"topic":"t","id":"1-2-3","data":[1,{"b":2,"a":1}],"time":5}"#
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A stream as the gateway writes it, fed in pieces of every size, reads back as its events.
    #[test]
    fn sse_streams_read_back_whatever_the_chunking() {
        let m = message("chat", 4, &Data::from_text("hi"));
        let positions = [(topic("chat"), Position::parse("7-8-3").expect("valid"))];
        let mut stream = BytesMut::new();
        wire::sse::put_retry(&mut stream, std::time::Duration::from_secs(2));
        wire::sse::put_reset(&mut stream, &topic("chat"), ResetReason::Retention);
        wire::sse::put_subscribed(&mut stream, "7-8-3", &positions);
        stream.extend_from_slice(&wire::sse::message_event(&m, None));
        stream.extend_from_slice(wire::sse::HEARTBEAT);
        stream.extend_from_slice(&wire::sse::message_event(&m, Some("7-8-4.9-9-9")));
        stream.extend_from_slice(wire::sse::SLOW_CONSUMER);
        let expected = vec![
            SseItem::Event {
                name: "reset".into(),
                data: r#"{"topic":"chat","reason":"retention"}"#.into(),
            },
            SseItem::Event {
                name: "subscribed".into(),
                data: r#"{"topics":["chat"],"positions":{"chat":"7-8-3"}}"#.into(),
            },
            SseItem::Event {
                name: "message".into(),
                data: envelope(&m),
            },
            SseItem::Comment("heartbeat".into()),
            SseItem::Event {
                name: "message".into(),
                data: envelope(&m),
            },
            SseItem::Comment("slow consumer: reconnect with Last-Event-ID".into()),
        ];
        for size in [1, 2, 7, 64, stream.len()] {
            let mut reader = SseReader::default();
            let mut items = Vec::new();
            for chunk in stream.chunks(size) {
                reader.feed(chunk, &mut items).expect("valid stream");
            }
            assert_eq!(items, expected, "chunks of {size}");
        }
        let mut items = Vec::new();
        SseReader::default()
            .feed(b"data: a\r\ndata: b\r\n\r\n", &mut items)
            .expect("valid");
        assert_eq!(
            items,
            vec![SseItem::Event {
                name: "message".into(),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn poll_replies_read_back_with_envelopes_as_sent() {
        let m = message(
            "chat",
            4,
            &Data::from_json(br#"{"z":1,"a":[true]}"#).expect("json"),
        );
        let positions = [(topic("chat"), Position::parse("7-8-4").expect("valid"))];
        let body = wire::poll::reply(
            std::slice::from_ref(&m),
            "7-8-4",
            &positions,
            &[(topic("chat"), ResetReason::Retention)],
            true,
        );
        let reply: PollReply<'_> = serde_json::from_slice(&body).expect("a reply");
        assert_eq!(reply.messages.len(), 1);
        assert_eq!(reply.messages[0].get(), envelope(&m));
        assert_eq!(reply.positions["chat"], "7-8-4");
        assert_eq!(reply.reset[0].reason, "retention");
        assert!(reply.more);
        let head = EnvelopeHead::of(reply.messages[0].get()).expect("an envelope");
        assert_eq!((head.topic.as_str(), head.id.as_str()), ("chat", "7-8-4"));
    }
}
