//! The journal: what a hub with a durable store hands to it, and how it starts again from what
//! the store kept.
//!
//! Under a topic's lock, a publish takes its sequence, retains the message and appends a
//! [`Change`] to the journal, so that the journal holds each topic's changes in sequence order.
//! The store's writer takes the changes a batch at a time ([`Hub::take_changes`]), commits them,
//! and hands them back ([`Hub::committed`]): only then is each message delivered to the topic's
//! subscribers, shown to readers, and acknowledged to its publisher. No lock is held while the
//! store writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::clock::Ticks;
use super::maintenance::Horizons;
use super::{Clock, Hub, HubConfig, Topic, TopicState};
use crate::message::{Data, Message};
use crate::position::Position;
use crate::topic::TopicName;

/// What the store reports to a publisher waiting for its message's commit: `Err` says why the
/// store could not write it.
pub(super) type CommitResult = Result<(), String>;

/// One change of the hub's retained state that a durable store must write, in the order the
/// hub made them.
#[derive(Debug)]
pub enum Change {
    /// A published message.
    Append(Append),
    /// Retention dropped the messages of `topic` before `keep_from`.
    Trim { topic: TopicName, keep_from: u64 },
    /// `topic` was forgotten (it had no retained message left), and the horizon of its bucket
    /// moved to `horizon`.
    Forget {
        topic: TopicName,
        bucket: usize,
        horizon: u64,
    },
    /// A new store: no history of any topic is lost after `trusted_since`.
    Created { trusted_since: u64 },
}

/// A published message waiting for its commit.
#[derive(Debug)]
pub struct Append {
    /// The message, with its position (its topic's epoch and its sequence).
    pub message: Arc<Message>,
    /// The first sequence its topic retains once it is published: the store drops the ones
    /// before, which may include this message itself when retention keeps nothing.
    pub keep_from: u64,
    /// The topic, to deliver the message to once it is committed.
    topic: Arc<Topic>,
    /// The publisher waiting for the commit; none for the hub's own `publish`.
    committed: Option<oneshot::Sender<CommitResult>>,
}

/// The queue of changes from the hub to its store's writer. It grows only while the writer
/// is busy: each publish waits for its commit, so it holds at most one change per publish in
/// flight, plus a trim per topic per sweep.
#[derive(Debug, Default)]
pub(super) struct Journal {
    pending: Mutex<Vec<Change>>,
    /// Wakes the writer when the journal stops being empty, or closes.
    wake: Condvar,
    closed: AtomicBool,
    /// Why the store failed to write, after which every publish is refused: what the hub and
    /// the store hold may differ from then on.
    failure: Mutex<Option<String>>,
}

impl Journal {
    pub(super) fn push(&self, change: Change) {
        let mut pending = self.pending.lock();
        pending.push(change);
        if pending.len() == 1 {
            self.wake.notify_one();
        }
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}

/// A topic as the store kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredTopic {
    pub name: TopicName,
    pub epoch: u64,
    pub last_seq: u64,
    /// The retained messages, oldest first and contiguous in sequence, the last at `last_seq`.
    pub messages: Vec<RestoredMessage>,
}

/// A retained message as the store kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredMessage {
    pub seq: u64,
    pub time_ms: u64,
    pub data: Data,
}

/// What a durable store holds, for a hub to start from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Since when no history of any topic was lost; `None` for a new store.
    pub trusted_since: Option<u64>,
    /// Buckets whose horizon moved since (a topic of theirs was forgotten), and to what.
    pub horizons: Vec<(usize, u64)>,
    pub topics: Vec<RestoredTopic>,
}

