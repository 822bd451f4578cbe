//! The receiving end of one connection: a bounded queue that every topic it subscribes to
//! pushes into.
//!
//! It is a mutex around a `VecDeque` and a waker rather than a channel, because every open
//! connection holds one: an empty inbox allocates nothing beyond its ~100-byte header, where a
//! tokio channel reserves a block of slots up front.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;

use crate::hub::ResetReason;
use crate::message::Message;
use crate::position::Position;
use crate::topic::TopicName;

/// How many kinds of connection an inbox can be labelled with (see [`Inbox::of_kind`]).
pub const INBOX_KINDS: usize = 4;

/// A drained queue keeps at most this many slots, so a burst does not pin memory for the rest
/// of the connection's life.
const RETAINED_SLOTS: usize = 16;

/// How much the inboxes may hold, one by one and all together. One per gateway, shared by
/// every inbox: every inbox a message can reach must share the same one, because the message
/// is counted in the limits of whichever inbox takes it first and given back to those of
/// whichever lets it go last.
#[derive(Debug)]
pub struct QueueLimits {
    /// Most messages one inbox holds before its connection counts as a slow consumer.
    messages: usize,
    /// Most bytes one inbox holds; a message larger than this still goes into an empty inbox,
    /// so that every message can be delivered to a client that keeps up.
    bytes: usize,
    /// Most bytes queued in all inboxes together, each message counted once however many
    /// inboxes hold it. Over it, an inbox that still has messages waiting overflows on the
    /// next one, while inboxes that keep up are still fed.
    total_bytes: usize,
    /// Bytes queued in all inboxes now. Signed: a message taken on one thread as another
    /// queues it elsewhere may briefly make it dip below zero.
    queued: AtomicI64,
}

impl QueueLimits {
    pub fn new(messages: usize, bytes: usize, total_bytes: usize) -> Arc<QueueLimits> {
        Arc::new(QueueLimits {
            messages: messages.max(1),
            bytes,
            total_bytes,
            queued: AtomicI64::new(0),
        })
    }

    /// Limits on the number of messages alone.
    pub fn messages(messages: usize) -> Arc<QueueLimits> {
        QueueLimits::new(messages, usize::MAX, usize::MAX)
    }

    /// Bytes of messages queued in all inboxes now, each message counted once.
    pub fn queued_bytes(&self) -> usize {
        usize::try_from(self.queued.load(Ordering::Relaxed)).unwrap_or(0)
    }

    fn over_total(&self) -> bool {
        self.queued_bytes() > self.total_bytes
    }

    /// Counts `message` as queued in one more inbox.
    fn count_in(&self, message: &Message) {
        if message.queued_in.fetch_add(1, Ordering::AcqRel) == 0 {
            self.queued
                .fetch_add(message.queued_size() as i64, Ordering::Relaxed);
        }
    }

    /// Counts `message` as queued in one inbox fewer.
    fn count_out(&self, message: &Message) {
        if message.queued_in.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.queued
                .fetch_sub(message.queued_size() as i64, Ordering::Relaxed);
        }
    }
}

/// The shared part, held by the connection and by every topic it is subscribed to.
#[derive(Debug)]
pub(crate) struct InboxSender {
    queue: Mutex<Queue>,
    limits: Arc<QueueLimits>,
    /// The connection's task, woken when a message arrives or the queue overflows.
    waker: AtomicWaker,
    /// The kind of connection that owns the inbox, below [`INBOX_KINDS`]: the owner picks the
    /// meaning (the gateway's transports), the hub only counts subscribers by it.
    pub(crate) kind: u8,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Arc<Message>>,
    /// The bytes of `messages`, for the per-inbox limit.
    bytes: usize,
    /// Set when a message did not fit: from then on nothing more is queued, so the queue never
    /// has a hole, and the connection ends once it has sent what is queued.
    overflowed: bool,
    /// Set when the connection is gone; topics drop it on their next publish or sweep.
    closed: bool,
    /// Topics whose history was replaced (deleted) while the inbox followed them: the
    /// connection hears of them before any message still queued, which belongs to the
    /// history that is gone. Empty, and unallocated, almost always.
    resets: Vec<Restart>,
}

