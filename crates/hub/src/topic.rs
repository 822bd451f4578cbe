//! Topic names: validation and a cheap, shareable representation.

use std::fmt;
use std::sync::Arc;

/// The longest topic name accepted, in characters (all allowed characters are ASCII).
pub const MAX_TOPIC_LEN: usize = 128;

/// A validated topic name. Cloning is a reference-count increment, because every retained
/// message and every subscription holds one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong(usize),
    BadCharacter(char),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => write!(f, "topic name is empty"),
            TopicError::TooLong(len) => {
                write!(
                    f,
                    "topic name is {len} characters long; at most {MAX_TOPIC_LEN} are allowed"
                )
            }
            TopicError::BadCharacter(c) => write!(
                f,
                "topic name has the character {c:?}, outside A-Z a-z 0-9 . _ - : @ /"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/')
}

impl TopicName {
    /// Validates `name` against the protocol's rule: 1–128 characters from
    /// `A-Z a-z 0-9 . _ - : @ /`.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if let Some(bad) = name.chars().find(|c| !is_topic_char(*c)) {
            return Err(TopicError::BadCharacter(bad));
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong(name.len()));
        }
        Ok(TopicName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_every_allowed_character() {
        let name = "Az09._-:@/";
        assert_eq!(
            TopicName::new(name).map(|t| t.to_string()),
            Ok(name.to_string())
        );
    }

    #[test]
    fn rejects_empty_long_and_foreign() {
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(
            TopicName::new(&"a".repeat(129)),
            Err(TopicError::TooLong(129))
        );
        assert!(TopicName::new(&"a".repeat(128)).is_ok());
        assert_eq!(TopicName::new("a b"), Err(TopicError::BadCharacter(' ')));
        assert_eq!(TopicName::new("é"), Err(TopicError::BadCharacter('é')));
        assert_eq!(TopicName::new("a\nb"), Err(TopicError::BadCharacter('\n')));
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(name in "[A-Za-z0-9._:@/-]{1,128}") {
            prop_assert_eq!(TopicName::new(&name).map(|t| t.to_string()), Ok(name));
        }

        #[test]
        fn any_string_is_accepted_only_if_it_follows_the_rule(name in "\\PC{0,140}") {
            let follows = !name.is_empty() && name.len() <= MAX_TOPIC_LEN && name.chars().all(is_topic_char);
            prop_assert_eq!(TopicName::new(&name).is_ok(), follows);
        }
    }
}