impl Hub {
    /// A hub whose changes a durable store writes, started from what that store kept: every
    /// topic with its epoch, sequence and the messages the retention settings still allow
    /// (what they no longer allow is journalled as trimmed), and the horizons.
    pub fn durable(config: HubConfig, clock: Arc<dyn Clock>, restored: Restored) -> Hub {
        let floor = restored
            .topics
            .iter()
            .map(|t| t.epoch)
            .chain(restored.horizons.iter().map(|&(_, horizon)| horizon))
            .chain(restored.trusted_since)
            .max()
            .unwrap_or(0);
        let ticks = Ticks::new(clock, floor);
        // A store loses nothing when the hub stops: the horizons are those it kept.
        let trusted_since = restored.trusted_since.unwrap_or_else(|| ticks.now());
        let horizons = Horizons::new(trusted_since);
        for &(bucket, horizon) in &restored.horizons {
            horizons.restore(bucket, horizon);
        }
        let hub = Hub::assemble(config, ticks, horizons, Some(Journal::default()));
        if restored.trusted_since.is_none() {
            hub.journal(|| Change::Created { trusted_since });
        }
        let now_ms = hub.ticks.now_ms();
        for kept in restored.topics {
            let topic = Topic::new(kept.name, kept.epoch, kept.last_seq);
            {
                let mut state = topic.state.lock();
                let first_kept = kept.messages.first().map(|m| m.seq);
                for message in kept.messages {
                    let position = Position {
                        tag: topic.tag,
                        epoch: kept.epoch,
                        seq: message.seq,
                    };
                    let message =
                        Message::new(topic.name.clone(), position, message.time_ms, &message.data);
                    hub.retain(&mut state, message, now_ms);
                }
                if first_kept.is_some_and(|first| first < state.first_retained_seq()) {
                    hub.journal_trim(&topic, &state);
                }
            }
            hub.topics.insert(topic.name.clone(), topic);
        }
        // The memory and disk budgets may be smaller than last time.
        hub.sweep();
        hub
    }

    /// Appends a change for the store, if the hub has one.
    pub(super) fn journal(&self, change: impl FnOnce() -> Change) {
        if let Some(journal) = &self.journal {
            journal.push(change());
        }
    }

    /// Journals that the messages of `topic` before its first retained one are gone.
    pub(super) fn journal_trim(&self, topic: &Topic, state: &TopicState) {
        self.journal(|| Change::Trim {
            topic: topic.name.clone(),
            keep_from: state.first_retained_seq(),
        });
    }

    /// The append of a message just published, whose publisher waits on the receiver.
    pub(super) fn journal_append(
        &self,
        topic: &Arc<Topic>,
        state: &TopicState,
        message: &Arc<Message>,
        wait: bool,
    ) -> Option<oneshot::Receiver<CommitResult>> {
        let journal = self.journal.as_ref()?;
        let (committed, receiver) = if wait {
            let (sender, receiver) = oneshot::channel();
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        journal.push(Change::Append(Append {
            message: message.clone(),
            keep_from: state.first_retained_seq(),
            topic: topic.clone(),
            committed,
        }));
        receiver
    }

    /// Waits for changes to write and takes them all, oldest first; `None` once the journal
    /// is closed and empty (the writer then stops). Once there is one, waits until `gather`
    /// for more to share its commit (group commit), unless the journal closes.
    /// Blocks: call it from the writer's thread.
    pub fn take_changes(&self, gather: Option<Instant>) -> Option<Vec<Change>> {
        let journal = self.journal.as_ref()?;
        let mut pending = journal.pending.lock();
        while pending.is_empty() {
            if journal.closed.load(Ordering::Acquire) {
                return None;
            }
            journal.wake.wait(&mut pending);
        }
        if let Some(until) = gather {
            // Pushes do not wake the writer here (the journal is not empty); a close does.
            while !journal.closed.load(Ordering::Acquire) {
                if journal.wake.wait_until(&mut pending, until).timed_out() {
                    break;
                }
            }
        }
        Some(std::mem::take(&mut *pending))
    }

    /// Tells the hub that `changes` are committed: each message is delivered to its topic's
    /// subscribers, in sequence order, and its publisher is answered.
    pub fn committed(&self, changes: Vec<Change>) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        for change in changes {
            let Change::Append(append) = change else {
                continue;
            };
            {
                let mut state = append.topic.state.lock();
                state.visible_seq = append.message.position.seq;
                let overflowed = state.subscribers.deliver(&append.message);
                self.stats
                    .slow_consumers
                    .fetch_add(overflowed, Ordering::Relaxed);
            }
            if let Some(committed) = append.committed {
                // The publisher may have gone away; the message is published all the same.
                let _ = committed.send(Ok(()));
            }
        }
    }

    /// Tells the hub that the store could not write `changes`: their publishers get the
    /// error, and so does every publish from now on.
    pub fn failed(&self, changes: Vec<Change>, why: &str) {
        if let Some(journal) = &self.journal {
            journal.failure.lock().get_or_insert_with(|| why.to_owned());
        }
        for change in changes {
            if let Change::Append(Append {
                committed: Some(committed),
                ..
            }) = change
            {
                let _ = committed.send(Err(why.to_owned()));
            }
        }
    }

    /// Lets the writer stop once it has written what is pending.
    pub fn close_journal(&self) {
        if let Some(journal) = &self.journal {
            journal.closed.store(true, Ordering::Release);
            let _pending = journal.pending.lock();
            journal.wake.notify_all();
        }
    }

