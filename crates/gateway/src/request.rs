//! Query parameters shared by the three transports: topics, cursor, timeout.

use std::collections::HashSet;
use std::time::Duration;

use axum::http::HeaderMap;
use switchboard_hub::{Cursor, TopicName};

use crate::error::{AppError, ErrorCode};

/// The decoded query string of a request.
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub fn parse(query: Option<&str>) -> QueryParams {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        QueryParams(pairs.into_owned().collect())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn last<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).last()
    }

    /// Every `topic` parameter, validated, without repeats, in order.
    pub fn topics(&self, max: usize) -> Result<Vec<TopicName>, AppError> {
        distinct_topics(self.all("topic"), max)
    }

    /// At least one topic, for subscribing over HTTP.
    pub fn required_topics(&self, max: usize) -> Result<Vec<TopicName>, AppError> {
        let topics = self.topics(max)?;
        if topics.is_empty() {
            return Err(AppError::new(
                ErrorCode::MissingTopic,
                "give at least one `topic` parameter",
            ));
        }
        Ok(topics)
    }

    /// Exactly one topic, for publishing.
    pub fn single_topic(&self) -> Result<TopicName, AppError> {
        let mut names = self.all("topic");
        match (names.next(), names.next()) {
            (None, _) => Err(AppError::new(
                ErrorCode::MissingTopic,
                "give a `topic` parameter",
            )),
            (Some(name), None) => Ok(TopicName::new(name)?),
            (Some(_), Some(_)) => Err(AppError::new(
                ErrorCode::BadRequest,
                "a message is published to exactly one `topic`",
            )),
        }
    }

    /// The resume cursor: the `Last-Event-ID` header, else `since`, else `lastEventId` (the
    /// parameter EventSource polyfills send).
    pub fn cursor(&self, headers: &HeaderMap) -> Result<Option<Cursor>, AppError> {
        let header = headers.get("last-event-id").map(|value| {
            value.to_str().map_err(|_| {
                AppError::new(
                    ErrorCode::BadCursor,
                    "Last-Event-ID is not a printable ASCII cursor",
                )
            })
        });
        // An empty value means no position, as EventSource sends no header before its first id.
        let text = match header.transpose()?.filter(|v| !v.is_empty()) {
            Some(value) => Some(value),
            None => [self.last("since"), self.last("lastEventId")]
                .into_iter()
                .flatten()
                .find(|v| !v.is_empty()),
        };
        Ok(text.map(Cursor::parse).transpose()?)
    }

    /// The `timeout` parameter in seconds (decimals allowed), capped at `max`.
    pub fn timeout(&self, default: Duration, max: Duration) -> Result<Duration, AppError> {
        let Some(text) = self.last("timeout") else {
            return Ok(default);
        };
        let seconds: f64 = text
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::BadRequest,
                    format!("timeout {text:?} is not a number of seconds"),
                )
            })?;
        Ok(Duration::from_secs_f64(seconds.min(max.as_secs_f64())))
    }
}

/// `names` validated, without repeats, in order; `too_many_topics` as soon as more than `max`
/// distinct names are seen. The work is linear in the names read, and no more than the first
/// `max` + 1 distinct ones are validated, however long the list.
pub fn distinct_topics<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
    max: usize,
) -> Result<Vec<TopicName>, AppError> {
    let mut seen: HashSet<TopicName> = HashSet::new();
    let mut topics: Vec<TopicName> = Vec::new();
    for name in names {
        let name = name.as_ref();
        if seen.contains(name) {
            continue;
        }
        if topics.len() == max {
            return Err(AppError::new(
                ErrorCode::TooManyTopics,
                format!("more than {max} topics; at most {max} are allowed on one connection"),
            ));
        }
        let topic = TopicName::new(name)?;
        seen.insert(topic.clone());
        topics.push(topic);
    }
    Ok(topics)
}

