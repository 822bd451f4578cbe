//! The in-memory hub: one map of topics, each with its sequence, retained history and
//! subscribers.
//!
//! - `mod.rs`: the [`Hub`], its topic map, and publishing, joining and leaving;
//! - `clock.rs`: the time it reads (a [`Clock`], injectable for tests) and its epochs;
//! - `retention.rs`: which messages are kept, by count, age and memory budget;
//! - `maintenance.rs`: the periodic sweep, forgetting idle topics, and the horizons that
//!   remember what forgetting lost.

mod clock;
mod maintenance;
mod retention;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

pub use self::clock::{Clock, ManualClock, SystemClock};

use self::clock::Ticks;
use self::maintenance::Horizons;
use crate::fanout::Subscribers;
use crate::inbox::Inbox;
use crate::message::{Data, Message};
use crate::position::{Position, topic_tag};
use crate::resume::{TopicView, resume};
use crate::topic::TopicName;

/// How the hub retains history. Every limit applies at once; the strictest wins.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Messages retained per topic.
    pub retention_messages: usize,
    /// How long a message is retained; zero keeps messages until another limit drops them.
    pub retention_age: Duration,
    /// Memory for all retained messages together; the oldest messages of the whole hub go first.
    pub retention_bytes: usize,
    /// How long a topic with neither subscribers nor retained messages keeps its position
    /// header, so that pollers between requests keep their place.
    pub idle_topic_ttl: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            retention_messages: 1000,
            retention_age: Duration::from_secs(3600),
            retention_bytes: 256 * 1024 * 1024,
            idle_topic_ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a position could not be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Messages after the position were dropped by retention.
    Retention,
    /// The position belongs to a history that no longer exists.
    HistoryLost,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Retention => "retention",
            ResetReason::HistoryLost => "history_lost",
        }
    }
}

/// How much of a topic's retained history one read returns: at most `messages` messages and,
/// past the first, at most `bytes` bytes of envelopes, so that what a reader holds at once is
/// bounded whatever the messages' size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub messages: usize,
    pub bytes: usize,
}

impl Page {
    /// Everything retained.
    pub const ALL: Page = Page {
        messages: usize::MAX,
        bytes: usize::MAX,
    };

    /// No messages: only where reading starts, any reset, and whether messages follow.
    pub const NONE: Page = Page {
        messages: 0,
        bytes: 0,
    };

    /// At most `messages` messages, of any size.
    pub const fn messages(messages: usize) -> Page {
        Page {
            messages,
            bytes: usize::MAX,
        }
    }
}

/// What a subscriber gets when it joins a topic or reads it.
#[derive(Debug)]
pub struct Catchup {
    /// Set when the requested position could not be honoured; the caller tells the client
    /// before anything else.
    pub reset: Option<ResetReason>,
    /// The position delivery starts from: `messages` follow it.
    pub start: Position,
    /// Retained messages after `start`, in order, at most the requested page.
    pub messages: Vec<Arc<Message>>,
    /// Whether more retained messages follow the last of `messages`.
    pub more: bool,
}

/// Counters of what the hub did and dropped, for operators.
#[derive(Debug, Default)]
pub struct HubStats {
    pub published: AtomicU64,
    /// Subscribers dropped because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Messages dropped by the per-topic count limit.
    pub evicted_by_count: AtomicU64,
    /// Messages dropped because they were older than the age limit.
    pub evicted_by_age: AtomicU64,
    /// Messages dropped to keep within the memory budget.
    pub evicted_by_budget: AtomicU64,
    /// Idle topics forgotten.
    pub topics_forgotten: AtomicU64,
}

#[derive(Debug)]
struct Topic {
    name: TopicName,
    tag: u64,
    state: Mutex<TopicState>,
}

#[derive(Debug)]
struct TopicState {
    epoch: u64,
    last_seq: u64,
    /// Contiguous in sequence: the front is the oldest retained message.
    retained: VecDeque<Arc<Message>>,
    subscribers: Subscribers,
    /// When the topic last had neither subscribers nor retained messages.
    idle_since_ms: Option<u64>,
    /// Set under the lock when the topic leaves the map, so late arrivals look it up again.
    removed: bool,
}

impl TopicState {
    fn first_retained_seq(&self) -> u64 {
        self.retained
            .front()
            .map_or(self.last_seq + 1, |m| m.position.seq)
    }

    fn is_idle(&self) -> bool {
        self.retained.is_empty() && self.subscribers.is_empty()
    }
}

/// The topic hub. It knows nothing about HTTP or any transport.
#[derive(Debug)]
pub struct Hub {
    topics: DashMap<TopicName, Arc<Topic>>,
    config: HubConfig,
    /// The time, and the clock values that epochs are made of.
    ticks: Ticks,
    /// Since when each bucket of topics has lost no history.
    horizons: Horizons,
    retained_bytes: AtomicUsize,
    /// Messages retained, in all topics.
    retained_messages: AtomicUsize,
    /// Wakes maintenance when a publish takes the hub over its memory budget.
    over_budget: Notify,
    stats: HubStats,
}

impl Hub {
    /// A hub on the system clock.
    pub fn new(config: HubConfig) -> Hub {
        Hub::with_clock(config, Arc::new(SystemClock))
    }

