//! One node with `--data-dir`, the real binary: its history survives a clean restart and a
//! `kill -9` in the middle of a publish storm; a second process on the same directory, and a
//! corrupt or foreign directory, are refused; retention changed between runs applies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_e2e::tally::seq_of;
use switchboard_e2e::{
    Endpoint, Follower, Got, Ledger, NodeProcess, TIMEOUT, Transport, assert_reset,
    switchboard_bin, within,
};
use tokio_tungstenite::tungstenite;

const TOPICS: [&str; 2] = ["storm-a", "storm-b"];

/// Acknowledged publishes before the node is stopped.
const STORM: usize = 300;

/// Publishers per transport.
const PUBLISHERS: usize = 2;

/// Publishes a WebSocket publisher sends before it reads the oldest one's ack.
const WS_WINDOW: usize = 16;

/// A directory of its own for each test, removed first.
fn data_dir(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("switchboard-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Kill9,
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_kill9_in_a_publish_storm_on_every_transport() {
    restart_in_a_storm(Stop::Kill9, "kill9", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_kill9_with_fsync_always() {
    restart_in_a_storm(Stop::Kill9, "always", &["--fsync", "always"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_a_clean_restart_in_a_publish_storm() {
    restart_in_a_storm(Stop::Sigterm, "sigterm", &[]).await;
}

/// Publishers on every transport publish until the node (started with `args`) stops (`stop`)
/// after [`STORM`] acks,
/// while a follower on every transport receives; the node starts again on its data. Then each
/// follower resumes (on the next transport) from the last id it got, and new subscribers on
/// every transport resume from before the storm: every acknowledged message comes exactly
/// once, in order, with no reset, and a new publish continues the same epochs.
async fn restart_in_a_storm(stop: Stop, name: &str, args: &[&str]) {
    let dir = data_dir(name);
    let args = [&["--data-dir", arg(&dir)], args].concat();
    let mut node = NodeProcess::start(switchboard_bin!(), &args).await;
    let base = node.base();
    let mut seeds = Vec::new();
    for topic in TOPICS {
        seeds.push(Transport::Sse.publish(&base, topic, json!("seed")).await);
    }
    let before_storm = seeds.join(".");
    let mut followers = Vec::new();
    for transport in Transport::ALL {
        followers.push(Follower::start(transport, &base, &TOPICS, Some(&before_storm)).await);
    }

    let acked = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = Transport::ALL
        .iter()
        .flat_map(|&transport| std::iter::repeat_n(transport, PUBLISHERS))
        .enumerate()
        .map(|(n, transport)| {
            let (base, acked) = (base.clone(), acked.clone());
            tokio::spawn(publish_until_gone(transport, base, n, acked))
        })
        .collect();
    within("the storm's acks", async {
        while acked.load(Ordering::Relaxed) < STORM {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    match stop {
        Stop::Kill9 => node.kill9(),
        Stop::Sigterm => {
            node.sigterm();
            let exit = node.exit_within(Duration::from_secs(15)).await;
            assert!(exit.success(), "SIGTERM: {exit}\n{}", node.log());
        }
    }
    let mut ledger = Ledger::new();
    for publisher in publishers {
        ledger.extend(publisher.await.expect("a publisher panicked"));
    }
    assert!(ledger.len() >= STORM, "{} acknowledged", ledger.len());
    // The streams end with the node; a poller keeps polling, as its clients do.
    let mut before_stop = Vec::new();
    for follower in &mut followers {
        let streams = follower.transport() != Transport::Poll;
        before_stop.push(if streams {
            drain(follower).await
        } else {
            Vec::new()
        });
    }

    node.restart().await;
    // One more message on each topic, in the same epoch: every resume waits for it.
    let last_before = last_ids(&ledger);
    for ((topic, seed), before) in TOPICS.iter().zip(&seeds).zip(&last_before) {
        let next = Transport::Poll.publish(&base, topic, json!("after")).await;
        assert_eq!(epoch_of(&next), epoch_of(seed), "{topic}: the same epoch");
        assert!(
            seq_of(&next) > seq_of(before),
            "{topic}: {next} after {before}"
        );
        ledger.record(topic, &next);
    }
    let last = last_ids(&ledger);
    for (i, (follower, mut received)) in followers.iter_mut().zip(before_stop).enumerate() {
        // Each stream resumes on the next transport, from the last id it got.
        let transport = Transport::ALL[(i + 1) % Transport::ALL.len()];
        let mut resumed = match follower.transport() {
            Transport::Poll => None,
            _ => Some(Follower::start(transport, &base, &TOPICS, Some(follower.cursor())).await),
        };
        let taken = resumed.as_mut().unwrap_or(follower).take_until(&last).await;
        assert!(
            taken.surprises.is_empty(),
            "{:?} resumed from {}: {:?}; got {} messages, the last {:?}",
            follower.transport(),
            follower.cursor(),
            taken.surprises,
            taken.messages.len(),
            taken.messages.last()
        );
        received.extend(taken.messages);
        assert_exactly_once(
            &ledger,
            &received,
            &format!("{:?} resumed", follower.transport()),
        );
    }
    for transport in Transport::ALL {
        let mut fresh = Follower::start(transport, &base, &TOPICS, Some(&before_storm)).await;
        let taken = fresh.take_until(&last).await;
        assert!(
            taken.surprises.is_empty(),
            "{transport:?}: {:?}",
            taken.surprises
        );
        assert_exactly_once(
            &ledger,
            &taken.messages,
            &format!("{transport:?} from before"),
        );
    }
    node.sigterm();
    node.exit_within(Duration::from_secs(15)).await;
}

/// Publishes on `transport` (one WebSocket connection, or HTTP requests) until the node stops
/// answering; returns what was acknowledged.
async fn publish_until_gone(
    transport: Transport,
    base: String,
    publisher: usize,
    acked: Arc<AtomicUsize>,
) -> Ledger {
    let mut ledger = Ledger::new();
    let mut sent = std::collections::VecDeque::new();
    let http = reqwest::Client::new();
    let ws_url = format!("ws://{}/ws", base.trim_start_matches("http://"));
    let mut ws = match transport {
        Transport::Ws => match tokio_tungstenite::connect_async(&ws_url).await {
            Ok((ws, _)) => Some(ws),
            Err(_) => return ledger,
        },
        _ => None,
    };
    for n in 0.. {
        let topic = TOPICS[n % TOPICS.len()];
        let data = json!({"publisher": publisher, "n": n});
        let (topic, id) = match (&mut ws, transport) {
            (Some(ws), _) => {
                // Pipelined: up to WS_WINDOW publishes are sent before their acks are read.
                let frame = json!({"type": "publish", "topic": topic, "data": data});
                if ws.send(frame.to_string().into()).await.is_err() {
                    break;
                }
                sent.push_back(topic);
                if sent.len() < WS_WINDOW {
                    continue;
                }
                let Some((acked_topic, id)) = next_ack(ws).await else {
                    break;
                };
                // Acks come in the order of the publishes.
                let oldest = sent.pop_front().expect("a publish in flight");
                assert_eq!(acked_topic, oldest, "an ack out of order");
                (oldest, id)
            }
            (None, Transport::Poll) if publisher % 2 == 1 => {
                // A batch (`POST /publish`): every line answered is recorded.
                let Some(published) = publish_batch(&http, &base, publisher, n).await else {
                    break;
                };
                let count = published.len();
                for (topic, id) in published {
                    ledger.record(&topic, &id);
                }
                acked.fetch_add(count, Ordering::Relaxed);
                continue;
            }
            (None, transport) => {
                let path = if transport == Transport::Sse {
                    "events"
                } else {
                    "poll"
                };
                let sent = http
                    .post(format!("{base}/{path}?topic={topic}"))
                    .json(&data)
                    .timeout(TIMEOUT)
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    break;
                }
                let Ok(answer) = response.json::<Value>().await else {
                    break;
                };
                (topic, answer["id"].as_str().expect("an id").to_owned())
            }
        };
        ledger.record(topic, &id);
        acked.fetch_add(1, Ordering::Relaxed);
    }
    ledger
}

/// Lines in each batch of a batch publisher.
const BATCH_LINES: usize = 8;

/// Publishes a batch of [`BATCH_LINES`] over the storm's topics; the topic and id of each line
/// published, or `None` when the node did not answer.
async fn publish_batch(
    http: &reqwest::Client,
    base: &str,
    publisher: usize,
    n: usize,
) -> Option<Vec<(String, String)>> {
    let body: String = (0..BATCH_LINES)
        .map(|line| {
            let topic = TOPICS[line % TOPICS.len()];
            let data = json!({"publisher": publisher, "n": n, "line": line});
            format!("{}\n", json!({"topic": topic, "data": data}))
        })
        .collect();
    let response = http
        .post(format!("{base}/publish"))
        .body(body)
        .timeout(TIMEOUT)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let text = response.text().await.ok()?;
    let answers: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let published = answers
        .iter()
        .filter_map(|a| {
            Some((
                a["topic"].as_str()?.to_owned(),
                a["id"].as_str()?.to_owned(),
            ))
        })
        .collect::<Vec<_>>();
    // A refusal (the store stopping) ends this publisher like a failed request.
    (published.len() == BATCH_LINES).then_some(published)
}

/// The topic and id in the next `ack` frame, or `None` when the connection ends first.
async fn next_ack<S>(ws: &mut S) -> Option<(String, String)>
where
    S: StreamExt<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(TIMEOUT, ws.next()).await.ok()??.ok()?;
        let tungstenite::Message::Text(text) = frame else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).ok()?;
        match frame["type"].as_str() {
            Some("ack") => {
                let (topic, id) = (frame["topic"].as_str()?, frame["id"].as_str()?);
                return Some((topic.to_owned(), id.to_owned()));
            }
            Some("error") => return None,
            _ => {}
        }
    }
}

/// Everything `follower` received until its connection ended with the node.
async fn drain(follower: &mut Follower) -> Vec<Value> {
    let mut received = Vec::new();
    loop {
        match follower.next_within(TIMEOUT).await {
            Got::Message(message) => received.push(message),
            Got::Ended(_) => return received,
            other => panic!("{follower:?} while the node stopped: {other:?}"),
        }
    }
}

/// The last acknowledged id of each topic.
fn last_ids(ledger: &Ledger) -> Vec<String> {
    TOPICS.iter().map(|topic| last_of(ledger, topic)).collect()
}

fn last_of(ledger: &Ledger, topic: &str) -> String {
    let mut last = None;
    for id in ledger.ids(topic) {
        if last
            .as_ref()
            .is_none_or(|l: &String| seq_of(id) > seq_of(l))
        {
            last = Some(id.clone());
        }
    }
    last.unwrap_or_else(|| panic!("nothing acknowledged on {topic}"))
}

/// Every acknowledged message exactly once and in order; messages that were committed but
/// whose ack the stop cut off may come too.
fn assert_exactly_once(ledger: &Ledger, received: &[Value], what: &str) {
    let tally = ledger.tally(received);
    assert_eq!(
        (tally.lost, tally.duplicated, tally.out_of_order),
        (0, 0, 0),
        "{what}: {tally}"
    );
    for topic in TOPICS {
        let seqs: Vec<u64> = received
            .iter()
            .filter(|m| m["topic"] == topic)
            .map(|m| seq_of(m["id"].as_str().expect("an id")))
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{what}: {topic} has a gap or a repeat: {seqs:?}"
        );
    }
}

/// The epoch of an id (`tag-epoch-seq`).
fn epoch_of(id: &str) -> &str {
    id.split('-').nth(1).expect("an epoch")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = data_dir("locked");
    let node = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    let mut second = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    let exit = second.exit_within(TIMEOUT).await;
    assert!(!exit.success());
    assert!(
        second
            .log()
            .contains("is in use by another Switchboard process"),
        "{}",
        second.log()
    );
    let id = Transport::Sse
        .publish(&node.base(), "still", json!(1))
        .await;
    assert_eq!(seq_of(&id), 1, "the first one serves on");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_foreign_directory_is_refused_and_left_as_it_was() {
    let dir = data_dir("corrupt");
    let mut node = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    Transport::Sse.publish(&node.base(), "t", json!(1)).await;
    node.sigterm();
    node.exit_within(Duration::from_secs(15)).await;
    let database = dir.join("history.redb");
    let garbage = vec![0x5a_u8; 64 * 1024];
    std::fs::write(&database, &garbage).expect("overwrite the database");
    let mut refused = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    assert!(!refused.exit_within(TIMEOUT).await.success());
    assert!(
        refused.log().contains("its database cannot be used"),
        "{}",
        refused.log()
    );
    assert_eq!(
        std::fs::read(&database).expect("read"),
        garbage,
        "untouched"
    );

    let foreign = data_dir("foreign");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("photos.txt"), "mine").expect("write");
    let mut refused = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&foreign)]).await;
    assert!(!refused.exit_within(TIMEOUT).await.success());
    assert!(
        refused
            .log()
            .contains("is not a Switchboard data directory"),
        "{}",
        refused.log()
    );
    let names: Vec<_> = std::fs::read_dir(&foreign)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["photos.txt"], "nothing added");
}

#[tokio::test(flavor = "multi_thread")]
async fn shrinking_retention_between_runs_trims_and_older_positions_get_retention_resets() {
    let dir = data_dir("shrink");
    let mut node = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    let mut ids = Vec::new();
    for n in 1..=10 {
        ids.push(Transport::Sse.publish(&node.base(), "news", json!(n)).await);
    }
    node.sigterm();
    node.exit_within(Duration::from_secs(15)).await;

    let shrunk = NodeProcess::start(
        switchboard_bin!(),
        &["--data-dir", arg(&dir), "--retention-messages", "3"],
    )
    .await;
    for transport in Transport::ALL {
        let mut follower =
            Follower::start(transport, &shrunk.base(), &["news"], Some(&ids[1])).await;
        assert_reset(&follower.reset().await, "news", "retention");
        for n in 8..=10 {
            assert_eq!(follower.message().await["data"], json!(n), "{transport:?}");
        }
        // Someone past the trimmed messages loses nothing.
        let mut past = Follower::start(transport, &shrunk.base(), &["news"], Some(&ids[8])).await;
        assert_eq!(past.message().await["data"], json!(10), "{transport:?}");
    }
}

/// A topic deleted through the admin API stays deleted across a `kill -9`: its history does not
/// come back, a client resuming from it is told `history_lost`, and what is published after
/// the delete survives as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_topic_stays_deleted_after_a_restart() {
    let dir = data_dir("delete");
    let mut node = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    // More messages before the delete than after it: none of them may come back.
    let old = Transport::Sse
        .publish(&node.base(), "news", json!("old"))
        .await;
    for n in 0..3 {
        Transport::Sse.publish(&node.base(), "news", json!(n)).await;
    }
    let deleted = reqwest::Client::new()
        .delete(node.http_url("/admin/topics/news"))
        .send()
        .await
        .expect("answered");
    assert_eq!(deleted.status(), 200);
    let new = Transport::Sse
        .publish(&node.base(), "news", json!("new"))
        .await;
    node.kill9();
    node.restart().await;

    let mut latest = new.clone();
    for transport in Transport::ALL {
        let mut from_old = Follower::start(transport, &node.base(), &["news"], Some(&old)).await;
        assert_reset(&from_old.reset().await, "news", "history_lost");
        assert_eq!(from_old.message().await["id"], json!(new), "{transport:?}");
        let retained = switchboard_e2e::poll(
            &node.http_url(&format!("/poll?topic=news&since={new}&timeout=0")),
        )
        .await;
        assert!(
            retained.messages.iter().all(|m| m["data"].is_string()),
            "old messages came back: {:?}",
            retained.messages
        );
        let mut from_latest =
            Follower::start(transport, &node.base(), &["news"], Some(&latest)).await;
        let after = Transport::Sse
            .publish(&node.base(), "news", json!(format!("after {transport:?}")))
            .await;
        assert_eq!(
            from_latest.message().await["id"],
            json!(after),
            "{transport:?}"
        );
        latest = after;
    }
}

