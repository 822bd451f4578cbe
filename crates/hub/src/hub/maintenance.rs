//! Maintenance: the periodic sweep (age retention, the memory budget, forgetting idle topics)
//! and the horizons, which remember that a forgotten topic's history is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Change, Hub, Topic};

/// Buckets of topic tags, each with its own horizon: 32 KiB, and a forgotten topic resets
/// the starting positions of about one topic in 4,096 that did not exist yet.
pub(super) const HORIZON_BUCKETS: usize = 4096;

/// Per bucket of topic tags: no history older than this clock value is known any more for
/// those topics (the hub started then, or forgot one of them that had messages). A starting
/// position of an unknown topic older than its bucket's horizon gets a reset. One value per
/// bucket rather than one for the hub, so that forgetting a topic does not cast doubt on every
/// other one; rather than one per topic, so that it stays bounded.
#[derive(Debug)]
pub(super) struct Horizons(Box<[AtomicU64]>);

impl Horizons {
    /// Every bucket trusted since `start`.
    pub(super) fn new(start: u64) -> Horizons {
        Horizons(
            (0..HORIZON_BUCKETS)
                .map(|_| AtomicU64::new(start))
                .collect(),
        )
    }

    /// Since when the topics with `tag` have lost nothing.
    pub(super) fn of(&self, tag: u64) -> u64 {
        self.bucket(tag).load(Ordering::Acquire)
    }

    /// Records that a topic with `tag` lost its history at `now`.
    pub(super) fn lost(&self, tag: u64, now: u64) {
        self.bucket(tag).fetch_max(now, Ordering::AcqRel);
    }

    /// Restores the horizon of `bucket` that a store kept; out-of-range buckets are ignored.
    pub(super) fn restore(&self, bucket: usize, horizon: u64) {
        if let Some(value) = self.0.get(bucket) {
            value.fetch_max(horizon, Ordering::AcqRel);
        }
    }

    fn bucket(&self, tag: u64) -> &AtomicU64 {
        &self.0[bucket_of(tag)]
    }
}

/// The bucket of the topics with `tag`.
fn bucket_of(tag: u64) -> usize {
    (tag % HORIZON_BUCKETS as u64) as usize
}

impl Hub {
    /// Records that `topic`'s history up to `last_seq` is gone (forgotten or deleted): any
    /// position of it now gets a reset, and a durable store forgets it the same way, so that it
    /// does not come back with a restart. A topic that never had a message had nothing to lose.
    pub(super) fn history_lost(&self, topic: &Topic, last_seq: u64) {
        if last_seq == 0 {
            return;
        }
        let horizon = self.ticks.tick();
        self.horizons.lost(topic.tag, horizon);
        self.journal(|| Change::Forget {
            topic: topic.name.clone(),
            bucket: bucket_of(topic.tag),
            horizon,
        });
    }

