//! Measurement state shared by every task of one workload run.
//!
//! The generator runs on a single-threaded runtime (see `main`), so all of this is plain
//! `Cell`/`RefCell`: recording a delivery costs a few loads and stores, no atomics, no locks —
//! the instrument must stay far cheaper than the server it measures.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks exactly (60 s, in µs); larger values are clamped.
const HIST_MAX_US: u64 = 60_000_000;

/// Counters and the latency histogram of one run.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Time base of the `bt` timestamps carried in payloads. Publisher and subscribers live in
    /// this one process, so a monotonic clock gives exact publish→deliver latency.
    pub(crate) base: Instant,
    /// Publish→deliver latency in µs, over measured (non-warm-up) messages.
    pub(crate) hist: RefCell<Histogram<u64>>,
    /// First-time deliveries of measured messages.
    pub(crate) delivered: Cell<u64>,
    /// Measured messages a subscriber received again.
    pub(crate) duplicated: Cell<u64>,
    /// Measured messages that filled a gap (arrived after a later one).
    pub(crate) out_of_order: Cell<u64>,
    /// Resets announced by the server (switchboard's `reset` frames/events/entries).
    pub(crate) resets: Cell<u64>,
    /// Subscribers that have received a warm-up message, i.e. whose subscription is live.
    pub(crate) ready: Cell<u64>,
    /// Subscribers whose connection (and, where the protocol says so, subscription) is up.
    pub(crate) connected: Cell<u64>,
    /// Subscribers whose connection or subscription could not be set up.
    pub(crate) connect_failed: Cell<u64>,
    /// Subscribers whose stream ended while the run was still going.
    pub(crate) dropped: Cell<u64>,
    /// When the last measured message arrived: the end of a run's delivery window.
    pub(crate) last_delivery: Cell<Instant>,
    /// Error kind → count: what went wrong, for the report, without flooding the terminal.
    pub(crate) errors: RefCell<BTreeMap<String, u64>>,
    /// Set when the run is being torn down: stream ends are then expected, not failures.
    pub(crate) stopping: Cell<bool>,
}

impl Shared {
    /// Empty counters; `base` (the payloads' clock) starts now.
    pub(crate) fn new() -> Self {
        let base = Instant::now();
        Self {
            base,
            hist: RefCell::new(new_histogram()),
            delivered: Cell::new(0),
            duplicated: Cell::new(0),
            out_of_order: Cell::new(0),
            resets: Cell::new(0),
            ready: Cell::new(0),
            connected: Cell::new(0),
            connect_failed: Cell::new(0),
            dropped: Cell::new(0),
            last_delivery: Cell::new(base),
            errors: RefCell::new(BTreeMap::new()),
            stopping: Cell::new(false),
        }
    }

    /// Microseconds since `base`: the clock written into payloads.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts one error under its message (which therefore must not vary per occurrence).
    pub(crate) fn error(&self, kind: impl Into<String>) {
        *self.errors.borrow_mut().entry(kind.into()).or_insert(0) += 1;
    }

    /// Starts a new latency measurement (each flow run and saturation step has its own).
    pub(crate) fn reset_histogram(&self) {
        self.hist.borrow_mut().reset();
    }

    /// Records one payload seen by subscriber `t`.
    ///
    /// Sequence 0 is the warm-up marker: it proves the subscription is live and is not measured.
    pub(crate) fn on_payload(&self, t: &RefCell<Tracker>, seq: u64, sent_us: u64) {
        let mut t = t.borrow_mut();
        if seq == 0 {
            if !t.warm {
                t.warm = true;
                self.ready.set(self.ready.get() + 1);
            }
            return;
        }
        if !t.warm {
            // A measured message before any warm-up: the subscription is live all the same.
            t.warm = true;
            self.ready.set(self.ready.get() + 1);
        }
        let now = Instant::now();
        match t.observe(seq) {
            Seen::New => {
                let lat = u64::try_from(now.duration_since(self.base).as_micros())
                    .unwrap_or(u64::MAX)
                    .saturating_sub(sent_us)
                    .clamp(1, HIST_MAX_US);
                self.hist.borrow_mut().saturating_record(lat);
                self.delivered.set(self.delivered.get() + 1);
                self.last_delivery.set(now);
            }
            Seen::Late => {
                self.out_of_order.set(self.out_of_order.get() + 1);
                self.delivered.set(self.delivered.get() + 1);
                self.last_delivery.set(now);
            }
            Seen::Again => self.duplicated.set(self.duplicated.get() + 1),
        }
    }
}

/// A latency histogram: 1 µs to 60 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid, so construction cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).unwrap_or_else(|_| unreachable!())
}

/// What a sequence number meant to one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The next one, or one past a gap (the gap is remembered).
    New,
    /// Fills a gap: delivered, but after a later message.
    Late,
    /// Already delivered.
    Again,
}

/// Per-subscriber ordering state for its one topic.
///
/// Instead of a bitmap of every sequence (megabytes across thousands of subscribers) it keeps
/// the next expected sequence plus the list of still-missing ranges, which is empty in a
/// correct run, so per-message work is one compare.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// Index of the subscriber's topic in the run's topics.
    pub(crate) topic: u32,
    next: u64,
    /// Missing sequences as half-open ranges `[from, to)`, in ascending order.
    gaps: Vec<(u64, u64)>,
    /// Has received a message: its subscription is live.
    pub(crate) warm: bool,
}

impl Tracker {
    /// Nothing seen yet: sequence 1 is expected first.
    pub(crate) fn new(topic: u32) -> Self {
        Self {
            topic,
            next: 1,
            gaps: Vec::new(),
            warm: false,
        }
    }

    /// Records sequence `seq` and says what it meant.
    pub(crate) fn observe(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            return Seen::New;
        }
        if seq > self.next {
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            return Seen::New;
        }
        // seq < next: either fills a gap or was seen before.
        let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq < b) else {
            return Seen::Again;
        };
        let (a, b) = self.gaps[i];
        match (seq == a, seq + 1 == b) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].0 = a + 1,
            (false, true) => self.gaps[i].1 = seq,
            (false, false) => {
                self.gaps[i].1 = seq;
                self.gaps.insert(i + 1, (seq + 1, b));
            }
        }
        Seen::Late
    }

    /// Messages of `1..=published` this subscriber never received.
    pub(crate) fn missing(&self, published: u64) -> u64 {
        let in_gaps: u64 = self
            .gaps
            .iter()
            .map(|&(a, b)| b.min(published + 1).saturating_sub(a))
            .sum();
        in_gaps + published.saturating_sub(self.next - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_has_nothing_missing() {
        let mut t = Tracker::new(0);
        for s in 1..=10 {
            assert_eq!(t.observe(s), Seen::New);
        }
        assert_eq!(t.missing(10), 0);
        assert_eq!(t.missing(12), 2);
    }

    #[test]
    fn gaps_late_fills_and_duplicates() {
        let mut t = Tracker::new(0);
        assert_eq!(t.observe(1), Seen::New);
        assert_eq!(t.observe(5), Seen::New); // 2,3,4 missing
        assert_eq!(t.missing(5), 3);
        assert_eq!(t.observe(3), Seen::Late);
        assert_eq!(t.missing(5), 2);
        assert_eq!(t.observe(3), Seen::Again);
        assert_eq!(t.observe(2), Seen::Late);
        assert_eq!(t.observe(4), Seen::Late);
        assert_eq!(t.missing(5), 0);
        assert_eq!(t.observe(5), Seen::Again);
        assert_eq!(t.observe(1), Seen::Again);
    }
}
