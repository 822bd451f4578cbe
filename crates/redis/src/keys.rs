//! Where a topic lives in Redis: its keys and its channel, all under one hash tag so that a
//! Redis Cluster keeps them in one slot (the publish script touches all three at once).

use switchboard_hub::TopicName;

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The hash of epoch (`e`) and last sequence (`s`).
    pub fn meta(&self, topic: &TopicName) -> String {
        format!("{}:{{{}}}:m", self.prefix, topic.as_str())
    }

    /// The stream of retained messages, with ids `<sequence>-0`.
    pub fn history(&self, topic: &TopicName) -> String {
        format!("{}:{{{}}}:h", self.prefix, topic.as_str())
    }

    /// The channel messages are published on.
    pub fn channel(&self, topic: &TopicName) -> String {
        format!("{}:{{{}}}:c", self.prefix, topic.as_str())
    }

    /// The topic a channel belongs to, if it is one of ours.
    pub fn topic_of_channel(&self, channel: &str) -> Option<TopicName> {
        let name = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:c")?;
        TopicName::new(name).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_per_topic_and_channels_map_back() {
        let keys = Keys::new("sb");
        let topic = TopicName::new("room.1/a:b").expect("valid");
        assert_eq!(keys.meta(&topic), "sb:{room.1/a:b}:m");
        assert_eq!(keys.history(&topic), "sb:{room.1/a:b}:h");
        let channel = keys.channel(&topic);
        assert_eq!(channel, "sb:{room.1/a:b}:c");
        assert_eq!(keys.topic_of_channel(&channel), Some(topic));
        assert_eq!(keys.topic_of_channel("other:{x}:c"), None);
        assert_eq!(Keys::new("sbx").topic_of_channel(&channel), None);
    }
}
