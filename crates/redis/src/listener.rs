//! The one task that takes messages from the channels and delivers them to this node's
//! subscribers, in order, filling any gap from the streams first; and that re-reads every live
//! topic after the pub/sub connection comes back, when it fell behind, and periodically (what
//! nothing else would catch: a message lost with none after it).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::prelude::*;
use switchboard_hub::{Data, Message, Page, Position};
use tokio::sync::broadcast::error::RecvError;

use crate::Inner;
use crate::local::{ChannelCommand, LocalTopic};
use crate::scripts;

/// How often every live topic's position is checked against Redis.
const POSITION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Live topics whose positions are checked together.
const CHECK_BATCH: usize = 64;

/// What is fetched from a stream at a time when filling a gap.
const CATCH_UP_PAGE: Page = Page {
    messages: 256,
    bytes: 256 * 1024,
};

pub(crate) async fn run(inner: Weak<Inner>) {
    let (mut messages, mut reconnects, mut errors) = match inner.upgrade() {
        Some(inner) => (
            inner.subscriber.message_rx(),
            inner.subscriber.reconnect_rx(),
            inner.subscriber.error_rx(),
        ),
        None => return,
    };
    let mut check = tokio::time::interval(POSITION_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        enum Event {
            Message(fred::types::Message),
            Resync,
            Reconnected,
            Failed,
        }
        let event = tokio::select! {
            received = messages.recv() => match received {
                Ok(message) => Event::Message(message),
                Err(RecvError::Lagged(skipped)) => {
                    tracing::warn!("fell {skipped} Redis messages behind; re-reading live topics");
                    Event::Resync
                }
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(_) | Err(RecvError::Lagged(_)) => Event::Reconnected,
                Err(RecvError::Closed) => return,
            },
            failed = errors.recv() => match failed {
                Ok(_) | Err(RecvError::Lagged(_)) => Event::Failed,
                Err(RecvError::Closed) => return,
            },
            _ = check.tick() => Event::Resync,
        };
        let Some(inner) = inner.upgrade() else { return };
        match event {
            Event::Message(message) => handle(&inner, message).await,
            // A periodic check also restores what a missed reconnect left undone.
            Event::Resync if !inner.restored.load(Ordering::Acquire) => restore(&inner).await,
            Event::Resync => resync(&inner).await,
            Event::Reconnected => restore(&inner).await,
            Event::Failed => {
                if !inner.subscriber.is_connected() {
                    // Not ready again until the channels are subscribed again.
                    inner.restored.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// After the pub/sub connection came back: subscribe again, catch up, and only then count as
/// ready.
async fn restore(inner: &Inner) {
    if !inner.subscriber.is_connected() {
        return;
    }
    resubscribe(inner).await;
    resync(inner).await;
    inner.restored.store(true, Ordering::Release);
}

/// Has the channels subscribed again after a reconnect, in order with the other subscriptions,
/// and waits until they are: what is published after that comes through the channels, and the
/// resync that follows catches up on what was published before.
async fn resubscribe(inner: &Inner) {
    let (done, resubscribed) = tokio::sync::oneshot::channel();
    if inner
        .channel_commands
        .send(ChannelCommand::Resubscribe(done))
        .is_ok()
    {
        let _ = resubscribed.await;
    }
}

async fn handle(inner: &Inner, message: fred::types::Message) {
    let Some(topic) = inner.keys.topic_of_channel(&message.channel) else {
        return;
    };
    let local = inner.topics.lock().get(&topic).cloned();
    let Some(local) = local else { return };
    let Some(payload) = message.value.as_str() else {
        return;
    };
    let Some(message) = scripts::parse_payload(topic, local.tag, &payload) else {
        tracing::warn!("malformed message on Redis channel {}", message.channel);
        return;
    };
    if local.has_gap_before(&message) {
        catch_up(inner, &local).await;
    }
    deliver(inner, &local, &message);
}

fn deliver(inner: &Inner, local: &LocalTopic, message: &std::sync::Arc<Message>) {
    let overflowed = local.deliver(message);
    inner
        .stats
        .slow_consumers
        .fetch_add(overflowed, Ordering::Relaxed);
}

/// Delivers what the stream holds after the last position delivered here.
async fn catch_up(inner: &Inner, local: &LocalTopic) {
    loop {
        let Some((epoch, seq)) = local.last() else {
            return;
        };
        let mut read = match inner.read(&local.name, seq, CATCH_UP_PAGE).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!("cannot recover topic {} from Redis: {e}", local.name);
                return;
            }
        };
        if read.epoch != epoch {
            // A new history: all of it is new here.
            read = match inner.read(&local.name, 0, CATCH_UP_PAGE).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!("cannot recover topic {} from Redis: {e}", local.name);
                    return;
                }
            };
        }
        let Some(&(through, _, _)) = read.entries.last() else {
            return;
        };
        let count = read.entries.len() as u64;
        for (seq, time, data) in read.entries {
            let position = Position {
                tag: local.tag,
                epoch: read.epoch,
                seq,
            };
            let message =
                Message::new(local.name.clone(), position, time, &Data::from_stored(data));
            deliver(inner, local, &message);
        }
        inner.stats.recovered.fetch_add(count, Ordering::Relaxed);
        if through >= read.last {
            return;
        }
    }
}

/// Checks every live topic against Redis and delivers what this node missed.
async fn resync(inner: &Inner) {
    let topics = inner.live_topics();
    if topics.is_empty() {
        return;
    }
    inner.stats.resyncs.fetch_add(1, Ordering::Relaxed);
    // Checked a batch at a time, the batch in flight together on the connection: one round
    // trip per batch rather than per topic.
    for batch in topics.chunks(CHECK_BATCH) {
        let checks = batch.iter().map(|local| check(inner, local));
        let positions = futures_util::future::join_all(checks).await;
        for (local, current) in batch.iter().zip(positions) {
            let current = match current {
                Ok(current) => current,
                Err(e) => {
                    tracing::debug!("cannot check topic {} in Redis: {e}", local.name);
                    return;
                }
            };
            let behind = match (current, local.last()) {
                (Some((epoch, last)), Some((known, seq))) => {
                    epoch > known || (epoch == known && last > seq)
                }
                _ => false,
            };
            if behind {
                catch_up(inner, local).await;
            }
        }
    }
}

/// Where `local` stands in Redis, refreshing its TTL.
async fn check(
    inner: &Inner,
    local: &LocalTopic,
) -> Result<Option<(u64, u64)>, fred::error::Error> {
    let reply: Value = scripts::CHECK
        .evalsha_with_reload(
            &inner.client,
            vec![inner.keys.meta(&local.name)],
            vec![inner.meta_ttl_ms().to_string()],
        )
        .await?;
    scripts::parse_check(reply)
}
