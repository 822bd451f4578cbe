//! A soak of three gateway nodes on one Redis: 30 subscribers on random nodes and transports,
//! each moving at random moments to a random node and transport with its cursor, while 3
//! publishers publish numbered messages on random nodes and transports. At the end every
//! subscriber has had every message exactly once, each topic's in order: the test counts what
//! was lost, duplicated and out of order, and requires none of each.
//!
//! The choices come from a fixed seed, so a failure reproduces (`SOAK_SEED=n` tries another).
//! Everything is bounded: the messages in number, the whole in time.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_e2e::{Deployment, Follower, Got, Ledger, Rng, Tally, Transport, within_for};

const SEED: u64 = 0x5eed_2026;
const NODES: usize = 3;
const SUBSCRIBERS: usize = 30;
const PUBLISHERS: usize = 3;
/// Messages each publisher publishes.
const EACH: usize = 120;
const TOPICS: [&str; 3] = ["soak/a", "soak/b", "soak/c"];
/// A subscriber moves after taking a number of messages below this.
const MOVE_AFTER: usize = 40;
/// How long a subscriber waits for its next message before it gives up.
const QUIET: Duration = Duration::from_secs(10);
/// The whole test, once the nodes are up.
const LIMIT: Duration = Duration::from_secs(50);

/// What one subscriber did.
#[derive(Debug, Default)]
struct Record {
    messages: Vec<Value>,
    /// Resets, ended connections, silences: none is expected.
    surprises: Vec<String>,
    moves: usize,
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_moving_between_nodes_and_transports_get_every_message_once_in_order() {
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(SEED);
    let deployment = Deployment::on_redis(NODES).await;
    let bases: Vec<String> = deployment.endpoints().iter().map(|n| n.base()).collect();
    let mut rng = Rng::new(seed);

    within_for(LIMIT, "the soak", async {
        // Every subscriber is in place before the first message: each starts from now.
        let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
        for _ in 0..SUBSCRIBERS {
            let base = &bases[rng.below(bases.len())];
            let follower = Follower::start(rng.pick(&Transport::ALL), base, &TOPICS, None).await;
            subscribers.push(tokio::spawn(subscribe(follower, bases.clone(), rng.fork())));
        }
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|publisher| tokio::spawn(publish(publisher, bases.clone(), rng.fork())))
            .collect();

        let mut ledger = Ledger::new();
        for publisher in publishers {
            ledger.extend(publisher.await.expect("a publisher failed"));
        }
        // The last message of each topic: a subscriber that has all three is done.
        for topic in TOPICS {
            let base = &bases[rng.below(bases.len())];
            let id = rng
                .pick(&Transport::ALL)
                .publish(base, topic, json!({"end": topic}))
                .await;
            ledger.record(topic, &id);
        }

        let mut total = Tally::default();
        let mut report = Vec::new();
        let mut surprises = 0;
        for (index, subscriber) in subscribers.into_iter().enumerate() {
            let record = subscriber.await.expect("a subscriber failed");
            let tally = ledger.tally(&record.messages);
            surprises += record.surprises.len();
            report.push(format!(
                "subscriber {index} ({} moves): {tally}; {:?}",
                record.moves, record.surprises
            ));
            total += tally;
        }
        assert!(
            total.is_exact() && surprises == 0,
            "seed {seed}: {} messages published, {SUBSCRIBERS} subscribers; in all {total}, \
             {surprises} surprises\n{}",
            ledger.len(),
            report.join("\n")
        );
    })
    .await;
}

/// Publishes `EACH` numbered messages, each on a random topic, node and transport.
async fn publish(publisher: usize, bases: Vec<String>, mut rng: Rng) -> Ledger {
    let mut ledger = Ledger::new();
    for n in 0..EACH {
        let topic = rng.pick(&TOPICS);
        let base = &bases[rng.below(bases.len())];
        let transport = rng.pick(&Transport::ALL);
        let id = transport
            .publish(base, topic, json!({"publisher": publisher, "n": n}))
            .await;
        ledger.record(topic, &id);
    }
    ledger
}

/// Takes messages until the last one of every topic has come, moving after a random number of
/// them to a random node and transport with its cursor.
async fn subscribe(mut follower: Follower, bases: Vec<String>, mut rng: Rng) -> Record {
    let mut record = Record::default();
    let mut ends = 0;
    let mut move_after = rng.below(MOVE_AFTER);
    while ends < TOPICS.len() {
        if move_after == 0 {
            let cursor = follower.cursor().to_owned();
            drop(follower);
            let base = &bases[rng.below(bases.len())];
            let transport = rng.pick(&Transport::ALL);
            follower = Follower::start(transport, base, &TOPICS, Some(&cursor)).await;
            record.moves += 1;
            move_after = rng.below(MOVE_AFTER);
            continue;
        }
        match follower.next_within(QUIET).await {
            Got::Message(message) => {
                if message["data"]["end"].is_string() {
                    ends += 1;
                }
                record.messages.push(message);
                move_after -= 1;
            }
            Got::Reset(reset) => record
                .surprises
                .push(format!("{follower:?}: reset {reset}")),
            Got::Quiet => {
                record
                    .surprises
                    .push(format!("{follower:?}: nothing for {QUIET:?}"));
                break;
            }
            // A client whose connection ends resumes with its cursor: move now.
            Got::Ended(reason) => {
                record
                    .surprises
                    .push(format!("{follower:?}: ended ({reason})"));
                move_after = 0;
            }
        }
    }
    record
}
