//! Topic patterns, as tokens and anonymous rules name the topics they allow: a topic name, or
//! a prefix followed by `*` (`room.*` matches `room.1` and `room.a/b`); `*` alone matches every
//! topic.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(String),
    /// Every topic that starts with this (possibly empty) prefix.
    Prefix(String),
}

impl TopicPattern {
    /// Reads a pattern. A `*` anywhere but at the end is refused rather than read literally,
    /// since topic names cannot contain one: it is a mistake in a token or a rule.
    pub fn parse(text: &str) -> Result<TopicPattern, String> {
        match text.find('*') {
            None if text.is_empty() => Err("an empty topic pattern matches nothing".into()),
            None => Ok(TopicPattern::Exact(text.to_owned())),
            Some(at) if at == text.len() - 1 => Ok(TopicPattern::Prefix(text[..at].to_owned())),
            Some(_) => Err(format!(
                "topic pattern {text:?}: `*` may only end a pattern"
            )),
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicPattern::Exact(name) => f.write_str(name),
            TopicPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TopicPattern::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Whether any of `patterns` matches `topic`.
pub fn any_matches(patterns: &[TopicPattern], topic: &str) -> bool {
    patterns.iter().any(|pattern| pattern.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TopicPattern {
        TopicPattern::parse(text).expect("a pattern")
    }

    #[test]
    fn names_prefixes_and_everything() {
        assert!(pattern("chat").matches("chat"));
        assert!(!pattern("chat").matches("chat2"));
        assert!(!pattern("chat").matches("cha"));
        assert!(pattern("room.*").matches("room.1"));
        assert!(pattern("room.*").matches("room.a/b"));
        assert!(pattern("room.*").matches("room."));
        assert!(!pattern("room.*").matches("room"));
        assert!(!pattern("room.*").matches("rooms.1"));
        assert!(pattern("*").matches("anything/at:all"));
        let list = [pattern("chat"), pattern("user.ann")];
        assert!(any_matches(&list, "user.ann"));
        assert!(!any_matches(&list, "user.bob"));
        assert!(!any_matches(&[], "chat"));
    }

    #[test]
    fn a_star_anywhere_else_is_refused() {
        for text in ["", "ro*m", "*.admin", "a**"] {
            assert!(TopicPattern::parse(text).is_err(), "{text:?} was accepted");
        }
        assert_eq!(pattern("room.*").to_string(), "room.*");
        assert_eq!(pattern("*").to_string(), "*");
    }
}
