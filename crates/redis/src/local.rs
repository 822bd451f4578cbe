//! This node's live topics: the channel subscription, the local subscribers, and the last
//! position delivered to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use switchboard_hub::position::topic_tag;
use switchboard_hub::{
    BrokerError, INBOX_KINDS, Inbox, Message, Position, RecentRate, ResetReason, Restart,
    Subscribers, TopicName,
};
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::Inner;

/// A channel subscription to make or undo, in the order asked.
#[derive(Debug)]
pub(crate) enum ChannelCommand {
    Subscribe(String, oneshot::Sender<Result<(), String>>),
    Unsubscribe(String),
    /// The pub/sub connection (on a cluster, one of them) came back: subscribe again to every
    /// channel subscribed so far, then say so.
    Resubscribe(oneshot::Sender<()>),
}

/// A topic with subscribers on this node.
#[derive(Debug)]
pub(crate) struct LocalTopic {
    pub name: TopicName,
    pub tag: u64,
    channel: String,
    /// Set once the channel subscription is confirmed.
    subscribed: OnceCell<()>,
    /// Joins under way: the topic stays live for them even before they have registered.
    joining: AtomicUsize,
    state: Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    subscribers: Subscribers,
    /// The last position delivered here, `(epoch, sequence)`: what comes after it is new.
    last: Option<(u64, u64)>,
    /// Messages delivered here over the last minute, for operators.
    rate: Option<RecentRate>,
}

/// Seconds since the Unix epoch, for the rate of messages.
fn now_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LocalTopic {
    /// Registers `inbox` for what follows; returns the sequence (of `epoch`) after which it
    /// receives every message. A topic new to this node starts from `last`, what Redis said.
    pub fn register(&self, inbox: &Inbox, epoch: u64, last: u64) -> u64 {
        let mut state = self.state.lock();
        let delivered = match state.last {
            Some((known, seq)) if known == epoch => seq,
            Some((known, _)) if known > epoch => 0,
            _ => {
                state.last = Some((epoch, last));
                last
            }
        };
        state.subscribers.add(inbox);
        delivered
    }

    /// The last position delivered here.
    pub fn last(&self) -> Option<(u64, u64)> {
        self.state.lock().last
    }

    /// Whether messages are missing before `message` (the channel lost some, or a new history
    /// began): they are fetched from the stream first.
    pub fn has_gap_before(&self, message: &Message) -> bool {
        let position = message.position;
        match self.state.lock().last {
            Some((epoch, seq)) if position.epoch == epoch => position.seq > seq + 1,
            Some((epoch, _)) => position.epoch > epoch && position.seq > 1,
            None => false,
        }
    }

    /// Delivers `message` to every local subscriber unless it was delivered already; returns
    /// how many subscribers overflowed.
    pub fn deliver(&self, message: &Arc<Message>) -> u64 {
        let position = message.position;
        let mut state = self.state.lock();
        if let Some((epoch, seq)) = state.last
            && (position.epoch < epoch || (position.epoch == epoch && position.seq <= seq))
        {
            return 0;
        }
        state.last = Some((position.epoch, position.seq));
        let second = now_second();
        state
            .rate
            .get_or_insert_with(|| RecentRate::new(second))
            .record(second);
        state.subscribers.deliver(message)
    }

    /// The subscribers here by kind, and the messages per second delivered here over the
    /// last minute.
    pub fn activity(&self) -> ([usize; INBOX_KINDS], f64) {
        let state = self.state.lock();
        let rate = state
            .rate
            .as_ref()
            .map_or(0.0, |r| r.per_second(now_second()));
        (state.subscribers.by_kind(), rate)
    }

    /// The topic's history was deleted and goes on from `epoch`: local subscribers get a
    /// `deleted` reset, and what follows the new epoch's start is new here.
    pub fn restart(&self, epoch: u64) {
        let mut state = self.state.lock();
        state.last = Some((epoch, 0));
        state.rate = None;
        state.subscribers.prune();
        state.subscribers.restart(&Restart {
            topic: self.name.clone(),
            reason: ResetReason::Deleted,
            start: Position {
                tag: self.tag,
                epoch,
                seq: 0,
            },
        });
    }
}

