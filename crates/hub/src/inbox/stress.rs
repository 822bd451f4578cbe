//! The inbox under contention: publisher threads deliver to inboxes with small limits while
//! consumer tasks receive, some slowly, some dropping their inbox half-way, one only at the
//! end; then the invariants. Every round is bounded in time, so a lost wake-up fails the test
//! instead of hanging it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Delivery, Inbox, InboxSender, QueueLimits, Received};
use crate::message::{Data, Message};
use crate::position::Position;
use crate::topic::TopicName;

const ROUNDS: u64 = 30;
const PUBLISHERS: u64 = 3;
const MESSAGES_PER_PUBLISHER: u64 = 500;
/// How long one round may take; it takes milliseconds.
const ROUND_LIMIT: Duration = Duration::from_secs(5);

/// What one delivery did, as the publisher saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Queued,
    Overflowed,
    Gone,
}

impl From<Delivery> for Outcome {
    fn from(delivery: Delivery) -> Outcome {
        match delivery {
            Delivery::Queued => Outcome::Queued,
            Delivery::Overflowed => Outcome::Overflowed,
            Delivery::Gone => Outcome::Gone,
        }
    }
}

/// How one inbox of a round is bounded and read.
#[derive(Debug, Clone, Copy)]
struct Plan {
    limits: Bounds,
    /// Yields between messages, so that its queue fills up.
    slow: bool,
    /// Drops the inbox after receiving this many messages.
    drop_after: Option<usize>,
    /// Receives nothing until every publisher is done.
    late: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bounds {
    /// A few messages and bytes per inbox, and a total shared with the other tight inboxes.
    Tight,
    /// Room for everything a round delivers: it never overflows.
    Roomy,
    /// Four messages, of any size, its own.
    Four,
}

const PLANS: [Plan; 7] = [
    Plan {
        limits: Bounds::Tight,
        slow: false,
        drop_after: None,
        late: false,
    },
    Plan {
        limits: Bounds::Tight,
        slow: true,
        drop_after: None,
        late: false,
    },
    Plan {
        limits: Bounds::Tight,
        slow: false,
        drop_after: Some(20),
        late: false,
    },
    Plan {
        limits: Bounds::Roomy,
        slow: false,
        drop_after: None,
        late: false,
    },
    Plan {
        limits: Bounds::Roomy,
        slow: true,
        drop_after: Some(60),
        late: false,
    },
    Plan {
        limits: Bounds::Roomy,
        slow: true,
        drop_after: None,
        late: false,
    },
    Plan {
        limits: Bounds::Four,
        slow: false,
        drop_after: None,
        late: true,
    },
];

/// How a consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Received everything queued, then the overflow.
    Overflowed,
    /// Received everything queued, and the inbox did not overflow.
    Drained,
    /// Dropped the inbox after `drop_after` messages.
    Dropped,
}

/// A message's publisher and sequence.
type Id = (u64, u64);

fn id(message: &Message) -> Id {
    (message.position.tag, message.position.seq)
}

/// A small deterministic generator (xorshift), one per publisher and round.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What one publisher did in a round.
struct Published {
    messages: Vec<Arc<Message>>,
    /// Per inbox, each sequence delivered to it and what the delivery did.
    outcomes: Vec<Vec<(u64, Outcome)>>,
}

