//! The Lua scripts, each with the helpers it shares, and what they return.

use std::sync::LazyLock;

use fred::prelude::*;
use fred::types::scripts::Script;
use switchboard_hub::{Data, Message, Position, TopicName};

const COMMON: &str = include_str!("lua/common.lua");

fn with_common(body: &str) -> Script {
    Script::from_lua(format!("{COMMON}\n{body}"))
}

pub static PUBLISH: LazyLock<Script> =
    LazyLock::new(|| with_common(include_str!("lua/publish.lua")));
pub static READ: LazyLock<Script> = LazyLock::new(|| with_common(include_str!("lua/read.lua")));
pub static STATS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("lua/stats.lua")));
pub static DELETE: LazyLock<Script> = LazyLock::new(|| with_common(include_str!("lua/delete.lua")));
pub static CHECK: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("lua/check.lua")));

/// What the read script returns: where the topic stands, and the messages asked for.
#[derive(Debug)]
pub struct Read {
    pub epoch: u64,
    pub last: u64,
    pub first: u64,
    /// `(sequence, time in ms, data)`, in order.
    pub entries: Vec<(u64, u64, String)>,
}

fn number(value: &Value) -> Result<u64, Error> {
    match value {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| malformed("a negative number")),
        Value::String(s) => s.parse().map_err(|_| malformed("a number")),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("a number")),
        _ => Err(malformed("a number")),
    }
}

fn text(value: Value) -> Result<String, Error> {
    value.into_string().ok_or_else(|| malformed("a string"))
}

fn malformed(what: &str) -> Error {
    Error::new(
        ErrorKind::Parse,
        format!("unexpected reply from Redis: expected {what}"),
    )
}

fn array(value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(values) => Ok(values),
        Value::Null => Ok(Vec::new()),
        _ => Err(malformed("an array")),
    }
}

/// `{epoch, sequence, time}` from the publish script.
pub fn parse_published(value: Value) -> Result<(u64, u64, u64), Error> {
    let parts = array(value)?;
    match parts.as_slice() {
        [epoch, seq, time] => Ok((number(epoch)?, number(seq)?, number(time)?)),
        _ => Err(malformed("{epoch, sequence, time}")),
    }
}

pub fn parse_read(value: Value) -> Result<Read, Error> {
    let mut parts = array(value)?.into_iter();
    let (Some(epoch), Some(last), Some(first), Some(entries)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("{epoch, last, first, entries}"));
    };
    let entries = array(entries)?
        .into_iter()
        .map(|entry| {
            let mut entry = array(entry)?.into_iter();
            let (Some(id), Some(fields)) = (entry.next(), entry.next()) else {
                return Err(malformed("a stream entry"));
            };
            let id = text(id)?;
            let seq = id
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| malformed("a stream id"))?;
            let mut fields = array(fields)?.into_iter();
            let (Some(_), Some(data), Some(_), Some(time)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed("stream fields d and t"));
            };
            Ok((seq, number(&time)?, text(data)?))
        })
        .collect::<Result<_, _>>()?;
    Ok(Read {
        epoch: number(&epoch)?,
        last: number(&last)?,
        first: number(&first)?,
        entries,
    })
}

/// What the stats script returns: the history's bounds and its last messages (`Read`, with
/// the entries newest first), how many are retained and Redis's estimate of their memory.
#[derive(Debug)]
pub struct Stats {
    pub read: Read,
    pub count: u64,
    pub bytes: u64,
}

/// `None` when the topic has no epoch in Redis.
pub fn parse_stats(value: Value) -> Result<Option<Stats>, Error> {
    let mut parts = array(value)?;
    if parts.is_empty() {
        return Ok(None);
    }
    if parts.len() != 6 {
        return Err(malformed("{epoch, last, first, entries, count, bytes}"));
    }
    let bytes = number(&parts[5])?;
    let count = number(&parts[4])?;
    parts.truncate(4);
    Ok(Some(Stats {
        read: parse_read(Value::Array(parts))?,
        count,
        bytes,
    }))
}

/// The new epoch from the delete script, `None` when the topic had none.
pub fn parse_deleted(value: Value) -> Result<Option<u64>, Error> {
    match array(value)?.as_slice() {
        [] => Ok(None),
        [epoch] => Ok(Some(number(epoch)?)),
        _ => Err(malformed("{epoch}")),
    }
}

/// `{epoch, last}` from the check script, `None` when the topic has no epoch in Redis.
pub fn parse_check(value: Value) -> Result<Option<(u64, u64)>, Error> {
    let parts = array(value)?;
    match parts.as_slice() {
        [Value::Null, _] | [] => Ok(None),
        [epoch, last] => Ok(Some((number(epoch)?, number(last).unwrap_or(0)))),
        _ => Err(malformed("{epoch, last}")),
    }
}

/// The payload on a topic's channel: `epoch:sequence:time:data`.
pub fn parse_payload(topic: TopicName, tag: u64, payload: &str) -> Option<std::sync::Arc<Message>> {
    let mut parts = payload.splitn(4, ':');
    let epoch = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let time = parts.next()?.parse().ok()?;
    let data = Data::from_stored(parts.next()?.to_owned());
    Some(Message::new(
        topic,
        Position { tag, epoch, seq },
        time,
        &data,
    ))
}
