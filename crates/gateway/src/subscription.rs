//! The subscription plumbing every transport shares: joining topics from a cursor, the
//! connection's inbox, the positions it has delivered, and leaving on drop.

use std::sync::Arc;

use switchboard_hub::{Broker, Cursor, Inbox, Message, Position, Received, ResetReason, TopicName};

use crate::error::AppError;
use crate::request::check_topic_count;

/// A topic the connection follows, and the last position it delivered there.
#[derive(Debug)]
struct Followed {
    topic: TopicName,
    position: Position,
}

/// What joining topics produced, in the order the client must see it.
#[derive(Debug, Default)]
pub struct Joined {
    /// Positions that could not be honoured: told before anything else.
    pub resets: Vec<(TopicName, ResetReason)>,
    /// Retained messages after the cursor, per topic in order; the transport must
    /// [`Subscription::record`] each one as it sends it.
    pub messages: Vec<Arc<Message>>,
    /// Whether more retained messages wait beyond `messages` (only with a limit).
    pub more: bool,
}

/// One connection's (or one poll's) view of the hub.
#[derive(Debug)]
pub struct Subscription {
    broker: Arc<dyn Broker>,
    inbox: Inbox,
    followed: Vec<Followed>,
    /// Whether the inbox is registered with the topics in `followed`.
    live: bool,
    max_topics: usize,
}

impl Subscription {
    pub fn new(broker: Arc<dyn Broker>, send_queue: usize, max_topics: usize) -> Subscription {
        Subscription {
            broker,
            inbox: Inbox::new(send_queue),
            followed: Vec::new(),
            live: false,
            max_topics,
        }
    }

    /// Subscribes to `topics`, delivering what was retained after `cursor` first. Topics the
    /// connection already follows are left as they are. With `live` unset (a poll's first
    /// look) nothing is registered and unknown topics are not created. `limit` caps the
    /// retained messages returned across all topics.
    pub async fn join(
        &mut self,
        topics: &[TopicName],
        cursor: Option<&Cursor>,
        live: bool,
        limit: usize,
    ) -> Result<Joined, AppError> {
        let new: Vec<&TopicName> = topics.iter().filter(|t| !self.follows(t)).collect();
        check_topic_count(self.followed.len() + new.len(), self.max_topics)?;
        self.live |= live;
        let mut joined = Joined::default();
        for topic in new {
            let from = cursor.and_then(|c| c.position_of(topic));
            let remaining = limit.saturating_sub(joined.messages.len());
            let inbox = live.then_some(&self.inbox);
            let catchup = self.broker.join(topic, from, inbox, remaining).await?;
            if let Some(reason) = catchup.reset {
                joined.resets.push((topic.clone(), reason));
            }
            joined.more |= catchup.more;
            // The transport records each retained message as it sends it, so a client that
            // drops mid-backlog resumes from what it really got.
            self.followed.push(Followed {
                topic: topic.clone(),
                position: catchup.start,
            });
            joined.messages.extend(catchup.messages);
        }
        Ok(joined)
    }

    /// Registers the inbox with every followed topic, continuing from the positions held: used
    /// by a poll that found nothing on its first look and now waits.
    pub async fn go_live(&mut self) -> Result<Joined, AppError> {
        let cursor = Cursor::from_positions(self.followed.iter().map(|f| f.position).collect());
        let topics: Vec<TopicName> = self.followed.drain(..).map(|f| f.topic).collect();
        self.join(&topics, Some(&cursor), true, usize::MAX).await
    }

    /// Unsubscribes from `topics`; messages of theirs still queued are skipped.
    pub fn leave(&mut self, topics: &[TopicName]) {
        for topic in topics {
            if self.live {
                self.broker.leave(topic, &self.inbox);
            }
        }
        self.followed.retain(|f| !topics.contains(&f.topic));
    }

    pub fn follows(&self, topic: &TopicName) -> bool {
        self.followed.iter().any(|f| &f.topic == topic)
    }

    /// The next live message to deliver, recording its position. Skips messages of topics left
    /// since they were queued. Cancel-safe.
    pub async fn next(&mut self) -> Received {
        loop {
            match self.inbox.recv().await {
                Received::Message(message) => {
                    if self.record(&message) {
                        return Received::Message(message);
                    }
                }
                Received::Overflowed => return Received::Overflowed,
            }
        }
    }

    /// The next live message if one is queued now, for coalescing several into one write.
    pub fn try_next(&mut self) -> Option<Arc<Message>> {
        while let Some(message) = self.inbox.try_recv() {
            if self.record(&message) {
                return Some(message);
            }
        }
        None
    }

    /// Records that `message` is delivered; false if it must not be (topic left, or already
    /// delivered, which the hub's atomic join rules out, checked here all the same).
    pub fn record(&mut self, message: &Message) -> bool {
        let Some(followed) = self.followed.iter_mut().find(|f| f.topic == message.topic) else {
            return false;
        };
        let position = message.position;
        if position.epoch == followed.position.epoch && position.seq <= followed.position.seq {
            return false;
        }
        followed.position = position;
        true
    }

    /// The cursor for every followed topic: what `Last-Event-ID` and poll's `cursor` carry.
    pub fn cursor(&self) -> String {
        let positions = self.followed.iter().map(|f| f.position).collect();
        Cursor::from_positions(positions).to_string()
    }

    /// `{"topic": "position", ...}` for every followed topic.
    pub fn positions_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.followed
            .iter()
            .map(|f| (f.topic.to_string(), f.position.to_string().into()))
            .collect()
    }

    /// The followed topics as a JSON array of names.
    pub fn topics_json(&self) -> serde_json::Value {
        self.followed
            .iter()
            .map(|f| serde_json::Value::from(f.topic.as_str()))
            .collect()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let topics: Vec<TopicName> = self.followed.iter().map(|f| f.topic.clone()).collect();
        self.leave(&topics);
    }
}

/// The reset object every transport sends: `{"topic":…,"reason":…}`.
pub fn reset_json(topic: &TopicName, reason: ResetReason) -> serde_json::Value {
    serde_json::json!({"topic": topic.as_str(), "reason": reason.as_str()})
}