    /// Whether a durable store writes the hub's changes.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }

    /// Why the store cannot write, once it has failed.
    pub fn store_failure(&self) -> Option<String> {
        self.journal.as_ref().and_then(Journal::failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Page;
    use crate::hub::tests::{seqs, text, topic};
    use crate::inbox::{Inbox, QueueLimits};
    use crate::position::Position;
    use crate::{ManualClock, ResetReason};

    fn durable(config: HubConfig) -> Hub {
        Hub::durable(config, ManualClock::new(), Restored::default())
    }

    #[test]
    fn a_message_is_read_and_delivered_only_once_committed() {
        let hub = durable(HubConfig::default());
        let chat = topic("chat");
        let mut inbox = Inbox::new(QueueLimits::messages(10));
        let start = hub.join(&chat, None, Some(&inbox), Page::NONE).start;
        let message = hub.publish(&chat, &text("x"));
        assert!(
            inbox.try_recv().is_none(),
            "not delivered before the commit"
        );
        let read = hub.join(&chat, Some(start), None, Page::ALL);
        assert!(read.messages.is_empty(), "not read before the commit");
        assert_eq!(read.reset, None);
        assert_eq!(read.start, start, "nor is its position shown");

        let changes = hub.take_changes(None).expect("changes");
        assert!(matches!(changes[0], Change::Created { .. }));
        assert!(matches!(&changes[1], Change::Append(a) if a.message.position == message.position));
        hub.committed(changes);
        assert_eq!(inbox.try_recv().map(|m| m.position), Some(message.position));
        let read = hub.join(&chat, Some(start), None, Page::ALL);
        assert_eq!(seqs(&read.messages), vec![1]);
    }

    #[test]
    fn retention_of_messages_not_yet_committed_shows_no_position_beyond_the_committed() {
        let hub = durable(HubConfig {
            retention_messages: 1,
            ..HubConfig::default()
        });
        let chat = topic("chat");
        let first = hub.publish(&chat, &text("1"));
        hub.committed(hub.take_changes(None).expect("changes"));
        for i in 2..=4 {
            hub.publish(&chat, &text(&i.to_string()));
        }
        // Only message 4 is retained, and only 1 is committed.
        let read = hub.join(&chat, Some(first.position), None, Page::ALL);
        assert_eq!((read.reset, read.start), (None, first.position));
        let before = Position {
            seq: 0,
            ..first.position
        };
        let read = hub.join(&chat, Some(before), None, Page::ALL);
        assert_eq!(read.reset, Some(ResetReason::Retention));
        assert_eq!(read.start, first.position);
    }

    #[test]
    fn a_failed_write_answers_its_publishers_and_refuses_the_next() {
        let hub = durable(HubConfig::default());
        let chat = topic("chat");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let data = text("x");
            // Journalled at once: the write fails before the publisher is polled.
            let publish = hub.start_publish(&chat, &data);
            let fail = async {
                let changes = hub.take_changes(None).expect("changes");
                hub.failed(changes, "disk full");
            };
            let (published, ()) = tokio::join!(publish, fail);
            assert_eq!(published.map(|_| ()), Err("disk full".to_owned()));
            assert_eq!(
                hub.start_publish(&chat, &text("y")).await.map(|_| ()),
                Err("disk full".to_owned())
            );
        });
    }

    #[test]
    fn a_gathering_writer_takes_what_comes_until_its_deadline_or_the_close() {
        let hub = Arc::new(durable(HubConfig::default()));
        let chat = topic("chat");
        hub.publish(&chat, &text("1"));
        // A deadline already past: what is pending, at once.
        let taken = hub.take_changes(Some(Instant::now())).expect("changes");
        assert_eq!(taken.len(), 2, "the store's creation and message 1");

        hub.publish(&chat, &text("2"));
        let publisher = {
            let (hub, chat) = (hub.clone(), chat.clone());
            std::thread::spawn(move || {
                hub.publish(&chat, &text("3"));
                hub.close_journal();
            })
        };
        // A deadline far off: the writer gathers until the journal closes, and takes both.
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        let taken = hub.take_changes(Some(far)).expect("changes");
        publisher.join().expect("joined");
        let seqs: Vec<u64> = taken
            .iter()
            .filter_map(|c| match c {
                Change::Append(a) => Some(a.message.position.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![2, 3]);
        assert!(hub.take_changes(Some(far)).is_none(), "closed and empty");
    }
}
