//! The resume rules: where a subscriber's delivery starts in a topic, given the position it
//! asks for. One pure function, used by every message store.

use crate::hub::ResetReason;
use crate::position::Position;

/// What a store knows of a topic when a subscriber asks to resume in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicView {
    /// The topic's current epoch.
    pub epoch: u64,
    /// The sequence of the oldest retained message (`last_seq + 1` when none is retained).
    pub first_retained: u64,
    /// The sequence of the last message published.
    pub last_seq: u64,
    /// Positions of the topic from before it existed (sequence 0, an earlier epoch) are
    /// trusted back to this epoch: nothing of the topic can have been lost since then. A
    /// store that cannot tell sets it to the topic's own epoch, trusting none of them.
    pub trusted_since: u64,
}

/// Where delivery starts: after this sequence of the current epoch, and the reset to tell
/// the client first, if the position could not be honoured.
pub fn resume(from: Option<Position>, topic: &TopicView) -> (u64, Option<ResetReason>) {
    let first = topic.first_retained;
    match from {
        None => (topic.last_seq, None),
        Some(p) if p.epoch == topic.epoch => {
            if p.seq > topic.last_seq {
                (first - 1, Some(ResetReason::HistoryLost))
            } else if p.seq + 1 < first {
                (first - 1, Some(ResetReason::Retention))
            } else {
                (p.seq, None)
            }
        }
        // A position taken while the topic did not exist yet, after anything of it could last
        // have been lost: the topic was born after it, so its whole history is new to the
        // client.
        Some(p) if p.seq == 0 && p.epoch >= topic.trusted_since && p.epoch < topic.epoch => {
            (first - 1, (first > 1).then_some(ResetReason::Retention))
        }
        Some(_) => (first - 1, Some(ResetReason::HistoryLost)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: TopicView = TopicView {
        epoch: 100,
        first_retained: 5,
        last_seq: 9,
        trusted_since: 50,
    };

    fn at(epoch: u64, seq: u64) -> Option<Position> {
        Some(Position { tag: 1, epoch, seq })
    }

    #[test]
    fn the_rules_of_architecture_md() {
        assert_eq!(resume(None, &VIEW), (9, None));
        assert_eq!(resume(at(100, 6), &VIEW), (6, None));
        assert_eq!(
            resume(at(100, 4), &VIEW),
            (4, None),
            "the next one is retained"
        );
        assert_eq!(resume(at(100, 2), &VIEW), (4, Some(ResetReason::Retention)));
        assert_eq!(
            resume(at(100, 10), &VIEW),
            (4, Some(ResetReason::HistoryLost))
        );
        assert_eq!(resume(at(60, 0), &VIEW), (4, Some(ResetReason::Retention)));
        assert_eq!(
            resume(at(40, 0), &VIEW),
            (4, Some(ResetReason::HistoryLost))
        );
        assert_eq!(
            resume(at(60, 3), &VIEW),
            (4, Some(ResetReason::HistoryLost))
        );
        let whole = TopicView {
            first_retained: 1,
            ..VIEW
        };
        assert_eq!(resume(at(60, 0), &whole), (0, None));
    }
}