    /// A hub that reads the time from `clock`: tests give it a [`ManualClock`].
    pub fn with_clock(config: HubConfig, clock: Arc<dyn Clock>) -> Hub {
        let ticks = Ticks::new(clock);
        // Nothing of any topic is lost before the hub starts.
        let horizons = Horizons::new(ticks.now());
        Hub {
            topics: DashMap::new(),
            config,
            ticks,
            horizons,
            retained_bytes: AtomicUsize::new(0),
            retained_messages: AtomicUsize::new(0),
            over_budget: Notify::new(),
            stats: HubStats::default(),
        }
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// Messages retained now, in all topics.
    pub fn retained_messages(&self) -> usize {
        self.retained_messages.load(Ordering::Relaxed)
    }

    /// Runs `f` on the topic's locked state, creating the topic when `create` is set.
    fn with_topic<R>(
        &self,
        name: &TopicName,
        create: bool,
        mut f: impl FnMut(&Topic, &mut TopicState) -> R,
    ) -> Option<R> {
        loop {
            let topic = match self.topics.get(name) {
                Some(topic) => topic.clone(),
                None if create => self
                    .topics
                    .entry(name.clone())
                    .or_insert_with(|| {
                        Arc::new(Topic {
                            name: name.clone(),
                            tag: topic_tag(name),
                            state: Mutex::new(TopicState {
                                epoch: self.ticks.tick(),
                                last_seq: 0,
                                retained: VecDeque::new(),
                                subscribers: Subscribers::default(),
                                idle_since_ms: None,
                                removed: false,
                            }),
                        })
                    })
                    .clone(),
                None => return None,
            };
            let mut state = topic.state.lock();
            if !state.removed {
                return Some(f(&topic, &mut state));
            }
        }
    }

    /// Gives `data` the next position in `topic`, retains it and queues it for every
    /// subscriber.
    pub fn publish(&self, topic: &TopicName, data: &Data) -> Arc<Message> {
        let time_ms = self.ticks.now_ms();
        let message = self
            .with_topic(topic, true, |topic, state| {
                state.last_seq += 1;
                let position = Position {
                    tag: topic.tag,
                    epoch: state.epoch,
                    seq: state.last_seq,
                };
                let message = Message::new(topic.name.clone(), position, time_ms, data);
                self.retain(state, message.clone(), time_ms);
                state.idle_since_ms = None;
                let overflowed = state.subscribers.deliver(&message);
                self.stats
                    .slow_consumers
                    .fetch_add(overflowed, Ordering::Relaxed);
                message
            })
            .unwrap_or_else(|| unreachable!("a topic is always created on publish"));
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if self.is_over_budget() {
            self.over_budget.notify_one();
        }
        message
    }

    /// Reads the retained messages after `from` (at most a `page`) and, with an `inbox`,
    /// subscribes it to what follows — atomically, so nothing is missed or repeated between the
    /// two. Without an inbox an unknown topic is not created.
    pub fn join(
        &self,
        topic: &TopicName,
        from: Option<Position>,
        inbox: Option<&Inbox>,
        page: Page,
    ) -> Catchup {
        let joined = self.with_topic(topic, inbox.is_some(), |topic, state| {
            let catchup = self.read(topic, state, from, page);
            if let Some(inbox) = inbox {
                state.subscribers.add(inbox);
                state.idle_since_ms = None;
            }
            catchup
        });
        joined.unwrap_or_else(|| self.read_unknown(topic, from))
    }

    fn read(
        &self,
        topic: &Topic,
        state: &TopicState,
        from: Option<Position>,
        page: Page,
    ) -> Catchup {
        let first = state.first_retained_seq();
        let view = TopicView {
            epoch: state.epoch,
            first_retained: first,
            last_seq: state.last_seq,
            trusted_since: self.horizons.of(topic.tag),
        };
        let (after, reset) = resume(from, &view);
        let skip = (after + 1 - first) as usize;
        let available = state.retained.len().saturating_sub(skip);
        let mut messages = Vec::new();
        let mut bytes = 0;
        for message in state.retained.iter().skip(skip).take(page.messages) {
            bytes += message.queued_size();
            if !messages.is_empty() && bytes > page.bytes {
                break;
            }
            messages.push(message.clone());
        }
        Catchup {
            reset,
            start: Position {
                tag: topic.tag,
                epoch: state.epoch,
                seq: after,
            },
            more: available > messages.len(),
            messages,
        }
    }

    /// A read of a topic the hub does not know: nothing retained, no subscribers.
    fn read_unknown(&self, topic: &TopicName, from: Option<Position>) -> Catchup {
        let tag = topic_tag(topic);
        let horizon = self.horizons.of(tag);
        let now = Position {
            tag,
            epoch: self.ticks.now(),
            seq: 0,
        };
        let (start, reset) = match from {
            None => (now, None),
            Some(p) if p.seq == 0 && p.epoch >= horizon => (p, None),
            Some(_) => (now, Some(ResetReason::HistoryLost)),
        };
        Catchup {
            reset,
            start,
            messages: Vec::new(),
            more: false,
        }
    }

    /// Unsubscribes `inbox` from `topic`.
    pub fn leave(&self, topic: &TopicName, inbox: &Inbox) {
        self.with_topic(topic, false, |_, state| {
            state.subscribers.remove(inbox);
        });
    }
}

#[cfg(test)]
mod tests;