/// Delivers `MESSAGES_PER_PUBLISHER` messages, each to a pseudo-random subset of the inboxes
/// of one group, as a topic does; returns every message and, per inbox, what each delivery to it did.
fn publish(publisher: u64, round: u64, inboxes: &[Arc<InboxSender>]) -> Published {
    let topic = TopicName::new("stress").expect("valid topic");
    let mut random = Random((round + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (publisher + 1));
    let mut messages = Vec::new();
    let mut outcomes = vec![Vec::new(); inboxes.len()];
    for seq in 1..=MESSAGES_PER_PUBLISHER {
        let bits = random.next();
        let data = Data::from_text(&"x".repeat((bits >> 32) as usize % 300));
        let position = Position {
            tag: publisher,
            epoch: round,
            seq,
        };
        let message = Message::new(topic.clone(), position, 0, &data);
        // To some inboxes of one group: every inbox that may hold a message shares one
        // `QueueLimits`, as in the gateway, since the message is counted once in one of them.
        let group = [Bounds::Tight, Bounds::Roomy, Bounds::Four][(bits >> 16) as usize % 3];
        for (i, inbox) in inboxes.iter().enumerate() {
            if PLANS[i].limits == group && bits & (1 << i) != 0 {
                outcomes[i].push((seq, inbox.deliver(&message).into()));
            }
        }
        messages.push(message);
        if bits & 0xf00 == 0 {
            thread::yield_now();
        }
    }
    Published { messages, outcomes }
}

/// Receives as `plan` says until the inbox is dropped, overflows, or has given the `expected`
/// number of messages (known once the publishers are done). Returns the ids received, how it
/// ended, and the inbox unless it was dropped.
async fn consume(
    mut inbox: Inbox,
    plan: Plan,
    mut expected: oneshot::Receiver<usize>,
) -> (Vec<Id>, Ending, Option<Inbox>) {
    let mut total = None;
    if plan.late {
        total = Some((&mut expected).await.expect("the expected count"));
    }
    let mut received = Vec::new();
    while total.is_none_or(|total| received.len() < total) {
        tokio::select! {
            next = inbox.recv() => match next {
                Received::Message(message) => received.push(id(&message)),
                Received::Overflowed => return (received, Ending::Overflowed, Some(inbox)),
                Received::Restart(restart) => panic!("no topic was deleted: {restart:?}"),
            },
            count = &mut expected, if total.is_none() => {
                total = Some(count.expect("the expected count"));
            }
        }
        if plan.drop_after == Some(received.len()) {
            drop(inbox);
            return (received, Ending::Dropped, None);
        }
        if plan.slow {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
    }
    // Everything queued has been received: the inbox now says at once whether it overflowed.
    let ending = match tokio::time::timeout(Duration::ZERO, inbox.recv()).await {
        Ok(Received::Overflowed) => Ending::Overflowed,
        Ok(Received::Message(message)) => panic!("{:?} was never queued", id(&message)),
        Ok(Received::Restart(restart)) => panic!("no topic was deleted: {restart:?}"),
        Err(_) => Ending::Drained,
    };
    (received, ending, Some(inbox))
}

#[test]
fn contended_inboxes_lose_nothing_in_the_middle_and_give_every_byte_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a runtime");
    let mut overflows = 0;
    for round in 0..ROUNDS {
        overflows += run_round(&runtime, round);
    }
    assert!(
        overflows > 0,
        "no inbox ever overflowed: the test tests little"
    );
}

/// One round; returns how many inboxes overflowed.
fn run_round(runtime: &tokio::runtime::Runtime, round: u64) -> usize {
    let tight = QueueLimits::new(6, 1200, 3000);
    let roomy = QueueLimits::messages(usize::MAX);
    let four = QueueLimits::messages(4);
    let limits_of = |bounds| match bounds {
        Bounds::Tight => tight.clone(),
        Bounds::Roomy => roomy.clone(),
        Bounds::Four => four.clone(),
    };
    let inboxes: Vec<Inbox> = PLANS
        .iter()
        .map(|p| Inbox::new(limits_of(p.limits)))
        .collect();
    let senders: Arc<Vec<Arc<InboxSender>>> =
        Arc::new(inboxes.iter().map(|inbox| inbox.sender.clone()).collect());

    let mut counts = Vec::new();
    let consumers: Vec<_> = inboxes
        .into_iter()
        .zip(PLANS)
        .map(|(inbox, plan)| {
            let (count, expected) = oneshot::channel();
            counts.push(count);
            runtime.spawn(consume(inbox, plan, expected))
        })
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let senders = senders.clone();
            thread::spawn(move || publish(publisher, round, &senders))
        })
        .collect();
    let published: Vec<_> = publishers
        .into_iter()
        .map(|publisher| publisher.join().expect("publisher thread"))
        .collect();
    drop(senders);

    // Per inbox and publisher, the sequences it queued.
    let queued: Vec<Vec<Vec<u64>>> = (0..PLANS.len())
        .map(|i| {
            published
                .iter()
                .map(|publisher| {
                    publisher.outcomes[i]
                        .iter()
                        .filter(|(_, outcome)| *outcome == Outcome::Queued)
                        .map(|(seq, _)| *seq)
                        .collect()
                })
                .collect()
        })
        .collect();
    for (count, queued) in counts.into_iter().zip(&queued) {
        // A consumer that already dropped its inbox no longer listens.
        let _ = count.send(queued.iter().map(Vec::len).sum());
    }
    let consumed = runtime.block_on(async {
        let mut consumed = Vec::new();
        for consumer in consumers {
            let finished = tokio::time::timeout(ROUND_LIMIT, consumer).await;
            consumed.push(
                finished
                    .unwrap_or_else(|_| panic!("round {round}: a consumer is stuck"))
                    .expect("consumer task"),
            );
        }
        consumed
    });

    let mut overflows = 0;
    for (i, (plan, (received, ending, _))) in PLANS.iter().zip(&consumed).enumerate() {
        let what = format!("round {round}, inbox {i} ({plan:?})");
        let mut overflowed = 0;
        for (publisher, Published { outcomes, .. }) in published.iter().enumerate() {
            let outcomes: Vec<Outcome> = outcomes[i].iter().map(|(_, o)| *o).collect();
            let prefix = outcomes
                .iter()
                .take_while(|o| **o == Outcome::Queued)
                .count();
            // Nothing is queued after a message that was not: no hole.
            let rest = &outcomes[prefix..];
            assert!(
                rest.iter().skip(1).all(|o| *o == Outcome::Gone),
                "{what}: publisher {publisher} saw {rest:?} after {prefix} queued"
            );
            overflowed += usize::from(rest.first() == Some(&Outcome::Overflowed));
            // What the consumer received of this publisher is what was queued, in order: all
            // of it, or a prefix if the inbox was dropped.
            let got: Vec<u64> = received
                .iter()
                .filter(|(from, _)| *from == publisher as u64)
                .map(|(_, seq)| *seq)
                .collect();
            let queued = &queued[i][publisher];
            match ending {
                Ending::Dropped => assert!(queued.starts_with(&got), "{what}: {got:?}"),
                _ => assert_eq!(&got, queued, "{what}: publisher {publisher}"),
            }
        }
        assert!(overflowed <= 1, "{what}: overflowed {overflowed} times");
        match ending {
            Ending::Dropped => {}
            Ending::Overflowed => assert_eq!(overflowed, 1, "{what}: an overflow reported"),
            Ending::Drained => assert_eq!(overflowed, 0, "{what}: an overflow not reported"),
        }
        if plan.limits == Bounds::Roomy {
            assert_eq!(overflowed, 0, "{what}: overflowed with room to spare");
        }
        if plan.limits == Bounds::Four {
            let attempts: usize = published.iter().map(|p| p.outcomes[i].len()).sum();
            let queued: usize = queued[i].iter().map(Vec::len).sum();
            assert_eq!(
                (queued, overflowed),
                (attempts.min(4), usize::from(attempts > 4)),
                "{what}: exactly the fifth message does not fit"
            );
        }
        overflows += overflowed;
    }

    // Every inbox is drained or dropped: not a byte is counted as queued, in any limit or any
    // message.
    for limits in [&tight, &roomy, &four] {
        assert_eq!(
            limits.queued.load(Ordering::Relaxed),
            0,
            "round {round}: bytes still counted as queued"
        );
    }
    for Published { messages, .. } in &published {
        for message in messages {
            assert_eq!(
                message.queued_in.load(Ordering::Relaxed),
                0,
                "round {round}"
            );
        }
    }
    drop(consumed);
    for limits in [&tight, &roomy, &four] {
        assert_eq!(limits.queued_bytes(), 0, "round {round}");
    }
    overflows
}

