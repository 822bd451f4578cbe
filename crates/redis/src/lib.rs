//! Switchboard on Redis: a [`Broker`] whose positions, history and cross-node delivery live in
//! Redis (or Valkey, or a Redis Cluster), so that any node serves any client.
//!
//! # Layout
//!
//! - [`keys`]: a topic's keys and channel, under one hash tag.
//! - `scripts` and `lua/`: the Lua scripts (publish, read, check) and their replies.
//! - `local`: this node's live topics: the channel subscription, the local subscribers, and
//!   the last position delivered to them.
//! - `listener`: the one task that takes messages from the channels, fills gaps, and checks
//!   live topics' positions after a reconnect and periodically.
//!
//! # How it works
//!
//! A publish is one script: the topic's epoch (created if missing: a new epoch is exactly a
//! lost history), the next sequence, the message appended to a stream trimmed to retention,
//! and the message sent with its position on the topic's channel. The message reaches local
//! subscribers only through the channel, on every node alike, publisher's included.
//!
//! A node subscribes to a topic's channel while it has local subscribers. A join subscribes
//! first, then reads where the topic stands, then registers the inbox: a message published
//! in between is either read or delivered, and a subscriber drops what it already has. A live
//! message that skips ahead (a channel message lost) makes the node fetch what is missing
//! from the stream first; subscribers check the same on their side.

pub mod keys;
mod listener;
mod local;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, ServerConfig};
use parking_lot::Mutex;
use switchboard_hub::position::topic_tag;
use switchboard_hub::{
    BoxFuture, Broker, BrokerError, BrokerStatus, Catchup, Data, INBOX_KINDS, Inbox, Message, Page,
    Position, TopicDetail, TopicName, TopicStats, TopicView, resume,
};
use tokio::sync::mpsc;

use crate::keys::Keys;
use crate::local::{ChannelCommand, LocalTopic};

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub enum Servers {
    /// One Redis (or a primary behind a failover proxy): `redis://` or `rediss://`.
    Single(String),
    /// A Redis Cluster, from seed nodes.
    Cluster(Vec<String>),
}

/// What the broker needs to know.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub servers: Servers,
    /// Before every key and channel name.
    pub prefix: String,
    pub retention_messages: usize,
    /// Zero: no age limit.
    pub retention_age: Duration,
    /// How long a topic's position outlives its last message.
    pub idle_topic_ttl: Duration,
}

/// How long a command may take before it fails: a publish that Redis does not take in this
/// time is refused (`broker_unavailable`), never accepted and then lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages from the channels that may wait for the listener; beyond that it falls behind,
/// notices, and recovers every live topic from the streams.
const CHANNEL_BACKLOG: usize = 16 * 1024;

/// Counters of what the broker did, for operators.
#[derive(Debug, Default)]
pub struct RedisStats {
    pub published: AtomicU64,
    /// Publishes that Redis did not take.
    pub publish_failures: AtomicU64,
    /// Subscribers dropped because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Messages fetched from a stream because the channel skipped them.
    pub recovered: AtomicU64,
    /// Times the listener re-read every live topic (after a reconnect, or falling behind).
    pub resyncs: AtomicU64,
}

/// A broker on Redis. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    subscriber: SubscriberClient,
    cluster: bool,
    keys: Keys,
    settings: RedisSettings,
    /// This node's live topics: those with local subscribers (or being joined).
    topics: Mutex<HashMap<TopicName, Arc<LocalTopic>>>,
    /// Channel subscriptions and unsubscriptions, carried out in order by one task.
    channel_commands: mpsc::UnboundedSender<ChannelCommand>,
    /// Cleared when the pub/sub connection fails, set again once its channels are subscribed
    /// again and live topics caught up: the node is not ready in between.
    restored: AtomicBool,
    stats: RedisStats,
}

impl Drop for Inner {
    /// Closes the connections; the listener and the subscription task end with them.
    fn drop(&mut self) {
        let (client, subscriber) = (self.client.clone(), self.subscriber.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = client.quit().await;
            });
        }
    }
}

fn unavailable(error: &Error) -> BrokerError {
    BrokerError::Unavailable(format!("Redis: {error}"))
}

