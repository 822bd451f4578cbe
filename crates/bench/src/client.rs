//! Subscribers (WebSocket, SSE, long-poll) and HTTP publishers for both servers.
//!
//! Every connection is one cheap task on the generator's single-threaded runtime; per-message
//! work is a substring scan of what arrived (see `payload`) plus a few counter updates.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};

use crate::error::{Error, Result};
use crate::stats::{Shared, Tracker};
use crate::{payload, rawhttp};
use tokio::io::AsyncWriteExt;

/// Which server is on the other end: decides URLs and how subscription readiness shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Flavor {
    Switchboard,
    Nchan,
}

impl Flavor {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Switchboard => "switchboard",
            Self::Nchan => "nchan",
        }
    }
}

/// Subscriber transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Transport {
    Ws,
    Sse,
    /// Long-poll: switchboard's `/poll` (batched JSON), Nchan's one-message-per-response.
    Poll,
    /// Nchan long-poll with `nchan_longpoll_multipart_response on` (several messages per
    /// response as multipart/mixed): Nchan's own batching, measured too so the comparison is
    /// against Nchan at its best. Switchboard has no such variant.
    PollMultipart,
}

/// Opens client sockets, spreading them over several 127.0.0.x source addresses: one source
/// address has ~28k ephemeral ports, and a full run opens and closes (TIME_WAIT) far more.
#[derive(Debug)]
pub(crate) struct Dialer {
    pub(crate) dst: SocketAddr,
    sources: Vec<Ipv4Addr>,
    next: Cell<usize>,
}

impl Dialer {
    pub(crate) fn new(dst: SocketAddr, n_sources: u8) -> Self {
        let sources = (0..n_sources.max(1))
            .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
            .collect();
        Self {
            dst,
            sources,
            next: Cell::new(0),
        }
    }

    pub(crate) async fn connect(&self) -> std::io::Result<TcpStream> {
        let mut last_err = None;
        for _ in 0..self.sources.len() {
            let i = self.next.get();
            self.next.set((i + 1) % self.sources.len());
            let sock = TcpSocket::new_v4()?;
            if let Err(e) = sock.bind(SocketAddr::new(IpAddr::V4(self.sources[i]), 0)) {
                last_err = Some(e); // this source's ports are used up: try the next one
                continue;
            }
            match sock.connect(self.dst).await {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no source address")))
    }
}

/// Everything a run's tasks share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) flavor: Flavor,
    pub(crate) host: String,
    pub(crate) dialer: Dialer,
    /// Bounds concurrent connection set-ups so that 10k subscribers do not overflow the
    /// server's accept backlog (which would show up as multi-second SYN retries).
    pub(crate) connect_sem: Semaphore,
    pub(crate) shared: Shared,
    pub(crate) topics: Vec<String>,
    pub(crate) payload_bytes: usize,
    pub(crate) publish: PublishState,
}

/// One subscriber's bookkeeping, owned jointly by its task and the run (for the final tally).
#[derive(Debug)]
pub(crate) struct Sub {
    pub(crate) tracker: RefCell<Tracker>,
}

/// Runs one subscriber until its stream ends (or the run aborts the task).
pub(crate) async fn subscriber(ctx: Rc<Ctx>, sub: Rc<Sub>, transport: Transport) {
    let res = match transport {
        Transport::Ws => ws(&ctx, &sub).await,
        Transport::Sse => sse(&ctx, &sub).await,
        Transport::Poll | Transport::PollMultipart => poll(&ctx, &sub, transport).await,
    };
    if let Err(e) = res {
        ctx.shared.error(e.to_string());
    }
    if !ctx.shared.stopping.get() {
        ctx.shared.dropped.set(ctx.shared.dropped.get() + 1);
    }
}

/// Marks the end of connection set-up (success or not) so the run knows when all are in.
struct Connecting<'a> {
    ctx: &'a Ctx,
    done: bool,
}

impl<'a> Connecting<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        Self { ctx, done: false }
    }
    fn ok(&mut self) {
        if !self.done {
            self.done = true;
            self.ctx
                .shared
                .connected
                .set(self.ctx.shared.connected.get() + 1);
        }
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if !self.done {
            let s = &self.ctx.shared;
            s.connect_failed.set(s.connect_failed.get() + 1);
        }
    }
}

