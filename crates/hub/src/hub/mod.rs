//! The in-memory hub: one map of topics, each with its sequence, retained history and
//! subscribers.
//!
//! - `mod.rs`: the [`Hub`], its topic map, and publishing, joining and leaving;
//! - `clock.rs`: the time it reads (a [`Clock`], injectable for tests) and its epochs;
//! - `retention.rs`: which messages are kept, by count, age and memory budget;
//! - `maintenance.rs`: the periodic sweep, forgetting idle topics, and the horizons that
//!   remember what forgetting lost;
//! - `journal.rs`: with a durable store, the changes handed to it, and the hub it restores.

mod clock;
mod journal;
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
pub use self::journal::{Append, Change, Restored, RestoredMessage, RestoredTopic};

use self::clock::Ticks;
use self::journal::{CommitResult, Journal};
use self::maintenance::Horizons;
use crate::fanout::Subscribers;
use crate::inbox::{Inbox, Restart};
use crate::message::{Data, EncodingBytes, Message};
use crate::position::{Position, topic_tag};
use crate::resume::{TopicView, resume};
use crate::topic::TopicName;
use crate::topic_stats::{RecentRate, TopicStats};

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
    /// Bytes of retained messages a durable store may hold, counted as their envelopes (which
    /// are longer than what the store writes of them); the oldest messages of the whole hub go
    /// first. Without a store, nothing is written and this has no effect. (The gateway derives
    /// it from the directory's budget, `--retention-disk`.)
    pub retention_disk: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            retention_messages: 1000,
            retention_age: Duration::from_secs(3600),
            retention_bytes: 256 * 1024 * 1024,
            idle_topic_ttl: Duration::from_secs(3600),
            retention_disk: usize::MAX,
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
    /// An operator deleted the topic's history; it goes on from a new one.
    Deleted,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Retention => "retention",
            ResetReason::HistoryLost => "history_lost",
            ResetReason::Deleted => "deleted",
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
    /// Commits of a durable store: with `published`, how many messages a commit takes.
    pub commits: AtomicU64,
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
    /// The last sequence given to a message.
    last_seq: u64,
    /// The last sequence readers and subscribers see: `last_seq` in memory; with a store, the
    /// last one committed, so that nothing is shown that a crash could take back.
    visible_seq: u64,
    /// Contiguous in sequence: the front is the oldest retained message.
    retained: VecDeque<Arc<Message>>,
    /// The memory `retained` takes, for operators.
    retained_bytes: usize,
    /// Publishes over the last minute; made on the first publish, so that topics only
    /// subscribed to pay nothing for it.
    rate: Option<Box<RecentRate>>,
    subscribers: Subscribers,
    /// When the topic last had neither subscribers nor retained messages.
    idle_since_ms: Option<u64>,
    /// Set under the lock when the topic leaves the map, so late arrivals look it up again.
    removed: bool,
}

impl Topic {
    /// A topic with nothing retained and no subscriber, whose last message was `last_seq` of
    /// `epoch` (0 for a new topic).
    fn new(name: TopicName, epoch: u64, last_seq: u64) -> Arc<Topic> {
        Arc::new(Topic {
            tag: topic_tag(&name),
            name,
            state: Mutex::new(TopicState {
                epoch,
                last_seq,
                visible_seq: last_seq,
                retained: VecDeque::new(),
                retained_bytes: 0,
                rate: None,
                subscribers: Subscribers::default(),
                idle_since_ms: None,
                removed: false,
            }),
        })
    }
}

impl TopicState {
    fn first_retained_seq(&self) -> u64 {
        self.retained
            .front()
            .map_or(self.last_seq + 1, |m| m.position.seq)
    }

