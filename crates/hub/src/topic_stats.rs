//! What an operator sees of one topic: its subscribers, what is retained, and how busy it is.

use crate::inbox::INBOX_KINDS;
use crate::position::Position;
use crate::topic::TopicName;

/// Seconds the publish rate is averaged over.
pub const RATE_WINDOW_SECONDS: usize = 60;

/// One topic as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicStats {
    pub topic: TopicName,
    /// Subscribers on this node, by the kind their connection gave its inbox.
    pub subscribers: [usize; INBOX_KINDS],
    /// Messages retained for resuming.
    pub retained_messages: usize,
    /// Bytes of the retained messages (their data, as the store counts it).
    pub retained_bytes: usize,
    /// The oldest retained message's position, if any is retained.
    pub first: Option<Position>,
    /// The newest retained message's position, if any is retained.
    pub last: Option<Position>,
    /// Messages per second over the last [`RATE_WINDOW_SECONDS`].
    pub rate_per_second: f64,
}

impl TopicStats {
    /// Whether there is anything to show: subscribers here or retained history.
    pub fn is_active(&self) -> bool {
        self.retained_messages > 0 || self.subscribers.iter().any(|&n| n > 0)
    }
}

/// One topic and its last retained messages, oldest first.
#[derive(Debug, Clone)]
pub struct TopicDetail {
    pub stats: TopicStats,
    pub recent: Vec<std::sync::Arc<crate::message::Message>>,
}

/// Messages counted per second over the last minute: a ring of counts, one per second, so
/// that recording is an index and an increment, and the rate is exact to the second.
#[derive(Debug, Clone)]
pub struct RecentRate {
    counts: [u32; RATE_WINDOW_SECONDS],
    /// The second (since any fixed origin) that `counts[second % WINDOW]` holds.
    second: u64,
}

impl RecentRate {
    pub fn new(now_second: u64) -> RecentRate {
        RecentRate {
            counts: [0; RATE_WINDOW_SECONDS],
            second: now_second,
        }
    }

    /// Counts one message at `now_second`.
    pub fn record(&mut self, now_second: u64) {
        self.advance(now_second);
        let slot = &mut self.counts[(now_second % RATE_WINDOW_SECONDS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Messages per second over the last minute up to `now_second`.
    pub fn per_second(&self, now_second: u64) -> f64 {
        let mut copy = self.clone();
        copy.advance(now_second);
        let total: u64 = copy.counts.iter().map(|&c| u64::from(c)).sum();
        total as f64 / RATE_WINDOW_SECONDS as f64
    }

    /// Clears the seconds that have passed since the last one counted.
    fn advance(&mut self, now_second: u64) {
        if now_second <= self.second {
            return;
        }
        let passed = (now_second - self.second).min(RATE_WINDOW_SECONDS as u64);
        for i in 1..=passed {
            self.counts[((self.second + i) % RATE_WINDOW_SECONDS as u64) as usize] = 0;
        }
        self.second = now_second;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_the_last_minute_only() {
        let mut rate = RecentRate::new(1000);
        for _ in 0..30 {
            rate.record(1000);
        }
        for _ in 0..30 {
            rate.record(1030);
        }
        assert_eq!(rate.per_second(1030), 1.0);
        // The first 30 fall out of the window a minute later, the others a further 30 s on.
        assert_eq!(rate.per_second(1060), 0.5);
        assert_eq!(rate.per_second(1089), 0.5);
        assert_eq!(rate.per_second(1090), 0.0);
        assert_eq!(rate.per_second(5000), 0.0);
        rate.record(5000);
        assert_eq!(rate.per_second(5000), 1.0 / 60.0);
    }
}
