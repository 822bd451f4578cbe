//! The Switchboard topic hub: sequencing, retention and fan-out of messages, shared by every
//! transport. It knows nothing about HTTP, WebSocket or SSE.
//!
//! # Layout
//!
//! - [`topic`]: topic names and their validation.
//! - [`position`]: positions (`tag-epoch-seq`) and cursors (positions joined with `.`).
//! - [`message`]: validated [`Data`], and the shared [`Message`] with its envelope, encoded
//!   once, plus a cache for each transport's own encoding.
//! - [`inbox`]: a connection's bounded queue, fed by every topic it subscribes to.
//! - [`fanout`]: the subscribers of one topic on this node, and delivery to all of them.
//! - [`resume`](mod@resume): the resume rules, one pure function every store uses.
//! - [`hub`]: the in-memory [`Hub`]: the topic map, publishing and joining (`hub/mod.rs`);
//!   the time it reads, a [`Clock`] that tests replace (`hub/clock.rs`); retention by count,
//!   age and memory budget (`hub/retention.rs`); the periodic sweep, forgetting idle topics
//!   and the horizons (`hub/maintenance.rs`).
//!
//! The gateway reaches the hub only through the [`Broker`] trait, so that a broker backed by
//! Redis can later provide sequencing, history and cross-node fan-out behind it.

pub mod fanout;
pub mod hub;
pub mod inbox;
pub mod message;
pub mod position;
pub mod resume;
pub mod topic;
pub mod topic_stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use fanout::Subscribers;
pub use hub::{
    Append, Catchup, Change, Clock, Hub, HubConfig, HubStats, ManualClock, Page, ResetReason,
    Restored, RestoredMessage, RestoredTopic, SystemClock,
};
pub use inbox::{INBOX_KINDS, Inbox, InboxGauge, QueueLimits, Received, Restart};
pub use message::{Data, DataError, Message};
pub use position::{Cursor, CursorError, Position};
pub use resume::{TopicView, resume};
pub use topic::{TopicError, TopicName};
pub use topic_stats::{RATE_WINDOW_SECONDS, RecentRate, TopicDetail, TopicStats};

/// A boxed future, so that [`Broker`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a broker could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The broker cannot be reached now (never happens in memory; a networked broker may).
    Unavailable(String),
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerError::Unavailable(why) => write!(f, "message broker unavailable: {why}"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// What a broker says of itself, for `/healthz` and `/readyz`.
#[derive(Debug, Clone)]
pub struct BrokerStatus {
    /// `memory`, `redis` or `redis-cluster`.
    pub kind: &'static str,
    /// Why this node cannot serve now (its store is out of reach), if it cannot.
    pub unready: Option<String>,
    /// The broker's own counters.
    pub details: serde_json::Value,
}

/// What the transports need from a message store: a position for every published message,
/// history after a position, and delivery of what follows into a connection's [`Inbox`].
///
/// Architecture invariant: every transport publishes and subscribes only through this trait.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Gives `data` the next position in `topic`, retains it and delivers it to subscribers.
    ///
    /// The future owns what it needs, so that a connection can keep several publishes in
    /// flight, awaiting them one at a time in the order it started them: that is their order
    /// in the topic. The hub gives the message its position when this is called and commits it
    /// without the future being polled, so publishes in flight share a commit; a remote broker
    /// sends its request when the future is first polled.
    fn publish(
        &self,
        topic: &TopicName,
        data: &Data,
    ) -> BoxFuture<'static, Result<Arc<Message>, BrokerError>>;

    /// Returns what was retained after `from` (at most a `page` of it) and, with an inbox,
    /// subscribes it to what follows, with nothing missed or repeated in between.
    fn join<'a>(
        &'a self,
        topic: &'a TopicName,
        from: Option<Position>,
        inbox: Option<&'a Inbox>,
        page: Page,
    ) -> BoxFuture<'a, Result<Catchup, BrokerError>>;

    /// Stops delivering `topic` to `inbox`.
    fn leave(&self, topic: &TopicName, inbox: &Inbox);

    /// Whether the broker can serve, and its counters.
    fn status(&self) -> BrokerStatus;

    /// For operators: the topics whose name starts with `prefix` that have subscribers on this
    /// node or retained messages, by name, at most `limit`; and whether more follow.
    fn topics<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<(Vec<TopicStats>, bool), BrokerError>>;

    /// For operators: one topic and its last `recent` retained messages (oldest first), or
    /// `None` when it has neither subscribers here nor retained messages.
    fn topic<'a>(
        &'a self,
        topic: &'a TopicName,
        recent: usize,
    ) -> BoxFuture<'a, Result<Option<TopicDetail>, BrokerError>>;

    /// For operators: forgets the history of `topic`; its subscribers get a `deleted` reset
    /// and go on from the new history. Returns whether there was anything to delete.
    fn delete<'a>(&'a self, topic: &'a TopicName) -> BoxFuture<'a, Result<bool, BrokerError>>;
}

impl Broker for Hub {
    fn topics<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<(Vec<TopicStats>, bool), BrokerError>> {
        Box::pin(std::future::ready(Ok(Hub::topics(self, prefix, limit))))
    }

    fn topic<'a>(
        &'a self,
        topic: &'a TopicName,
        recent: usize,
    ) -> BoxFuture<'a, Result<Option<TopicDetail>, BrokerError>> {
        let found = self
            .topic_stats(topic)
            .filter(TopicStats::is_active)
            .map(|stats| TopicDetail {
                stats,
                recent: self.recent(topic, recent),
            });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn delete<'a>(&'a self, topic: &'a TopicName) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(std::future::ready(Ok(Hub::delete(self, topic))))
    }

    fn publish(
        &self,
        topic: &TopicName,
        data: &Data,
    ) -> BoxFuture<'static, Result<Arc<Message>, BrokerError>> {
        let published = self.start_publish(topic, data);
        Box::pin(async move { published.await.map_err(BrokerError::Unavailable) })
    }

    fn join<'a>(
        &'a self,
        topic: &'a TopicName,
        from: Option<Position>,
        inbox: Option<&'a Inbox>,
        page: Page,
    ) -> BoxFuture<'a, Result<Catchup, BrokerError>> {
        Box::pin(std::future::ready(Ok(Hub::join(
            self, topic, from, inbox, page,
        ))))
    }

    fn leave(&self, topic: &TopicName, inbox: &Inbox) {
        Hub::leave(self, topic, inbox);
    }

    fn status(&self) -> BrokerStatus {
        let stats = self.stats();
        let load = std::sync::atomic::Ordering::Relaxed;
        BrokerStatus {
            kind: if self.is_durable() { "disk" } else { "memory" },
            unready: self.store_failure(),
            details: serde_json::json!({
                "topics": self.topic_count(),
                "retained_bytes": self.retained_bytes(),
                "stored_bytes": self.stored_bytes(),
                "retained_messages": self.retained_messages(),
                "published": stats.published.load(load),
                "commits": stats.commits.load(load),
                "slow_consumers": stats.slow_consumers.load(load),
                "evicted": {
                    "count": stats.evicted_by_count.load(load),
                    "age": stats.evicted_by_age.load(load),
                    "budget": stats.evicted_by_budget.load(load),
                },
            }),
        }
    }
}
