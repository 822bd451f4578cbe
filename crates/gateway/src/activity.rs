//! Counters of what the gateway's clients do, in one place: plain atomics that the admin API,
//! the dashboard and the metrics can all read. Each is bumped where it happens, once per
//! publish, reset or ending; deliveries once per wake-up of a connection, not per message.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::connections::Transport;

/// Totals since the gateway started.
#[derive(Debug, Default)]
pub struct Activity {
    /// Messages this node accepted from publishers, over every transport.
    pub published: AtomicU64,
    /// Messages written to subscribers, by [`Transport::index`].
    pub deliveries: [AtomicU64; 3],
    /// Resets sent to subscribers (any reason).
    pub resets: AtomicU64,
    /// Connections ended because their queue overflowed.
    pub slow_consumers: AtomicU64,
    /// Connections ended by an operator (`POST /admin/disconnect`).
    pub disconnected: AtomicU64,
}

impl Activity {
    pub fn delivered(&self, transport: Transport, count: u64) {
        if count > 0 {
            self.deliveries[transport.index()].fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Every counter now, for a snapshot.
    pub fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
