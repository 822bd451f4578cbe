//! The subscription plumbing every transport shares: joining topics from a cursor, the
//! retained history still to send (fetched a page at a time), the connection's inbox, the
//! positions it has delivered, and leaving on drop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchboard_hub::{
    Broker, Cursor, Inbox, Message, Page, Position, QueueLimits, Received, ResetReason, Restart,
    TopicName,
};

use crate::activity::Activity;
use crate::caller::Caller;
use crate::connections::{Connections, Registration, Transport};
use crate::error::AppError;
use crate::metrics::{Counter, Metrics};
use crate::request::check_topic_count;

/// How much retained history a streaming connection fetches at a time while it catches up:
/// what one connection holds beyond its inbox, however far back it resumes.
const BACKLOG_PAGE: Page = Page {
    messages: 256,
    bytes: 256 * 1024,
};

/// A topic the connection follows, and the last position it delivered there.
#[derive(Debug)]
struct Followed {
    topic: TopicName,
    position: Position,
    /// Retained messages after `position` have not all been fetched yet: they go out before
    /// anything from the inbox.
    behind: bool,
}

/// What to send next.
#[derive(Debug)]
pub enum Next {
    Message(Arc<Message>),
    /// A position could not be honoured while the connection caught up (retention dropped
    /// messages it had not sent yet): tell the client before the messages that follow.
    Reset(TopicName, ResetReason),
    /// The inbox overflowed: end the connection as a slow consumer.
    Overflowed,
    /// The broker could not be reached: end the connection; the client resumes elsewhere.
    Unavailable(AppError),
    /// An operator ended the connection (`POST /admin/disconnect`).
    Disconnected,
}

/// What a poll replies with: messages, and any resets, in the order the client must see them.
#[derive(Debug, Default)]
pub struct Batch {
    pub resets: Vec<(TopicName, ResetReason)>,
    pub messages: Vec<Arc<Message>>,
    /// Retained messages wait beyond this batch: poll again at once.
    pub more: bool,
}

impl Batch {
    /// Appends what a later look found.
    pub fn absorb(&mut self, later: Batch) {
        self.resets.extend(later.resets);
        self.messages.extend(later.messages);
        self.more = later.more;
    }
}

/// One connection's (or one poll's) view of the broker.
#[derive(Debug)]
pub struct Subscription {
    broker: Arc<dyn Broker>,
    inbox: Inbox,
    followed: Vec<Followed>,
    /// Retained messages fetched and not delivered yet, oldest first: at most one page.
    backlog: VecDeque<Arc<Message>>,
    /// Positions found not to hold any more, to tell the client before anything else.
    resets: VecDeque<(TopicName, ResetReason)>,
    /// Whether the inbox is registered with the topics in `followed`.
    live: bool,
    max_topics: usize,
    transport: Transport,
    /// The gateway's counters: deliveries, resets, slow consumers.
    activity: Arc<Activity>,
    /// Messages delivered and not yet added to `activity`: added once per wake-up.
    delivered: u64,
    /// The connection's entry among the live connections, once it is one.
    registration: Option<Registration>,
    /// The deliveries counter of this connection's transport, when metrics are on.
    deliveries: Option<Counter>,
    /// For counting resets, when metrics are on.
    metrics: Option<Arc<Metrics>>,
}

impl Subscription {
    pub fn new(
        broker: Arc<dyn Broker>,
        queue_limits: Arc<QueueLimits>,
        max_topics: usize,
        transport: Transport,
        activity: Arc<Activity>,
    ) -> Subscription {
        Subscription {
            broker,
            inbox: Inbox::of_kind(queue_limits, transport.inbox_kind()),
            followed: Vec::new(),
            backlog: VecDeque::new(),
            resets: VecDeque::new(),
            live: false,
            max_topics,
            transport,
            activity,
            delivered: 0,
            registration: None,
            deliveries: None,
            metrics: None,
        }
    }

    /// Counts this subscription's deliveries (as `transport`'s) and resets in `metrics`.
    pub fn counted(mut self, metrics: Option<&Arc<Metrics>>, transport: Transport) -> Subscription {
        self.deliveries = metrics.map(|m| m.deliveries(transport));
        self.metrics = metrics.cloned();
        self
    }

