//! SSE streams are written without hyper on fresh connections, and by hyper otherwise; both
//! must behave the same to the client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = switchboard::Config::default();
    tokio::spawn(switchboard::server::run(listener, config, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Reads until `needle` has been seen, or fails after a few seconds.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) -> String {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(seen)))
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(seen).into_owned()
}

async fn publish(addr: std::net::SocketAddr, text: &str) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /events?topic=t HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    read_until(&mut stream, &mut reply, "\"id\"").await;
}

/// Subscribes on `stream` (after whatever was already sent on it) and checks one message.
async fn subscribe_and_receive(
    addr: std::net::SocketAddr,
    stream: &mut TcpStream,
    seen: &mut Vec<u8>,
) -> String {
    let head = read_until(stream, seen, "event: subscribed").await;
    publish(addr, "over the stream").await;
    read_until(stream, seen, "\"data\":\"over the stream\"").await;
    head
}

#[tokio::test]
async fn fresh_connection_stream_is_chunked_and_closes_after() {
    let (addr, _stop) = start().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /events?topic=t HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let head = subscribe_and_receive(addr, &mut stream, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
}

#[tokio::test]
async fn stream_after_another_request_is_served_by_hyper() {
    let (addr, _stop) = start().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut seen = Vec::new();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_until(&mut stream, &mut seen, "\"status\":\"ok\"").await;
    seen.clear();
    stream
        .write_all(format!("GET /events?topic=t HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let head = subscribe_and_receive(addr, &mut stream, &mut seen).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("date: "), "hyper adds a date header: {head}");
}

#[tokio::test]
async fn head_split_across_packets_still_works() {
    let (addr, _stop) = start().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /events?topic=t HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(format!("Host: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let head = subscribe_and_receive(addr, &mut stream, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[tokio::test]
async fn errors_are_sized_and_a_client_leaving_frees_its_slot() {
    let (addr, _stop) = start().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET /events?topic=a%20b HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let reply = read_until(&mut stream, &mut Vec::new(), "bad_topic").await;
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("content-length: "), "{reply}");

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET /events?topic=t HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_until(&mut stream, &mut Vec::new(), "event: subscribed").await;
    drop(stream);
    let mut health = Vec::new();
    for _ in 0..50 {
        let mut probe = TcpStream::connect(addr).await.expect("connect");
        probe
            .write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("write");
        health.clear();
        let reply = read_until(&mut probe, &mut health, "}").await;
        if reply.contains("\"connections\":0") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the stream's connection slot was not freed: {:?}",
        String::from_utf8_lossy(&health)
    );
}
