//! Retention: which published messages the hub keeps for resuming. Every limit applies at
//! once: messages per topic (at publish), age (at publish and on every sweep) and a memory
//! budget for the whole hub, with a durable store a disk budget too (on every sweep, the oldest
//! messages of any topic first). Each message dropped is counted in `HubStats` under its
//! reason; what a sweep drops is journalled for the store, and a publish's `Append` says what
//! it dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Hub, Topic, TopicState};
use crate::message::Message;

impl Hub {
    /// Keeps `message` as the newest of its topic, then drops what the count and age limits
    /// no longer allow.
    pub(super) fn retain(&self, state: &mut TopicState, message: Arc<Message>, now_ms: u64) {
        if self.config.retention_messages == 0 {
            return;
        }
        self.retained_bytes
            .fetch_add(message.retained_size(), Ordering::Relaxed);
        state.retained_bytes += message.retained_size();
        self.stored_bytes
            .fetch_add(message.stored_size(), Ordering::Relaxed);
        self.retained_messages.fetch_add(1, Ordering::Relaxed);
        message.retained_in(&self.encoding_bytes);
        state.retained.push_back(message);
        while state.retained.len() > self.config.retention_messages {
            self.drop_oldest(state);
            self.stats.evicted_by_count.fetch_add(1, Ordering::Relaxed);
        }
        self.drop_expired(state, now_ms);
    }

    /// Whether the retained messages take more than the memory budget or the disk budget,
    /// which only a sweep restores.
    pub(super) fn is_over_budget(&self) -> bool {
        self.retained_bytes() > self.config.retention_bytes
            || (self.journal.is_some()
                && self.stored_bytes.load(Ordering::Relaxed) > self.config.retention_disk)
    }

    pub(super) fn drop_oldest(&self, state: &mut TopicState) -> Option<Arc<Message>> {
        let message = state.retained.pop_front()?;
        self.retained_bytes
            .fetch_sub(message.retained_size(), Ordering::Relaxed);
        state.retained_bytes -= message.retained_size();
        self.stored_bytes
            .fetch_sub(message.stored_size(), Ordering::Relaxed);
        self.retained_messages.fetch_sub(1, Ordering::Relaxed);
        message.released();
        Some(message)
    }

    /// Drops the messages of the topic older than the age limit at `now_ms`; returns whether
    /// it dropped any.
    pub(super) fn drop_expired(&self, state: &mut TopicState, now_ms: u64) -> bool {
        let max_age = self.config.retention_age.as_millis() as u64;
        if max_age == 0 {
            return false;
        }
        let mut dropped = false;
        while state
            .retained
            .front()
            .is_some_and(|m| m.time_ms + max_age < now_ms)
        {
            self.drop_oldest(state);
            self.stats.evicted_by_age.fetch_add(1, Ordering::Relaxed);
            dropped = true;
        }
        dropped
    }

