//! The store with a hub: what survives a reopen, what retention changes do, and what is
//! refused. (A `kill -9` of the real binary is in `tests/durable.rs`.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{
    Broker, Data, HubConfig, ManualClock, Message, Page, Position, ResetReason, TopicName,
};

use super::*;

fn scratch(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("switchboard-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic")
}

fn open(path: &Path, config: HubConfig, clock: &Arc<ManualClock>) -> Durable {
    Durable::open(path, config, clock.clone(), Fsync::Batch).expect("opens")
}

async fn publish(durable: &Durable, topic: &TopicName, text: &str) -> Arc<Message> {
    Broker::publish(&*durable.hub, topic, &Data::from_text(text))
        .await
        .expect("published")
}

fn seqs(messages: &[Arc<Message>]) -> Vec<u64> {
    messages.iter().map(|m| m.position.seq).collect()
}

/// The position before any message of `topic`'s current epoch.
fn before_first(durable: &Durable, topic: &TopicName) -> Position {
    let now = durable.hub.join(topic, None, None, Page::NONE).start;
    Position { seq: 0, ..now }
}

#[tokio::test]
async fn messages_epochs_and_ids_survive_a_reopen() {
    let path = scratch("reopen");
    let clock = ManualClock::new();
    let chat = topic("chat");
    let mut durable = open(&path, HubConfig::default(), &clock);
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(publish(&durable, &chat, &i.to_string()).await);
    }
    durable.close();
    drop(durable);

    let durable = open(&path, HubConfig::default(), &clock);
    let catchup = durable
        .hub
        .join(&chat, Some(published[1].position), None, Page::ALL);
    assert_eq!(catchup.reset, None);
    let ids: Vec<_> = catchup
        .messages
        .iter()
        .map(|m| m.envelope().clone())
        .collect();
    let expected: Vec<_> = published[2..]
        .iter()
        .map(|m| m.envelope().clone())
        .collect();
    assert_eq!(ids, expected, "the same ids, data and times");
    let next = publish(&durable, &chat, "after").await;
    assert_eq!(next.position.epoch, published[0].position.epoch);
    assert_eq!(next.position.seq, 6);
}

#[tokio::test]
async fn shrinking_retention_trims_at_start_and_older_positions_get_retention_resets() {
    let path = scratch("shrink");
    let clock = ManualClock::new();
    let chat = topic("chat");
    let durable = open(&path, HubConfig::default(), &clock);
    let mut published = Vec::new();
    for i in 0..10 {
        published.push(publish(&durable, &chat, &i.to_string()).await);
    }
    drop(durable);

    let three = HubConfig {
        retention_messages: 3,
        ..HubConfig::default()
    };
    let durable = open(&path, three, &clock);
    let catchup = durable
        .hub
        .join(&chat, Some(published[1].position), None, Page::ALL);
    assert_eq!(catchup.reset, Some(ResetReason::Retention));
    assert_eq!(seqs(&catchup.messages), vec![8, 9, 10]);
    drop(durable);

    // The trim was written: growing retention again brings nothing back.
    let durable = open(&path, HubConfig::default(), &clock);
    let catchup = durable
        .hub
        .join(&chat, Some(published[8].position), None, Page::ALL);
    assert_eq!(catchup.reset, None);
    assert_eq!(seqs(&catchup.messages), vec![10]);
    let all = durable
        .hub
        .join(&chat, Some(before_first(&durable, &chat)), None, Page::ALL);
    assert_eq!(seqs(&all.messages), vec![8, 9, 10]);
}

#[tokio::test]
async fn age_retention_applies_to_what_was_kept() {
    let path = scratch("age");
    let clock = ManualClock::new();
    let chat = topic("chat");
    let durable = open(&path, HubConfig::default(), &clock);
    let old = publish(&durable, &chat, "old").await;
    clock.advance(Duration::from_secs(60));
    publish(&durable, &chat, "new").await;
    drop(durable);
    let thirty_seconds = HubConfig {
        retention_age: Duration::from_secs(30),
        ..HubConfig::default()
    };
    let durable = open(&path, thirty_seconds, &clock);
    let catchup = durable.hub.join(&chat, Some(old.position), None, Page::ALL);
    assert_eq!(catchup.reset, None, "the one after `old` is still there");
    assert_eq!(seqs(&catchup.messages), vec![2]);
    let from_start = durable
        .hub
        .join(&chat, Some(before_first(&durable, &chat)), None, Page::ALL);
    assert_eq!(from_start.reset, Some(ResetReason::Retention));
}

