//! The admin API's JSON (`docs/ADMIN.md`): topics, connections, and the dashboard's stats.

use serde::Serialize;
use switchboard_hub::{Message, Position, TopicStats};

/// A count for each transport: `{"ws":…,"sse":…,"poll":…}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ByTransport<T> {
    pub ws: T,
    pub sse: T,
    pub poll: T,
}

impl<T: Copy> ByTransport<T> {
    /// From values in the order of `Transport::index`.
    pub fn from_indexed(values: &[T]) -> ByTransport<T> {
        ByTransport {
            ws: values[0],
            sse: values[1],
            poll: values[2],
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Retained {
    pub messages: usize,
    pub bytes: usize,
}

/// One topic: `{"topic":…,"subscribers":{…},"retained":{…},"first":…,"last":…,
/// "rate_per_second":…}`.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    pub topic: String,
    pub subscribers: ByTransport<usize>,
    pub retained: Retained,
    pub first: Option<String>,
    pub last: Option<String>,
    pub rate_per_second: f64,
}

impl Topic {
    pub fn new(stats: &TopicStats) -> Topic {
        let text = |p: Option<Position>| p.map(|p| p.to_string());
        Topic {
            topic: stats.topic.as_str().to_owned(),
            subscribers: ByTransport::from_indexed(&stats.subscribers),
            retained: Retained {
                messages: stats.retained_messages,
                bytes: stats.retained_bytes,
            },
            first: text(stats.first),
            last: text(stats.last),
            // Two decimals: enough to read, and stable in tests.
            rate_per_second: (stats.rate_per_second * 100.0).round() / 100.0,
        }
    }
}

/// `GET /admin/topics`.
#[derive(Debug, Serialize)]
pub struct TopicList {
    pub topics: Vec<Topic>,
    pub more: bool,
}

/// The envelopes clients receive, as JSON values rather than strings.
#[derive(Debug)]
pub struct Envelopes<'a>(pub &'a [std::sync::Arc<Message>]);

impl Serialize for Envelopes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|m| {
            serde_json::value::RawValue::from_string(
                String::from_utf8_lossy(m.envelope()).into_owned(),
            )
            .unwrap_or_else(|e| unreachable!("an envelope is JSON: {e}"))
        }))
    }
}

/// `GET /admin/topics/{topic}`: the topic and its last retained messages.
#[derive(Debug, Serialize)]
pub struct TopicDetail<'a> {
    #[serde(flatten)]
    pub topic: Topic,
    pub recent: Envelopes<'a>,
}

/// One connection in `GET /admin/connections`.
#[derive(Debug, Serialize)]
pub struct Connection {
    pub id: String,
    pub transport: &'static str,
    pub address: String,
    /// The `sub` of the connection's token, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub age_seconds: f64,
    pub queued: usize,
    pub topics: Vec<String>,
}

/// `GET /admin/connections`.
#[derive(Debug, Serialize)]
pub struct ConnectionList {
    pub count: ByTransport<usize>,
    pub connections: Vec<Connection>,
    pub more: bool,
}

/// `POST /admin/disconnect`.
#[derive(Debug, Serialize)]
pub struct Disconnected {
    pub disconnected: usize,
}

/// `DELETE /admin/topics/{topic}`.
#[derive(Debug, Serialize)]
pub struct Deleted<'a> {
    pub deleted: &'a str,
}

/// The dashboard's snapshot, once a second on `GET /admin/stream` and on `GET /admin/stats`:
/// totals since start (the page turns them into rates), connections now, busiest topics.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Milliseconds since the Unix epoch, when the snapshot was taken.
    pub time: u64,
    pub uptime_seconds: f64,
    pub broker: &'static str,
    pub connections: ByTransport<usize>,
    pub published: u64,
    pub deliveries: ByTransport<u64>,
    pub resets: u64,
    pub slow_consumers: u64,
    pub disconnected: u64,
    pub queued_bytes: usize,
    /// The busiest topics: by rate, then by subscribers.
    pub topics: Vec<Topic>,
}

/// JSON of a whole value; these types only hold strings, numbers and maps.
pub fn json(value: &impl Serialize) -> String {
    super::objects::to_json(value)
}