    /// A reset for the client, counted where it arises: in the gateway's activity, and by
    /// reason in metrics.
    fn count_reset(&self, reason: ResetReason) {
        self.activity.resets.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.reset(reason);
        }
    }

    /// Lists the connection among the live ones (until the subscription is dropped), so that
    /// operators see it and can end it: [`Subscription::next`] then says
    /// [`Next::Disconnected`].
    pub fn register(&mut self, connections: &Arc<Connections>, caller: &Caller) {
        let subject = caller.grant.subject().map(str::to_owned);
        let registration =
            connections.register(self.transport, caller.address, subject, self.inbox.gauge());
        self.registration = Some(registration);
        self.list_topics();
    }

    /// Shows who the connection's credentials now name in its entry.
    pub fn set_subject(&self, subject: Option<&str>) {
        if let Some(registration) = &self.registration {
            *registration.connection.subject.lock() = subject.map(str::to_owned);
        }
    }

    /// Shows the followed topics in the connection's entry.
    fn list_topics(&self) {
        if let Some(registration) = &self.registration {
            *registration.connection.topics.lock() =
                self.followed.iter().map(|f| f.topic.clone()).collect();
        }
    }

    fn is_disconnected(&self) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| r.connection.is_ended())
    }

    /// Adds the deliveries counted so far to the gateway's counters.
    fn count_deliveries(&mut self) {
        self.activity
            .delivered(self.transport, std::mem::take(&mut self.delivered));
    }

    /// Subscribes to `topics` from `cursor`, returning the positions that could not be
    /// honoured (to tell the client before anything else). Topics the connection already
    /// follows are left as they are. The retained messages after the cursor are delivered by
    /// [`Subscription::next`] (or [`Subscription::batch`]) before live ones. With `live` unset
    /// (a poll's first look) nothing is registered and unknown topics are not created.
    ///
    /// A join that fails part-way leaves the subscription as it was.
    pub async fn join(
        &mut self,
        topics: &[TopicName],
        cursor: Option<&Cursor>,
        live: bool,
    ) -> Result<Vec<(TopicName, ResetReason)>, AppError> {
        let new: Vec<&TopicName> = topics.iter().filter(|t| !self.follows(t)).collect();
        check_topic_count(self.followed.len() + new.len(), self.max_topics)?;
        let mut resets = Vec::new();
        let mut joined = Vec::with_capacity(new.len());
        for topic in new {
            let from = cursor.and_then(|c| c.position_of(topic));
            let inbox = live.then_some(&self.inbox);
            let catchup = match self.broker.join(topic, from, inbox, Page::NONE).await {
                Ok(catchup) => catchup,
                Err(e) => {
                    if live {
                        for topic in &joined {
                            self.broker.leave(topic, &self.inbox);
                        }
                    }
                    return Err(e.into());
                }
            };
            if let Some(reason) = catchup.reset {
                self.count_reset(reason);
                resets.push((topic.clone(), reason));
            }
            joined.push(topic.clone());
            self.followed.push(Followed {
                topic: topic.clone(),
                position: catchup.start,
                behind: catchup.more,
            });
        }
        self.live |= live;
        self.list_topics();
        Ok(resets)
    }

    /// Registers the inbox with every followed topic, continuing from the positions held: used
    /// by a poll that found nothing on its first look and now waits.
    pub async fn go_live(&mut self) -> Result<Vec<(TopicName, ResetReason)>, AppError> {
        let cursor = Cursor::from_positions(self.followed.iter().map(|f| f.position).collect());
        let topics: Vec<TopicName> = self.followed.drain(..).map(|f| f.topic).collect();
        self.join(&topics, Some(&cursor), true).await
    }

    /// Unsubscribes from `topics`; messages of theirs still queued are skipped.
    pub fn leave(&mut self, topics: &[TopicName]) {
        for topic in topics {
            if self.live {
                self.broker.leave(topic, &self.inbox);
            }
        }
        self.followed.retain(|f| !topics.contains(&f.topic));
        self.backlog.retain(|m| !topics.contains(&m.topic));
        self.list_topics();
    }

    pub fn follows(&self, topic: &TopicName) -> bool {
        self.followed.iter().any(|f| &f.topic == topic)
    }

    /// The next thing to deliver, recording its position: retained history first, a page at a
    /// time, then live messages. Skips messages of topics left since they were queued.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Next {
        loop {
            if self.is_disconnected() {
                self.activity.disconnected.fetch_add(1, Ordering::Relaxed);
                return Next::Disconnected;
            }
            if let Some((topic, reason)) = self.resets.pop_front() {
                return Next::Reset(topic, reason);
            }
            if let Some(message) = self.next_fetched() {
                return Next::Message(message);
            }
            if self.is_behind() {
                if let Err(e) = self.fetch_page(BACKLOG_PAGE).await {
                    return Next::Unavailable(e);
                }
                continue;
            }
            self.count_deliveries();
            let received = match &self.registration {
                Some(registration) => {
                    let connection = registration.connection.clone();
                    tokio::select! {
                        biased;
                        () = connection.ending() => continue,
                        received = self.inbox.recv() => received,
                    }
                }
                None => self.inbox.recv().await,
            };
            match received {
                Received::Message(message) => {
                    if self.record(&message) {
                        return Next::Message(message);
                    }
                }
                Received::Overflowed => {
                    self.activity.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    return Next::Overflowed;
                }
                Received::Restart(restart) => self.restart(restart),
            }
        }
    }

    /// A followed topic's history was deleted: tell the client, drop what was fetched of the
    /// old history, and go on from the new one's start.
    fn restart(&mut self, restart: Restart) {
        let Some(followed) = self.followed.iter_mut().find(|f| f.topic == restart.topic) else {
            return;
        };
        followed.position = restart.start;
        followed.behind = false;
        self.backlog.retain(|m| m.topic != restart.topic);
        self.count_reset(restart.reason);
        self.resets.push_back((restart.topic, restart.reason));
    }

    /// The next message if one is at hand now, for coalescing several into one write.
    pub fn try_next(&mut self) -> Option<Arc<Message>> {
        // A reset goes out through `next`, before anything after it.
        if !self.resets.is_empty() {
            return None;
        }
        if let Some(message) = self.next_fetched() {
            return Some(message);
        }
        // Live messages wait until the history before them has been sent.
        while !self.is_behind() && self.resets.is_empty() {
            let message = self.inbox.try_recv()?;
            if self.record(&message) {
                return Some(message);
            }
        }
        None
    }

    /// What is at hand now, without waiting for live messages: retained history first, then
    /// whatever the inbox holds; it stops at `page.messages` messages, or at the message that
    /// reaches `page.bytes`. A poll's reply.
    pub async fn batch(&mut self, page: Page) -> Result<Batch, AppError> {
        let mut batch = Batch::default();
        let mut bytes = 0;
        while batch.messages.len() < page.messages && bytes < page.bytes {
            batch.resets.extend(self.resets.drain(..));
            let message = match self.next_fetched() {
                Some(message) => message,
                None if self.is_behind() => {
                    let remaining = Page {
                        messages: page.messages - batch.messages.len(),
                        bytes: page.bytes - bytes,
                    };
                    self.fetch_page(remaining).await?;
                    continue;
                }
                None => match self.try_next() {
                    Some(message) => message,
                    None if self.resets.is_empty() => break,
                    None => continue,
                },
            };
            bytes += message.queued_size();
            batch.messages.push(message);
        }
        batch.resets.extend(self.resets.drain(..));
        batch.more = !self.backlog.is_empty() || self.is_behind();
        Ok(batch)
    }

    fn is_behind(&self) -> bool {
        self.followed.iter().any(|f| f.behind)
    }

    /// The next fetched retained message that is still to be delivered, recorded.
    fn next_fetched(&mut self) -> Option<Arc<Message>> {
        while let Some(message) = self.backlog.pop_front() {
            if self.record(&message) {
                return Some(message);
            }
        }
        None
    }

    /// Fetches the next page of the first topic that is behind into the backlog, with a reset
    /// to tell first if its position could no longer be honoured.
    async fn fetch_page(&mut self, page: Page) -> Result<(), AppError> {
        let Some(index) = self.followed.iter().position(|f| f.behind) else {
            return Ok(());
        };
        let followed = &self.followed[index];
        let catchup = self
            .broker
            .join(&followed.topic, Some(followed.position), None, page)
            .await?;
        let followed = &mut self.followed[index];
        followed.behind = catchup.more;
        self.backlog.extend(catchup.messages);
        // Unchanged unless the position did not hold, or named the topic before it existed.
        followed.position = catchup.start;
        if let Some(reason) = catchup.reset {
            self.resets.push_back((followed.topic.clone(), reason));
            self.count_reset(reason);
        }
        Ok(())
    }

    /// Records that `message` is delivered; false if it must not be: its topic was left, it
    /// was delivered already (a live message that a page of history carried), or messages
    /// before it are missing (a live message that came after a gap, or from a new history of
    /// its topic). After a gap the topic is behind again, so what is missing is fetched from
    /// the store, this message with it; a new history is a `history_lost` reset first.
    fn record(&mut self, message: &Message) -> bool {
        let Some(followed) = self.followed.iter_mut().find(|f| f.topic == message.topic) else {
            return false;
        };
        let position = message.position;
        let current = followed.position;
        if position.epoch < current.epoch
            || (position.epoch == current.epoch && position.seq <= current.seq)
        {
            return false;
        }
        if position.epoch > current.epoch {
            followed.position = Position { seq: 0, ..position };
            followed.behind = true;
            self.resets
                .push_back((followed.topic.clone(), ResetReason::HistoryLost));
            self.count_reset(ResetReason::HistoryLost);
            return false;
        }
        if position.seq > current.seq + 1 {
            followed.behind = true;
            return false;
        }
        followed.position = position;
        self.delivered += 1;
        if let Some(deliveries) = &self.deliveries {
            deliveries.inc();
        }
        true
    }

    /// The cursor for every followed topic: what `Last-Event-ID` and poll's `cursor` carry.
    pub fn cursor(&self) -> String {
        let positions = self.followed.iter().map(|f| f.position).collect();
        Cursor::from_positions(positions).to_string()
    }

    /// Every followed topic with its position, in the order they were joined.
    pub fn positions(&self) -> Vec<(TopicName, Position)> {
        self.followed
            .iter()
            .map(|f| (f.topic.clone(), f.position))
            .collect()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count_deliveries();
        let topics: Vec<TopicName> = self.followed.iter().map(|f| f.topic.clone()).collect();
        self.leave(&topics);
    }
}