#[tokio::test]
async fn positions_taken_before_a_restart_of_topics_without_messages_get_no_reset() {
    let path = scratch("horizon");
    let clock = ManualClock::new();
    let (quiet, forgotten) = (topic("quiet"), topic("forgotten"));
    let forgetful = HubConfig {
        idle_topic_ttl: Duration::ZERO,
        retention_age: Duration::from_secs(1),
        ..HubConfig::default()
    };
    let durable = open(&path, forgetful.clone(), &clock);
    let quiet_start = durable.hub.join(&quiet, None, None, Page::NONE).start;
    let lost = publish(&durable, &forgotten, "soon gone").await;
    clock.advance(Duration::from_secs(2));
    durable.hub.sweep();
    clock.advance(Duration::from_millis(1));
    durable.hub.sweep();
    assert_eq!(durable.hub.topic_count(), 0, "forgotten");
    drop(durable);

    let durable = open(&path, forgetful, &clock);
    publish(&durable, &quiet, "first").await;
    let catchup = durable.hub.join(&quiet, Some(quiet_start), None, Page::ALL);
    assert_eq!(catchup.reset, None, "nothing of `quiet` was lost");
    assert_eq!(seqs(&catchup.messages), vec![1]);
    let catchup = durable
        .hub
        .join(&forgotten, Some(lost.position), None, Page::ALL);
    assert_eq!(
        catchup.reset,
        Some(ResetReason::HistoryLost),
        "the forgotten topic's history stays lost"
    );
}

#[tokio::test]
async fn the_disk_budget_drops_the_oldest_messages_and_they_stay_dropped() {
    let path = scratch("budget");
    let clock = ManualClock::new();
    let chat = topic("chat");
    let durable = open(&path, HubConfig::default(), &clock);
    let mut sizes = Vec::new();
    for i in 0..10 {
        sizes.push(publish(&durable, &chat, &i.to_string()).await.stored_size());
        clock.advance(Duration::from_millis(1));
    }
    drop(durable);
    let budget = HubConfig {
        retention_disk: sizes[6..].iter().sum(),
        ..HubConfig::default()
    };
    drop(open(&path, budget, &clock));
    let durable = open(&path, HubConfig::default(), &clock);
    let all = durable
        .hub
        .join(&chat, Some(before_first(&durable, &chat)), None, Page::ALL);
    assert_eq!(seqs(&all.messages), vec![7, 8, 9, 10]);
}

#[tokio::test]
async fn a_corrupt_database_is_refused_and_left_as_it_was() {
    let path = scratch("corrupt");
    let clock = ManualClock::new();
    drop(open(&path, HubConfig::default(), &clock));
    let file = path.join(directory::DATABASE_FILE);
    let garbage = vec![0x5a; 8192];
    std::fs::write(&file, &garbage).expect("write");
    let refused = Durable::open(&path, HubConfig::default(), clock.clone(), Fsync::Batch)
        .expect_err("refused");
    assert!(
        refused.0.contains("its database cannot be used"),
        "{refused}"
    );
    assert_eq!(std::fs::read(&file).expect("read"), garbage, "untouched");
}