pub fn check_topic_count(count: usize, max: usize) -> Result<(), AppError> {
    if count > max {
        return Err(AppError::new(
            ErrorCode::TooManyTopics,
            format!("{count} topics; at most {max} are allowed on one connection"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_repeat_and_decode() {
        let params = QueryParams::parse(Some("topic=a&topic=b%2Fc&topic=a&since=x"));
        let topics = params.topics(10).expect("valid");
        let names: Vec<_> = topics.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["a", "b/c"]);
        assert_eq!(
            params.topics(1).map_err(|e| e.code),
            Err(ErrorCode::TooManyTopics)
        );
        assert_eq!(
            QueryParams::parse(None)
                .required_topics(5)
                .map_err(|e| e.code),
            Err(ErrorCode::MissingTopic)
        );
        assert_eq!(
            params.single_topic().map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn distinct_topics_reads_no_more_than_one_name_past_the_limit() {
        let read = std::cell::Cell::new(0);
        let names = (0..100_000)
            .map(|i| format!("t{i}"))
            .inspect(|_| read.set(read.get() + 1));
        assert_eq!(
            distinct_topics(names, 64).map_err(|e| e.code),
            Err(ErrorCode::TooManyTopics)
        );
        assert_eq!(read.get(), 65);
    }

    #[test]
    fn the_topic_limit_wins_over_names_past_it() {
        // 100,000 distinct names and then one that is no topic at all: the limit is reached
        // long before the bad name, which is never looked at.
        let mut query: String = (0..100_000).map(|i| format!("topic=t{i}&")).collect();
        query.push_str("topic=a%20b");
        let params = QueryParams::parse(Some(&query));
        assert_eq!(
            params.topics(64).map_err(|e| e.code),
            Err(ErrorCode::TooManyTopics)
        );
        // Before the limit, a bad name is still a bad name.
        let params = QueryParams::parse(Some("topic=a&topic=a%20b&topic=c"));
        assert_eq!(
            params.topics(2).map_err(|e| e.code),
            Err(ErrorCode::BadTopic)
        );
        // Repeats do not count towards the limit, however many there are.
        let mut query: String = (0..100_000)
            .map(|i| format!("topic=t{}&", i % 64))
            .collect();
        query.push_str("topic=t0");
        let topics = QueryParams::parse(Some(&query))
            .topics(64)
            .expect("64 topics");
        assert_eq!(topics.len(), 64);
        assert_eq!(topics[63].as_str(), "t63");
    }

    #[test]
    fn last_event_id_header_wins() {
        let params = QueryParams::parse(Some("since=1-1-1&lastEventId=2-2-2"));
        let mut headers = HeaderMap::new();
        assert_eq!(
            params
                .cursor(&headers)
                .expect("valid")
                .map(|c| c.to_string()),
            Some("1-1-1".into())
        );
        headers.insert("last-event-id", "3-3-3".parse().expect("header"));
        assert_eq!(
            params
                .cursor(&headers)
                .expect("valid")
                .map(|c| c.to_string()),
            Some("3-3-3".into())
        );
        headers.insert("last-event-id", "".parse().expect("header"));
        assert_eq!(
            params
                .cursor(&headers)
                .expect("valid")
                .map(|c| c.to_string()),
            Some("1-1-1".into())
        );
        assert!(
            QueryParams::parse(Some("since="))
                .cursor(&HeaderMap::new())
                .expect("valid")
                .is_none()
        );
        let polyfill = QueryParams::parse(Some("lastEventId=2-2-2"));
        assert_eq!(
            polyfill
                .cursor(&HeaderMap::new())
                .expect("valid")
                .map(|c| c.to_string()),
            Some("2-2-2".into())
        );
    }

    #[test]
    fn timeouts_are_capped_and_checked() {
        let max = Duration::from_secs(30);
        let default = Duration::from_secs(25);
        let timeout = |q: &str| {
            QueryParams::parse(Some(q))
                .timeout(default, max)
                .map_err(|e| e.code)
        };
        assert_eq!(timeout(""), Ok(default));
        assert_eq!(timeout("timeout=0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(timeout("timeout=999"), Ok(max));
        assert_eq!(timeout("timeout=-1"), Err(ErrorCode::BadRequest));
        assert_eq!(timeout("timeout=NaN"), Err(ErrorCode::BadRequest));
        assert_eq!(timeout("timeout=soon"), Err(ErrorCode::BadRequest));
    }
}
