//! Clients that stop reading: the gateway lets them go after `write_timeout` (as slow
//! consumers), frees their slots, and never waits on them when it shuts down.

use std::time::Duration;

use switchboard::Config;
use switchboard_e2e::stuck::{StuckClient, health, publish_large, wait_for_health};
use switchboard_e2e::{Endpoint, Gateway, TIMEOUT, within};

/// Queues that never overflow here: what ends a stuck client must be the write deadline.
fn deep_queues(write_timeout: Duration) -> Config {
    Config {
        write_timeout,
        send_queue: 100_000,
        send_queue_bytes: 1 << 30,
        send_queue_total_bytes: 1 << 30,
        ..Config::default()
    }
}

async fn wait_for_connections(gw: &Gateway, count: u64) {
    wait_for_health(&gw.base(), TIMEOUT, "open streams", |h| {
        h["connections"] == count
    })
    .await;
}

/// A client that reads nothing is dropped once a write has made no progress for
/// `write_timeout`, and its slot is freed.
async fn reader_of_nothing_is_dropped(open: impl AsyncFnOnce(&Gateway) -> StuckClient) {
    let gw = Gateway::start(deep_queues(Duration::from_millis(500))).await;
    let _client = open(&gw).await;
    wait_for_connections(&gw, 1).await;
    // 200 × 60 kB: far more than the socket buffers on both sides hold.
    publish_large(&gw, "s", 200).await;
    // Its socket closed too: the one left is the health check's own (earlier checks' sockets
    // close as the gateway notices them go).
    let after = wait_for_health(&gw.base(), TIMEOUT, "the stuck client dropped", |h| {
        h["connections"] == 0 && h["sockets"] == 1
    })
    .await;
    assert_eq!(after["write_timeouts"], 1, "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_that_reads_nothing_is_dropped() {
    reader_of_nothing_is_dropped(async |gw: &Gateway| {
        StuckClient::websocket(gw.addr(), "/ws?topic=s").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_stream_that_reads_nothing_is_dropped() {
    reader_of_nothing_is_dropped(async |gw: &Gateway| {
        StuckClient::get(gw.addr(), "/events?topic=s").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_stream_on_a_kept_alive_connection_that_reads_nothing_is_dropped() {
    reader_of_nothing_is_dropped(async |gw: &Gateway| {
        let addr = gw.addr();
        // Two requests in one packet: the stream is not the connection's first request, so
        // hyper serves it.
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\nGET /events?topic=s HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        );
        StuckClient::send(addr, &head).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_does_not_wait_for_clients_that_read_nothing() {
    let config = Config {
        shutdown_grace: Duration::from_secs(600),
        ..deep_queues(Duration::from_secs(3600))
    };
    let gw = Gateway::start(config).await;
    let _ws = StuckClient::websocket(gw.addr(), "/ws?topic=s").await;
    let _sse = StuckClient::get(gw.addr(), "/events?topic=s").await;
    wait_for_connections(&gw, 2).await;
    publish_large(&gw, "s", 200).await;
    let stuck = health(&gw.base()).await;
    assert_eq!(stuck["connections"], 2, "both still open: {stuck}");
    // The grace period is ten minutes and the write deadline an hour: only a shutdown that
    // gives up on blocked writes returns within the test's timeout.
    within("shutdown with stuck clients", gw.shutdown()).await;
}
