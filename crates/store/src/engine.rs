//! The embedded database (redb) and the log the store keeps in it: writing a commit's records,
//! reading the log back at start-up, and cleaning it (deleting its oldest records once what
//! they hold is dead or carried forward).
//!
//! Records of up to a page make a commit one insertion per page of what it appends, where a
//! key per message cost redb a B-tree insertion and a deletion each (bench/README.md,
//! *Engines*). The hub keeps the retained messages in memory and reads the store only at
//! start-up, so nothing needs a message's own key.

use std::collections::{HashMap, VecDeque};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use switchboard_hub::{Change, Restored, RestoredMessage, RestoredTopic, TopicName};

use crate::StoreError;
use crate::directory::Directory;
use crate::encoding::{Corrupt, Entry, read_record};
use crate::records::{Kept, Place, RecordSize, Records, Sizes};
use crate::replay::{Replayed, check_contiguous, replay_entry};

/// The log: records by number, oldest first (`encoding`); a commit writes one or a few.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
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

/// How many more dead bytes than live ones the log may hold before a commit carries the live
/// part of its oldest records forward: the log stays within twice what it must keep plus
/// this, and a small log is never rewritten for a few bytes.
const DEAD_BYTES_ALLOWED: u64 = 64 * 1024;

/// The least a commit may carry forward when the log needs cleaning; it may carry twice what
/// it appends, so that cleaning keeps up with writing while a commit stays short.
const CARRY_AT_LEAST: u64 = 64 * 1024;

/// The open database of a data directory, and what the log holds, to clean it.
#[derive(Debug)]
pub(crate) struct Engine {
    db: Database,
    /// The number of the next record.
    next_record: u64,
    sizes: Sizes,
    /// Per topic the log holds, where its position and messages are.
    topics: HashMap<TopicName, TopicLog>,
}

