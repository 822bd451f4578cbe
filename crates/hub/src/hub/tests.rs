//! Publishing, joining and delivery; the helpers are shared with the tests of retention and
//! maintenance.

use super::*;
use crate::inbox::{QueueLimits, Received};

pub(super) fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic")
}

pub(super) fn text(s: &str) -> Data {
    Data::from_text(s)
}

pub(super) fn seqs(messages: &[Arc<Message>]) -> Vec<u64> {
    messages.iter().map(|m| m.position.seq).collect()
}

/// A hub with `config` on a clock that moves only when the test advances it.
pub(super) fn hub_with(config: HubConfig) -> (Hub, Arc<ManualClock>) {
    let clock = ManualClock::new();
    (Hub::with_clock(config, clock.clone()), clock)
}

#[test]
fn sequences_have_no_holes_and_ids_are_positions() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let messages: Vec<_> = (0..5)
        .map(|i| hub.publish(&chat, &text(&i.to_string())))
        .collect();
    assert_eq!(seqs(&messages), vec![1, 2, 3, 4, 5]);
    let epoch = messages[0].position.epoch;
    assert!(messages.iter().all(|m| m.position.epoch == epoch));
    assert_eq!(Position::parse(messages[2].id()), Ok(messages[2].position));
}

#[test]
fn resume_delivers_exactly_what_followed() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let messages: Vec<_> = (0..5)
        .map(|i| hub.publish(&chat, &text(&i.to_string())))
        .collect();
    let catchup = hub.join(&chat, Some(messages[1].position), None, Page::ALL);
    assert_eq!(catchup.reset, None);
    assert_eq!(seqs(&catchup.messages), vec![3, 4, 5]);
    assert_eq!(
        catchup.messages.last().map(|m| m.position),
        Some(messages[4].position)
    );
    let limited = hub.join(&chat, Some(messages[1].position), None, Page::messages(2));
    assert_eq!(seqs(&limited.messages), vec![3, 4]);
    assert!(limited.more);
}

#[test]
fn no_position_starts_now() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    hub.publish(&chat, &text("old"));
    let catchup = hub.join(&chat, None, None, Page::ALL);
    assert!(catchup.messages.is_empty());
    assert_eq!(catchup.start.seq, 1);
}

#[test]
fn position_of_another_history_is_reset() {
    let old_hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let old = old_hub.publish(&chat, &text("before restart"));
    let empty = old_hub.join(&topic("quiet"), None, None, Page::ALL);
    let hub = Hub::new(HubConfig::default());
    hub.publish(&chat, &text("after restart"));
    let catchup = hub.join(&chat, Some(old.position), None, Page::ALL);
    assert_eq!(catchup.reset, Some(ResetReason::HistoryLost));
    assert_eq!(seqs(&catchup.messages), vec![1]);
    // Nor is a position from before a restart trusted for a topic that does not exist yet.
    let catchup = hub.join(&topic("quiet"), Some(empty.start), None, Page::ALL);
    assert_eq!(catchup.reset, Some(ResetReason::HistoryLost));
}

#[test]
fn position_beyond_the_last_message_is_reset() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let message = hub.publish(&chat, &text("1"));
    let future = Position {
        seq: 9,
        ..message.position
    };
    let catchup = hub.join(&chat, Some(future), None, Page::ALL);
    assert_eq!(catchup.reset, Some(ResetReason::HistoryLost));
    assert_eq!(seqs(&catchup.messages), vec![1]);
}

#[test]
fn starting_position_of_an_unknown_topic_covers_its_first_messages() {
    let hub = Hub::new(HubConfig::default());
    let news = topic("news");
    let start = hub.join(&news, None, None, Page::ALL);
    assert_eq!(hub.topic_count(), 0, "a read does not create a topic");
    hub.publish(&news, &text("first"));
    hub.publish(&news, &text("second"));
    let catchup = hub.join(&news, Some(start.start), None, Page::ALL);
    assert_eq!(catchup.reset, None);
    assert_eq!(seqs(&catchup.messages), vec![1, 2]);
}

#[tokio::test]
async fn join_is_atomic_with_delivery() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let before = hub.publish(&chat, &text("before"));
    let mut inbox = Inbox::new(QueueLimits::messages(16));
    let catchup = hub.join(
        &chat,
        Some(Position {
            seq: 0,
            ..before.position
        }),
        Some(&inbox),
        Page::ALL,
    );
    assert_eq!(seqs(&catchup.messages), vec![1]);
    hub.publish(&chat, &text("after"));
    match inbox.recv().await {
        Received::Message(m) => assert_eq!(m.position.seq, 2),
        other => panic!("not a message: {other:?}"),
    }
    assert!(inbox.try_recv().is_none());
    // Joining again does not deliver twice.
    hub.join(&chat, None, Some(&inbox), Page::NONE);
    hub.publish(&chat, &text("once"));
    assert!(inbox.try_recv().is_some());
    assert!(inbox.try_recv().is_none());
    hub.leave(&chat, &inbox);
    hub.publish(&chat, &text("not for me"));
    assert!(inbox.try_recv().is_none());
}

