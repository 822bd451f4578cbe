//! Sockets and request bodies: every open socket counts against `max_sockets` (with a clear
//! 503 beyond it), a body has `body_timeout` to arrive, and an over-size body gets its 413
//! even from a client that sends it all before reading.

use std::time::Duration;

use serde_json::Value;
use switchboard::Config;
use switchboard_e2e::stuck::{StuckClient, wait_for_health};
use switchboard_e2e::{Endpoint, Gateway, TIMEOUT, within};
use tokio::io::AsyncReadExt;

/// Reads an HTTP/1.1 response that ends with the connection (or a `content-length` body):
/// its status and JSON body.
async fn read_response(client: &mut StuckClient) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = within("the response", client.stream().read(&mut buffer))
            .await
            .expect("read the response (not a reset connection)");
        raw.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if n == 0 || length.is_some_and(|length| body.len() >= length) {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no status in {head:?}"));
                let json = serde_json::from_str(body).unwrap_or(Value::Null);
                return (status, json);
            }
        }
        assert!(n > 0, "closed before a whole response: {text:?}");
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_sockets_count_and_the_next_one_gets_a_503() {
    let config = Config {
        max_sockets: 3,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let addr = gw.addr();
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut client = StuckClient::get(addr, "/healthz").await;
        let (status, _) = read_response(&mut client).await;
        assert_eq!(status, 200);
        // Answered and kept alive: still an open socket.
        idle.push(client);
    }
    let mut refused = StuckClient::get(addr, "/healthz").await;
    let (status, body) = read_response(&mut refused).await;
    assert_eq!(
        (status, code(&body)),
        (503, "too_many_connections"),
        "{body}"
    );

    drop(idle.pop());
    let admitted = within("a socket freed", async {
        loop {
            let mut client = StuckClient::get(addr, "/healthz").await;
            let (status, body) = read_response(&mut client).await;
            if status == 200 {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(admitted["sockets"], 3, "{admitted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_never_arrives_gets_a_408_after_body_timeout() {
    let config = Config {
        body_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let addr = gw.addr();
    for sent in ["", "hello"] {
        let head = format!(
            "POST /events?topic=t HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{sent}"
        );
        let mut dripping = StuckClient::send(addr, &head).await;
        let (status, body) = read_response(&mut dripping).await;
        assert_eq!((status, code(&body)), (408, "request_timeout"), "{body}");
    }
    let health = wait_for_health(&gw.base(), TIMEOUT, "dripping sockets closed", |h| {
        h["sockets"] == 1
    })
    .await;
    assert_eq!(health["published"], 0, "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_size_body_sent_whole_gets_its_413() {
    let gw = Gateway::start_default().await;
    let addr = gw.addr();
    let limit = Config::default().max_message_bytes;
    for size in [limit + 1, 4 * limit] {
        let head = format!(
            "POST /events?topic=t HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n"
        );
        let mut client = StuckClient::send(addr, &head).await;
        // All of it, before reading anything, as most HTTP libraries do.
        client.write(&vec![b'x'; size]).await;
        let (status, body) = read_response(&mut client).await;
        assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");
    }
}
