//! What a WebSocket client sends: its frames, read field by field, refused whole when they
//! repeat a key.

use std::collections::HashMap;

use serde_json::value::RawValue;
use switchboard_hub::TopicName;

use crate::error::{AppError, ErrorCode};
use crate::request::distinct_topics;
use crate::wire::frames::Reference;

/// A client frame, with its fields kept as raw JSON until each is needed, so that `data` is
/// taken exactly as sent and `ref` survives errors in the other fields.
pub(super) struct ClientFrame<'a> {
    pub(super) reference: Option<Reference>,
    pub(super) fields: HashMap<String, &'a RawValue>,
}

/// A frame refused as a whole, with its `ref` when that could be read.
pub(super) struct Refused {
    pub(super) error: AppError,
    pub(super) reference: Option<Reference>,
}

impl From<AppError> for Refused {
    fn from(error: AppError) -> Refused {
        Refused {
            error,
            reference: None,
        }
    }
}

impl<'a> ClientFrame<'a> {
    pub(super) fn parse(text: &'a str) -> Result<ClientFrame<'a>, Refused> {
        let RawFields {
            fields,
            first_repeated,
            ref_repeated,
        } = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                AppError::new(ErrorCode::BadRequest, "a frame must be a JSON object")
            } else {
                AppError::new(ErrorCode::BadJson, format!("frame is not valid JSON: {e}"))
            }
        })?;
        let reference = match fields.get("ref").map(|raw| serde_json::from_str(raw.get())) {
            None => Ok(None),
            Some(Ok(value @ (serde_json::Value::String(_) | serde_json::Value::Number(_)))) => {
                Ok(Some(value))
            }
            Some(_) => Err(AppError::new(
                ErrorCode::BadRequest,
                "`ref` must be a string or a number",
            )),
        };
        // A repeated key would be read as one of its values, silently: refuse the frame.
        if let Some(key) = first_repeated {
            return Err(Refused {
                error: AppError::new(ErrorCode::BadRequest, format!("duplicate key `{key}`")),
                reference: reference.ok().flatten().filter(|_| !ref_repeated),
            });
        }
        Ok(ClientFrame {
            reference: reference?,
            fields,
        })
    }

    /// The frame's `type`; a missing one is answered like any other bad field, with the `ref`.
    pub(super) fn kind(&self) -> Result<String, AppError> {
        self.string("type").map_err(|e| AppError {
            code: ErrorCode::BadRequest,
            ..e
        })
    }

    pub(super) fn optional_string(&self, name: &str) -> Result<Option<String>, AppError> {
        self.fields
            .get(name)
            .map(|raw| {
                serde_json::from_str::<String>(raw.get()).map_err(|_| {
                    AppError::new(ErrorCode::BadRequest, format!("`{name}` must be a string"))
                })
            })
            .transpose()
    }

    pub(super) fn string(&self, name: &str) -> Result<String, AppError> {
        self.optional_string(name)?.ok_or_else(|| missing(name))
    }

    /// The `topics` array, validated, without repeats; empty is `missing_topic`, more than
    /// `max` distinct names `too_many_topics`.
    pub(super) fn topics(&self, max: usize) -> Result<Vec<TopicName>, AppError> {
        let raw = self.fields.get("topics").ok_or_else(|| {
            AppError::new(ErrorCode::MissingTopic, "the frame needs a `topics` array")
        })?;
        let names: Vec<String> = serde_json::from_str(raw.get()).map_err(|_| {
            AppError::new(
                ErrorCode::BadRequest,
                "`topics` must be an array of strings",
            )
        })?;
        if names.is_empty() {
            return Err(AppError::new(ErrorCode::MissingTopic, "`topics` is empty"));
        }
        distinct_topics(names, max)
    }
}

/// A JSON object's fields as raw JSON, read by hand rather than into a map so that a key given
/// twice is noticed instead of its last value quietly winning. The first value is kept.
struct RawFields<'a> {
    fields: HashMap<String, &'a RawValue>,
    /// The first key seen twice, for the error message.
    first_repeated: Option<String>,
    /// Whether `ref` was seen twice, so that no `ref` can be echoed.
    ref_repeated: bool,
}

impl<'de> serde::Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawFieldsVisitor)
    }
}

struct RawFieldsVisitor;

impl<'de> serde::de::Visitor<'de> for RawFieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawFields {
            fields: HashMap::new(),
            first_repeated: None,
            ref_repeated: false,
        };
        // Keys are compared unescaped: `"top\u0069c"` is `topic`.
        while let Some(key) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            match raw.fields.entry(key) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                std::collections::hash_map::Entry::Occupied(entry) => {
                    raw.ref_repeated |= entry.key() == "ref";
                    raw.first_repeated
                        .get_or_insert_with(|| entry.key().clone());
                }
            }
        }
        Ok(raw)
    }
}

pub(super) fn missing(field: &str) -> AppError {
    if field == "topic" {
        return AppError::new(ErrorCode::MissingTopic, "the frame needs a `topic`");
    }
    AppError::new(ErrorCode::BadRequest, format!("the frame needs `{field}`"))
}
