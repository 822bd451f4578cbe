//! The poll reply (`docs/PROTOCOL.md`, "Long-poll"):
//! `{"messages":[…],"cursor":…,"positions":{…},"reset":[…],"more":…}`, with each envelope
//! copied in as the bytes it was encoded to at publish time.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use switchboard_hub::{Message, Position, ResetReason, TopicName};

use super::objects::{Positions, ResetObject, to_json};

/// What follows the messages in a reply.
#[derive(Serialize)]
struct Tail<'a> {
    cursor: &'a str,
    positions: Positions<'a>,
    reset: Vec<ResetObject<'a>>,
    more: bool,
}

/// The reply body.
pub fn reply(
    messages: &[Arc<Message>],
    cursor: &str,
    positions: &[(TopicName, Position)],
    resets: &[(TopicName, ResetReason)],
    more: bool,
) -> Bytes {
    let tail = to_json(&Tail {
        cursor,
        positions: Positions(positions),
        reset: resets
            .iter()
            .map(|(topic, reason)| ResetObject::new(topic, *reason))
            .collect(),
        more,
    });
    let size: usize = messages.iter().map(|m| m.envelope().len() + 1).sum();
    let mut body = BytesMut::with_capacity(size + tail.len() + 16);
    body.put_slice(b"{\"messages\":[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(message.envelope());
    }
    body.put_slice(b"],");
    // The tail's own `{` is replaced by the messages before it.
    body.put_slice(&tail.as_bytes()[1..]);
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_hub::Data;

    #[test]
    fn reply_reads_as_in_the_protocol() {
        let a = TopicName::new("A").expect("valid");
        let position = Position {
            tag: 1,
            epoch: 2,
            seq: 3,
        };
        let message = Message::new(a.clone(), position, 7, &Data::from_text("hi"));
        let body = reply(
            &[message],
            "1-2-3",
            &[(a.clone(), position)],
            &[(a, ResetReason::Retention)],
            false,
        );
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"{"messages":[{"topic":"A","id":"1-2-3","data":"hi","time":7}],"cursor":"1-2-3","positions":{"A":"1-2-3"},"reset":[{"topic":"A","reason":"retention"}],"more":false}"#
        );
        let empty = reply(&[], "c", &[], &[], true);
        assert_eq!(
            std::str::from_utf8(&empty).expect("utf-8"),
            r#"{"messages":[],"cursor":"c","positions":{},"reset":[],"more":true}"#
        );
    }
}
