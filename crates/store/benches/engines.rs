//! redb and fjall on the store's publish path: each commit writes a batch of messages, trims
//! each topic to its retention, and is made durable (fsync) before the next one, as the writer
//! does. redb is measured twice: with a key per message (a B-tree insertion and deletion each),
//! and as the store uses it, a log of records of up to a page (`encoding`), whose oldest are
//! deleted once dead. Prints messages per second, the latency
//! of a commit and the CPU time per message (the process's, background threads included) for
//! each engine and batch size.
//!
//! `cargo bench -p switchboard-store --bench engines` (figures in bench/README.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchboard_hub::TopicName;
use switchboard_store::encoding::{Entry, new_record, write_entry};

/// Messages written per engine and batch size.
const MESSAGES: u64 = 20_000;
const TOPICS: u64 = 100;
/// Messages retained per topic: older ones are deleted as new ones come.
const RETAINED: u64 = 100;
/// The payload of each message, about a chat line.
const DATA: &str = "\"a message of about one hundred bytes, as a chat line or a small JSON event would be........\"";

/// A message's key with a key per message: its topic's name, prefixed by its length, then its
/// sequence, big-endian.
fn message_key(topic: &TopicName, seq: u64) -> Vec<u8> {
    let name = topic.as_str().as_bytes();
    let mut key = vec![name.len() as u8];
    key.extend_from_slice(name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A message's value with a key per message: its time, then its data.
fn message_value(time_ms: u64, data: &str) -> Vec<u8> {
    let mut value = time_ms.to_be_bytes().to_vec();
    value.extend_from_slice(data.as_bytes());
    value
}

trait Engine {
    fn name(&self) -> &'static str;
    /// Writes `batch` (topic, seq) messages, deletes what they push out of retention, and makes
    /// it durable.
    fn commit(&mut self, batch: &[(TopicName, u64)]);
}

struct Redb(redb::Database);

const MESSAGES_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("m");

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn commit(&mut self, batch: &[(TopicName, u64)]) {
        let mut txn = self.0.begin_write().expect("begin");
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut table = txn.open_table(MESSAGES_TABLE).expect("table");
            for (topic, seq) in batch {
                let key = message_key(topic, *seq);
                table
                    .insert(key.as_slice(), message_value(0, DATA).as_slice())
                    .expect("insert");
                if *seq > RETAINED {
                    let old = message_key(topic, seq - RETAINED);
                    table.remove(old.as_slice()).expect("remove");
                }
            }
        }
        txn.commit().expect("commit");
    }
}

/// The store's layout: records of up to a page, numbered; a commit's entries fill records in
/// turn, and the records whose messages all left retention are deleted, oldest first.
struct RedbLog {
    db: redb::Database,
    next_record: u64,
    /// Per record kept, the last message (in the order written) it holds.
    records: std::collections::VecDeque<(u64, u64)>,
    written: u64,
}

const LOG_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("l");

/// What the store's `RECORD_BYTES` is.
const RECORD_BYTES: usize = 4000;

impl Engine for RedbLog {
    fn name(&self) -> &'static str {
        "redb (log)"
    }

    fn commit(&mut self, batch: &[(TopicName, u64)]) {
        let mut txn = self.db.begin_write().expect("begin");
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut table = txn.open_table(LOG_TABLE).expect("table");
            let mut record = new_record();
            for (topic, seq) in batch {
                let entry = Entry::Append {
                    topic: topic.clone(),
                    seq: *seq,
                    time_ms: 0,
                    data: DATA.as_bytes(),
                };
                write_entry(&mut record, &entry);
                self.written += 1;
                if record.len() > RECORD_BYTES {
                    table
                        .insert(self.next_record, record.as_slice())
                        .expect("insert");
                    self.records.push_back((self.next_record, self.written));
                    self.next_record += 1;
                    record = new_record();
                }
            }
            if record.len() > 1 {
                table
                    .insert(self.next_record, record.as_slice())
                    .expect("insert");
                self.records.push_back((self.next_record, self.written));
                self.next_record += 1;
            }
            // Messages are spread evenly over the topics: the oldest record is dead once
            // `RETAINED` messages of each topic were written after its last one.
            while let Some(&(number, last)) = self.records.front() {
                if self.written - last < RETAINED * TOPICS {
                    break;
                }
                table.remove(number).expect("remove");
                self.records.pop_front();
            }
        }
        txn.commit().expect("commit");
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    messages: fjall::PartitionHandle,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn commit(&mut self, batch: &[(TopicName, u64)]) {
        let mut writes = self.keyspace.batch();
        for (topic, seq) in batch {
            writes.insert(
                &self.messages,
                message_key(topic, *seq),
                message_value(0, DATA),
            );
            if *seq > RETAINED {
                writes.remove(&self.messages, message_key(topic, seq - RETAINED));
            }
        }
        writes.commit().expect("commit");
        self.keyspace
            .persist(fjall::PersistMode::SyncAll)
            .expect("fsync");
    }
}

