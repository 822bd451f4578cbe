//! `switchboard-bench floor`: the least a fan-out server can do for the bench's deliveries, so
//! that each real server's CPU per delivery can be read as a multiple of it.
//!
//! Plain tokio TCP on one thread, no framework. It speaks just enough of switchboard's wire
//! for the bench's clients: `GET /ws?topic=T` (RFC 6455 handshake), `GET /events?topic=T`
//! (SSE), pipelined `POST /events?topic=T` publishes and `GET /healthz`. Each publish is
//! encoded once, as a WebSocket text frame and as an SSE event carrying switchboard's envelope
//! (`type`, `topic`, `id`, `data`, `time`), into shared bytes; a subscriber gets one write per
//! delivery, or one write for everything queued when several messages wait. No history, no
//! ids to resume from, no limits, no heartbeats: the floor is what remains of the kernel's and
//! the runtime's work when a server does nothing else.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// Largest request head or publish body the floor reads (the bench's are far smaller).
const MAX_REQUEST: usize = 1 << 20;

/// Serves on `listen` until killed; prints `listening on http://ADDR` (as switchboard does)
/// once bound, which is how the bench learns the port.
pub(crate) async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("floor bind {listen}"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("floor address", e))?;
    println!("floor listening on http://{addr}");
    let hub = Rc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::task::spawn_local(connection(hub.clone(), tcp));
            }
            // Out of file descriptors, most likely: let some close.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Topics and their subscribers.
#[derive(Default)]
struct Hub {
    topics: RefCell<HashMap<String, Topic>>,
}

#[derive(Default)]
struct Topic {
    /// Messages published so far: the last one's sequence in its id.
    published: u64,
    subscribers: Vec<Rc<Subscriber>>,
}

/// A subscriber's queue of encoded messages, filled by publishes and emptied by its task.
struct Subscriber {
    sse: bool,
    queue: RefCell<Vec<Rc<[u8]>>>,
    /// Wakes the subscriber's task when its queue was empty.
    wake: Notify,
    /// Set once the connection is gone, so publishes stop queueing for it.
    gone: Cell<bool>,
}

impl Hub {
    fn subscribe(&self, topic: &str, sub: Rc<Subscriber>) {
        let mut topics = self.topics.borrow_mut();
        topics
            .entry(topic.to_owned())
            .or_default()
            .subscribers
            .push(sub);
    }

    fn unsubscribe(&self, topic: &str, sub: &Rc<Subscriber>) {
        let mut topics = self.topics.borrow_mut();
        let Some(t) = topics.get_mut(topic) else {
            return;
        };
        if let Some(i) = t.subscribers.iter().position(|s| Rc::ptr_eq(s, sub)) {
            t.subscribers.swap_remove(i);
        }
    }

    /// Encodes `data` once per transport and queues it for every subscriber of `topic`;
    /// returns the message id.
    fn publish(&self, topic: &str, data: &[u8]) -> String {
        let mut topics = self.topics.borrow_mut();
        let t = topics.entry(topic.to_owned()).or_default();
        t.published += 1;
        let id = format!("1-1-{}", t.published);
        let (ws, sse) = encode(topic, &id, data, millis_now());
        let (ws, sse): (Rc<[u8]>, Rc<[u8]>) = (ws.into(), sse.into());
        for sub in &t.subscribers {
            if sub.gone.get() {
                continue;
            }
            let mut q = sub.queue.borrow_mut();
            q.push(if sub.sse { sse.clone() } else { ws.clone() });
            if q.len() == 1 {
                sub.wake.notify_one();
            }
        }
        id
    }
}

fn millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message as a WebSocket text frame and as an SSE event, with switchboard's envelope.
fn encode(topic: &str, id: &str, data: &[u8], time_ms: u64) -> (Vec<u8>, Vec<u8>) {
    let mut envelope = Vec::with_capacity(data.len() + topic.len() + id.len() + 64);
    envelope.extend_from_slice(b"{\"type\":\"message\",\"topic\":\"");
    envelope.extend_from_slice(topic.as_bytes());
    envelope.extend_from_slice(b"\",\"id\":\"");
    envelope.extend_from_slice(id.as_bytes());
    envelope.extend_from_slice(b"\",\"data\":");
    envelope.extend_from_slice(data);
    envelope.extend_from_slice(b",\"time\":");
    envelope.extend_from_slice(time_ms.to_string().as_bytes());
    envelope.push(b'}');
    let mut ws = Vec::with_capacity(envelope.len() + 10);
    ws.push(0x81);
    match envelope.len() {
        n @ 0..=125 => ws.push(n as u8),
        n @ 126..=0xFFFF => {
            ws.push(126);
            ws.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            ws.push(127);
            ws.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    ws.extend_from_slice(&envelope);
    let mut sse = Vec::with_capacity(envelope.len() + id.len() + 32);
    sse.extend_from_slice(b"id: ");
    sse.extend_from_slice(id.as_bytes());
    sse.extend_from_slice(b"\nevent: message\ndata: ");
    sse.extend_from_slice(&envelope);
    sse.extend_from_slice(b"\n\n");
    (ws, sse)
}

/// What one request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /ws?topic=T` with its `Sec-WebSocket-Key`.
    Ws {
        topic: String,
        key: String,
    },
    /// `GET /events?topic=T`.
    Sse {
        topic: String,
    },
    /// `POST /events?topic=T` with a body of this length.
    Publish {
        topic: String,
        len: usize,
    },
    Health,
    NotFound,
}

/// Parses one request head at the start of `buf`: its route and length, or `None` while
/// incomplete.
fn parse(buf: &[u8]) -> Result<Option<(Route, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::protocol(format!("floor request: {e}"))),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let (path, query) = req
        .path
        .unwrap_or("")
        .split_once('?')
        .unwrap_or((req.path.unwrap_or(""), ""));
    let topic = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("topic="))
        .unwrap_or("")
        .to_owned();
    let route = match (req.method.unwrap_or(""), path) {
        ("GET", "/healthz") => Route::Health,
        ("GET", "/ws") => match header("sec-websocket-key") {
            Some(key) => Route::Ws { topic, key },
            None => Route::NotFound,
        },
        ("GET", "/events") => Route::Sse { topic },
        ("POST", "/events") => {
            let len = header("content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Route::Publish { topic, len }
        }
        _ => Route::NotFound,
    };
    Ok(Some((route, n)))
}