/// A WebSocket client that sends its publishes without waiting for each `ack` gets every
/// answer, in the order it sent them (a refused one in its place), and its publishes share the
/// store's commits rather than taking one each.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_publishes_are_answered_in_order_and_share_commits() {
    // More than the 64 a connection may have in flight: the rest wait to be read.
    const SENT: u64 = 100;
    const REFUSED: u64 = 40;
    let dir = data_dir("pipelined");
    let node = NodeProcess::start(switchboard_bin!(), &["--data-dir", arg(&dir)]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url("/ws"))
        .await
        .expect("connected");
    for n in 0..SENT {
        let topic = if n == REFUSED { "not a topic" } else { "pipe" };
        let frame = json!({"type": "publish", "topic": topic, "data": n, "ref": n});
        ws.feed(frame.to_string().into()).await.expect("sent");
    }
    ws.flush().await.expect("sent");

    let mut seqs = Vec::new();
    for n in 0..SENT {
        let answer = within("an answer", async {
            loop {
                if let Some(Ok(tungstenite::Message::Text(text))) = ws.next().await {
                    return serde_json::from_str::<Value>(&text).expect("JSON");
                }
            }
        })
        .await;
        assert_eq!(answer["ref"], json!(n), "answers in order: {answer}");
        if n == REFUSED {
            assert_eq!(answer["code"], "bad_topic", "{answer}");
        } else {
            assert_eq!(answer["type"], "ack", "{answer}");
            seqs.push(seq_of(answer["id"].as_str().expect("an id")));
        }
    }
    let expected: Vec<u64> = (1..SENT).collect();
    assert_eq!(seqs, expected, "published in the order sent");

    let health: Value = reqwest::get(node.http_url("/healthz"))
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let commits = health["commits"].as_u64().expect("commits counted");
    assert!(
        (1..SENT - 1).contains(&commits),
        "{} publishes took {commits} commits",
        SENT - 1
    );
}
