//! The receiving end of one connection: a bounded queue that every topic it subscribes to
//! pushes into.
//!
//! It is a mutex around a `VecDeque` and a waker rather than a channel, because every open
//! connection holds one: an empty inbox allocates nothing beyond its ~100-byte header, where a
//! tokio channel reserves a block of slots up front.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;

use crate::message::Message;

/// A drained queue keeps at most this many slots, so a burst does not pin memory for the rest
/// of the connection's life.
const RETAINED_SLOTS: usize = 16;

/// The shared part, held by the connection and by every topic it is subscribed to.
#[derive(Debug)]
pub(crate) struct InboxSender {
    queue: Mutex<Queue>,
    /// Most messages queued before the connection counts as a slow consumer.
    capacity: usize,
    /// The connection's task, woken when a message arrives or the queue overflows.
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Arc<Message>>,
    /// Set when a message did not fit: from then on nothing more is queued, so the queue never
    /// has a hole, and the connection ends once it has sent what is queued.
    overflowed: bool,
    /// Set when the connection is gone; topics drop it on their next publish or sweep.
    closed: bool,
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
        let queue = self.queue.lock();
        !queue.overflowed && !queue.closed
    }

    pub(crate) fn deliver(&self, message: &Arc<Message>) -> Delivery {
        let mut queue = self.queue.lock();
        if queue.overflowed || queue.closed {
            return Delivery::Gone;
        }
        let delivery = if queue.messages.len() < self.capacity {
            queue.messages.push_back(message.clone());
            Delivery::Queued
        } else {
            queue.overflowed = true;
            Delivery::Overflowed
        };
        drop(queue);
        self.waker.wake();
        delivery
    }
}

/// A connection's queue of messages from all its topics.
#[derive(Debug)]
pub struct Inbox {
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
        Inbox {
            sender: Arc::new(InboxSender {
                queue: Mutex::new(Queue::default()),
                capacity: capacity.max(1),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// Waits for the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Received {
        poll_fn(|cx| {
            if let Some(received) = self.take() {
                return Poll::Ready(received);
            }
            self.sender.waker.register(cx.waker());
            // Checked again after registering, so a message queued in between is not missed.
            match self.take() {
                Some(received) => Poll::Ready(received),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next message if one is queued now, for batching several into one write.
    pub fn try_recv(&mut self) -> Option<Arc<Message>> {
        match self.take()? {
            Received::Message(message) => Some(message),
            Received::Overflowed => None,
        }
    }

    fn take(&self) -> Option<Received> {
        let mut queue = self.sender.queue.lock();
        if let Some(message) = queue.messages.pop_front() {
            if queue.messages.is_empty() && queue.messages.capacity() > RETAINED_SLOTS {
                queue.messages.shrink_to(RETAINED_SLOTS);
            }
            return Some(Received::Message(message));
        }
        queue.overflowed.then_some(Received::Overflowed)
    }

    /// Identifies this inbox among a topic's subscribers.
    pub(crate) fn ptr(&self) -> *const InboxSender {
        Arc::as_ptr(&self.sender)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = self.sender.queue.lock();
        queue.closed = true;
        queue.messages.clear();
    }
}