/// Serves one connection: pipelined requests until one turns it into a subscription.
async fn connection(hub: Rc<Hub>, mut tcp: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Answer every complete request in `buf`, then write the answers at once.
        loop {
            let (route, head) = match parse(&buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => return,
            };
            match route {
                Route::Publish { topic, len } => {
                    if buf.len() < head + len {
                        break;
                    }
                    let id = hub.publish(&topic, &buf[head..head + len]);
                    let body = format!("{{\"id\":\"{id}\"}}");
                    out.extend_from_slice(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    buf.drain(..head + len);
                }
                Route::Health => {
                    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    buf.drain(..head);
                }
                Route::NotFound => {
                    out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    buf.drain(..head);
                }
                Route::Ws { topic, key } => {
                    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
                    let reply = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    );
                    drop(buf);
                    return stream(hub, tcp, topic, false, reply.into_bytes()).await;
                }
                Route::Sse { topic } => {
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
                    drop(buf);
                    return stream(hub, tcp, topic, true, reply.to_vec()).await;
                }
            }
        }
        if !out.is_empty() {
            if tcp.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if buf.len() > MAX_REQUEST {
            return;
        }
        buf.reserve(4096);
        match tcp.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A subscription: subscribed before the response head is written (so any publish after the
/// client has seen it reaches it), then queued messages are written as they come, everything
/// queued in one write. What the client sends (WebSocket pongs, close) is read and ignored;
/// the subscription ends when the connection does.
async fn stream(hub: Rc<Hub>, mut tcp: TcpStream, topic: String, sse: bool, reply: Vec<u8>) {
    let sub = Rc::new(Subscriber {
        sse,
        queue: RefCell::new(Vec::new()),
        wake: Notify::new(),
        gone: Cell::new(false),
    });
    hub.subscribe(&topic, sub.clone());
    if tcp.write_all(&reply).await.is_ok() {
        drop(reply);
        deliver(&mut tcp, &sub).await;
    }
    sub.gone.set(true);
    hub.unsubscribe(&topic, &sub);
}

async fn deliver(tcp: &mut TcpStream, sub: &Subscriber) {
    let (mut rd, mut wr) = tcp.split();
    let mut incoming = [0u8; 64];
    let mut taken: Vec<Rc<[u8]>> = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            r = rd.read(&mut incoming) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = sub.wake.notified() => {
                std::mem::swap(&mut *sub.queue.borrow_mut(), &mut taken);
                let written = match taken.as_slice() {
                    [] => Ok(()),
                    [one] => wr.write_all(one).await,
                    several => {
                        batch.clear();
                        several.iter().for_each(|m| batch.extend_from_slice(m));
                        wr.write_all(&batch).await
                    }
                };
                taken.clear();
                if written.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = b"GET /ws?topic=t.1 HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: abc\r\n\r\n";
        let (route, n) = parse(get).ok().flatten().unwrap_or((Route::Health, 0));
        assert_eq!(
            route,
            Route::Ws {
                topic: "t.1".into(),
                key: "abc".into()
            }
        );
        assert_eq!(n, get.len());
        let post = b"POST /events?topic=a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let parsed = parse(post).ok().flatten();
        assert_eq!(
            parsed,
            Some((
                Route::Publish {
                    topic: "a".into(),
                    len: 5
                },
                post.len() - 5
            ))
        );
        assert_eq!(parse(b"GET /ws?topic=a HTTP/1.1\r\n").ok(), Some(None));
        let sse = parse(b"GET /events?topic=b HTTP/1.1\r\n\r\n")
            .ok()
            .flatten();
        assert_eq!(sse.map(|r| r.0), Some(Route::Sse { topic: "b".into() }));
    }

    #[test]
    fn encodings_carry_the_envelope() {
        let data = crate::payload::build(7, 99, 128);
        let (ws, sse) = encode("t", "1-1-7", &data, 5);
        let envelope = format!(
            "{{\"type\":\"message\",\"topic\":\"t\",\"id\":\"1-1-7\",\"data\":{},\"time\":5}}",
            String::from_utf8_lossy(&data)
        );
        assert_eq!(&ws[..4], &[0x81, 126, 0, envelope.len() as u8]);
        assert_eq!(&ws[4..], envelope.as_bytes());
        assert_eq!(
            sse,
            format!("id: 1-1-7\nevent: message\ndata: {envelope}\n\n").into_bytes()
        );
        let frame = crate::rawhttp::parse_frame(&ws).ok().flatten();
        assert_eq!(frame.map(|f| (f.opcode, f.end)), Some((1, ws.len())));
    }
}
