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

/// How long any one read of an answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A response as both paths must give it: everything but the `date` header (hyper adds it),
/// `connection` (a claimed stream closes its connection) and the request's id (in
/// `x-request-id` and error bodies, shown as `<id>`), which the protocol allows to differ.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status_line: String,
    /// Every other header, in the order it was sent.
    headers: Vec<String>,
    /// The body without its chunk framing; of an event stream, up to its `subscribed` event.
    body: String,
}

/// Reads more of the connection into `buffer`; false once the gateway has closed it.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(ANSWER_WAIT, stream.read(&mut chunk))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "neither an answer nor a close within {ANSWER_WAIT:?}; read so far: {:?}",
                String::from_utf8_lossy(buffer)
            )
        });
    // A reset is a close as well.
    let n = read.unwrap_or(0);
    buffer.extend_from_slice(&chunk[..n]);
    n > 0
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response from `stream`; `None` if the gateway closed the connection without
/// answering.
async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buffer, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(stream, &mut buffer).await {
            assert!(
                buffer.is_empty(),
                "closed in the middle of a response head: {:?}",
                String::from_utf8_lossy(&buffer)
            );
            return None;
        }
    };
    let rest = buffer.split_off(head_end);
    let head = String::from_utf8(buffer).expect("the response head is text");
    let mut lines = head.split("\r\n").filter(|line| !line.is_empty());
    let status_line = lines.next().expect("a status line").to_owned();
    let (mut length, mut chunked, mut headers) = (None, false, Vec::new());
    let mut request_id = None;
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not a header line: {line:?}"));
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => length = Some(value.parse::<usize>().expect("a length")),
            "transfer-encoding" => chunked = value == "chunked",
            _ => {}
        }
        if name == "x-request-id" {
            request_id = Some(value.to_owned());
            headers.push(format!("{name}: <id>"));
        } else if name != "date" && name != "connection" {
            headers.push(format!("{name}: {value}"));
        }
    }
    let body = match (length, chunked) {
        (Some(length), false) => read_sized(stream, rest, length).await,
        (None, true) => read_chunked_to_subscribed(stream, rest).await,
        _ => panic!("a response neither sized nor chunked: {head}"),
    };
    let mut body = String::from_utf8_lossy(&body).into_owned();
    if let Some(id) = request_id {
        body = body.replace(&id, "<id>");
    }
    Some(Answer {
        status_line,
        headers,
        body,
    })
}

async fn read_sized(stream: &mut TcpStream, mut body: Vec<u8>, length: usize) -> Vec<u8> {
    while body.len() < length {
        assert!(
            read_more(stream, &mut body).await,
            "closed after {} of {length} body bytes",
            body.len()
        );
    }
    body.truncate(length);
    body
}

/// De-chunks until the body ends or holds a complete `subscribed` event, where a stream that
/// goes on is cut: chunk boundaries may differ, the events may not.
async fn read_chunked_to_subscribed(stream: &mut TcpStream, mut raw: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(&raw, b"\r\n") else {
            assert!(read_more(stream, &mut raw).await, "closed in a chunk size");
            continue;
        };
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|size| usize::from_str_radix(size, 16).ok())
            .unwrap_or_else(|| panic!("bad chunk size in {:?}", String::from_utf8_lossy(&raw)));
        if size == 0 {
            return body;
        }
        let chunk_end = line_end + 2 + size + 2;
        while raw.len() < chunk_end {
            assert!(read_more(stream, &mut raw).await, "closed in a chunk");
        }
        body.extend_from_slice(&raw[line_end + 2..chunk_end - 2]);
        raw.drain(..chunk_end);
        if let Some(start) = find(&body, b"event: subscribed\n")
            && let Some(end) = find(&body[start..], b"\n\n")
        {
            body.truncate(start + end + 2);
            return body;
        }
    }
}

/// The answer to `request` sent as the first request of a fresh connection.
async fn answer_on_fresh_connection(addr: std::net::SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_answer(&mut stream).await
}

/// The answer to `request` sent after a `GET /healthz` on the same, kept-alive connection.
async fn answer_on_kept_alive_connection(
    addr: std::net::SocketAddr,
    request: &[u8],
) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let health = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(health.as_bytes()).await.expect("write");
    let health = read_answer(&mut stream).await.expect("a /healthz answer");
    assert!(health.body.contains("\"status\":\"ok\""), "{health:?}");
    stream.write_all(request).await.expect("write");
    read_answer(&mut stream).await
}

/// `(what, request target, further header lines)` of good and malformed `GET /events`
/// requests: bad bytes in the target or a header, bad body framing, bad parameters.
const COMPARED_REQUESTS: &[(&str, &[u8], &[u8])] = &[
    ("a good stream", b"/events?topic=same", b""),
    (
        "obs-text in a header",
        b"/events?topic=same",
        b"X-Name: caf\xe9\r\n",
    ),
    ("a quote in the query", b"/events?topic=a\"b", b""),
    ("a < in the query", b"/events?topic=a<b", b""),
    ("a byte that is not UTF-8", b"/events?topic=a\xffb", b""),
    ("a space in the target", b"/events?topic=a b", b""),
    (
        "a control byte in a header",
        b"/events?topic=t",
        b"X-Bad: a\x01b\r\n",
    ),
    ("a bad header name", b"/events?topic=t", b"X(Bad: 1\r\n"),
    (
        "a bad content length",
        b"/events?topic=t",
        b"Content-Length: x\r\n",
    ),
    (
        "an unknown transfer coding",
        b"/events?topic=t",
        b"Transfer-Encoding: gzip\r\n",
    ),
    ("a bad topic", b"/events?topic=a%20b", b""),
    ("no topic", b"/events", b""),
    ("a bad cursor", b"/events?topic=t&since=!!", b""),
    ("a longer path", b"/eventsx?topic=t", b""),
];

/// Every request of [`COMPARED_REQUESTS`] gets the same answer whether it comes first on a
/// fresh connection (which the gateway may serve without hyper) or after another request on a
/// kept-alive one (which hyper serves).
#[tokio::test]
async fn every_request_is_answered_alike_on_fresh_and_kept_alive_connections() {
    let (addr, _stop) = start().await;
    let mut differences = Vec::new();
    for &(what, target, headers) in COMPARED_REQUESTS {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(format!(" HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
        request.extend_from_slice(headers);
        request.extend_from_slice(b"\r\n");
        let fresh = answer_on_fresh_connection(addr, &request).await;
        let kept_alive = answer_on_kept_alive_connection(addr, &request).await;
        assert!(
            kept_alive.is_some(),
            "{what}: hyper did not answer on a kept-alive connection"
        );
        if fresh != kept_alive {
            differences.push(format!(
                "{what}:\n  fresh connection:      {fresh:?}\n  kept-alive connection: {kept_alive:?}"
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
