//! The bytes the store writes: the records of its log, and how they are read back.
//!
//! The store is a log of records, one per commit, each a format byte then its entries. An
//! entry is a tag byte, the topic's name prefixed by its length (one byte: names have at most
//! 128 characters), then what the tag says, numbers as 8 bytes big-endian:
//!
//! - `Position` (1): the topic's epoch and last sequence. Written when a topic is first
//!   written in an epoch, and carried forward when the record that held it is deleted, so that
//!   a topic's position survives while it retains nothing.
//! - `Append` (2): a message's sequence, its publish time (milliseconds), the length of its
//!   data (4 bytes) and the data, the compact JSON text exactly as published.
//! - `Trim` (3): the first sequence the topic keeps from then on.
//! - `Forget` (4): the topic was forgotten; what came before of it is void.
//!
//! Decoding checks everything it reads and reports what is wrong instead of panicking: a
//! store that does not decode is refused, never repaired by guessing. A message's data is
//! checked to be UTF-8 where it is restored (`replay`), not when a record is decoded to be
//! carried forward, which copies it as it is.

use switchboard_hub::TopicName;

/// The first byte of every record this version writes.
const FORMAT: u8 = 2;

const POSITION: u8 = 1;
const APPEND: u8 = 2;
const TRIM: u8 = 3;
const FORGET: u8 = 4;

/// Why stored bytes are not what this version writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corrupt {}

/// One change a record holds; `data` borrows from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Position {
        topic: TopicName,
        epoch: u64,
        last_seq: u64,
    },
    Append {
        topic: TopicName,
        seq: u64,
        time_ms: u64,
        /// The UTF-8 text of the data (compact JSON), as bytes.
        data: &'a [u8],
    },
    Trim {
        topic: TopicName,
        keep_from: u64,
    },
    Forget {
        topic: TopicName,
    },
}

impl Entry<'_> {
    pub fn topic(&self) -> &TopicName {
        match self {
            Entry::Position { topic, .. }
            | Entry::Append { topic, .. }
            | Entry::Trim { topic, .. }
            | Entry::Forget { topic } => topic,
        }
    }
}

/// A new, empty record.
pub fn new_record() -> Vec<u8> {
    vec![FORMAT]
}

/// Whether `record` holds no entry.
pub fn is_empty(record: &[u8]) -> bool {
    record.len() <= 1
}

/// Appends `entry` to `record`; returns how many bytes it took.
pub fn write_entry(record: &mut Vec<u8>, entry: &Entry<'_>) -> usize {
    let before = record.len();
    let tag = match entry {
        Entry::Position { .. } => POSITION,
        Entry::Append { .. } => APPEND,
        Entry::Trim { .. } => TRIM,
        Entry::Forget { .. } => FORGET,
    };
    record.push(tag);
    let name = entry.topic().as_str().as_bytes();
    // Topic names are at most 128 bytes long (`MAX_TOPIC_LEN`).
    record.push(name.len() as u8);
    record.extend_from_slice(name);
    match entry {
        Entry::Position {
            epoch, last_seq, ..
        } => {
            record.extend_from_slice(&epoch.to_be_bytes());
            record.extend_from_slice(&last_seq.to_be_bytes());
        }
        Entry::Append {
            seq, time_ms, data, ..
        } => {
            record.extend_from_slice(&seq.to_be_bytes());
            record.extend_from_slice(&time_ms.to_be_bytes());
            // A message's data is far below 4 GiB (`--max-message-bytes`).
            record.extend_from_slice(&(data.len() as u32).to_be_bytes());
            record.extend_from_slice(data);
        }
        Entry::Trim { keep_from, .. } => record.extend_from_slice(&keep_from.to_be_bytes()),
        Entry::Forget { .. } => {}
    }
    record.len() - before
}

/// The entries of `record`, each with how many bytes it took, in the order they were written.
pub fn read_record(record: &[u8]) -> Result<Vec<(Entry<'_>, usize)>, Corrupt> {
    let mut reader = match record.split_first() {
        Some((&FORMAT, rest)) => Reader(rest),
        Some((format, _)) => return Err(Corrupt(format!("record of unknown format {format}"))),
        None => return Err(Corrupt("empty record".into())),
    };
    let mut entries = Vec::new();
    while !reader.0.is_empty() {
        let before = reader.0.len();
        let entry = reader.entry()?;
        entries.push((entry, before - reader.0.len()));
    }
    Ok(entries)
}

