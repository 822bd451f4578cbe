//! Positions in a topic, and cursors made of them.
//!
//! A position is `<tag>-<epoch>-<seq>`: `tag` is 48 bits of a hash of the topic name (so a
//! cursor can say which topic each position belongs to without repeating the name), `epoch`
//! identifies one unbroken history of the topic, and `seq` is the last sequence number seen in
//! it. Tag and epoch are base 36, `seq` is decimal. A cursor is positions joined with `.`.
//! Both are URL-safe and need no escaping in a query string or a header.

use std::fmt;

use crate::topic::TopicName;

/// The longest cursor accepted, in bytes: it has to fit in a header (`Last-Event-ID`) behind
/// proxies whose header buffers are commonly 8 KiB.
pub const MAX_CURSOR_LEN: usize = 8 * 1024;

/// Bits of the topic hash kept in a position: enough that two topics of one request collide
/// with negligible probability, short enough to keep ids compact.
const TAG_BITS: u32 = 48;

/// One point in one topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Which topic this position belongs to (a hash of its name).
    pub tag: u64,
    /// Which history of the topic; changes whenever the history is lost.
    pub epoch: u64,
    /// The last sequence number seen; 0 means nothing of this epoch yet.
    pub seq: u64,
}

/// The tag of a topic: the low 48 bits of its FNV-1a hash, stable across processes and nodes.
pub fn topic_tag(topic: &TopicName) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(topic.as_str().as_bytes());
    hasher.finish() & ((1 << TAG_BITS) - 1)
}

/// Why a string is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorError {
    Empty,
    TooLong(usize),
    BadPosition(String),
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CursorError::Empty => write!(f, "cursor is empty"),
            CursorError::TooLong(len) => {
                write!(
                    f,
                    "cursor is {len} bytes long; at most {MAX_CURSOR_LEN} are allowed"
                )
            }
            CursorError::BadPosition(part) => {
                let shown: String = part.chars().take(40).collect();
                write!(f, "cursor has a malformed position {shown:?}")
            }
        }
    }
}

impl std::error::Error for CursorError {}

fn push_base36(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 13];
    let mut start = digits.len();
    loop {
        start -= 1;
        let digit = (value % 36) as u8;
        digits[start] = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|&b| b as char));
}

fn parse_digits(text: &str, radix: u32) -> Option<u64> {
    let lowercase_digits = |c: char| c.is_ascii_digit() || (radix == 36 && c.is_ascii_lowercase());
    if text.is_empty() || text.len() > 20 || !text.chars().all(lowercase_digits) {
        return None;
    }
    u64::from_str_radix(text, radix).ok()
}

impl Position {
    /// Appends the position's text form to `out`.
    pub fn write_to(&self, out: &mut String) {
        push_base36(out, self.tag);
        out.push('-');
        push_base36(out, self.epoch);
        out.push('-');
        out.push_str(itoa::Buffer::new().format(self.seq));
    }

    pub fn parse(text: &str) -> Result<Position, CursorError> {
        let bad = || CursorError::BadPosition(text.to_string());
        let mut parts = text.split('-');
        let (Some(tag), Some(epoch), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let tag = parse_digits(tag, 36)
            .filter(|t| *t < 1 << TAG_BITS)
            .ok_or_else(bad)?;
        let epoch = parse_digits(epoch, 36).ok_or_else(bad)?;
        let seq = parse_digits(seq, 10).ok_or_else(bad)?;
        Ok(Position { tag, epoch, seq })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(32);
        self.write_to(&mut text);
        f.write_str(&text)
    }
}

/// Positions for one or more topics, as clients carry them between requests and transports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: Vec<Position>,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, CursorError> {
        if text.is_empty() {
            return Err(CursorError::Empty);
        }
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong(text.len()));
        }
        let positions = text
            .split('.')
            .map(Position::parse)
            .collect::<Result<_, _>>()?;
        Ok(Cursor { positions })
    }

    pub fn from_positions(positions: Vec<Position>) -> Cursor {
        Cursor { positions }
    }

    /// The position this cursor holds for `topic`; when it holds several, the last one wins.
    pub fn position_of(&self, topic: &TopicName) -> Option<Position> {
        let tag = topic_tag(topic);
        self.positions.iter().rev().find(|p| p.tag == tag).copied()
    }

    pub fn positions(&self) -> &[Position] {
        &self.positions
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(32 * self.positions.len());
        for (i, position) in self.positions.iter().enumerate() {
            if i > 0 {
                text.push('.');
            }
            position.write_to(&mut text);
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid topic")
    }

    #[test]
    fn text_form_is_compact_and_url_safe() {
        let p = Position {
            tag: 35,
            epoch: 36,
            seq: 42,
        };
        assert_eq!(p.to_string(), "z-10-42");
        assert_eq!(Position::parse("z-10-42"), Ok(p));
    }

    #[test]
    fn tag_is_stable_across_runs() {
        // Cursors outlive processes and cross nodes: the tag must never change.
        // The low 48 bits of FNV-1a-64("chat"), computed independently.
        assert_eq!(topic_tag(&topic("chat")), 0x8d91_0b5b_348b);
        assert_ne!(topic_tag(&topic("chat")), topic_tag(&topic("chat2")));
        assert!(topic_tag(&topic("chat")) < 1 << TAG_BITS);
    }

    #[test]
    fn last_position_for_a_topic_wins() {
        let chat = topic("chat");
        let tag = topic_tag(&chat);
        let old = Position {
            tag,
            epoch: 1,
            seq: 1,
        };
        let new = Position {
            tag,
            epoch: 1,
            seq: 5,
        };
        let other = Position {
            tag: tag ^ 1,
            epoch: 1,
            seq: 9,
        };
        let cursor = Cursor::parse(&format!("{old}.{other}.{new}")).expect("valid cursor");
        assert_eq!(cursor.position_of(&chat), Some(new));
        assert_eq!(cursor.position_of(&topic("news")), None);
    }

    #[test]
    fn malformed_cursors_are_rejected() {
        for bad in [
            "",
            "x",
            "a-b",
            "a-b-c-d",
            "a-b-",
            "-a-1",
            "a-b-1.",
            ".a-b-1",
            "A-b-1",
            "a-b-x",
            "a-b-+1",
            "a-b--1",
            "zzzzzzzzzzzzzz-1-1",
            "a-b-99999999999999999999",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            Cursor::parse(&"1-1-1.".repeat(2000)),
            Err(CursorError::TooLong(_))
        ));
    }

    fn any_position() -> impl Strategy<Value = Position> {
        (0..1u64 << TAG_BITS, any::<u64>(), any::<u64>()).prop_map(|(tag, epoch, seq)| Position {
            tag,
            epoch,
            seq,
        })
    }

    proptest! {
        #[test]
        fn cursors_round_trip(positions in prop::collection::vec(any_position(), 1..20)) {
            let cursor = Cursor::from_positions(positions);
            let text = cursor.to_string();
            prop_assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            prop_assert_eq!(Cursor::parse(&text), Ok(cursor));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Cursor::parse(&text);
        }

        #[test]
        fn parsed_cursors_print_back_canonically(text in "[0-9a-z]{1,10}-[0-9a-z]{1,12}-[0-9]{1,12}") {
            if let Ok(cursor) = Cursor::parse(&text) {
                let again = Cursor::parse(&cursor.to_string());
                prop_assert_eq!(again, Ok(cursor));
            }
        }
    }
}
