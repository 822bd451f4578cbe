//! The embedded database (redb): its tables, reading a store back at start-up, and writing
//! the hub's changes a commit at a time.

use std::collections::HashMap;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use switchboard_hub::{Change, Restored, RestoredMessage, RestoredTopic, TopicName};

use crate::StoreError;
use crate::directory::Directory;
use crate::encoding::{
    Corrupt, Header, decode_header, decode_message_key, decode_message_value, decode_topic,
    header_value, message_key, message_value,
};

/// Retained messages, by topic and sequence (`encoding::message_key`).
const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
/// Each topic's epoch and last sequence, by name.
const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// The horizons that moved, by bucket.
const HORIZONS: TableDefinition<u64, u64> = TableDefinition::new("horizons");
/// The store's own values (`trusted_since`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TRUSTED_SINCE: &str = "trusted_since";

/// Any error of the database or of what it holds, to be reported.
pub(crate) type DbError = Box<dyn std::error::Error + Send + Sync>;

/// The database's page cache: the hub holds the retained messages in memory, so the store
/// only needs enough for the pages a commit touches.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Trims of at most this many messages delete them one by one rather than as a range (measured
/// with `benches/engines.rs`: a range deletion of one message costs about twice a removal).
const REMOVE_ONE_BY_ONE: u64 = 64;

/// The open database of a data directory.
#[derive(Debug)]
pub(crate) struct Engine {
    db: Database,
    /// Per topic, the first sequence the store keeps, as far as this process has trimmed it,
    /// so that a publish that drops nothing deletes nothing.
    kept_from: HashMap<TopicName, u64>,
}

fn engine_error(directory: &Directory, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!(
        "data directory {}: its database cannot be used ({e}); refusing to start, and nothing \
         was changed",
        directory.path().display()
    ))
}

impl Engine {
    /// Opens the directory's database (creating it in a new directory) and reads it back.
    pub(crate) fn open(directory: &Directory) -> Result<(Engine, Restored), StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let file = directory.database();
        let db = if directory.new {
            builder.create(&file)
        } else if file.exists() {
            builder.open(&file)
        } else {
            return Err(engine_error(directory, "history.redb is missing"));
        }
        .map_err(|e| engine_error(directory, e))?;
        let engine = Engine {
            db,
            kept_from: HashMap::new(),
        };
        if directory.new {
            engine
                .create_tables()
                .map_err(|e| engine_error(directory, e))?;
        }
        let restored = engine.read_back().map_err(|e| engine_error(directory, e))?;
        Ok((engine, restored))
    }

    fn create_tables(&self) -> Result<(), DbError> {
        let txn = self.db.begin_write()?;
        txn.open_table(MESSAGES)?;
        txn.open_table(TOPICS)?;
        txn.open_table(HORIZONS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// Everything the store holds, checked.
    fn read_back(&self) -> Result<Restored, DbError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let topics = txn.open_table(TOPICS)?;
        let messages = txn.open_table(MESSAGES)?;
        let horizons = txn.open_table(HORIZONS)?;
        let mut restored = Restored {
            trusted_since: meta.get(TRUSTED_SINCE)?.map(|v| v.value()),
            ..Restored::default()
        };
        for entry in horizons.iter()? {
            let (bucket, horizon) = entry?;
            restored
                .horizons
                .push((bucket.value() as usize, horizon.value()));
        }
        for entry in topics.iter()? {
            let (name, header) = entry?;
            let name = decode_topic(name.value())?;
            let header = decode_header(header.value())?;
            let mut kept = Vec::new();
            let (low, high) = (message_key(&name, 0), message_key(&name, u64::MAX));
            for entry in messages.range(low.as_slice()..=high.as_slice())? {
                let (key, value) = entry?;
                let (_, seq) = decode_message_key(key.value())?;
                let (time_ms, data) = decode_message_value(value.value())?;
                kept.push(RestoredMessage { seq, time_ms, data });
            }
            check_contiguous(&name, header, &kept)?;
            restored.topics.push(RestoredTopic {
                name,
                epoch: header.epoch,
                last_seq: header.last_seq,
                messages: kept,
            });
        }
        if restored.trusted_since.is_none() && !restored.topics.is_empty() {
            return Err(Corrupt("topics are kept but not since when".into()).into());
        }
        Ok(restored)
    }

    /// Writes `changes` in one transaction, durable once this returns.
    pub(crate) fn commit(&mut self, changes: &[Change]) -> Result<(), DbError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut messages = txn.open_table(MESSAGES)?;
            let mut topics = txn.open_table(TOPICS)?;
            let mut headers: HashMap<&TopicName, Header> = HashMap::new();
            for change in changes {
                match change {
                    Change::Append(append) => {
                        let message = &append.message;
                        let topic = &message.topic;
                        let position = message.position;
                        let key = message_key(topic, position.seq);
                        let value = message_value(message.time_ms, message.data_json());
                        messages.insert(key.as_slice(), value.as_slice())?;
                        headers.insert(
                            topic,
                            Header {
                                epoch: position.epoch,
                                last_seq: position.seq,
                            },
                        );
                        self.trim(&mut messages, topic, append.keep_from)?;
                    }
                    Change::Trim { topic, keep_from } => {
                        self.trim(&mut messages, topic, *keep_from)?;
                    }
                    Change::Forget {
                        topic,
                        bucket,
                        horizon,
                    } => {
                        self.trim(&mut messages, topic, u64::MAX)?;
                        self.kept_from.remove(topic);
                        headers.remove(topic);
                        topics.remove(topic.as_str())?;
                        let mut horizons = txn.open_table(HORIZONS)?;
                        let bucket = *bucket as u64;
                        let earlier = horizons.get(bucket)?.map_or(0, |v| v.value());
                        horizons.insert(bucket, (*horizon).max(earlier))?;
                    }
                    Change::Created { trusted_since } => {
                        txn.open_table(META)?
                            .insert(TRUSTED_SINCE, *trusted_since)?;
                    }
                }
            }
            for (topic, header) in headers {
                topics.insert(topic.as_str(), header_value(header).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes the messages of `topic` before `keep_from`, unless this process already did.
    fn trim(
        &mut self,
        messages: &mut redb::Table<&[u8], &[u8]>,
        topic: &TopicName,
        keep_from: u64,
    ) -> Result<(), DbError> {
        let kept_from = self.kept_from.get(topic).copied().unwrap_or(0);
        if keep_from <= kept_from {
            return Ok(());
        }
        if keep_from - kept_from <= REMOVE_ONE_BY_ONE {
            // The usual trim, one message or a few: a range deletion costs redb twice as much.
            for seq in kept_from..keep_from {
                messages.remove(message_key(topic, seq).as_slice())?;
            }
        } else {
            let (low, high) = (message_key(topic, kept_from), message_key(topic, keep_from));
            messages.retain_in(low.as_slice()..high.as_slice(), |_, _| false)?;
        }
        self.kept_from.insert(topic.clone(), keep_from);
        Ok(())
    }
}

/// Checks that a topic's messages are contiguous and end at its last sequence.
fn check_contiguous(
    name: &TopicName,
    header: Header,
    kept: &[RestoredMessage],
) -> Result<(), Corrupt> {
    let contiguous = kept.windows(2).all(|w| w[1].seq == w[0].seq + 1);
    let ends_right = kept
        .last()
        .is_none_or(|m| m.seq == header.last_seq && kept[0].seq >= 1);
    if contiguous && ends_right {
        Ok(())
    } else {
        Err(Corrupt(format!(
            "the messages kept of topic {name} do not run up to its last sequence {} without a \
             gap",
            header.last_seq
        )))
    }
}