/// Waits for a connection set-up slot, then dials. The slot is held until the permit is
/// dropped, so a caller can keep it until its subscription is set up.
async fn dial<'a>(ctx: &'a Ctx, what: &str) -> Result<(SemaphorePermit<'a>, TcpStream)> {
    let permit = ctx
        .connect_sem
        .acquire()
        .await
        .map_err(|_| Error::Setup("semaphore closed".into()))?;
    let stream = ctx
        .dialer
        .connect()
        .await
        .map_err(|e| Error::net(format!("{what} connect"), e))?;
    Ok((permit, stream))
}

/// Opens a streaming subscription: `GET path` with `headers` (each ending in CRLF), which must
/// answer `status`. Returns the stream, the response head, and what was read past the head.
async fn open_stream(
    ctx: &Ctx,
    what: &str,
    path: &str,
    headers: &str,
    status: u16,
) -> Result<(TcpStream, rawhttp::Head, Vec<u8>)> {
    let (permit, mut s) = dial(ctx, what).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n", ctx.host);
    let mut buf = Vec::with_capacity(2048);
    let head = rawhttp::request(&mut s, req.as_bytes(), &mut buf).await?;
    drop(permit);
    if head.status != status {
        return Err(Error::protocol(format!("{what} status {}", head.status)));
    }
    Ok((s, head, buf))
}

/// Reads more of a subscription's stream into `buf`: `Ok(true)` when bytes arrived, `Ok(false)`
/// when the stream is over, closed by the server (see [`stream_ended`]) or broken by the run's
/// teardown. The one read loop step of the streaming subscribers.
async fn read_more(ctx: &Ctx, what: &str, s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool> {
    match rawhttp::fill(s, buf).await {
        Ok(0) => {}
        Ok(_) => return Ok(true),
        Err(_) if ctx.shared.stopping.get() => return Ok(false),
        Err(e) => return Err(Error::net(format!("{what} read"), e)),
    }
    stream_ended(ctx, what);
    Ok(false)
}

/// Counts a subscription stream that ended while the run still needed it.
fn stream_ended(ctx: &Ctx, what: &str) {
    if !ctx.shared.stopping.get() {
        ctx.shared.error(format!("{what} stream ended"));
    }
}

async fn ws(ctx: &Ctx, sub: &Sub) -> Result<()> {
    let mut setup = Connecting::new(ctx);
    let topic = &ctx.topics[sub.tracker.borrow().topic as usize];
    let path = match ctx.flavor {
        Flavor::Switchboard => format!("/ws?topic={topic}"),
        Flavor::Nchan => format!("/sub/ws/{topic}"),
    };
    // The accept hash is not checked: a 101 from the server under test is proof enough.
    let headers = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let (mut s, _, mut buf) = open_stream(ctx, "ws", &path, headers, 101).await?;
    if ctx.flavor == Flavor::Nchan {
        setup.ok(); // Nchan subscribes during the upgrade
    }
    // Payload of a fragmented message being reassembled (servers rarely fragment).
    let mut frag: Vec<u8> = Vec::new();
    let on_text = |b: &[u8], setup: &mut Connecting<'_>| {
        let n = payload::scan(b, |seq, sent| {
            ctx.shared.on_payload(&sub.tracker, seq, sent)
        });
        if n == 0 && ctx.flavor == Flavor::Switchboard {
            if memchr::memmem::find(b, br#""type":"subscribed""#).is_some() {
                setup.ok();
            } else if memchr::memmem::find(b, br#""type":"reset""#).is_some() {
                ctx.shared.resets.set(ctx.shared.resets.get() + 1);
            } else if memchr::memmem::find(b, br#""type":"error""#).is_some() {
                ctx.shared.error("ws error frame");
            }
        }
    };
    loop {
        let mut pos = 0;
        while let Some(f) = rawhttp::parse_frame(&buf[pos..])? {
            let body = &buf[pos + f.start..pos + f.end];
            match f.opcode {
                0x1 | 0x2 if f.fin => on_text(body, &mut setup),
                0x1 | 0x2 => frag = body.to_vec(),
                0x0 => {
                    frag.extend_from_slice(body);
                    if f.fin {
                        on_text(&frag, &mut setup);
                        frag.clear();
                    }
                }
                0x9 => {
                    let pong = rawhttp::client_frame(0xA, body);
                    s.write_all(&pong)
                        .await
                        .map_err(|e| Error::net("ws pong", e))?;
                }
                0x8 => {
                    if !ctx.shared.stopping.get() {
                        let code = if body.len() >= 2 {
                            u16::from_be_bytes([body[0], body[1]])
                        } else {
                            0
                        };
                        ctx.shared.error(format!("ws closed by server ({code})"));
                    }
                    return Ok(());
                }
                _ => {}
            }
            pos += f.end;
        }
        buf.drain(..pos);
        if !read_more(ctx, "ws", &mut s, &mut buf).await? {
            return Ok(());
        }
    }
}