fn scratch(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("switchboard-engines-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("mkdir");
    path
}

fn open(name: &str, path: &Path) -> Box<dyn Engine> {
    match name {
        "redb" => Box::new(Redb(
            redb::Database::create(path.join("history.redb")).expect("redb"),
        )),
        "redb (log)" => Box::new(RedbLog {
            db: redb::Database::create(path.join("history.redb")).expect("redb"),
            next_record: 0,
            records: std::collections::VecDeque::new(),
            written: 0,
        }),
        _ => {
            let keyspace = fjall::Config::new(path).open().expect("fjall");
            let messages = keyspace
                .open_partition("m", fjall::PartitionCreateOptions::default())
                .expect("partition");
            Box::new(Fjall { keyspace, messages })
        }
    }
}

fn directory_size(path: &Path) -> u64 {
    let mut size = 0;
    for entry in std::fs::read_dir(path).expect("list").flatten() {
        let meta = entry.metadata().expect("metadata");
        size += if meta.is_dir() {
            directory_size(&entry.path())
        } else {
            meta.len()
        };
    }
    size
}

/// CPU time of this process so far (all threads), in clock ticks of 10 ms.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces) start after its `)`.
    let after = &stat[stat.rfind(')').expect("a command") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn main() {
    let topics: Vec<TopicName> = (0..TOPICS)
        .map(|t| TopicName::new(&format!("topic-{t}")).expect("valid"))
        .collect();
    println!(
        "| engine | batch | messages/s | commit p50 | commit p99 | CPU µs / message | directory |"
    );
    println!("|---|---|---|---|---|---|---|");
    for batch_size in [1u64, 16, 256, 1024] {
        for name in ["redb", "redb (log)", "fjall"] {
            let path = scratch(&format!(
                "{}-{batch_size}",
                name.replace([' ', '(', ')'], "")
            ));
            let mut engine = open(name, &path);
            // Fewer messages for one commit each: an fsync apiece is slow.
            let messages = match batch_size {
                1 => MESSAGES / 10,
                1024 => MESSAGES * 5,
                _ => MESSAGES,
            };
            let mut commits: Vec<Duration> = Vec::new();
            let (started, ticks) = (Instant::now(), cpu_ticks());
            let mut n = 0;
            while n < messages {
                let batch: Vec<(TopicName, u64)> = (n..n + batch_size)
                    .map(|i| (topics[(i % TOPICS) as usize].clone(), i / TOPICS + 1))
                    .collect();
                let commit = Instant::now();
                engine.commit(&batch);
                commits.push(commit.elapsed());
                n += batch_size;
            }
            let elapsed = started.elapsed();
            let cpu_us = (cpu_ticks() - ticks) as f64 * 10_000.0;
            commits.sort();
            let at = |q: f64| commits[((commits.len() - 1) as f64 * q) as usize];
            println!(
                "| {} | {batch_size} | {:.0} | {:.2} ms | {:.2} ms | {:.1} | {:.1} MiB |",
                engine.name(),
                n as f64 / elapsed.as_secs_f64(),
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                cpu_us / n as f64,
                directory_size(&path) as f64 / (1 << 20) as f64,
            );
            drop(engine);
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
