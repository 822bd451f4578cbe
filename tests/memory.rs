//! What clients that never read can make the gateway hold: bounded per connection whatever
//! they ask for, measured as the process's resident memory (the gateway runs in this process).

use std::time::Duration;

use switchboard::Config;
use switchboard_e2e::stuck::{
    LARGE_MESSAGE_PAD, StuckClient, publish_large, resident_bytes, wait_for_health,
};
use switchboard_e2e::{Endpoint, Gateway, TIMEOUT, poll, within};

const MIB: usize = 1024 * 1024;

/// The tests of this file measure the whole process: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until the gateway has started answering `client` (its first bytes have arrived).
async fn answered(client: &mut StuckClient) {
    let mut first = [0u8; 1];
    let n = within(
        "the first bytes of the answer",
        client.stream().peek(&mut first),
    )
    .await
    .expect("peek");
    assert_eq!(
        n, 1,
        "the gateway closed the connection instead of answering"
    );
}

/// Eight subscribers resume from the very start of a topic whose history fills the retention
/// budget, and read nothing while the history moves on: what they hold is a page each, not
/// the whole history they asked for.
#[tokio::test(flavor = "multi_thread")]
async fn stuck_subscribers_resuming_from_old_cursors_do_not_pin_evicted_history() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let config = Config {
        retention_bytes: 32 * MIB,
        retention_messages: 100_000,
        write_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let start = poll(&gw.http_url("/poll?topic=s&timeout=0")).await.cursor;
    publish_large(&gw, "s", 600).await;
    let before = resident_bytes();

    let mut clients = Vec::new();
    for i in 0..8 {
        let client = if i % 2 == 0 {
            StuckClient::websocket(gw.addr(), &format!("/ws?topic=s&since={start}")).await
        } else {
            StuckClient::get(gw.addr(), &format!("/events?topic=s&since={start}")).await
        };
        clients.push(client);
    }
    for client in &mut clients {
        answered(client).await;
    }
    wait_for_health(&gw.base(), TIMEOUT, "eight streams", |h| {
        h["connections"] == 8
    })
    .await;
    // A whole new history: without pins, the old one is freed as this one is retained.
    publish_large(&gw, "s", 600).await;
    let health = wait_for_health(&gw.base(), TIMEOUT, "the old history evicted", |h| {
        h["evicted"]["budget"].as_u64().unwrap_or(0) >= 600
    })
    .await;
    assert_eq!(health["connections"], 8, "{health}");

    let grown = resident_bytes().saturating_sub(before);
    // Pinned histories would be 8 × 32 MiB; pages, socket buffers and the allocator's slack
    // are a small fraction of that.
    assert!(
        grown < 96 * MIB,
        "resident memory grew by {} MiB with eight stuck subscribers",
        grown / MIB
    );
}

/// A poll from an old cursor gets at most `poll_batch_bytes` (and `more`), so a reply that is
/// never read holds about that much; and every such socket counts against `max_sockets`.
#[tokio::test(flavor = "multi_thread")]
async fn unread_poll_replies_are_bounded_in_bytes_and_count_as_sockets() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let gw = Gateway::start_default().await;
    let start = poll(&gw.http_url("/poll?topic=s&timeout=0")).await.cursor;
    publish_large(&gw, "s", 1000).await;

    let reply = poll(&gw.http_url(&format!("/poll?topic=s&since={start}&timeout=0"))).await;
    let bytes: usize = reply.messages.iter().map(|m| m.to_string().len()).sum();
    assert!(reply.more, "more messages wait");
    assert!(
        bytes <= Config::default().poll_batch_bytes + LARGE_MESSAGE_PAD + 1024,
        "a reply of {bytes} bytes"
    );
    assert!(
        reply.messages.len() >= 2,
        "{} messages",
        reply.messages.len()
    );

    let before = resident_bytes();
    let path = format!("/poll?topic=s&since={start}&timeout=0");
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(StuckClient::get(gw.addr(), &path).await);
    }
    for client in &mut clients {
        answered(client).await;
    }
    // Eight unread replies, and the health check's own socket.
    let health = wait_for_health(&gw.base(), TIMEOUT, "unread polls counted", |h| {
        h["sockets"] == 9
    })
    .await;
    assert_eq!(
        health["connections"], 0,
        "answered polls hold no stream slot"
    );
    let grown = resident_bytes().saturating_sub(before);
    // Whole batches would be 8 × 57 MiB.
    assert!(
        grown < 64 * MIB,
        "resident memory grew by {} MiB with eight unread polls",
        grown / MIB
    );
}
