//! HTTP/1.1 pipelining: a client that sends its requests without waiting for the answers gets
//! every answer, in order, and an answer is never held back while a later request waits.

use serde_json::{Value, json};
use switchboard_e2e::stuck::wait_for_connections;
use switchboard_e2e::tally::seq_of;
use switchboard_e2e::{Endpoint, Gateway, publish, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One pipelined connection, read one answer at a time.
struct Pipeline {
    stream: TcpStream,
    /// Bytes read past the answers returned so far.
    unread: Vec<u8>,
}

impl Pipeline {
    async fn connect(gw: &Gateway) -> Pipeline {
        let stream = within("connect", TcpStream::connect(gw.addr()))
            .await
            .expect("connect");
        Pipeline {
            stream,
            unread: Vec::new(),
        }
    }

    /// Sends all `requests` in one write.
    async fn send(&mut self, requests: &[String]) {
        let bytes = requests.concat();
        self.stream.write_all(bytes.as_bytes()).await.expect("send");
    }

    /// The next answer: its status and JSON body (`content-length` framed).
    async fn answer(&mut self, what: &str) -> (u16, Value) {
        within(what, async {
            loop {
                if let Some(answer) = self.take_answer() {
                    return answer;
                }
                let mut buffer = [0u8; 4096];
                let n = self.stream.read(&mut buffer).await.expect("read");
                assert_ne!(n, 0, "the connection closed before {what}");
                self.unread.extend_from_slice(&buffer[..n]);
            }
        })
        .await
    }

    fn take_answer(&mut self) -> Option<(u16, Value)> {
        let end_of_head = self.unread.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.unread[..end_of_head]).to_lowercase();
        let status = head.split(' ').nth(1)?.parse().expect("a status");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .expect("a content-length")
            .trim()
            .parse()
            .expect("a length");
        if self.unread.len() < end_of_head + length {
            return None;
        }
        let body = serde_json::from_slice(&self.unread[end_of_head..end_of_head + length])
            .expect("a JSON body");
        self.unread.drain(..end_of_head + length);
        Some((status, body))
    }
}

fn post(gw: &Gateway, topic: &str, data: &Value) -> String {
    let body = data.to_string();
    format!(
        "POST /events?topic={topic} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        gw.addr(),
        body.len()
    )
}

fn get(gw: &Gateway, path_and_query: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\n\r\n",
        gw.addr()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_all_answered_in_order() {
    const SENT: u64 = 100;
    const REFUSED: u64 = 40;
    let gw = Gateway::start_default().await;
    let mut pipeline = Pipeline::connect(&gw).await;
    let requests: Vec<String> = (0..SENT)
        .map(|n| {
            let topic = if n == REFUSED {
                "not%20a%20topic"
            } else {
                "pipe"
            };
            post(&gw, topic, &json!(n))
        })
        .collect();
    pipeline.send(&requests).await;

    let mut seqs = Vec::new();
    for n in 0..SENT {
        let (status, body) = pipeline.answer("a pipelined answer").await;
        if n == REFUSED {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("bad_topic"))
            );
        } else {
            assert_eq!(status, 200, "answer {n}: {body}");
            seqs.push(seq_of(body["id"].as_str().expect("an id")));
        }
    }
    // Published in the order sent: the refused one took no position.
    let first = seqs[0];
    let expected: Vec<u64> = (first..first + SENT - 1).collect();
    assert_eq!(seqs, expected);
}

/// Answers made together leave together, but an answer already made is not held while the
/// request after it waits: here a long-poll, with another request pipelined behind it.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_is_not_held_while_a_later_request_waits() {
    let gw = Gateway::start_default().await;
    let mut pipeline = Pipeline::connect(&gw).await;
    pipeline
        .send(&[
            post(&gw, "first", &json!("before the poll")),
            get(&gw, "/poll?topic=waited&timeout=60"),
            post(&gw, "last", &json!("after the poll")),
        ])
        .await;

    // Arrives while the poll is held, not when it ends (a minute later).
    let (status, first) = pipeline.answer("the answer before the poll").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["topic"], "first");

    wait_for_connections(&gw.base(), 1, "the poll to be held").await;
    let id = publish(&gw.http_url("/events?topic=waited"), &json!("wake")).await;
    let (status, polled) = pipeline.answer("the poll's answer").await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["messages"][0]["id"], json!(id), "{polled}");

    let (status, last) = pipeline.answer("the answer after the poll").await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["topic"], "last");
}
