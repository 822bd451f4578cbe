//! For tests with many messages in flight at once: what was published ([`Ledger`]), how what a
//! subscriber received compares with it ([`Tally`]: lost, duplicated, out of order, rather than
//! the first difference), and a tiny seeded random number generator ([`Rng`]) so that such
//! tests choose the same things on every run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::AddAssign;

use serde_json::Value;

/// The sequence number in a message id (`tag-epoch-seq`, the last part decimal: see
/// `crates/hub/src/position.rs`). Clients never need it; tests use it to know the order of a
/// topic's messages when several nodes publish them at once.
pub fn seq_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("{id:?} is not a position"))
}

/// The messages published, by topic.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    topics: BTreeMap<String, Vec<String>>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records that message `id` was published (acknowledged) on `topic`.
    pub fn record(&mut self, topic: &str, id: &str) {
        self.topics
            .entry(topic.to_owned())
            .or_default()
            .push(id.to_owned());
    }

    /// Everything `other` recorded, too.
    pub fn extend(&mut self, other: Ledger) {
        for (topic, ids) in other.topics {
            self.topics.entry(topic).or_default().extend(ids);
        }
    }

    /// The ids published on `topic`, in the order they were recorded.
    pub fn ids(&self, topic: &str) -> impl Iterator<Item = &String> {
        self.topics.get(topic).into_iter().flatten()
    }

    /// How many messages were published.
    pub fn len(&self) -> usize {
        self.topics.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compares `received` (envelopes, in the order a subscriber got them) with what was
    /// published: every message once, each topic's in the order of their sequence numbers.
    pub fn tally(&self, received: &[Value]) -> Tally {
        // Each topic's ids in their order there, and where each one stands in it.
        let order: HashMap<&str, HashMap<&str, usize>> = self
            .topics
            .iter()
            .map(|(topic, ids)| {
                let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                ids.sort_by_key(|id| seq_of(id));
                let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                (topic.as_str(), index)
            })
            .collect();
        let mut tally = Tally {
            received: received.len(),
            ..Tally::default()
        };
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut highest: HashMap<&str, usize> = HashMap::new();
        for envelope in received {
            let (Some(topic), Some(id)) = (envelope["topic"].as_str(), envelope["id"].as_str())
            else {
                tally.unexpected += 1;
                continue;
            };
            let Some(&index) = order.get(topic).and_then(|ids| ids.get(id)) else {
                tally.unexpected += 1;
                continue;
            };
            if !seen.insert((topic, id)) {
                tally.duplicated += 1;
                continue;
            }
            match highest.get_mut(topic) {
                Some(highest) if index < *highest => tally.out_of_order += 1,
                Some(highest) => *highest = index,
                None => {
                    highest.insert(topic, index);
                }
            }
        }
        tally.lost = self.len() - seen.len();
        tally
    }
}

/// How what one subscriber (or several, added up) received compares with what was published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Messages received, all told.
    pub received: usize,
    /// Published and never received.
    pub lost: usize,
    /// Received again after the first time.
    pub duplicated: usize,
    /// Received after a later message of the same topic.
    pub out_of_order: usize,
    /// Received and never published (or not a message at all).
    pub unexpected: usize,
}

impl Tally {
    /// Nothing lost, duplicated, out of order or unexpected.
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.unexpected == 0
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} received: {} lost, {} duplicated, {} out of order, {} unexpected",
            self.received, self.lost, self.duplicated, self.out_of_order, self.unexpected
        )
    }
}

/// SplitMix64: a seeded generator, good enough to pick nodes, transports and moments, and the
/// same picks on every run with the same seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `range` (not empty).
    pub fn between(&mut self, range: std::ops::Range<usize>) -> usize {
        range.start + self.below(range.len())
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A generator of its own, for a task, drawn from this one.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(topic: &str, seq: u64) -> Value {
        json!({"topic": topic, "id": format!("t-e-{seq}"), "data": seq, "time": 0})
    }

    #[test]
    fn counts_each_kind_of_difference() {
        let mut ledger = Ledger::new();
        // Acknowledged out of sequence order (several publishers): the order is the sequence.
        for seq in [2, 1, 3, 4, 5] {
            ledger.record("a", &format!("t-e-{seq}"));
        }
        ledger.record("b", "t-e-1");
        let exact: Vec<Value> = (1..=5)
            .map(|seq| envelope("a", seq))
            .chain([envelope("b", 1)])
            .collect();
        assert!(ledger.tally(&exact).is_exact(), "{}", ledger.tally(&exact));

        let received = [
            envelope("a", 1),
            envelope("b", 1),
            envelope("a", 3),
            envelope("a", 2),
            envelope("a", 3),
            envelope("c", 1),
        ];
        assert_eq!(
            ledger.tally(&received),
            Tally {
                received: 6,
                lost: 2,
                duplicated: 1,
                out_of_order: 1,
                unexpected: 1,
            }
        );
    }

    #[test]
    fn the_generator_repeats_itself() {
        let (mut one, mut two) = (Rng::new(7), Rng::new(7));
        let draws: Vec<usize> = (0..100).map(|_| one.below(10)).collect();
        assert_eq!(draws, (0..100).map(|_| two.below(10)).collect::<Vec<_>>());
        assert!((0..10).all(|n| draws.contains(&n)), "{draws:?}");
    }
}