impl Inner {
    /// The live topic for `topic`, subscribed to its channel; the caller must
    /// [`Inner::release`] it once its join is done.
    pub(crate) async fn live_topic(
        &self,
        topic: &TopicName,
    ) -> Result<Arc<LocalTopic>, BrokerError> {
        let local = {
            let mut topics = self.topics.lock();
            let local = topics
                .entry(topic.clone())
                .or_insert_with(|| {
                    Arc::new(LocalTopic {
                        name: topic.clone(),
                        tag: topic_tag(topic),
                        channel: self.keys.channel(topic),
                        subscribed: OnceCell::new(),
                        joining: AtomicUsize::new(0),
                        state: Mutex::new(LocalState::default()),
                    })
                })
                .clone();
            local.joining.fetch_add(1, Ordering::AcqRel);
            local
        };
        let subscribed = local
            .subscribed
            .get_or_try_init(|| async {
                let (done, confirmed) = oneshot::channel();
                self.channel_commands
                    .send(ChannelCommand::Subscribe(local.channel.clone(), done))
                    .map_err(|_| BrokerError::Unavailable("the broker has stopped".into()))?;
                match confirmed.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(BrokerError::Unavailable(format!("Redis: {e}"))),
                    Err(_) => Err(BrokerError::Unavailable("the broker has stopped".into())),
                }
            })
            .await;
        match subscribed {
            Ok(()) => Ok(local),
            Err(e) => {
                self.release(&local);
                Err(e)
            }
        }
    }

    /// Ends a join's hold on `local`; the topic stops being live if nothing else holds it.
    pub(crate) fn release(&self, local: &Arc<LocalTopic>) {
        local.joining.fetch_sub(1, Ordering::AcqRel);
        self.retire_if_unused(local);
    }

    pub(crate) fn leave(&self, topic: &TopicName, inbox: &Inbox) {
        let local = self.topics.lock().get(topic).cloned();
        if let Some(local) = local {
            local.state.lock().subscribers.remove(inbox);
            self.retire_if_unused(&local);
        }
    }

    /// Unsubscribes from the topic's channel once it has neither subscribers nor joins.
    fn retire_if_unused(&self, local: &Arc<LocalTopic>) {
        let mut topics = self.topics.lock();
        if local.joining.load(Ordering::Acquire) > 0 {
            return;
        }
        let mut state = local.state.lock();
        state.subscribers.prune();
        if !state.subscribers.is_empty() {
            return;
        }
        drop(state);
        if topics
            .get(&local.name)
            .is_some_and(|current| Arc::ptr_eq(current, local))
        {
            topics.remove(&local.name);
            let _ = self
                .channel_commands
                .send(ChannelCommand::Unsubscribe(local.channel.clone()));
        }
    }

    /// Every live topic now.
    pub(crate) fn live_topics(&self) -> Vec<Arc<LocalTopic>> {
        self.topics.lock().values().cloned().collect()
    }
}

/// Carries out channel subscriptions in the order they were asked for, so that a topic left
/// and joined again ends up subscribed. Ends when the broker is dropped.
pub(crate) async fn carry_out(
    inner: std::sync::Weak<Inner>,
    mut commands: mpsc::UnboundedReceiver<ChannelCommand>,
) {
    use fred::prelude::*;
    while let Some(command) = commands.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let subscriber = &inner.subscriber;
        match command {
            ChannelCommand::Subscribe(channel, done) => {
                let result = if inner.cluster {
                    subscriber.ssubscribe(channel).await
                } else {
                    subscriber.subscribe(channel).await
                };
                let _ = done.send(result.map_err(|e| e.to_string()));
            }
            ChannelCommand::Unsubscribe(channel) => {
                let result = if inner.cluster {
                    subscriber.sunsubscribe(channel).await
                } else {
                    subscriber.unsubscribe(channel).await
                };
                if let Err(e) = result {
                    tracing::debug!("unsubscribing from a Redis channel failed: {e}");
                }
            }
            ChannelCommand::Resubscribe(done) => {
                if let Err(e) = resubscribe(&inner).await {
                    tracing::warn!("subscribing again to Redis channels failed: {e}");
                }
                let _ = done.send(());
            }
        }
    }
}

/// Subscribes again to the channels subscribed so far (fred keeps the list), and sends nothing
/// when there are none. Subscribing to a channel already subscribed changes nothing, so on a
/// cluster the channels of every master are subscribed again, not only those of the one that
/// came back; each on its own, since one `SSUBSCRIBE` takes channels of one slot only.
async fn resubscribe(inner: &Inner) -> Result<(), fred::error::Error> {
    use fred::prelude::*;
    let subscriber = &inner.subscriber;
    if inner.cluster {
        for channel in subscriber.tracked_shard_channels() {
            subscriber.ssubscribe(channel).await?;
        }
    } else {
        let channels: Vec<_> = subscriber.tracked_channels().into_iter().collect();
        if !channels.is_empty() {
            subscriber.subscribe(channels).await?;
        }
    }
    Ok(())
}