async fn sse(ctx: &Ctx, sub: &Sub) -> Result<()> {
    let mut setup = Connecting::new(ctx);
    let topic = &ctx.topics[sub.tracker.borrow().topic as usize];
    let path = match ctx.flavor {
        Flavor::Switchboard => format!("/events?topic={topic}"),
        Flavor::Nchan => format!("/sub/sse/{topic}"),
    };
    let headers = "Accept: text/event-stream\r\n";
    let (mut s, head, mut raw) = open_stream(ctx, "sse", &path, headers, 200).await?;
    if ctx.flavor == Flavor::Nchan {
        setup.ok();
    }
    let mut dechunk = head.chunked.then(rawhttp::Dechunker::default);
    // Decoded stream bytes not yet scanned (after the last complete line).
    let mut text: Vec<u8> = Vec::new();
    loop {
        // Only complete lines are scanned, so a payload split across reads is seen once.
        let data: &[u8] = match &mut dechunk {
            Some(d) => {
                let used = d.feed(&raw, &mut text)?;
                raw.drain(..used);
                &text
            }
            None => &raw,
        };
        if let Some(last) = memchr::memrchr(b'\n', data) {
            let lines = &data[..=last];
            payload::scan(lines, |seq, sent| {
                ctx.shared.on_payload(&sub.tracker, seq, sent)
            });
            if ctx.flavor == Flavor::Switchboard {
                if !setup.done && memchr::memmem::find(lines, b"event: subscribed").is_some() {
                    setup.ok();
                }
                let resets = memchr::memmem::find_iter(lines, b"event: reset").count() as u64;
                ctx.shared.resets.set(ctx.shared.resets.get() + resets);
            }
            match &mut dechunk {
                Some(_) => drop(text.drain(..=last)),
                None => drop(raw.drain(..=last)),
            }
        }
        if raw.len() + text.len() > 1 << 20 {
            return Err(Error::protocol("sse line over 1 MiB"));
        }
        if dechunk.as_ref().is_some_and(|d| d.done) {
            stream_ended(ctx, "sse");
            return Ok(());
        }
        if !read_more(ctx, "sse", &mut s, &mut raw).await? {
            return Ok(());
        }
    }
}