/// A publisher that delivers each message as its consumer goes back to sleep, again and
/// again: a wake-up lost between the consumer finding its queue empty and registering its
/// waker leaves a message queued and nobody to take it.
#[test]
fn a_message_queued_as_the_consumer_goes_to_sleep_wakes_it() {
    /// At most this many messages, for at most `BUDGET`: as many as fit on a busy machine.
    const MESSAGES: u64 = 100_000;
    const BUDGET: Duration = Duration::from_secs(1);
    /// A consumer that has not taken a queued message after this long never will.
    const STALLED: Duration = Duration::from_secs(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("a runtime");
    let mut inbox = Inbox::new(QueueLimits::messages(1));
    let sender = inbox.sender.clone();
    let taken = Arc::new(AtomicU64::new(0));
    let consumer = runtime.spawn({
        let taken = taken.clone();
        async move {
            for seq in 1.. {
                match inbox.recv().await {
                    Received::Message(message) => assert_eq!(message.position.seq, seq),
                    Received::Overflowed => panic!("overflowed at {seq}"),
                    Received::Restart(_) => panic!("no topic was deleted"),
                }
                taken.store(seq, Ordering::Release);
            }
        }
    });
    // Waits until the consumer has taken message `seq`.
    let wait_until_taken = {
        let taken = taken.clone();
        move |seq: u64| {
            let since = Instant::now();
            while taken.load(Ordering::Acquire) < seq {
                assert!(
                    since.elapsed() < STALLED,
                    "message {seq} was queued, and its consumer never woke"
                );
                std::hint::spin_loop();
            }
        }
    };
    let publisher = thread::spawn(move || {
        let topic = TopicName::new("ping").expect("valid topic");
        let data = Data::from_text("ping");
        let mut random = Random(0x2545_f491_4f6c_dd1d);
        let started = Instant::now();
        let mut seq = 0;
        while seq < MESSAGES && started.elapsed() < BUDGET {
            seq += 1;
            let position = Position {
                tag: 0,
                epoch: 0,
                seq,
            };
            let message = Message::new(topic.clone(), position, 0, &data);
            // Once the consumer has taken the previous message it is on its way from finding
            // the queue empty to registering its waker; a varying head start makes deliveries
            // fall all along that way.
            wait_until_taken(seq - 1);
            for _ in 0..random.next() % 64 {
                std::hint::spin_loop();
            }
            let outcome = Outcome::from(sender.deliver(&message));
            assert_eq!(outcome, Outcome::Queued, "message {seq}");
        }
        wait_until_taken(seq);
        seq
    });
    let published = publisher.join().expect("publisher thread");
    assert!(published > 0);
    consumer.abort();
    // The consumer took every message; an assertion failing in it would show here.
    let ended = runtime.block_on(consumer);
    assert!(matches!(&ended, Err(e) if e.is_cancelled()), "{ended:?}");
}
