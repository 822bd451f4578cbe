//! The hub's time: where it reads it (the system clock, or in tests a clock they move by
//! hand), and the strictly increasing clock values it makes epochs and horizons of.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the hub reads the time: publish times, the age of retained messages, how long a
/// topic has been idle, and epochs.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> u64;

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.now_micros() / 1000
    }
}

/// The system's clock, the hub's unless it is given another.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

/// A clock that stands still until it is told to move, so that a test decides exactly how
/// much time passes between two events instead of sleeping.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicU64,
}

impl ManualClock {
    /// Stopped at the system clock's time now, so that positions and times look like real
    /// ones.
    pub fn new() -> Arc<ManualClock> {
        ManualClock::starting_at(SystemClock.now_micros())
    }

    /// Stopped at `micros` since the Unix epoch.
    pub fn starting_at(micros: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            micros: AtomicU64::new(micros),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(by, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        self.micros.load(Ordering::Acquire)
    }
}

/// Clock values in microseconds, strictly increasing however fast they are taken and whatever
/// the clock does, so that a topic forgotten and created again always gets a new epoch.
#[derive(Debug)]
pub(super) struct Ticks {
    clock: Arc<dyn Clock>,
    /// The last value handed out.
    last: AtomicU64,
}

impl Ticks {
    /// Starts strictly after every value an earlier hub on the same clock could have handed
    /// out by now, so that even a position taken in the same microsecond belongs to the past,
    /// and after `floor` (the largest value a store kept), whatever the clock says.
    pub(super) fn new(clock: Arc<dyn Clock>, floor: u64) -> Ticks {
        let start = clock.now_micros().max(floor) + 1;
        Ticks {
            clock,
            last: AtomicU64::new(start),
        }
    }

    /// The clock's time in milliseconds, for publish times and ages.
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A new clock value, greater than every one before.
    pub(super) fn tick(&self) -> u64 {
        let now = self.clock.now_micros();
        let previous = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(0);
        now.max(previous + 1)
    }

    /// The clock value now, without taking a new one.
    pub(super) fn now(&self) -> u64 {
        self.clock
            .now_micros()
            .max(self.last.load(Ordering::Acquire))
    }
}