    /// Applies age retention and the memory budget, and forgets topics idle for longer than
    /// `idle_topic_ttl`. Cheap enough to run every second.
    pub fn sweep(&self) {
        let now_ms = self.ticks.now_ms();
        let topics: Vec<Arc<Topic>> = self
            .topics
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        let idle_ttl = self.config.idle_topic_ttl.as_millis() as u64;
        for topic in &topics {
            let mut state = topic.state.lock();
            if self.drop_expired(&mut state, now_ms) {
                self.journal_trim(topic, &state);
            }
            state.subscribers.prune();
            if !state.is_idle() {
                continue;
            }
            let idle_since = *state.idle_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(idle_since) >= idle_ttl {
                state.removed = true;
                self.history_lost(topic, state.last_seq);
                self.topics
                    .remove_if(&topic.name, |_, t| Arc::ptr_eq(t, topic));
                self.stats.topics_forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.enforce_budget(&topics);
    }

    /// Sweeps every `interval`, and at once whenever a publish goes over the memory budget.
    /// Runs until the returned future is dropped.
    pub async fn maintain(&self, interval: Duration) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.over_budget.notified() => {}
            }
            self.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::HORIZON_BUCKETS;
    use crate::hub::tests::{hub_with, seqs, text, topic};
    use crate::hub::{HubConfig, Page, ResetReason};
    use crate::inbox::{Inbox, QueueLimits};
    use crate::position::{Position, topic_tag};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn forgotten_topic_history_is_reported() {
        let (hub, clock) = hub_with(HubConfig {
            idle_topic_ttl: Duration::ZERO,
            ..HubConfig::default()
        });
        let news = topic("news");
        let start = hub.join(&news, None, None, Page::ALL);
        let message = hub.publish(&news, &text("gone soon"));
        // Age the message out, then forget the idle topic.
        clock.advance(hub.config.retention_age + MS);
        hub.sweep();
        clock.advance(MS);
        hub.sweep();
        assert_eq!(hub.topic_count(), 0);
        hub.publish(&news, &text("new history"));
        for from in [start.start, message.position] {
            let catchup = hub.join(&news, Some(from), None, Page::ALL);
            assert_eq!(catchup.reset, Some(ResetReason::HistoryLost), "from {from}");
            assert_eq!(seqs(&catchup.messages), vec![1]);
        }
    }

    #[test]
    fn an_idle_topic_is_forgotten_after_the_idle_ttl_and_not_before() {
        let idle_topic_ttl = Duration::from_secs(60);
        let (hub, clock) = hub_with(HubConfig {
            idle_topic_ttl,
            ..HubConfig::default()
        });
        let (idle, followed) = (topic("idle"), topic("followed"));
        let left = Inbox::new(QueueLimits::messages(1));
        let staying = Inbox::new(QueueLimits::messages(1));
        hub.join(&idle, None, Some(&left), Page::NONE);
        hub.join(&followed, None, Some(&staying), Page::NONE);
        hub.leave(&idle, &left);
        // The first sweep to find it idle starts its time.
        hub.sweep();
        clock.advance(idle_topic_ttl - MS);
        hub.sweep();
        assert_eq!(hub.topic_count(), 2, "idle for less than the ttl");
        clock.advance(MS);
        hub.sweep();
        assert_eq!(hub.topic_count(), 1, "idle for the ttl");
        assert_eq!(hub.stats().topics_forgotten.load(Ordering::Relaxed), 1);
        assert!(
            hub.join(&followed, None, None, Page::NONE).reset.is_none(),
            "a topic with a subscriber stays"
        );
    }

    #[test]
    fn forgetting_a_topic_does_not_reset_the_starting_positions_of_others() {
        let (hub, clock) = hub_with(HubConfig {
            idle_topic_ttl: Duration::ZERO,
            ..HubConfig::default()
        });
        let (quiet, busy) = (topic("quiet"), topic("busy"));
        assert_ne!(
            topic_tag(&quiet) % HORIZON_BUCKETS as u64,
            topic_tag(&busy) % HORIZON_BUCKETS as u64,
            "the test needs topics in different buckets"
        );
        let start = hub.join(&quiet, None, None, Page::NONE).start;
        hub.publish(&busy, &text("soon forgotten"));
        // Age the message out, then forget the idle topic.
        clock.advance(hub.config.retention_age + MS);
        hub.sweep();
        clock.advance(MS);
        hub.sweep();
        assert_eq!(hub.stats().topics_forgotten.load(Ordering::Relaxed), 1);
        hub.publish(&quiet, &text("first"));
        let catchup = hub.join(&quiet, Some(start), None, Page::ALL);
        assert_eq!(catchup.reset, None, "nothing of `quiet` was ever lost");
        assert_eq!(seqs(&catchup.messages), vec![1]);
    }

    #[test]
    fn forgetting_a_topic_that_never_had_a_message_loses_nothing() {
        let (hub, clock) = hub_with(HubConfig {
            idle_topic_ttl: Duration::ZERO,
            ..HubConfig::default()
        });
        let empty = topic("empty");
        let mut inbox = Inbox::new(QueueLimits::messages(1));
        let start = hub.join(&empty, None, Some(&inbox), Page::NONE).start;
        hub.leave(&empty, &inbox);
        hub.sweep();
        clock.advance(MS);
        hub.sweep();
        assert_eq!(hub.topic_count(), 0);
        hub.publish(&empty, &text("first"));
        let catchup = hub.join(&empty, Some(Position { seq: 0, ..start }), None, Page::ALL);
        assert_eq!(catchup.reset, None);
        assert_eq!(seqs(&catchup.messages), vec![1]);
        assert!(inbox.try_recv().is_none());
    }

    /// Lets the maintenance task run as far as it can without time passing.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn maintain_sweeps_every_interval_and_at_once_over_the_budget() {
        let interval = Duration::from_secs(1);
        let (hub, clock) = hub_with(HubConfig {
            retention_age: Duration::from_secs(10),
            ..HubConfig::default()
        });
        let hub = Arc::new(hub);
        let maintenance = tokio::spawn({
            let hub = hub.clone();
            async move { hub.maintain(interval).await }
        });
        let chat = topic("chat");
        hub.publish(&chat, &text("ages out"));
        clock.advance(Duration::from_secs(11));
        settle().await;
        let evicted_by_age = || hub.stats().evicted_by_age.load(Ordering::Relaxed);
        assert_eq!(evicted_by_age(), 0, "no sweep before the interval");
        tokio::time::advance(interval - MS).await;
        settle().await;
        assert_eq!(evicted_by_age(), 0, "no sweep before the interval");
        tokio::time::advance(MS).await;
        settle().await;
        assert_eq!(evicted_by_age(), 1, "swept after the interval");
        maintenance.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn maintain_sweeps_at_once_when_a_publish_goes_over_the_budget() {
        let chat = topic("chat");
        let (unbounded, _) = hub_with(HubConfig::default());
        let one_message = unbounded.publish(&chat, &text("x")).retained_size();
        let (hub, _) = hub_with(HubConfig {
            retention_bytes: one_message,
            ..HubConfig::default()
        });
        let hub = Arc::new(hub);
        let maintenance = tokio::spawn({
            let hub = hub.clone();
            async move { hub.maintain(Duration::from_secs(3600)).await }
        });
        hub.publish(&chat, &text("x"));
        settle().await;
        assert_eq!(hub.stats().evicted_by_budget.load(Ordering::Relaxed), 0);
        hub.publish(&chat, &text("x"));
        settle().await;
        assert_eq!(
            hub.stats().evicted_by_budget.load(Ordering::Relaxed),
            1,
            "swept without waiting for the interval"
        );
        assert_eq!(hub.retained_bytes(), one_message);
        maintenance.abort();
    }
}