impl RedisBroker {
    /// Connects (in the background: a node starts while Redis is down, and is not ready until
    /// it is reached) and starts the listener.
    pub fn start(settings: RedisSettings) -> Result<RedisBroker, String> {
        let (mut config, cluster) = match &settings.servers {
            Servers::Single(url) => (
                Config::from_url(url).map_err(|e| format!("redis {url}: {e}"))?,
                false,
            ),
            Servers::Cluster(urls) => (cluster_config(urls)?, true),
        };
        // A node may start before its Redis does (both started together, or Redis restarting):
        // the first connection is retried like any other instead of being given up on.
        config.fail_fast = false;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|performance| {
                performance.default_command_timeout = COMMAND_TIMEOUT;
                performance.broadcast_channel_capacity = CHANNEL_BACKLOG;
            })
            .with_connection_config(|connection| {
                connection.connection_timeout = COMMAND_TIMEOUT;
                connection.internal_command_timeout = COMMAND_TIMEOUT;
                connection.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build().map_err(|e| format!("redis: {e}"))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| format!("redis: {e}"))?;
        let (channel_commands, commands) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            client,
            subscriber,
            cluster,
            keys: Keys::new(&settings.prefix),
            settings,
            topics: Mutex::new(HashMap::new()),
            channel_commands,
            restored: AtomicBool::new(true),
            stats: RedisStats::default(),
        });
        inner.client.connect();
        inner.subscriber.connect();
        // Not `manage_subscriptions()`: after every reconnect (on a cluster, every new
        // connection to a cluster node, three at start-up with three masters) fred's
        // `resubscribe_all` sends `SUBSCRIBE` and `PSUBSCRIBE` even with nothing to subscribe
        // to. Redis answers those with errors, and fred, which waits for no answer to either,
        // hands them to the next `SSUBSCRIBE` on that connection: a join refused with
        // `broker_unavailable`, and answers shifted by one from then on. The listener has the
        // subscriptions made again instead (`ChannelCommand::Resubscribe`).
        tokio::spawn(local::carry_out(Arc::downgrade(&inner), commands));
        tokio::spawn(listener::run(Arc::downgrade(&inner)));
        Ok(RedisBroker { inner })
    }

    /// Waits until both connections are up, for at most `limit`.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let both = async {
            let _ = self.inner.client.wait_for_connect().await;
            let _ = self.inner.subscriber.wait_for_connect().await;
        };
        tokio::time::timeout(limit, both).await.is_ok() && self.is_ready()
    }

    fn is_ready(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }

    pub fn stats(&self) -> &RedisStats {
        &self.inner.stats
    }
}

/// A cluster client from seed URLs; credentials and TLS come from the first.
fn cluster_config(urls: &[String]) -> Result<Config, String> {
    let first = urls
        .first()
        .ok_or_else(|| "redis_cluster needs at least one seed URL".to_owned())?;
    let mut config =
        Config::from_url_centralized(first).map_err(|e| format!("redis cluster {first}: {e}"))?;
    let mut hosts = Vec::new();
    for url in urls {
        let seed =
            Config::from_url_centralized(url).map_err(|e| format!("redis cluster {url}: {e}"))?;
        hosts.extend(seed.server.hosts());
    }
    config.server = ServerConfig::Clustered {
        hosts,
        policy: ClusterDiscoveryPolicy::default(),
    };
    Ok(config)
}

impl Inner {
    fn meta_ttl_ms(&self) -> u64 {
        let age = &self.settings.retention_age;
        if age.is_zero() {
            0
        } else {
            (*age + self.settings.idle_topic_ttl).as_millis() as u64
        }
    }

