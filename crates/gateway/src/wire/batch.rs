//! The reply to a batch publish (`POST /publish`, `docs/PROTOCOL.md`, "Publishing a batch"):
//! one JSON line per message, in the order of the request's lines.

use serde::Serialize;

use super::objects::{ErrorBody, ErrorDetail, to_json};
use crate::error::AppError;

/// `{"topic":…,"id":…}`: the message of this line was published.
#[derive(Serialize)]
struct Published<'a> {
    topic: &'a str,
    id: &'a str,
}

/// Appends the line of a published message.
pub fn put_published(out: &mut String, topic: &str, id: &str) {
    out.push_str(&to_json(&Published { topic, id }));
    out.push('\n');
}

/// Appends the line of a refused one: the error body every HTTP rejection has.
pub fn put_refused(out: &mut String, error: &AppError) {
    out.push_str(&to_json(&ErrorBody {
        error: ErrorDetail {
            code: error.code.as_str(),
            message: &error.message,
            request_id: None,
        },
    }));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn lines_read_as_in_the_protocol() {
        let mut out = String::new();
        put_published(&mut out, "chat", "1-2-3");
        put_refused(&mut out, &AppError::new(ErrorCode::BadTopic, "…"));
        assert_eq!(
            out,
            "{\"topic\":\"chat\",\"id\":\"1-2-3\"}\n{\"error\":{\"code\":\"bad_topic\",\"message\":\"…\"}}\n"
        );
    }
}