#[tokio::test]
async fn a_full_inbox_gets_what_was_queued_then_overflows() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let mut slow = Inbox::new(QueueLimits::messages(2));
    let mut fast = Inbox::new(QueueLimits::messages(100));
    hub.join(&chat, None, Some(&slow), Page::NONE);
    hub.join(&chat, None, Some(&fast), Page::NONE);
    for i in 0..5 {
        hub.publish(&chat, &text(&i.to_string()));
    }
    let mut got = Vec::new();
    while let Received::Message(m) = slow.recv().await {
        got.push(m.position.seq);
    }
    assert_eq!(
        got,
        vec![1, 2],
        "what was queued before the overflow arrives, then the end"
    );
    assert_eq!(hub.stats().slow_consumers.load(Ordering::Relaxed), 1);
    let mut fast_got = Vec::new();
    while let Some(m) = fast.try_recv() {
        fast_got.push(m.position.seq);
    }
    assert_eq!(fast_got, vec![1, 2, 3, 4, 5], "others are unaffected");
}

#[tokio::test]
async fn overflow_wakes_a_waiting_connection() {
    let hub = Arc::new(Hub::new(HubConfig::default()));
    let chat = topic("chat");
    let mut slow = Inbox::new(QueueLimits::messages(1));
    hub.join(&chat, None, Some(&slow), Page::NONE);
    hub.publish(&chat, &text("1"));
    assert!(matches!(slow.recv().await, Received::Message(_)));
    let publisher = {
        let hub = hub.clone();
        let chat = chat.clone();
        tokio::spawn(async move {
            for i in 0..3 {
                hub.publish(&chat, &text(&i.to_string()));
            }
        })
    };
    publisher.await.expect("publisher");
    assert!(matches!(slow.recv().await, Received::Message(_)));
    let end = tokio::time::timeout(Duration::from_secs(2), slow.recv()).await;
    assert!(matches!(end, Ok(Received::Overflowed)));
}

#[test]
fn a_page_stops_at_its_bytes_but_always_holds_one_message() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let first = hub.publish(&chat, &text(&"x".repeat(100)));
    for _ in 0..9 {
        hub.publish(&chat, &text(&"x".repeat(100)));
    }
    let size = first.queued_size();
    let from = Some(Position {
        seq: 0,
        ..first.position
    });
    let page = |bytes| Page {
        messages: usize::MAX,
        bytes,
    };
    let three = hub.join(&chat, from, None, page(3 * size + size / 2));
    assert_eq!(seqs(&three.messages), vec![1, 2, 3]);
    assert!(three.more);
    let one = hub.join(&chat, from, None, page(1));
    assert_eq!(
        seqs(&one.messages),
        vec![1],
        "a message larger than the page"
    );
    let none = hub.join(&chat, from, None, Page::NONE);
    assert!(none.messages.is_empty());
    assert!(none.more, "NONE still says that messages follow");
}

#[tokio::test]
async fn an_inbox_is_bounded_in_bytes_but_takes_any_message_when_empty() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let big = text(&"x".repeat(1000));
    let size = hub.publish(&chat, &big).queued_size();
    let limits = QueueLimits::new(100, 2 * size, usize::MAX);
    let mut inbox = Inbox::new(limits.clone());
    hub.join(&chat, None, Some(&inbox), Page::NONE);
    let huge = text(&"y".repeat(10 * size));
    hub.publish(&chat, &huge);
    assert!(limits.queued_bytes() > 2 * size);
    assert!(
        matches!(inbox.recv().await, Received::Message(_)),
        "an empty inbox takes a message of any size"
    );
    assert_eq!(limits.queued_bytes(), 0);
    hub.publish(&chat, &big);
    hub.publish(&chat, &big);
    assert_eq!(limits.queued_bytes(), 2 * size);
    hub.publish(&chat, &big);
    assert_eq!(hub.stats().slow_consumers.load(Ordering::Relaxed), 1);
    let mut got = 0;
    while let Received::Message(_) = inbox.recv().await {
        got += 1;
    }
    assert_eq!(got, 2, "what fitted, then the end");
    assert_eq!(limits.queued_bytes(), 0);
}

#[tokio::test]
async fn over_the_total_only_inboxes_with_messages_waiting_overflow() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let data = text(&"x".repeat(1000));
    let size = hub.publish(&chat, &data).queued_size();
    // Room for two messages in all inboxes together, each counted once.
    let limits = QueueLimits::new(100, usize::MAX, 2 * size);
    let stuck = Inbox::new(limits.clone());
    let mut keeping_up = Inbox::new(limits.clone());
    hub.join(&chat, None, Some(&stuck), Page::NONE);
    hub.join(&chat, None, Some(&keeping_up), Page::NONE);
    for _ in 0..3 {
        hub.publish(&chat, &data);
        assert!(
            keeping_up.try_recv().is_some(),
            "the reader that keeps up gets every message"
        );
    }
    assert_eq!(hub.stats().slow_consumers.load(Ordering::Relaxed), 0);
    hub.publish(&chat, &data);
    assert_eq!(
        hub.stats().slow_consumers.load(Ordering::Relaxed),
        1,
        "the stuck one overflows"
    );
    assert!(keeping_up.try_recv().is_some());
    drop(stuck);
    assert_eq!(
        limits.queued_bytes(),
        0,
        "a dropped inbox gives its bytes back"
    );
}