    async fn publish(&self, topic: &TopicName, data: &Data) -> Result<Arc<Message>, BrokerError> {
        let publish_command = if self.cluster { "SPUBLISH" } else { "PUBLISH" };
        let reply: Value = scripts::PUBLISH
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.meta(topic), self.keys.history(topic)],
                vec![
                    data.as_json().to_owned(),
                    self.settings.retention_messages.to_string(),
                    (self.settings.retention_age.as_millis() as u64).to_string(),
                    self.meta_ttl_ms().to_string(),
                    self.keys.channel(topic),
                    publish_command.to_owned(),
                ],
            )
            .await
            .map_err(|e| {
                self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                unavailable(&e)
            })?;
        let (epoch, seq, time) = scripts::parse_published(reply).map_err(|e| unavailable(&e))?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let position = Position {
            tag: topic_tag(topic),
            epoch,
            seq,
        };
        Ok(Message::new(topic.clone(), position, time, data))
    }

    /// Where `topic` stands and up to a `page` of the retained messages after `after`; the
    /// page's bytes are applied in Redis, so that a large read never holds up the commands
    /// queued behind it on the connection.
    async fn read(
        &self,
        topic: &TopicName,
        after: u64,
        page: Page,
    ) -> Result<scripts::Read, Error> {
        let reply: Value = scripts::READ
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.meta(topic), self.keys.history(topic)],
                vec![
                    after.to_string(),
                    page.messages.min(u32::MAX as usize).to_string(),
                    (self.settings.retention_age.as_millis() as u64).to_string(),
                    self.meta_ttl_ms().to_string(),
                    page.bytes.min(u32::MAX as usize).to_string(),
                ],
            )
            .await?;
        scripts::parse_read(reply)
    }

    /// Retained messages after `from` (at most a `page`), with what the resume rules make of
    /// `from`.
    async fn read_page(
        &self,
        topic: &TopicName,
        from: Option<Position>,
        page: Page,
    ) -> Result<(Catchup, u64), BrokerError> {
        let tag = topic_tag(topic);
        let count = page.messages.min(u32::MAX as usize);
        let hint = match from {
            Some(p) if count > 0 => p.seq,
            _ => u64::MAX >> 1,
        };
        let mut read = self
            .read(topic, hint, page)
            .await
            .map_err(|e| unavailable(&e))?;
        let view = TopicView {
            epoch: read.epoch,
            first_retained: read.first,
            last_seq: read.last,
            // Redis cannot tell what was lost before a topic's epoch: trust no earlier one.
            trusted_since: read.epoch,
        };
        let (after, reset) = resume(from, &view);
        // Read again only when the resume rules start elsewhere than the first read did (a
        // position of another epoch); a subscription from now needs no messages.
        if count > 0 && from.is_some() && after != hint.max(read.first.saturating_sub(1)) {
            read = self
                .read(topic, after, page)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        let mut messages = Vec::with_capacity(read.entries.len());
        let mut bytes = 0;
        let mut previous = after;
        for (seq, time, data) in read.entries {
            // Only what follows without a hole: a message trimmed between two reads would
            // leave one, which the next read reports as a reset.
            if seq != previous + 1 {
                break;
            }
            bytes += data.len();
            if !messages.is_empty() && bytes > page.bytes {
                break;
            }
            previous = seq;
            let position = Position {
                tag,
                epoch: read.epoch,
                seq,
            };
            messages.push(Message::new(
                topic.clone(),
                position,
                time,
                &Data::from_stored(data),
            ));
        }
        let catchup = Catchup {
            reset,
            start: Position {
                tag,
                epoch: read.epoch,
                seq: after,
            },
            more: previous < read.last,
            messages,
        };
        Ok((catchup, read.last))
    }

    async fn join(
        self: &Arc<Self>,
        topic: &TopicName,
        from: Option<Position>,
        inbox: Option<&Inbox>,
        page: Page,
    ) -> Result<Catchup, BrokerError> {
        let Some(inbox) = inbox else {
            return Ok(self.read_page(topic, from, page).await?.0);
        };
        let local = self.live_topic(topic).await?;
        let read = self.read_page(topic, from, page).await;
        let (mut catchup, last) = match read {
            Ok(read) => read,
            Err(e) => {
                self.release(&local);
                return Err(e);
            }
        };
        // Everything after what this node has delivered reaches the inbox from now on; what
        // lies between the read and that is fetched by the subscriber as history.
        let delivered = local.register(inbox, catchup.start.epoch, last);
        let through = catchup
            .messages
            .last()
            .map_or(catchup.start.seq, |m| m.position.seq);
        catchup.more = through < delivered;
        self.release(&local);
        Ok(catchup)
    }
}

