//! WebSocket frames the server sends (`docs/PROTOCOL.md`, "WebSocket"), other than messages,
//! whose frame is cached with the message (see [`super::encodings`]).

use serde::Serialize;
use switchboard_hub::{Position, TopicName};

use super::objects::{Positions, ResetObject, TopicNames, to_json};

/// The `ref` a client gave a frame: a string or a number, echoed back as given.
pub type Reference = serde_json::Value;

/// A frame of the server's, serialised with `type` first and the `ref` right after it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Subscribed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Reference>,
        topics: TopicNames<'a>,
        positions: Positions<'a>,
    },
    Unsubscribed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Reference>,
        topics: Vec<&'a str>,
    },
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Reference>,
        topic: &'a str,
        id: &'a str,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Reference>,
    },
    Reset(ResetObject<'a>),
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Reference>,
        code: &'static str,
        message: &'a str,
        /// Seconds to wait before trying again, for `rate_limited`.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// The answer to an `auth` frame: the new credentials are in force.
    #[serde(rename = "ack")]
    AuthAck {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Reference>,
        /// When the new grant runs out (the token's `exp` plus the leeway), if it does.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
}

impl ServerFrame<'_> {
    /// The frame's JSON text.
    pub fn text(&self) -> String {
        to_json(self)
    }
}

/// `subscribed` for `positions` (the topics just subscribed, with where each starts).
pub fn subscribed<'a>(
    reference: Option<&'a Reference>,
    positions: &'a [(TopicName, Position)],
) -> ServerFrame<'a> {
    ServerFrame::Subscribed {
        reference,
        topics: TopicNames(positions),
        positions: Positions(positions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_hub::ResetReason;

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid")
    }

    /// Every frame as PROTOCOL.md shows it, field for field and in that order.
    #[test]
    fn frames_read_as_in_the_protocol() {
        let r1: Reference = "r1".into();
        let position = Position {
            tag: 1,
            epoch: 2,
            seq: 3,
        };
        let positions = [(topic("A"), position), (topic("B"), position)];
        let r2: Reference = "r2".into();
        assert_eq!(
            subscribed(Some(&r2), &positions).text(),
            r#"{"type":"subscribed","ref":"r2","topics":["A","B"],"positions":{"A":"1-2-3","B":"1-2-3"}}"#
        );
        assert_eq!(
            subscribed(None, &positions[..1]).text(),
            r#"{"type":"subscribed","topics":["A"],"positions":{"A":"1-2-3"}}"#
        );
        let r3: Reference = "r3".into();
        assert_eq!(
            ServerFrame::Unsubscribed {
                reference: Some(&r3),
                topics: vec!["A"]
            }
            .text(),
            r#"{"type":"unsubscribed","ref":"r3","topics":["A"]}"#
        );
        assert_eq!(
            ServerFrame::Ack {
                reference: Some(&r1),
                topic: "T",
                id: "1-2-3"
            }
            .text(),
            r#"{"type":"ack","ref":"r1","topic":"T","id":"1-2-3"}"#
        );
        let r4: Reference = 4.into();
        assert_eq!(
            ServerFrame::Pong {
                reference: Some(&r4)
            }
            .text(),
            r#"{"type":"pong","ref":4}"#
        );
        let a = topic("A");
        assert_eq!(
            ServerFrame::Reset(ResetObject::new(&a, ResetReason::Retention)).text(),
            r#"{"type":"reset","topic":"A","reason":"retention"}"#
        );
        assert_eq!(
            ServerFrame::Error {
                reference: Some(&r2),
                code: "bad_topic",
                message: "…",
                retry_after: None,
            }
            .text(),
            r#"{"type":"error","ref":"r2","code":"bad_topic","message":"…"}"#
        );
        assert_eq!(
            ServerFrame::Error {
                reference: None,
                code: "rate_limited",
                message: "…",
                retry_after: Some(2),
            }
            .text(),
            r#"{"type":"error","code":"rate_limited","message":"…","retry_after":2}"#
        );
        assert_eq!(
            ServerFrame::AuthAck {
                reference: Some(&r2),
                expires: Some(1796000000),
            }
            .text(),
            r#"{"type":"ack","ref":"r2","expires":1796000000}"#
        );
    }
}