/// A topic whose history was replaced: what was queued from it is gone, and the topic goes on
/// from `start`.
#[derive(Debug, Clone)]
pub struct Restart {
    pub topic: TopicName,
    pub reason: ResetReason,
    /// Where the new history starts: the messages that follow it come next.
    pub start: Position,
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
        let size = message.queued_size();
        let limits = &self.limits;
        // An empty inbox always takes the message: its connection is keeping up.
        let fits = queue.messages.is_empty()
            || (queue.messages.len() < limits.messages
                && queue.bytes + size <= limits.bytes
                && !limits.over_total());
        let delivery = if fits {
            limits.count_in(message);
            queue.bytes += size;
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

    /// Tells the connection that `restart.topic` has a new history.
    pub(crate) fn restart(&self, restart: Restart) {
        let mut queue = self.queue.lock();
        if queue.overflowed || queue.closed {
            return;
        }
        queue.resets.push(restart);
        drop(queue);
        self.waker.wake();
    }

    /// Messages queued now.
    fn len(&self) -> usize {
        self.queue.lock().messages.len()
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
    /// A followed topic's history was replaced; what was queued from it before is stale.
    Restart(Restart),
}

/// A view of how many messages an inbox holds, for operators; it does not keep the
/// connection subscribed.
#[derive(Debug, Clone)]
pub struct InboxGauge(Arc<InboxSender>);

impl InboxGauge {
    /// Messages waiting to be sent now.
    pub fn queued(&self) -> usize {
        self.0.len()
    }
}

impl Inbox {
    /// A queue within `limits`; beyond them its connection counts as slow.
    pub fn new(limits: Arc<QueueLimits>) -> Inbox {
        Inbox::of_kind(limits, 0)
    }

    /// An inbox labelled with `kind` (below [`INBOX_KINDS`]), by which a topic's subscribers
    /// are counted.
    pub fn of_kind(limits: Arc<QueueLimits>, kind: u8) -> Inbox {
        debug_assert!(usize::from(kind) < INBOX_KINDS);
        Inbox {
            sender: Arc::new(InboxSender {
                queue: Mutex::new(Queue::default()),
                limits,
                waker: AtomicWaker::new(),
                kind: kind.min(INBOX_KINDS as u8 - 1),
            }),
        }
    }

    /// A gauge of this inbox's length.
    pub fn gauge(&self) -> InboxGauge {
        InboxGauge(self.sender.clone())
    }

    /// Waits for the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Received {
        poll_fn(|cx| {
            if let Some(received) = self.take(true) {
                return Poll::Ready(received);
            }
            self.sender.waker.register(cx.waker());
            // Checked again after registering, so a message queued in between is not missed.
            match self.take(true) {
                Some(received) => Poll::Ready(received),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next message if one is queued now, for batching several into one write.
    pub fn try_recv(&mut self) -> Option<Arc<Message>> {
        match self.take(false)? {
            Received::Message(message) => Some(message),
            Received::Overflowed | Received::Restart(_) => None,
        }
    }

    /// The next thing received; a restart comes before any message, and only when
    /// `restarts` is set (otherwise nothing does until `recv` has taken it).
    fn take(&self, restarts: bool) -> Option<Received> {
        let mut queue = self.sender.queue.lock();
        if !queue.resets.is_empty() {
            return restarts.then(|| Received::Restart(queue.resets.remove(0)));
        }
        if let Some(message) = queue.messages.pop_front() {
            queue.bytes -= message.queued_size();
            self.sender.limits.count_out(&message);
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
        for message in queue.messages.drain(..) {
            self.sender.limits.count_out(&message);
        }
        queue.bytes = 0;
    }
}

#[cfg(test)]
mod stress;