/// What operators see. Subscribers and the rate are this node's (the rate counts what this
/// node delivered, so a topic without subscribers here shows none); what is retained is
/// Redis's. Topics are listed from this node's live topics: Redis is not scanned.
impl Inner {
    async fn topic_stats(
        &self,
        topic: &TopicName,
        recent: usize,
    ) -> Result<Option<TopicDetail>, BrokerError> {
        let reply: Value = scripts::STATS
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.meta(topic), self.keys.history(topic)],
                vec![recent.to_string()],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let stored = scripts::parse_stats(reply).map_err(|e| unavailable(&e))?;
        let local = self.topics.lock().get(topic).cloned();
        let (subscribers, rate_per_second) =
            local.map_or(([0; INBOX_KINDS], 0.0), |local| local.activity());
        let tag = topic_tag(topic);
        let mut stats = TopicStats {
            topic: topic.clone(),
            subscribers,
            retained_messages: 0,
            retained_bytes: 0,
            first: None,
            last: None,
            rate_per_second,
        };
        let mut messages = Vec::new();
        if let Some(stored) = stored {
            let at = |seq| Position {
                tag,
                epoch: stored.read.epoch,
                seq,
            };
            if stored.count > 0 {
                stats.retained_messages = stored.count as usize;
                stats.retained_bytes = stored.bytes as usize;
                stats.first = Some(at(stored.read.first));
                stats.last = Some(at(stored.read.last));
            }
            for (seq, time, data) in stored.read.entries.into_iter().rev() {
                messages.push(Message::new(
                    topic.clone(),
                    at(seq),
                    time,
                    &Data::from_stored(data),
                ));
            }
        }
        Ok(stats.is_active().then_some(TopicDetail {
            stats,
            recent: messages,
        }))
    }

    async fn topics(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<TopicStats>, bool), BrokerError> {
        let mut names: Vec<TopicName> = self
            .topics
            .lock()
            .keys()
            .filter(|name| name.as_str().starts_with(prefix))
            .cloned()
            .collect();
        names.sort_unstable();
        let mut found = Vec::new();
        for name in names {
            let Some(detail) = self.topic_stats(&name, 0).await? else {
                continue;
            };
            if found.len() == limit {
                return Ok((found, true));
            }
            found.push(detail.stats);
        }
        Ok((found, false))
    }

    async fn delete(&self, topic: &TopicName) -> Result<bool, BrokerError> {
        let reply: Value = scripts::DELETE
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.meta(topic), self.keys.history(topic)],
                vec![self.meta_ttl_ms().to_string()],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let epoch = scripts::parse_deleted(reply).map_err(|e| unavailable(&e))?;
        let local = self.topics.lock().get(topic).cloned();
        if let (Some(epoch), Some(local)) = (epoch, &local) {
            local.restart(epoch);
        }
        Ok(epoch.is_some())
    }
}

impl Broker for RedisBroker {
    fn topics<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<(Vec<TopicStats>, bool), BrokerError>> {
        Box::pin(self.inner.topics(prefix, limit))
    }

    fn topic<'a>(
        &'a self,
        topic: &'a TopicName,
        recent: usize,
    ) -> BoxFuture<'a, Result<Option<TopicDetail>, BrokerError>> {
        Box::pin(self.inner.topic_stats(topic, recent))
    }

    fn delete<'a>(&'a self, topic: &'a TopicName) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(self.inner.delete(topic))
    }

    fn publish(
        &self,
        topic: &TopicName,
        data: &Data,
    ) -> BoxFuture<'static, Result<Arc<Message>, BrokerError>> {
        let (inner, topic, data) = (self.inner.clone(), topic.clone(), data.clone());
        Box::pin(async move { inner.publish(&topic, &data).await })
    }

    fn join<'a>(
        &'a self,
        topic: &'a TopicName,
        from: Option<Position>,
        inbox: Option<&'a Inbox>,
        page: Page,
    ) -> BoxFuture<'a, Result<Catchup, BrokerError>> {
        Box::pin(self.inner.join(topic, from, inbox, page))
    }

    fn leave(&self, topic: &TopicName, inbox: &Inbox) {
        self.inner.leave(topic, inbox);
    }

    fn status(&self) -> BrokerStatus {
        let stats = &self.inner.stats;
        let load = Ordering::Relaxed;
        let unready = if !self.inner.client.is_connected() {
            Some("Redis cannot be reached".to_owned())
        } else if !self.inner.subscriber.is_connected() {
            Some("the Redis pub/sub connection is down".to_owned())
        } else if !self.inner.restored.load(Ordering::Acquire) {
            Some("subscribing again to Redis channels".to_owned())
        } else {
            None
        };
        BrokerStatus {
            kind: if self.inner.cluster {
                "redis-cluster"
            } else {
                "redis"
            },
            unready,
            details: serde_json::json!({
                "live_topics": self.inner.topics.lock().len(),
                "published": stats.published.load(load),
                "publish_failures": stats.publish_failures.load(load),
                "slow_consumers": stats.slow_consumers.load(load),
                "recovered": stats.recovered.load(load),
                "resyncs": stats.resyncs.load(load),
            }),
        }
    }
}