/// What the log holds of a topic.
#[derive(Debug)]
struct TopicLog {
    epoch: u64,
    last_seq: u64,
    /// The first sequence kept: a trim to it or before it changes nothing.
    kept_from: u64,
    /// The topic's latest `Position` entry: its record and size.
    position: Place,
    /// The messages kept, by sequence: the record of each and its entry's size.
    messages: VecDeque<Kept>,
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
        let mut engine = Engine {
            db,
            next_record: 0,
            sizes: Sizes::default(),
            topics: HashMap::new(),
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
        txn.open_table(LOG)?;
        txn.open_table(HORIZONS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// Replays the log, checks what it holds, and learns where each live entry is.
    fn read_back(&mut self) -> Result<Restored, DbError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let log = txn.open_table(LOG)?;
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
        let mut replay: HashMap<TopicName, Replayed> = HashMap::new();
        for record in log.iter()? {
            let (number, value) = record?;
            let (number, value) = (number.value(), value.value());
            self.sizes.records.insert(
                number,
                RecordSize {
                    bytes: value.len() as u64,
                    live: 0,
                },
            );
            self.sizes.bytes += value.len() as u64;
            self.next_record = number + 1;
            for (entry, bytes) in read_record(value)? {
                let at = Place {
                    record: number,
                    bytes: bytes as u64,
                };
                replay_entry(&mut replay, entry, at)?;
            }
        }
        for (name, topic) in replay {
            let epoch = topic
                .epoch
                .ok_or_else(|| Corrupt(format!("topic {name} has no position")))?;
            let position = topic
                .position
                .ok_or_else(|| Corrupt(format!("topic {name} has no position")))?;
            check_contiguous(&name, topic.last_seq, &topic.messages)?;
            self.sizes.add_live(position);
            let mut kept = VecDeque::with_capacity(topic.messages.len());
            let mut messages = Vec::with_capacity(topic.messages.len());
            for (seq, message) in topic.messages {
                self.sizes.add_live(message.at);
                kept.push_back(Kept {
                    seq,
                    at: message.at,
                });
                messages.push(RestoredMessage {
                    seq,
                    time_ms: message.time_ms,
                    data: message.data,
                });
            }
            self.topics.insert(
                name.clone(),
                TopicLog {
                    epoch,
                    last_seq: topic.last_seq,
                    kept_from: kept.front().map_or(topic.last_seq + 1, |m| m.seq),
                    position,
                    messages: kept,
                },
            );
            restored.topics.push(RestoredTopic {
                name,
                epoch,
                last_seq: topic.last_seq,
                messages,
            });
        }
        restored.topics.sort_by(|a, b| a.name.cmp(&b.name));
        if restored.trusted_since.is_none() && !restored.topics.is_empty() {
            return Err(Corrupt("topics are kept but not since when".into()).into());
        }
        Ok(restored)
    }

    /// Writes `changes` as records in one transaction, durable once this returns, and cleans
    /// the log as far as this commit may.
    pub(crate) fn commit(&mut self, changes: &[Change]) -> Result<(), DbError> {
        let mut out = Records::new(self.next_record);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut log = txn.open_table(LOG)?;
            let survives = survivors(changes);
            for (change, survives) in changes.iter().zip(survives) {
                match change {
                    Change::Append(append) => {
                        let message = &append.message;
                        let (topic, position) = (&message.topic, message.position);
                        if self.topics.get(topic).map(|t| t.epoch) != Some(position.epoch) {
                            // A topic new to the log, or one whose epoch changed (deleted
                            // topics go on in a new one): what came before is void.
                            self.forget(&mut out, topic);
                            self.start(&mut out, topic, position.epoch, position.seq);
                        }
                        let log = self.topics.get_mut(topic).expect("started above");
                        log.last_seq = position.seq;
                        // A message this commit also drops is not written: the trim that
                        // drops it is, and says how far its topic went.
                        if survives {
                            let at = out.write(&Entry::Append {
                                topic: topic.clone(),
                                seq: position.seq,
                                time_ms: message.time_ms,
                                data: message.data_bytes(),
                            });
                            self.sizes.add_live(at);
                            log.messages.push_back(Kept {
                                seq: position.seq,
                                at,
                            });
                        }
                        self.trim(&mut out, topic, append.keep_from);
                    }
                    Change::Trim { topic, keep_from } => {
                        self.trim(&mut out, topic, *keep_from);
                    }
                    Change::Forget {
                        topic,
                        bucket,
                        horizon,
                    } => {
                        self.forget(&mut out, topic);
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
            self.clean(&mut log, &mut out)?;
            for (number, record) in out.finish() {
                log.insert(number, record.as_slice())?;
                self.sizes.records.entry(number).or_default().bytes = record.len() as u64;
                self.sizes.bytes += record.len() as u64;
                self.next_record = number + 1;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Writes the `Position` that starts `topic` in `epoch` before message `seq`.
    fn start(&mut self, out: &mut Records, topic: &TopicName, epoch: u64, seq: u64) {
        let last_seq = seq.saturating_sub(1);
        let position = out.write(&Entry::Position {
            topic: topic.clone(),
            epoch,
            last_seq,
        });
        self.sizes.add_live(position);
        self.topics.insert(
            topic.clone(),
            TopicLog {
                epoch,
                last_seq,
                kept_from: seq,
                position,
                messages: VecDeque::new(),
            },
        );
    }

    /// Drops the messages of `topic` before `keep_from`, unless that drops nothing.
    fn trim(&mut self, out: &mut Records, topic: &TopicName, keep_from: u64) {
        let Some(log) = self.topics.get_mut(topic) else {
            return;
        };
        if keep_from <= log.kept_from {
            return;
        }
        log.kept_from = keep_from;
        // The entry is dead once written: the messages it drops are in its record or older
        // ones, which are deleted before it.
        out.write(&Entry::Trim {
            topic: topic.clone(),
            keep_from,
        });
        while let Some(&oldest) = log.messages.front() {
            if oldest.seq >= keep_from {
                break;
            }
            log.messages.pop_front();
            self.sizes.drop_live(oldest.at);
        }
    }

    /// Forgets `topic`, if the log holds it.
    fn forget(&mut self, out: &mut Records, topic: &TopicName) {
        let Some(log) = self.topics.remove(topic) else {
            return;
        };
        for message in log.messages {
            self.sizes.drop_live(message.at);
        }
        self.sizes.drop_live(log.position);
        // Dead once written, as a trim is.
        out.write(&Entry::Forget {
            topic: topic.clone(),
        });
    }

    /// Deletes the oldest records while the log holds too much that is dead, carrying what is
    /// live in them into this commit's records, as far as this commit may carry.
    fn clean(
        &mut self,
        log: &mut redb::Table<u64, &[u8]>,
        out: &mut Records,
    ) -> Result<(), DbError> {
        let mut allowance = CARRY_AT_LEAST.max(2 * out.written());
        while let Some((&oldest, &size)) = self.sizes.records.first_key_value() {
            if oldest >= out.first || allowance == 0 {
                break;
            }
            let writing: u64 = self
                .sizes
                .records
                .range(out.first..)
                .map(|(_, r)| r.live)
                .sum();
            let live = self.sizes.live - writing;
            let dead = self.sizes.bytes - live;
            if size.live > 0 && dead <= live + DEAD_BYTES_ALLOWED {
                break;
            }
            self.carry_forward(log, oldest, out)?;
            allowance = allowance.saturating_sub(size.bytes);
        }
        Ok(())
    }

    /// Writes what is live in record `oldest` into this commit's records and deletes it.
    fn carry_forward(
        &mut self,
        log: &mut redb::Table<u64, &[u8]>,
        oldest: u64,
        out: &mut Records,
    ) -> Result<(), DbError> {
        // A record with nothing live holds no retained message and no topic's latest
        // position: it is deleted without being read (most records end so).
        let nothing_live = self.sizes.records.get(&oldest).is_none_or(|r| r.live == 0);
        if !nothing_live {
            let value = log
                .get(oldest)?
                .ok_or_else(|| Corrupt(format!("record {oldest} is missing")))?;
            for (entry, _) in read_record(value.value())? {
                let Some(topic) = self.topics.get_mut(entry.topic()) else {
                    continue;
                };
                if topic.position.record == oldest {
                    let moved = out.write(&Entry::Position {
                        topic: entry.topic().clone(),
                        epoch: topic.epoch,
                        last_seq: topic.last_seq,
                    });
                    self.sizes.drop_live(topic.position);
                    self.sizes.add_live(moved);
                    topic.position = moved;
                }
                if let Entry::Append { seq, .. } = entry
                    && let Ok(index) = topic.messages.binary_search_by_key(&seq, |m| m.seq)
                    && topic.messages[index].at.record == oldest
                {
                    let moved = out.write(&entry);
                    let kept = &mut topic.messages[index];
                    self.sizes.drop_live(kept.at);
                    self.sizes.add_live(moved);
                    kept.at = moved;
                }
            }
        }
        log.remove(oldest)?;
        let size = self.sizes.records.remove(&oldest).unwrap_or_default();
        debug_assert_eq!(
            size.live, 0,
            "all that was live in record {oldest} was carried"
        );
        self.sizes.bytes -= size.bytes;
        Ok(())
    }
}

/// For each change, whether what it appends is still kept at the end of `changes`: not
/// dropped by a later trim (or its own) nor by its topic being forgotten.
fn survivors(changes: &[Change]) -> Vec<bool> {
    // From the last change back: the first sequence of each topic that nothing later drops.
    let mut kept_from: HashMap<&TopicName, u64> = HashMap::new();
    let mut survives = vec![true; changes.len()];
    for (at, change) in changes.iter().enumerate().rev() {
        match change {
            Change::Append(append) => {
                let topic = &append.message.topic;
                let from = kept_from.entry(topic).or_default();
                *from = (*from).max(append.keep_from);
                survives[at] = append.message.position.seq >= *from;
            }
            Change::Trim { topic, keep_from } => {
                let from = kept_from.entry(topic).or_default();
                *from = (*from).max(*keep_from);
            }
            Change::Forget { topic, .. } => {
                kept_from.insert(topic, u64::MAX);
            }
            Change::Created { .. } => {}
        }
    }
    survives
}
