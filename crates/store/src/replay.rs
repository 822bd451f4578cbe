//! Reading the log back: its entries applied in order, and the result checked.

use std::collections::{BTreeMap, HashMap};

use switchboard_hub::{Data, TopicName};

use crate::encoding::{Corrupt, Entry};
use crate::records::Place;

/// A topic as the log replays it.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) epoch: Option<u64>,
    pub(crate) last_seq: u64,
    kept_from: u64,
    pub(crate) position: Option<Place>,
    pub(crate) messages: BTreeMap<u64, ReplayedMessage>,
}

#[derive(Debug)]
pub(crate) struct ReplayedMessage {
    pub(crate) time_ms: u64,
    pub(crate) data: Data,
    pub(crate) at: Place,
}

/// Applies one entry, found at `at` in the log, to what the log held before it.
pub(crate) fn replay_entry(
    topics: &mut HashMap<TopicName, Replayed>,
    entry: Entry<'_>,
    at: Place,
) -> Result<(), Corrupt> {
    let name = entry.topic().clone();
    if let Entry::Forget { .. } = entry {
        topics.remove(&name);
        return Ok(());
    }
    let topic = topics.entry(name.clone()).or_default();
    match entry {
        Entry::Position {
            epoch, last_seq, ..
        } => {
            if topic.epoch.is_some_and(|known| known != epoch) {
                return Err(Corrupt(format!(
                    "topic {name} changes epoch without being forgotten"
                )));
            }
            topic.epoch = Some(epoch);
            topic.last_seq = topic.last_seq.max(last_seq);
            topic.position = Some(at);
        }
        Entry::Append {
            seq, time_ms, data, ..
        } => {
            if seq < topic.kept_from {
                return Err(Corrupt(format!(
                    "message {seq} of topic {name} comes after its trim to {}",
                    topic.kept_from
                )));
            }
            let data = String::from_utf8(data.to_vec())
                .map_err(|_| Corrupt(format!("message {seq} of topic {name}: data not UTF-8")))?;
            topic.last_seq = topic.last_seq.max(seq);
            topic.messages.insert(
                seq,
                ReplayedMessage {
                    time_ms,
                    data: Data::from_stored(data),
                    at,
                },
            );
        }
        Entry::Trim { keep_from, .. } => {
            // A topic is never trimmed past its last message: this says how far it went when
            // the messages it drops were not written.
            topic.last_seq = topic.last_seq.max(keep_from.saturating_sub(1));
            topic.kept_from = topic.kept_from.max(keep_from);
            topic.messages = topic.messages.split_off(&keep_from);
        }
        // Handled above: it ends the topic rather than changing it.
        Entry::Forget { .. } => {}
    }
    Ok(())
}

/// Checks that a topic's messages are contiguous and end at its last sequence.
pub(crate) fn check_contiguous(
    name: &TopicName,
    last_seq: u64,
    kept: &BTreeMap<u64, ReplayedMessage>,
) -> Result<(), Corrupt> {
    let seqs: Vec<u64> = kept.keys().copied().collect();
    let contiguous = seqs.windows(2).all(|w| w[1] == w[0] + 1);
    let ends_right = seqs.last().is_none_or(|&s| s == last_seq && seqs[0] >= 1);
    if contiguous && ends_right {
        Ok(())
    } else {
        Err(Corrupt(format!(
            "the messages kept of topic {name} do not run up to its last sequence {last_seq} \
             without a gap"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_whose_data_is_not_utf8_is_refused_when_restored() {
        let mut topics = HashMap::new();
        let chat = TopicName::new("chat").expect("valid");
        let at = Place {
            record: 0,
            bytes: 1,
        };
        let append = |seq, data| Entry::Append {
            topic: chat.clone(),
            seq,
            time_ms: 0,
            data,
        };
        replay_entry(&mut topics, append(1, br#""hi""#), at).expect("UTF-8 data is restored");
        let refused =
            replay_entry(&mut topics, append(2, &[b'"', 0xff, b'"']), at).expect_err("refused");
        assert_eq!(refused.0, "message 2 of topic chat: data not UTF-8");
        assert_eq!(topics[&chat].messages[&1].data.as_json(), r#""hi""#);
    }
}
