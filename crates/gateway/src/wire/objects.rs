//! JSON objects that several transports carry.

use serde::Serialize;
use serde::ser::SerializeMap;
use switchboard_hub::{Position, ResetReason, TopicName};

/// `{"topic":…,"reason":…}`: a position that could not be honoured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResetObject<'a> {
    pub topic: &'a str,
    pub reason: &'static str,
}

impl<'a> ResetObject<'a> {
    pub fn new(topic: &'a TopicName, reason: ResetReason) -> ResetObject<'a> {
        ResetObject {
            topic: topic.as_str(),
            reason: reason.as_str(),
        }
    }
}

/// `{"topic":"position",…}`, in the order given.
#[derive(Debug, Clone, Copy)]
pub struct Positions<'a>(pub &'a [(TopicName, Position)]);

impl Serialize for Positions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (topic, position) in self.0 {
            map.serialize_entry(topic.as_str(), &position.to_string())?;
        }
        map.end()
    }
}

/// The names of `topics`, as a JSON array.
#[derive(Debug, Clone, Copy)]
pub struct TopicNames<'a>(pub &'a [(TopicName, Position)]);

impl Serialize for TopicNames<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(topic, _)| topic.as_str()))
    }
}

/// `{"error":{"code":…,"message":…,"request_id":…}}`: the body of every HTTP rejection.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'static str,
    pub message: &'a str,
    /// The request's id (as in `X-Request-Id`), to find its log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
}

/// JSON text of a value whose serialisation cannot fail (only strings, numbers and maps with
/// string keys).
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("plain JSON serialises: {e}"))
}
