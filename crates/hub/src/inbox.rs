//! The receiving end of one connection: a bounded queue that every topic it subscribes to
//! pushes into.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};

use crate::message::Message;

/// The sending side, held by every topic the connection is subscribed to.
#[derive(Debug)]
pub(crate) struct InboxSender {
    tx: mpsc::Sender<Arc<Message>>,
    /// Set when a message did not fit: from then on nothing more is queued, so the queue never
    /// has a hole, and the connection ends once it has sent what is queued.
    overflowed: AtomicBool,
    /// Wakes the connection when `overflowed` is set.
    overflow_notify: Notify,
}

/// What a publish did with one subscriber.
pub(crate) enum Delivery {
    Queued,
    /// The queue was full: the subscriber is now a slow consumer.
    Overflowed,
    /// The subscriber is gone or already overflowed: drop it from the topic.
    Gone,
}

impl InboxSender {
    pub(crate) fn is_open(&self) -> bool {
        !self.overflowed.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    pub(crate) fn deliver(&self, message: &Arc<Message>) -> Delivery {
        if self.overflowed.load(Ordering::Relaxed) {
            return Delivery::Gone;
        }
        match self.tx.try_send(message.clone()) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                self.overflow_notify.notify_one();
                Delivery::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

/// A connection's queue of messages from all its topics.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Arc<Message>>,
    pub(crate) sender: Arc<InboxSender>,
}

/// What the connection should do next.
#[derive(Debug)]
pub enum Received {
    Message(Arc<Message>),
    /// The queue overflowed and everything queued before that has been received: end the
    /// connection as a slow consumer.
    Overflowed,
}

impl Inbox {
    /// A queue that holds at most `capacity` messages before its connection counts as slow.
    pub fn new(capacity: usize) -> Inbox {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Inbox {
            rx,
            sender: Arc::new(InboxSender {
                tx,
                overflowed: AtomicBool::new(false),
                overflow_notify: Notify::new(),
            }),
        }
    }

    /// Waits for the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Received {
        loop {
            if let Ok(message) = self.rx.try_recv() {
                return Received::Message(message);
            }
            if self.sender.overflowed.load(Ordering::Relaxed) {
                return Received::Overflowed;
            }
            tokio::select! {
                biased;
                message = self.rx.recv() => {
                    // The inbox holds a sender itself, so the channel never closes.
                    if let Some(message) = message {
                        return Received::Message(message);
                    }
                }
                () = self.sender.overflow_notify.notified() => {}
            }
        }
    }

    /// The next message if one is queued now, for batching several into one write.
    pub fn try_recv(&mut self) -> Option<Arc<Message>> {
        self.rx.try_recv().ok()
    }

    /// Identifies this inbox among a topic's subscribers.
    pub(crate) fn ptr(&self) -> *const InboxSender {
        Arc::as_ptr(&self.sender)
    }
}
