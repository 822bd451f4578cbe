//! The bytes the store writes: keys and values of its tables, and how they are read back.
//!
//! - A message's key is its topic's name, prefixed by its length (one byte: names have at
//!   most 128 characters), then its sequence as 8 bytes big-endian, so that the keys of one
//!   topic are contiguous and sorted by sequence, and a range of them is one range of keys.
//! - A message's value is a format byte, its publish time (8 bytes big-endian, milliseconds)
//!   and its data, the compact JSON text exactly as published.
//! - A topic's header (key: its name) is a format byte, its epoch and its last sequence (8
//!   bytes big-endian each): its position survives while it retains nothing.
//!
//! Decoding checks everything it reads and reports what is wrong instead of panicking: a
//! store that does not decode is refused, never repaired by guessing.

use switchboard_hub::{Data, TopicName};

/// The first byte of every value this version writes.
const FORMAT: u8 = 1;

/// Why stored bytes are not what this version writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corrupt {}

/// The key of message `seq` of `topic`.
pub fn message_key(topic: &TopicName, seq: u64) -> Vec<u8> {
    let name = topic.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + name.len() + 8);
    // Topic names are at most 128 bytes long (`MAX_TOPIC_LEN`).
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The topic and sequence of a message key.
pub fn decode_message_key(key: &[u8]) -> Result<(TopicName, u64), Corrupt> {
    let bad = || Corrupt(format!("bad message key {key:02x?}"));
    let (&len, rest) = key.split_first().ok_or_else(bad)?;
    let len = usize::from(len);
    if rest.len() != len + 8 {
        return Err(bad());
    }
    let (name, seq) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    let topic = TopicName::new(name).map_err(|_| bad())?;
    Ok((topic, u64_at(seq, 0).ok_or_else(bad)?))
}

/// The value of a message published at `time_ms` with `data` (compact JSON).
pub fn message_value(time_ms: u64, data: &str) -> Vec<u8> {
    let json = data.as_bytes();
    let mut value = Vec::with_capacity(1 + 8 + json.len());
    value.push(FORMAT);
    value.extend_from_slice(&time_ms.to_be_bytes());
    value.extend_from_slice(json);
    value
}

/// The publish time and data of a message value.
pub fn decode_message_value(value: &[u8]) -> Result<(u64, Data), Corrupt> {
    let bad = |why: &str| Corrupt(format!("bad message value ({why})"));
    match value.split_first() {
        Some((&FORMAT, rest)) if rest.len() >= 8 => {
            let time_ms = u64_at(rest, 0).ok_or_else(|| bad("short"))?;
            let json = std::str::from_utf8(&rest[8..]).map_err(|_| bad("not UTF-8"))?;
            if json.is_empty() {
                return Err(bad("no data"));
            }
            Ok((time_ms, Data::from_stored(json.to_owned())))
        }
        Some((&FORMAT, _)) => Err(bad("short")),
        Some((format, _)) => Err(bad(&format!("unknown format {format}"))),
        None => Err(bad("empty")),
    }
}

/// A topic's epoch and last sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub epoch: u64,
    pub last_seq: u64,
}

/// The value of a topic's header.
pub fn header_value(header: Header) -> [u8; 17] {
    let mut value = [0; 17];
    value[0] = FORMAT;
    value[1..9].copy_from_slice(&header.epoch.to_be_bytes());
    value[9..].copy_from_slice(&header.last_seq.to_be_bytes());
    value
}

/// The header a value holds.
pub fn decode_header(value: &[u8]) -> Result<Header, Corrupt> {
    let bad = || Corrupt(format!("bad topic header {value:02x?}"));
    match value {
        [FORMAT, rest @ ..] if rest.len() == 16 => Ok(Header {
            epoch: u64_at(rest, 0).ok_or_else(bad)?,
            last_seq: u64_at(rest, 8).ok_or_else(bad)?,
        }),
        _ => Err(bad()),
    }
}

/// The name a topic's header is kept under.
pub fn decode_topic(key: &str) -> Result<TopicName, Corrupt> {
    TopicName::new(key).map_err(|e| Corrupt(format!("bad topic name {key:?}: {e}")))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let eight: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(eight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use switchboard_hub::{Message, Position};

    fn topic_name() -> impl Strategy<Value = TopicName> {
        "[A-Za-z0-9._:@/-]{1,128}".prop_map(|name| TopicName::new(&name).expect("valid"))
    }

    fn data() -> impl Strategy<Value = Data> {
        any::<String>().prop_map(|text| Data::from_text(&text))
    }

    proptest! {
        #[test]
        fn messages_read_back_as_written(
            topic in topic_name(), seq in any::<u64>(), time_ms in any::<u64>(), data in data()
        ) {
            let key = message_key(&topic, seq);
            prop_assert_eq!(decode_message_key(&key), Ok((topic.clone(), seq)));
            let value = message_value(time_ms, data.as_json());
            prop_assert_eq!(decode_message_value(&value), Ok((time_ms, data.clone())));
            // The disk budget counts envelopes: they must not be smaller than what is written.
            let position = Position { tag: 0, epoch: 0, seq };
            let message = Message::new(topic, position, time_ms, &data);
            prop_assert!(key.len() + value.len() <= message.stored_size());
        }

        #[test]
        fn a_topics_keys_sort_by_sequence_and_never_interleave_with_another_topics(
            a in topic_name(), b in topic_name(), s1 in any::<u64>(), s2 in any::<u64>(),
            s3 in any::<u64>()
        ) {
            prop_assert_eq!(message_key(&a, s1).cmp(&message_key(&a, s2)), s1.cmp(&s2));
            if a != b {
                // No key of `b` lies between two keys of `a`.
                let (low, high) = (message_key(&a, 0), message_key(&a, u64::MAX));
                let other = message_key(&b, s3);
                prop_assert!(other < low || other > high);
            }
        }

        #[test]
        fn headers_read_back_as_written(epoch in any::<u64>(), last_seq in any::<u64>()) {
            let header = Header { epoch, last_seq };
            prop_assert_eq!(decode_header(&header_value(header)), Ok(header));
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panicking(bytes in any::<Vec<u8>>()) {
            let _ = decode_message_key(&bytes);
            let _ = decode_message_value(&bytes);
            let _ = decode_header(&bytes);
        }

        #[test]
        fn a_truncated_value_is_refused(
            time_ms in any::<u64>(), data in data(), cut in 0usize..9
        ) {
            let value = message_value(time_ms, data.as_json());
            prop_assert!(decode_message_value(&value[..cut]).is_err());
            let header = header_value(Header { epoch: time_ms, last_seq: 1 });
            prop_assert!(decode_header(&header[..cut + 8]).is_err());
        }
    }
}