#[test]
fn topic_stats_count_subscribers_by_kind_and_what_is_retained() {
    let (hub, clock) = hub_with(HubConfig {
        retention_messages: 3,
        ..HubConfig::default()
    });
    let chat = topic("chat");
    let limits = QueueLimits::messages(16);
    let inboxes = [
        Inbox::of_kind(limits.clone(), 0),
        Inbox::of_kind(limits.clone(), 0),
        Inbox::of_kind(limits.clone(), 2),
    ];
    for inbox in &inboxes {
        hub.join(&chat, None, Some(inbox), Page::NONE);
    }
    let messages: Vec<_> = (0..5)
        .map(|i| hub.publish(&chat, &text(&i.to_string())))
        .collect();
    let stats = hub.topic_stats(&chat).expect("known");
    assert_eq!(stats.subscribers, [2, 0, 1, 0]);
    assert_eq!(stats.retained_messages, 3);
    assert_eq!(
        stats.retained_bytes,
        messages[2..]
            .iter()
            .map(|m| m.retained_size())
            .sum::<usize>()
    );
    assert_eq!(stats.first, Some(messages[2].position));
    assert_eq!(stats.last, Some(messages[4].position));
    assert_eq!(stats.rate_per_second, 5.0 / 60.0);
    assert_eq!(seqs(&hub.recent(&chat, 2)), vec![4, 5]);
    // A minute later nothing was published in the window.
    clock.advance(Duration::from_secs(61));
    assert_eq!(hub.topic_stats(&chat).expect("known").rate_per_second, 0.0);
    hub.leave(&chat, &inboxes[2]);
    assert_eq!(
        hub.topic_stats(&chat).expect("known").subscribers,
        [2, 0, 0, 0]
    );
}

#[test]
fn topics_are_listed_by_name_with_a_prefix_and_a_limit() {
    let hub = Hub::new(HubConfig::default());
    for name in ["b.2", "a.1", "b.1", "c"] {
        hub.publish(&topic(name), &text("x"));
    }
    // Known to the hub (a poll's look creates nothing, a join does) but with nothing to show.
    let inbox = Inbox::new(QueueLimits::messages(4));
    hub.join(&topic("b.0"), None, Some(&inbox), Page::NONE);
    hub.leave(&topic("b.0"), &inbox);
    let names = |(list, more): (Vec<TopicStats>, bool)| {
        let names: Vec<String> = list.iter().map(|s| s.topic.as_str().to_owned()).collect();
        (names, more)
    };
    assert_eq!(
        names(hub.topics("", 10)),
        (
            vec!["a.1".into(), "b.1".into(), "b.2".into(), "c".into()],
            false
        )
    );
    assert_eq!(
        names(hub.topics("b.", 10)),
        (vec!["b.1".into(), "b.2".into()], false)
    );
    assert_eq!(names(hub.topics("b.", 1)), (vec!["b.1".into()], true));
    assert!(
        !names(hub.topics("", 4)).1,
        "exactly the limit: none left out"
    );
    assert_eq!(names(hub.topics("z", 4)), (vec![], false));
}

#[tokio::test]
async fn delete_restarts_subscribers_before_stale_messages() {
    let hub = Hub::new(HubConfig::default());
    let chat = topic("chat");
    let mut inbox = Inbox::new(QueueLimits::messages(16));
    hub.join(&chat, None, Some(&inbox), Page::NONE);
    let old = hub.publish(&chat, &text("old"));
    assert!(hub.delete(&chat));
    let new = hub.publish(&chat, &text("new"));
    // The stale message is not handed over ahead of the restart, even when batching.
    assert!(inbox.try_recv().is_none());
    let Received::Restart(restart) = inbox.recv().await else {
        panic!("the restart comes first");
    };
    assert_eq!(restart.topic, chat);
    assert_eq!(restart.reason, ResetReason::Deleted);
    assert_eq!(restart.start.seq, 0);
    assert!(restart.start.epoch > old.position.epoch);
    assert_eq!(new.position.epoch, restart.start.epoch);
    assert_eq!(new.position.seq, 1);
    // What was queued before it follows; the subscriber drops it by its older epoch.
    let Received::Message(stale) = inbox.recv().await else {
        panic!("queued messages follow");
    };
    assert_eq!(stale.position, old.position);
    // Retained history is the new one; the old position resets.
    let stats = hub.topic_stats(&chat).expect("known");
    assert_eq!(
        (stats.retained_messages, stats.first),
        (1, Some(new.position))
    );
    let catchup = hub.join(&chat, Some(old.position), None, Page::ALL);
    assert_eq!(catchup.reset, Some(ResetReason::HistoryLost));
    assert_eq!(seqs(&catchup.messages), vec![1]);
    assert!(!hub.delete(&topic("unknown")));
}
