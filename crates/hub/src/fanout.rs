//! The subscribers of one topic on this node, and the delivery of a message to all of them:
//! the local fan-out that every broker shares, whatever gives messages their positions.

use std::sync::Arc;

use crate::inbox::{Delivery, INBOX_KINDS, Inbox, InboxSender, Restart};
use crate::message::Message;

/// The inboxes following one topic. Not synchronised: its owner keeps it under the topic's
/// lock, so that joining (read, then register) is atomic with delivery.
#[derive(Debug, Default)]
pub struct Subscribers {
    inboxes: Vec<Arc<InboxSender>>,
}

impl Subscribers {
    /// Adds `inbox` unless it is already there.
    pub fn add(&mut self, inbox: &Inbox) {
        if !self.inboxes.iter().any(|s| Arc::as_ptr(s) == inbox.ptr()) {
            self.inboxes.push(inbox.sender.clone());
        }
    }

    pub fn remove(&mut self, inbox: &Inbox) {
        self.inboxes.retain(|s| Arc::as_ptr(s) != inbox.ptr());
    }

    pub fn is_empty(&self) -> bool {
        self.inboxes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.inboxes.len()
    }

    /// Queues `message` for every subscriber, dropping those that are gone or overflow;
    /// returns how many overflowed (the slow consumers).
    pub fn deliver(&mut self, message: &Arc<Message>) -> u64 {
        let mut overflowed = 0;
        let mut gone = false;
        for subscriber in &self.inboxes {
            match subscriber.deliver(message) {
                Delivery::Queued => {}
                Delivery::Overflowed => {
                    overflowed += 1;
                    gone = true;
                }
                Delivery::Gone => gone = true,
            }
        }
        if gone {
            self.prune();
        }
        overflowed
    }

    /// How many subscribers there are of each inbox kind. Counted when asked (for operators),
    /// so that subscribing and delivering pay nothing for it.
    pub fn by_kind(&self) -> [usize; INBOX_KINDS] {
        let mut counts = [0; INBOX_KINDS];
        for subscriber in &self.inboxes {
            counts[usize::from(subscriber.kind)] += 1;
        }
        counts
    }

    /// Tells every subscriber that the topic has a new history (see [`Restart`]).
    pub fn restart(&self, restart: &Restart) {
        for subscriber in &self.inboxes {
            subscriber.restart(restart.clone());
        }
    }

    /// Drops the subscribers whose connection has gone or overflowed.
    pub fn prune(&mut self) {
        self.inboxes.retain(|s| s.is_open());
    }
}