/// What is left of a record to read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt(format!("record cut short in {what}")));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Corrupt> {
        let eight = self.bytes(8, what)?;
        Ok(u64::from_be_bytes(eight.try_into().expect("8 bytes")))
    }

    fn topic(&mut self) -> Result<TopicName, Corrupt> {
        let len = self.bytes(1, "a topic")?[0];
        let name = self.bytes(usize::from(len), "a topic")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| Corrupt(format!("topic name {name:02x?} is not UTF-8")))?;
        TopicName::new(name).map_err(|e| Corrupt(format!("bad topic name {name:?}: {e}")))
    }

    fn entry(&mut self) -> Result<Entry<'a>, Corrupt> {
        let tag = self.bytes(1, "an entry")?[0];
        let topic = self.topic()?;
        Ok(match tag {
            POSITION => Entry::Position {
                topic,
                epoch: self.u64("a position")?,
                last_seq: self.u64("a position")?,
            },
            APPEND => {
                let seq = self.u64("a message")?;
                let time_ms = self.u64("a message")?;
                let len = self.bytes(4, "a message")?;
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
                let data = self.bytes(len as usize, "a message's data")?;
                if data.is_empty() {
                    return Err(Corrupt(format!("message {seq} of {topic}: no data")));
                }
                Entry::Append {
                    topic,
                    seq,
                    time_ms,
                    data,
                }
            }
            TRIM => Entry::Trim {
                topic,
                keep_from: self.u64("a trim")?,
            },
            FORGET => Entry::Forget { topic },
            other => return Err(Corrupt(format!("entry of unknown kind {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use switchboard_hub::{Data, Message, Position};

    fn topic_name() -> impl Strategy<Value = TopicName> {
        "[A-Za-z0-9._:@/-]{1,128}".prop_map(|name| TopicName::new(&name).expect("valid"))
    }

    /// Data as the hub holds it: compact JSON, never empty.
    fn data() -> impl Strategy<Value = Data> {
        any::<String>().prop_map(|text| Data::from_text(&text))
    }

    /// Entries with owned data, to be borrowed when written.
    fn entries() -> impl Strategy<Value = Vec<(u8, TopicName, u64, u64, Data)>> {
        prop::collection::vec(
            (1u8..=4, topic_name(), any::<u64>(), any::<u64>(), data()),
            0..8,
        )
    }

    fn entry<'a>(kind: u8, topic: &TopicName, a: u64, b: u64, data: &'a Data) -> Entry<'a> {
        let topic = topic.clone();
        match kind {
            1 => Entry::Position {
                topic,
                epoch: a,
                last_seq: b,
            },
            2 => Entry::Append {
                topic,
                seq: a,
                time_ms: b,
                data: data.as_json().as_bytes(),
            },
            3 => Entry::Trim {
                topic,
                keep_from: a,
            },
            _ => Entry::Forget { topic },
        }
    }

    proptest! {
        #[test]
        fn records_read_back_as_written(written in entries()) {
            let mut record = new_record();
            let mut expected = Vec::new();
            for (kind, topic, a, b, data) in &written {
                let entry = entry(*kind, topic, *a, *b, data);
                let len = write_entry(&mut record, &entry);
                expected.push((entry, len));
            }
            prop_assert_eq!(is_empty(&record), written.is_empty());
            prop_assert_eq!(read_record(&record), Ok(expected));
        }

        #[test]
        fn a_message_takes_no_more_than_the_disk_budget_counts_for_it(
            topic in topic_name(), seq in any::<u64>(), time_ms in any::<u64>(), data in data()
        ) {
            let mut record = new_record();
            let len = write_entry(&mut record, &Entry::Append {
                topic: topic.clone(), seq, time_ms, data: data.as_json().as_bytes(),
            });
            let position = Position { tag: 0, epoch: 0, seq };
            let message = Message::new(topic, position, time_ms, &data);
            prop_assert!(len <= message.stored_size());
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panicking(bytes in any::<Vec<u8>>()) {
            let _ = read_record(&bytes);
            let mut record = new_record();
            record.extend_from_slice(&bytes);
            let _ = read_record(&record);
        }

        #[test]
        fn an_entry_cut_short_is_refused(
            written in entries(), cut in any::<prop::sample::Index>()
        ) {
            prop_assume!(!written.is_empty());
            let mut record = new_record();
            let mut last = 0;
            for (kind, topic, a, b, data) in &written {
                last = write_entry(&mut record, &entry(*kind, topic, *a, *b, data));
            }
            // Anywhere inside the last entry: at least one byte of it, never all of it.
            let at = record.len() - last + 1 + cut.index(last - 1);
            prop_assert!(read_record(&record[..at]).is_err());
        }
    }
}