    /// Drops the oldest retained messages of the whole hub until it is within its budgets.
    pub(super) fn enforce_budget(&self, topics: &[Arc<Topic>]) {
        if !self.is_over_budget() {
            return;
        }
        let oldest = |topic: &Topic| topic.state.lock().retained.front().map(|m| m.time_ms);
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = topics
            .iter()
            .enumerate()
            .filter_map(|(i, topic)| oldest(topic).map(|time| Reverse((time, i))))
            .collect();
        while self.is_over_budget() {
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            let mut state = topics[i].state.lock();
            if self.drop_oldest(&mut state).is_some() {
                self.stats.evicted_by_budget.fetch_add(1, Ordering::Relaxed);
                self.journal_trim(&topics[i], &state);
            }
            if let Some(next) = state.retained.front() {
                heap.push(Reverse((next.time_ms, i)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;

    use crate::hub::tests::{hub_with, seqs, text, topic};
    use crate::hub::{Hub, HubConfig, ManualClock, Page, ResetReason};
    use crate::message::Message;
    use crate::message::tests::BYTES;
    use crate::position::Position;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn position_older_than_retention_is_reset_then_oldest_retained_follows() {
        let (hub, _) = hub_with(HubConfig {
            retention_messages: 3,
            ..HubConfig::default()
        });
        let chat = topic("chat");
        let first = hub.publish(&chat, &text("1"));
        for i in 2..=6 {
            hub.publish(&chat, &text(&i.to_string()));
        }
        let catchup = hub.join(&chat, Some(first.position), None, Page::ALL);
        assert_eq!(catchup.reset, Some(ResetReason::Retention));
        assert_eq!(seqs(&catchup.messages), vec![4, 5, 6]);
        assert_eq!(hub.stats().evicted_by_count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn age_retention_drops_old_messages() {
        let (hub, clock) = hub_with(HubConfig::default());
        let chat = topic("chat");
        let first = hub.publish(&chat, &text("1"));
        clock.advance(hub.config.retention_age);
        hub.sweep();
        assert_eq!(
            hub.stats().evicted_by_age.load(Ordering::Relaxed),
            0,
            "a message exactly as old as the limit is kept"
        );
        assert_eq!(hub.retained_messages(), 1);
        clock.advance(MS);
        hub.sweep();
        assert_eq!(hub.retained_bytes(), 0);
        assert_eq!(hub.retained_messages(), 0);
        assert_eq!(hub.stats().evicted_by_age.load(Ordering::Relaxed), 1);
        let catchup = hub.join(
            &chat,
            Some(Position {
                seq: 0,
                ..first.position
            }),
            None,
            Page::ALL,
        );
        assert_eq!(catchup.reset, Some(ResetReason::Retention));
    }

    #[test]
    fn age_retention_applies_at_publish_too() {
        let (hub, clock) = hub_with(HubConfig {
            retention_age: Duration::from_secs(10),
            ..HubConfig::default()
        });
        let chat = topic("chat");
        hub.publish(&chat, &text("old"));
        clock.advance(Duration::from_secs(10) + MS);
        hub.publish(&chat, &text("new"));
        assert_eq!(hub.stats().evicted_by_age.load(Ordering::Relaxed), 1);
        let start = Position {
            seq: 0,
            ..hub.join(&chat, None, None, Page::NONE).start
        };
        let retained = hub.join(&chat, Some(start), None, Page::ALL);
        assert_eq!(seqs(&retained.messages), vec![2]);
    }

    #[test]
    fn memory_budget_evicts_the_oldest_messages_of_the_hub() {
        let (a, b) = (topic("a"), topic("b"));
        let sizes_of = |hub: &Hub, clock: &ManualClock| {
            let mut sizes = Vec::new();
            for name in [&a, &b, &a, &b] {
                sizes.push(hub.publish(name, &text("x")).retained_size());
                // Distinct publish times make "oldest" unambiguous.
                clock.advance(MS);
            }
            sizes
        };
        let (unbounded, clock) = hub_with(HubConfig::default());
        let sizes = sizes_of(&unbounded, &clock);
        let budget = sizes[1..].iter().sum();
        let (hub, clock) = hub_with(HubConfig {
            retention_bytes: budget,
            ..HubConfig::default()
        });
        sizes_of(&hub, &clock);
        assert!(hub.retained_bytes() > budget);
        hub.sweep();
        assert_eq!(hub.retained_bytes(), budget);
        assert_eq!(hub.stats().evicted_by_budget.load(Ordering::Relaxed), 1);
        let start_of_a = Position {
            seq: 0,
            ..hub.join(&a, None, None, Page::NONE).start
        };
        let retained_a = hub.join(&a, Some(start_of_a), None, Page::messages(10));
        assert_eq!(
            seqs(&retained_a.messages),
            vec![2],
            "the oldest message of the hub went first"
        );
        assert_eq!(retained_a.reset, Some(ResetReason::Retention));
    }

    #[test]
    fn encodings_made_for_subscribers_count_against_the_memory_budget() {
        let frame = |_: &Message| Bytes::from(vec![b'f'; 1000]);
        let frame_size = std::mem::size_of::<Bytes>() + 1000;
        let (unbounded, _) = hub_with(HubConfig::default());
        let message_size = unbounded
            .publish(&topic("chat"), &text("x"))
            .retained_size();
        let (hub, clock) = hub_with(HubConfig {
            retention_bytes: 2 * message_size + frame_size,
            ..HubConfig::default()
        });
        let chat = topic("chat");
        let mut published = Vec::new();
        for _ in 0..2 {
            published.push(hub.publish(&chat, &text("x")));
            clock.advance(MS);
        }
        assert_eq!(hub.retained_bytes(), 2 * message_size);
        published[1].encoded(&BYTES, frame);
        assert_eq!(hub.retained_bytes(), 2 * message_size + frame_size);
        hub.sweep();
        assert_eq!(hub.stats().evicted_by_budget.load(Ordering::Relaxed), 0);

        // Its subscribers' encoding takes the hub over: the oldest message goes, and with it
        // what its encoding took.
        published[0].encoded(&BYTES, frame);
        hub.sweep();
        assert_eq!(hub.stats().evicted_by_budget.load(Ordering::Relaxed), 1);
        assert_eq!(hub.retained_bytes(), message_size + frame_size);
        published[0].encoded(&BYTES, |_| unreachable!("made once"));
        assert_eq!(hub.retained_bytes(), message_size + frame_size);
    }
}
