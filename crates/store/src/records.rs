//! The records of the log as a commit writes them, and how much of each is live.

use std::collections::BTreeMap;

use crate::encoding::{Entry, is_empty, new_record, write_entry};

/// The most a record holds, unless one entry is larger: a record fits a page of the database
/// (4 KiB), so that it never needs a larger allocation, which the database rounds up to a power
/// of two pages, and freeing one frees a page another record can take.
const RECORD_BYTES: usize = 4000;

/// The size of each record and how much of it is live (still needed at start-up).
#[derive(Debug, Default)]
pub(crate) struct Sizes {
    pub(crate) records: BTreeMap<u64, RecordSize>,
    /// The bytes of all records written.
    pub(crate) bytes: u64,
    /// The live bytes of all records, the one being written included.
    pub(crate) live: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RecordSize {
    pub(crate) bytes: u64,
    pub(crate) live: u64,
}

impl Sizes {
    /// Counts the entry at `place` as live: written by a commit, or read back at start-up.
    pub(crate) fn add_live(&mut self, place: Place) {
        self.records.entry(place.record).or_default().live += place.bytes;
        self.live += place.bytes;
    }

    /// Counts the entry at `place` as dead: replaced, trimmed or forgotten.
    pub(crate) fn drop_live(&mut self, place: Place) {
        if let Some(size) = self.records.get_mut(&place.record) {
            size.live -= place.bytes;
        }
        self.live -= place.bytes;
    }
}

/// Where an entry is in the log: its record and its size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    pub(crate) record: u64,
    pub(crate) bytes: u64,
}

/// A retained message's sequence and where its entry is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kept {
    pub(crate) seq: u64,
    pub(crate) at: Place,
}

/// The records one commit writes, numbered on from the log's last: entries fill a record up
/// to `RECORD_BYTES`, then the next one.
#[derive(Debug)]
pub(crate) struct Records {
    /// The number of this commit's first record: the ones before it may be cleaned.
    pub(crate) first: u64,
    /// The records filled, by number.
    full: Vec<(u64, Vec<u8>)>,
    /// The number of the record being filled.
    number: u64,
    current: Vec<u8>,
}

impl Records {
    pub(crate) fn new(first: u64) -> Records {
        Records {
            first,
            full: Vec::new(),
            number: first,
            current: Records::empty(),
        }
    }

    /// A new record, with room for a full one.
    fn empty() -> Vec<u8> {
        let mut record = Vec::with_capacity(RECORD_BYTES + 256);
        record.extend_from_slice(&new_record());
        record
    }

    /// Writes `entry`; returns where it went: the record's number and the entry's size.
    pub(crate) fn write(&mut self, entry: &Entry<'_>) -> Place {
        let before = self.current.len();
        let bytes = write_entry(&mut self.current, entry);
        if !is_empty(&self.current[..before]) && self.current.len() > RECORD_BYTES {
            let entry = self.current.split_off(before);
            let full = std::mem::replace(&mut self.current, Records::empty());
            self.full.push((self.number, full));
            self.number += 1;
            self.current.extend_from_slice(&entry);
        }
        Place {
            record: self.number,
            bytes: bytes as u64,
        }
    }

    /// The bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        let full: usize = self.full.iter().map(|(_, r)| r.len()).sum();
        (full + self.current.len()) as u64
    }

    /// The records to insert, by number.
    pub(crate) fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
        if !is_empty(&self.current) {
            self.full.push((self.number, self.current));
        }
        self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_hub::TopicName;

    fn append(data: &str) -> Entry<'_> {
        Entry::Append {
            topic: TopicName::new("t").expect("valid"),
            seq: 1,
            time_ms: 0,
            data: data.as_bytes(),
        }
    }

    #[test]
    fn entries_fill_a_record_up_to_a_page_and_a_larger_one_goes_alone() {
        let mut out = Records::new(7);
        let small = "x".repeat(900);
        let written: Vec<Place> = (0..5).map(|_| out.write(&append(&small))).collect();
        // Four entries of about 930 bytes fit in 4,000; the fifth starts record 8.
        let numbers: Vec<u64> = written.iter().map(|place| place.record).collect();
        assert_eq!(numbers, [7, 7, 7, 7, 8]);
        let large = "y".repeat(10_000);
        let Place { record, bytes } = out.write(&append(&large));
        assert_eq!(record, 9, "a large entry starts a record of its own");
        assert!(bytes > 10_000);
        let Place {
            record,
            bytes: last,
        } = out.write(&append("1"));
        assert_eq!(record, 10, "and what follows goes on in the next");
        let records = out.finish();
        let numbers: Vec<u64> = records.iter().map(|(number, _)| *number).collect();
        assert_eq!(numbers, [7, 8, 9, 10]);
        assert!(records[0].1.len() <= RECORD_BYTES);
        let entries: u64 = written.iter().map(|place| place.bytes).sum::<u64>() + bytes + last;
        let total: usize = records.iter().map(|(_, record)| record.len() - 1).sum();
        assert_eq!(
            total as u64, entries,
            "every byte past the format bytes is an entry's"
        );
    }
}