#[tokio::test]
async fn with_fsync_always_every_publish_is_committed_too() {
    let path = scratch("always");
    let clock = ManualClock::new();
    let chat = topic("chat");
    let durable =
        Durable::open(&path, HubConfig::default(), clock.clone(), Fsync::Always).expect("opens");
    let publishers: Vec<_> = (0..20)
        .map(|i| {
            let (hub, chat) = (durable.hub.clone(), chat.clone());
            tokio::spawn(async move {
                Broker::publish(&*hub, &chat, &Data::from_text(&i.to_string()))
                    .await
                    .expect("published")
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("joined");
    }
    drop(durable);
    let durable = open(&path, HubConfig::default(), &clock);
    let all = durable
        .hub
        .join(&chat, Some(before_first(&durable, &chat)), None, Page::ALL);
    assert_eq!(seqs(&all.messages), (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_directory_stays_within_retention_disk_over_a_long_run() {
    for (directory_budget, data_len) in [(5 << 20, 1000), (5 << 20, 200)] {
        let largest = long_run(directory_budget, data_len).await;
        eprintln!("{directory_budget} bytes, data of {data_len}: at most {largest}");
        assert!(
            largest <= directory_budget as u64,
            "with retention_disk {directory_budget} and data of {data_len} bytes, the \
             directory grew to {largest} bytes"
        );
    }
}

/// Publishes many messages on 20 topics with `retention_disk` at `directory_budget`, sweeping
/// as maintenance does; returns the largest the directory grew.
async fn long_run(directory_budget: usize, data_len: usize) -> u64 {
    let path = scratch(&format!("long-run-{directory_budget}-{data_len}"));
    let clock = ManualClock::new();
    let config = HubConfig {
        retention_disk: stored_budget(directory_budget),
        retention_messages: 100_000,
        ..HubConfig::default()
    };
    let durable = open(&path, config, &clock);
    let data = Data::from_text(&"x".repeat(data_len));
    // Enough to fill the messages' budget (a quarter of the directory's) 8 times over.
    let messages = 2 * directory_budget / (data_len + 60);
    let mut largest = 0;
    for n in 0..messages {
        durable.hub.publish(&topic(&format!("t{}", n % 20)), &data);
        clock.advance(Duration::from_micros(100));
        if n % 50 == 49 {
            // What maintenance does when a publish goes over the budget.
            durable.hub.sweep();
        }
        if n % 1000 == 999 {
            publish(&durable, &topic("t0"), "a commit after the sweep's trims").await;
            largest = largest.max(directory_size(&path));
        }
    }
    durable.hub.sweep();
    assert!(durable.hub.stored_bytes() <= stored_budget(directory_budget));
    // Closing writes the database's allocator state, which may grow the file.
    drop(durable);
    largest.max(directory_size(&path))
}

fn directory_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .expect("list")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .sum()
}

/// Publishes `count` messages of 200 bytes on `topic`, waiting for a commit every 100.
async fn flood(durable: &Durable, topic: &TopicName, count: usize) {
    let data = Data::from_text(&"x".repeat(200));
    for n in 0..count {
        durable.hub.publish(topic, &data);
        if n % 100 == 99 {
            publish(durable, topic, "a commit").await;
        }
    }
}

#[tokio::test]
async fn a_quiet_topics_message_is_carried_forward_while_busy_ones_are_cleaned_away() {
    let path = scratch("carried");
    let clock = ManualClock::new();
    let (quiet, busy) = (topic("quiet"), topic("busy"));
    let ten = HubConfig {
        retention_messages: 10,
        ..HubConfig::default()
    };
    let durable = open(&path, ten.clone(), &clock);
    let kept = publish(&durable, &quiet, "kept").await;
    // About 5 MB through the log, of which about 3 KB stay: without cleaning, the record of
    // `kept` and every record after it would stay too.
    flood(&durable, &busy, 20_000).await;
    let last = publish(&durable, &busy, "last").await;
    drop(durable);
    assert!(
        directory_size(&path) < 4 << 20,
        "the directory holds {} bytes",
        directory_size(&path)
    );

    for _ in 0..2 {
        let durable = open(&path, ten.clone(), &clock);
        let all = durable.hub.recent(&quiet, usize::MAX);
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].envelope(),
            kept.envelope(),
            "the same id, data and time"
        );
        let recent = durable.hub.recent(&busy, usize::MAX);
        assert_eq!(recent.len(), 10);
        assert_eq!(recent[9].envelope(), last.envelope());
    }
    let durable = open(&path, ten, &clock);
    let next = publish(&durable, &busy, "next").await;
    assert_eq!(next.position.epoch, last.position.epoch);
    assert_eq!(next.position.seq, last.position.seq + 1);
}

#[tokio::test]
async fn a_topic_that_retains_nothing_keeps_its_position_after_its_records_are_cleaned() {
    let path = scratch("position-carried");
    let clock = ManualClock::new();
    let (drained, busy) = (topic("drained"), topic("busy"));
    let config = HubConfig {
        retention_messages: 10,
        retention_age: Duration::from_secs(1),
        ..HubConfig::default()
    };
    let durable = open(&path, config.clone(), &clock);
    let mut before = None;
    for i in 0..3 {
        before = Some(publish(&durable, &drained, &i.to_string()).await);
    }
    clock.advance(Duration::from_secs(2));
    durable.hub.sweep();
    assert!(durable.hub.recent(&drained, usize::MAX).is_empty());
    flood(&durable, &busy, 5_000).await;
    drop(durable);

    let durable = open(&path, config, &clock);
    let before = before.expect("published");
    let next = publish(&durable, &drained, "after").await;
    assert_eq!(next.position.epoch, before.position.epoch);
    assert_eq!(next.position.seq, before.position.seq + 1);
}

/// One step of `what_a_reopened_store_holds_is_what_the_hub_held`.
#[derive(Debug, Clone)]
enum Step {
    /// Publishes `len` bytes on topic `topic`, waiting for the commit or not.
    Publish {
        topic: usize,
        len: usize,
        wait: bool,
    },
    Advance {
        ms: u64,
    },
    Sweep,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        8 => (0usize..3, 1usize..3000, any::<bool>())
            .prop_map(|(topic, len, wait)| Step::Publish { topic, len, wait }),
        1 => (0u64..1500).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Sweep),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    #[test]
    fn what_a_reopened_store_holds_is_what_the_hub_held(
        steps in proptest::collection::vec(step(), 1..300),
        retention_messages in 0usize..8,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(reopen_and_compare(steps, retention_messages));
    }
}

/// Runs `steps` on a store, reopens it (twice), and checks that every topic comes back with
/// the same messages and goes on from the same position.
async fn reopen_and_compare(steps: Vec<Step>, retention_messages: usize) {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = scratch(&format!("reopen-compare-{run}"));
    let clock = ManualClock::new();
    let config = HubConfig {
        retention_messages,
        retention_age: Duration::from_secs(2),
        idle_topic_ttl: Duration::from_secs(1),
        ..HubConfig::default()
    };
    let topics: Vec<TopicName> = (0..3).map(|t| topic(&format!("t{t}"))).collect();
    let durable = open(&path, config.clone(), &clock);
    let mut last: Vec<Option<Position>> = vec![None; topics.len()];
    for step in steps {
        match step {
            Step::Publish {
                topic: t,
                len,
                wait,
            } => {
                let data = Data::from_text(&"y".repeat(len));
                let message = if wait {
                    Broker::publish(&*durable.hub, &topics[t], &data)
                        .await
                        .expect("published")
                } else {
                    durable.hub.publish(&topics[t], &data)
                };
                last[t] = Some(message.position);
            }
            Step::Advance { ms } => clock.advance(Duration::from_millis(ms)),
            Step::Sweep => durable.hub.sweep(),
        }
    }
    durable.hub.sweep();
    let held: Vec<_> = topics
        .iter()
        .map(|t| {
            let exists = durable.hub.topic_stats(t).is_some();
            let messages: Vec<_> = durable
                .hub
                .recent(t, usize::MAX)
                .iter()
                .map(|m| m.envelope().clone())
                .collect();
            (exists, messages)
        })
        .collect();
    drop(durable);

    for _ in 0..2 {
        let durable = open(&path, config.clone(), &clock);
        for (t, (_, messages)) in topics.iter().zip(&held) {
            let now: Vec<_> = durable
                .hub
                .recent(t, usize::MAX)
                .iter()
                .map(|m| m.envelope().clone())
                .collect();
            assert_eq!(&now, messages, "the messages of {t}");
        }
    }
    let durable = open(&path, config, &clock);
    for ((t, (exists, _)), last) in topics.iter().zip(&held).zip(&last) {
        let next = publish(&durable, t, "next").await;
        if let (true, Some(last)) = (exists, last) {
            assert_eq!(next.position.epoch, last.epoch, "the epoch of {t}");
            assert_eq!(next.position.seq, last.seq + 1, "the sequence of {t}");
        }
    }
    drop(durable);
    let _ = std::fs::remove_dir_all(&path);
}

#[test]
fn commits_are_gathered_once_publishes_overlap_and_never_with_fsync_always() {
    let hub = Hub::durable(
        HubConfig::default(),
        ManualClock::new(),
        switchboard_hub::Restored::default(),
    );
    let chat = topic("chat");
    let started = Instant::now();
    hub.publish(&chat, &Data::from_text("1"));
    // The store's creation and one publish: the next commit starts at once.
    let lone = hub.take_changes(None).expect("changes");
    assert_eq!(next_gathering(&lone, Fsync::Batch, started), None);

    hub.publish(&chat, &Data::from_text("2"));
    hub.publish(&chat, &Data::from_text("3"));
    let overlapping = hub.take_changes(None).expect("changes");
    assert_eq!(
        next_gathering(&overlapping, Fsync::Batch, started),
        Some(started + GROUP_COMMIT_WINDOW)
    );
    assert_eq!(next_gathering(&overlapping, Fsync::Always, started), None);
}