/// Long-poll subscriber. Switchboard: `GET /poll?topic=T&since=CURSOR`, the reply carries every
/// waiting message and the next cursor. Nchan: `GET /sub/lp/T` walking the channel with
/// `If-Modified-Since`/`If-None-Match` from the previous reply's `Last-Modified`/`Etag`.
async fn poll(ctx: &Ctx, sub: &Sub, transport: Transport) -> Result<()> {
    let mut setup = Connecting::new(ctx);
    let topic = ctx.topics[sub.tracker.borrow().topic as usize].clone();
    let (permit, mut s) = dial(ctx, "poll").await?;
    drop(permit);
    setup.ok();
    let mut cursor: Option<String> = None;
    let mut last_modified: Option<Vec<u8>> = None;
    let mut etag: Option<Vec<u8>> = None;
    let mut errors = 0u32;
    let mut buf = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(4096);
    let mut req = Vec::with_capacity(512);
    loop {
        req.clear();
        match ctx.flavor {
            Flavor::Switchboard => {
                req.extend_from_slice(b"GET /poll?topic=");
                req.extend_from_slice(topic.as_bytes());
                if let Some(c) = &cursor {
                    req.extend_from_slice(b"&since=");
                    req.extend_from_slice(c.as_bytes());
                }
                req.extend_from_slice(b"&timeout=25");
            }
            Flavor::Nchan => {
                req.extend_from_slice(if transport == Transport::PollMultipart {
                    b"GET /sub/lpm/"
                } else {
                    b"GET /sub/lp/"
                });
                req.extend_from_slice(topic.as_bytes());
            }
        }
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(ctx.host.as_bytes());
        if let Some(v) = &last_modified {
            req.extend_from_slice(b"\r\nIf-Modified-Since: ");
            req.extend_from_slice(v);
        }
        if let Some(v) = &etag {
            req.extend_from_slice(b"\r\nIf-None-Match: ");
            req.extend_from_slice(v);
        }
        if transport == Transport::PollMultipart {
            req.extend_from_slice(b"\r\nAccept: multipart/mixed");
        }
        req.extend_from_slice(b"\r\n\r\n");
        let head = match rawhttp::exchange(&mut s, &req, &mut buf, &mut body).await {
            Ok(h) => h,
            Err(_) if ctx.shared.stopping.get() => return Ok(()),
            Err(e) => return Err(e.context("poll")),
        };
        match (ctx.flavor, head.status) {
            (_, 200) => {
                errors = 0;
                payload::scan(&body, |seq, sent| {
                    ctx.shared.on_payload(&sub.tracker, seq, sent)
                });
                if ctx.flavor == Flavor::Switchboard {
                    match payload::json_str(&body, "cursor") {
                        Some(c) => cursor = Some(String::from_utf8_lossy(c).into_owned()),
                        None => ctx.shared.error("poll reply without cursor"),
                    }
                    if memchr::memmem::find(&body, br#""reset":[]"#).is_none() {
                        let n = memchr::memmem::find_iter(&body, br#""reason":"#).count();
                        ctx.shared.resets.set(ctx.shared.resets.get() + n as u64);
                    }
                } else {
                    last_modified = head.last_modified.or(last_modified);
                    etag = head.etag.or(etag);
                }
            }
            // Nchan: held request timed out (408) or nothing new (304): ask again.
            (Flavor::Nchan, 408 | 304) => {}
            (_, status) => {
                ctx.shared.error(format!("poll status {status}"));
                errors += 1;
                if errors > 20 {
                    return Err(Error::protocol(
                        "poll: giving up after 20 consecutive errors",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if head.close {
            s = ctx
                .dialer
                .connect()
                .await
                .map_err(|e| Error::net("poll reconnect", e))?;
            buf.clear();
        }
    }
}

/// Per-topic publish accounting.
#[derive(Debug, Default)]
pub(crate) struct PublishState {
    /// Sequences handed out per topic (the last one is the count of measured messages).
    pub(crate) assigned: RefCell<Vec<u64>>,
    /// Publishes that failed, per topic: these sequences never existed on the server.
    pub(crate) failed: RefCell<Vec<u64>>,
    /// Requests queued or in flight.
    pub(crate) inflight: Cell<u64>,
    pub(crate) acked: Cell<u64>,
}

/// One item of a publisher's queue: topic index and sequence (0 = warm-up).
pub(crate) type PubItem = (u32, u64);

/// Most publish requests one publisher keeps in flight (pipelined) on its connection.
const PUBLISH_WINDOW: usize = 32;

/// One keep-alive HTTP/1.1 connection publishing its queue in order, pipelined.
///
/// All messages of a topic go through the same publisher and the same connection, and an
/// HTTP/1.1 server answers pipelined requests in order, so the server receives each topic's
/// messages in sequence order: any disorder a subscriber sees is the server's. Pipelining (up
/// to `PUBLISH_WINDOW` requests) matters: with one request at a time, a server that answers a
/// publish only after fanning it out would be held to one fan-out per round trip *through the
/// generator*, measuring the generator's latency instead of the server's throughput.
pub(crate) async fn publisher(ctx: Rc<Ctx>, mut rx: mpsc::Receiver<PubItem>) {
    let paths: Vec<String> = ctx
        .topics
        .iter()
        .map(|t| match ctx.flavor {
            Flavor::Switchboard => format!("/events?topic={t}"),
            Flavor::Nchan => format!("/pub?id={t}"),
        })
        .collect();
    let mut pending: Option<PubItem> = None;
    loop {
        let tcp = match ctx.dialer.connect().await {
            Ok(t) => t,
            Err(e) => {
                ctx.shared.error(format!("publisher connect: {}", e.kind()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                if ctx.shared.stopping.get() {
                    return;
                }
                continue;
            }
        };
        let (rd, mut wr) = tcp.into_split();
        // Requests written and not yet answered, in order.
        let waiting: Rc<RefCell<std::collections::VecDeque<PubItem>>> = Rc::default();
        let window = Rc::new(Semaphore::new(PUBLISH_WINDOW));
        let reader = tokio::task::spawn_local(read_publish_replies(
            ctx.clone(),
            rd,
            waiting.clone(),
            window.clone(),
        ));
        let mut req = Vec::with_capacity(512);
        let broken = loop {
            let item = match pending.take() {
                Some(i) => i,
                None => match rx.recv().await {
                    Some(i) => i,
                    None => break false,
                },
            };
            let Ok(permit) = window.acquire().await else {
                pending = Some(item);
                break true;
            };
            permit.forget(); // returned by the reader when the reply arrives
            let (topic, seq) = item;
            let body = payload::build(seq, ctx.shared.now_us(), ctx.payload_bytes);
            req.clear();
            req.extend_from_slice(b"POST ");
            req.extend_from_slice(paths[topic as usize].as_bytes());
            req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
            req.extend_from_slice(ctx.host.as_bytes());
            req.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
            req.extend_from_slice(body.len().to_string().as_bytes());
            req.extend_from_slice(b"\r\n\r\n");
            req.extend_from_slice(&body);
            waiting.borrow_mut().push_back(item);
            if tokio::io::AsyncWriteExt::write_all(&mut wr, &req)
                .await
                .is_err()
            {
                // Possibly partly sent: the reader settles it as failed; never resent.
                break true;
            }
        };
        drop(wr);
        // Let the reader settle every written request (answered or failed) before moving on.
        let _ = reader.await;
        if !broken {
            return;
        }
        if ctx.shared.stopping.get() {
            return;
        }
        ctx.shared.error("publisher connection lost");
    }
}

/// Reads pipelined publish replies in order and settles each written request.
async fn read_publish_replies(
    ctx: Rc<Ctx>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    waiting: Rc<RefCell<std::collections::VecDeque<PubItem>>>,
    window: Rc<Semaphore>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let settle = |item: PubItem, ok: bool| {
        let p = &ctx.publish;
        p.inflight.set(p.inflight.get().saturating_sub(1));
        if ok {
            p.acked.set(p.acked.get() + 1);
        } else if item.1 > 0 {
            p.failed.borrow_mut()[item.0 as usize] += 1;
        }
        window.add_permits(1);
    };
    'conn: loop {
        // Parse every complete reply in the buffer.
        loop {
            let (head, head_len) = match rawhttp::parse_head(&buf) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    ctx.shared.error(format!("publish reply: {e}"));
                    break 'conn;
                }
            };
            let code = head.status;
            let Some(len) = head.content_length else {
                ctx.shared.error("publish reply without Content-Length");
                break 'conn;
            };
            if buf.len() < head_len + len {
                break;
            }
            buf.drain(..head_len + len);
            let Some(item) = waiting.borrow_mut().pop_front() else {
                ctx.shared.error("publish reply without request");
                break 'conn;
            };
            let ok = (200..300).contains(&code);
            if !ok {
                ctx.shared.error(format!("publish status {code}"));
            }
            settle(item, ok);
        }
        match rawhttp::fill(&mut rd, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Connection over: whatever is still waiting was not (provably) published.
    let rest: Vec<PubItem> = waiting.borrow_mut().drain(..).collect();
    for item in rest {
        settle(item, false);
    }
    window.close();
}