    fn is_idle(&self) -> bool {
        self.retained.is_empty() && self.subscribers.is_empty() && self.visible_seq == self.last_seq
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
    /// What the retained messages take in memory (`Message::retained_size`), without the
    /// encodings made for their subscribers, which `encoding_bytes` counts.
    retained_bytes: AtomicUsize,
    /// What the encodings cached in retained messages take; each message holds it too, to
    /// count an encoding when a subscriber makes it.
    encoding_bytes: Arc<EncodingBytes>,
    /// What the retained messages count for on disk (`Message::stored_size`).
    stored_bytes: AtomicUsize,
    /// The changes for the durable store, if the hub has one.
    journal: Option<Journal>,
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
        let ticks = Ticks::new(clock, 0);
        // Nothing of any topic is lost before the hub starts.
        let horizons = Horizons::new(ticks.now());
        Hub::assemble(config, ticks, horizons, None)
    }

    fn assemble(
        config: HubConfig,
        ticks: Ticks,
        horizons: Horizons,
        journal: Option<Journal>,
    ) -> Hub {
        Hub {
            topics: DashMap::new(),
            config,
            ticks,
            horizons,
            retained_bytes: AtomicUsize::new(0),
            encoding_bytes: Arc::default(),
            stored_bytes: AtomicUsize::new(0),
            journal,
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

    /// What the retained messages take in memory, with the encodings made for their
    /// subscribers: what the memory budget (`retention_bytes`) bounds.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes.load(Ordering::Relaxed) + self.encoding_bytes.get()
    }

    /// What the retained messages count for against the disk budget (`retention_disk`).
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes.load(Ordering::Relaxed)
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
        mut f: impl FnMut(&Arc<Topic>, &mut TopicState) -> R,
    ) -> Option<R> {
        loop {
            let topic = match self.topics.get(name) {
                Some(topic) => topic.clone(),
                None if create => self
                    .topics
                    .entry(name.clone())
                    .or_insert_with(|| Topic::new(name.clone(), self.ticks.tick(), 0))
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
    /// subscriber. With a durable store, it is queued once committed: the [`Broker`]
    /// implementation waits for that.
    ///
    /// [`Broker`]: crate::Broker
    pub fn publish(&self, topic: &TopicName, data: &Data) -> Arc<Message> {
        self.sequence(topic, data, false).0
    }

    /// Publishes as [`Hub::publish`] does; with a store and `wait`, also returns what will
    /// say when the message is committed (and delivered).
    fn sequence(
        &self,
        topic: &TopicName,
        data: &Data,
        wait: bool,
    ) -> (
        Arc<Message>,
        Option<tokio::sync::oneshot::Receiver<CommitResult>>,
    ) {
        let time_ms = self.ticks.now_ms();
        let published = self
            .with_topic(topic, true, |topic, state| {
                state.last_seq += 1;
                let position = Position {
                    tag: topic.tag,
                    epoch: state.epoch,
                    seq: state.last_seq,
                };
                let message = Message::new(topic.name.clone(), position, time_ms, data);
                self.retain(state, message.clone(), time_ms);
                let second = time_ms / 1000;
                state
                    .rate
                    .get_or_insert_with(|| Box::new(RecentRate::new(second)))
                    .record(second);
                state.idle_since_ms = None;
                if self.journal.is_some() {
                    // Delivered once committed, in this order: the journal is appended to
                    // under the topic's lock.
                    let committed = self.journal_append(topic, state, &message, wait);
                    return (message, committed);
                }
                state.visible_seq = state.last_seq;
                let overflowed = state.subscribers.deliver(&message);
                self.stats
                    .slow_consumers
                    .fetch_add(overflowed, Ordering::Relaxed);
                (message, None)
            })
            .unwrap_or_else(|| unreachable!("a topic is always created on publish"));
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if self.is_over_budget() {
            self.over_budget.notify_one();
        }
        published
    }

    /// Publishes; with a durable store, the future completes once the message is committed.
    /// The message takes its position now, and the store commits it whether or not the future
    /// is polled: a caller can start several publishes and await them in turn, and they share
    /// a commit.
    pub fn start_publish(
        &self,
        topic: &TopicName,
        data: &Data,
    ) -> impl Future<Output = Result<Arc<Message>, String>> + Send + 'static {
        let started = match self.store_failure() {
            Some(why) => Err(why),
            None => Ok(self.sequence(topic, data, true)),
        };
        async move {
            let (message, committed) = started?;
            if let Some(committed) = committed {
                committed
                    .await
                    .map_err(|_| "the store stopped before writing the message".to_owned())??;
            }
            Ok(message)
        }
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
        // Readers see only what is visible: retention may already have dropped messages that
        // are not, and those not yet visible are delivered live once committed.
        let first = state.first_retained_seq();
        let view = TopicView {
            epoch: state.epoch,
            first_retained: first.min(state.visible_seq + 1),
            last_seq: state.visible_seq,
            trusted_since: self.horizons.of(topic.tag),
        };
        let (after, reset) = resume(from, &view);
        let skip = (after + 1).saturating_sub(first) as usize;
        let available = state.visible_seq.saturating_sub(after) as usize;
        let mut messages = Vec::new();
        let mut bytes = 0;
        for message in state
            .retained
            .iter()
            .skip(skip)
            .take(page.messages.min(available))
        {
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

/// What operators see of topics.
impl Hub {
    /// The topics whose name starts with `prefix` and that have subscribers or retained
    /// messages, by name, at most `limit` of them; and whether more follow.
    pub fn topics(&self, prefix: &str, limit: usize) -> (Vec<TopicStats>, bool) {
        let mut names: Vec<TopicName> = self
            .topics
            .iter()
            .filter(|entry| entry.key().as_str().starts_with(prefix))
            .map(|entry| entry.key().clone())
            .collect();
        names.sort_unstable();
        let mut found = Vec::new();
        for name in names {
            let Some(stats) = self.topic_stats(&name).filter(TopicStats::is_active) else {
                continue;
            };
            if found.len() == limit {
                return (found, true);
            }
            found.push(stats);
        }
        (found, false)
    }

    /// One topic as it stands, if the hub knows it.
    pub fn topic_stats(&self, name: &TopicName) -> Option<TopicStats> {
        let now_second = self.ticks.now_ms() / 1000;
        self.with_topic(name, false, |topic, state| TopicStats {
            topic: topic.name.clone(),
            subscribers: state.subscribers.by_kind(),
            retained_messages: state.retained.len(),
            retained_bytes: state.retained_bytes,
            first: state.retained.front().map(|m| m.position),
            last: state.retained.back().map(|m| m.position),
            rate_per_second: state
                .rate
                .as_ref()
                .map_or(0.0, |r| r.per_second(now_second)),
        })
    }

    /// The last `count` retained messages of `topic`, oldest first.
    pub fn recent(&self, name: &TopicName, count: usize) -> Vec<Arc<Message>> {
        self.with_topic(name, false, |_, state| {
            let skip = state.retained.len().saturating_sub(count);
            state.retained.iter().skip(skip).cloned().collect()
        })
        .unwrap_or_default()
    }

    /// Forgets the history of `topic`: it goes on in a new epoch, and its subscribers are told
    /// (a `deleted` reset) before anything of the new one. Returns whether the topic existed.
    pub fn delete(&self, name: &TopicName) -> bool {
        self.with_topic(name, false, |topic, state| {
            while self.drop_oldest(state).is_some() {}
            // A position of the old history, held by a client away now, gets a reset.
            self.history_lost(topic, state.last_seq);
            state.epoch = self.ticks.tick();
            state.last_seq = 0;
            state.visible_seq = 0;
            state.rate = None;
            state.subscribers.prune();
            state.subscribers.restart(&Restart {
                topic: topic.name.clone(),
                reason: ResetReason::Deleted,
                start: Position {
                    tag: topic.tag,
                    epoch: state.epoch,
                    seq: 0,
                },
            });
        })
        .is_some()
    }
}

#[cfg(test)]
mod tests;
