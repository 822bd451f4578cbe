//! Subscribers (WebSocket, SSE, long-poll) and HTTP publishers for both servers.
//!
//! Every connection is one cheap task on the generator's single-threaded runtime; per-message
//! work is a substring scan of what arrived (see `payload`) plus a few counter updates.
//!
//! Each client reads through `rawhttp::fill` into one buffer per connection; the WebSocket
//! and SSE subscribers share their read step (`read_more`), the long-poller and the streams'
//! set-up share `rawhttp::request`, and the publishers' reply reader shares
//! `rawhttp::parse_head`.

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
    /// The minimal fan-out server (`floor.rs`): switchboard's paths, subscribed on answering.
    Floor,
}

impl Flavor {
    /// The server's name in results files, reports and run tags.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Switchboard => "switchboard",
            Self::Nchan => "nchan",
            Self::Floor => "floor",
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
    /// The server under test.
    pub(crate) dst: SocketAddr,
    sources: Vec<Ipv4Addr>,
    next: Cell<usize>,
}

impl Dialer {
    /// A dialer to `dst` from 127.0.0.2 up to 127.0.0.(1 + `n_sources`).
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

    /// Connects (with `TCP_NODELAY`, as latency is measured) from the next source address,
    /// moving on to the next one while a source has no free port.
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

/// One server node as clients reach it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The `Host` header: the node's address.
    pub(crate) host: String,
    pub(crate) dialer: Dialer,
}

impl Endpoint {
    /// The node at `addr`, dialled from `n_sources` source addresses (see [`Dialer::new`]).
    pub(crate) fn new(addr: SocketAddr, n_sources: u8) -> Self {
        Self {
            host: addr.to_string(),
            dialer: Dialer::new(addr, n_sources),
        }
    }
}

/// Everything a run's tasks share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) flavor: Flavor,
    /// Where every publisher connects.
    pub(crate) publish_to: Endpoint,
    /// Where subscribers connect: each on the one its [`Sub::node`] picks. Several nodes
    /// (all but the publishers') in multi-node workloads.
    pub(crate) subscribe_to: Vec<Endpoint>,
    /// Bounds concurrent connection set-ups so that 10k subscribers do not overflow the
    /// server's accept backlog (which would show up as multi-second SYN retries).
    pub(crate) connect_sem: Semaphore,
    /// What the subscribers measured and counted.
    pub(crate) shared: Shared,
    /// The run's topic names; subscribers and publish items refer to them by index.
    pub(crate) topics: Vec<String>,
    /// Size of each published payload.
    pub(crate) payload_bytes: usize,
    /// Messages per publish request (more than 1: `POST /publish` batches).
    pub(crate) batch: usize,
    /// Publish requests (or WebSocket `publish` frames) each publisher connection keeps in
    /// flight.
    pub(crate) window: usize,
    /// Publishers send `publish` frames on WebSocket connections instead of HTTP requests.
    pub(crate) ws_publish: bool,
    pub(crate) publish: PublishState,
}

/// One subscriber's bookkeeping, owned jointly by its task and the run (for the final tally).
#[derive(Debug)]
pub(crate) struct Sub {
    /// Its topic and which of the topic's messages it has seen.
    pub(crate) tracker: RefCell<Tracker>,
    /// Which of [`Ctx::subscribe_to`] it connects to (modulo their number).
    pub(crate) node: usize,
}

impl Ctx {
    /// The node `sub` connects to.
    fn node_of(&self, sub: &Sub) -> &Endpoint {
        &self.subscribe_to[sub.node % self.subscribe_to.len()]
    }
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

/// Waits for a connection set-up slot, then dials `to`. The slot is held until the permit is
/// dropped, so a caller can keep it until its subscription is set up.
async fn dial<'a>(
    ctx: &'a Ctx,
    to: &Endpoint,
    what: &str,
) -> Result<(SemaphorePermit<'a>, TcpStream)> {
    let permit = ctx
        .connect_sem
        .acquire()
        .await
        .map_err(|_| Error::Setup("semaphore closed".into()))?;
    let stream = to
        .dialer
        .connect()
        .await
        .map_err(|e| Error::net(format!("{what} connect"), e))?;
    Ok((permit, stream))
}

/// The WebSocket upgrade request's headers. The accept hash of the answer is not checked: a
/// 101 from the server under test is proof enough.
const WS_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                          Sec-WebSocket-Version: 13\r\n";

/// A streaming subscription just opened: its set-up guard, socket, response head and the bytes
/// read past the head.
type Opened<'a> = (Connecting<'a>, TcpStream, rawhttp::Head, Vec<u8>);

/// Opens `sub`'s streaming subscription (WebSocket or SSE): `GET` on the server's path for the
/// topic, which must answer 101 (WebSocket) or 200 (SSE). Nchan subscribes while answering, so
/// its set-up is complete then; switchboard confirms later with a `subscribed` frame or event.
async fn open_stream<'a>(ctx: &'a Ctx, sub: &Sub, transport: Transport) -> Result<Opened<'a>> {
    let mut setup = Connecting::new(ctx);
    let topic = &ctx.topics[sub.tracker.borrow().topic as usize];
    let (what, path, headers, status) = match (transport, ctx.flavor) {
        (Transport::Ws, Flavor::Switchboard | Flavor::Floor) => {
            ("ws", format!("/ws?topic={topic}"), WS_HEADERS, 101)
        }
        (Transport::Ws, Flavor::Nchan) => ("ws", format!("/sub/ws/{topic}"), WS_HEADERS, 101),
        (_, Flavor::Switchboard | Flavor::Floor) => {
            ("sse", format!("/events?topic={topic}"), SSE_HEADERS, 200)
        }
        (_, Flavor::Nchan) => ("sse", format!("/sub/sse/{topic}"), SSE_HEADERS, 200),
    };
    let to = ctx.node_of(sub);
    let (permit, mut s) = dial(ctx, to, what).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n", to.host);
    let mut buf = Vec::with_capacity(2048);
    let head = rawhttp::request(&mut s, req.as_bytes(), &mut buf).await?;
    drop(permit);
    if head.status != status {
        return Err(Error::protocol(format!("{what} status {}", head.status)));
    }
    if ctx.flavor != Flavor::Switchboard {
        setup.ok();
    }
    Ok((setup, s, head, buf))
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

/// WebSocket subscriber: reads frames until the server closes the connection.
async fn ws(ctx: &Ctx, sub: &Sub) -> Result<()> {
    let (setup, mut s, _, mut buf) = open_stream(ctx, sub, Transport::Ws).await?;
    let mut rx = WsReceiver {
        ctx,
        sub,
        setup,
        frag: Vec::new(),
    };
    loop {
        let (used, next) = rx.on_frames(&buf)?;
        buf.drain(..used);
        match next {
            WsNext::Read => {
                if !read_more(ctx, "ws", &mut s, &mut buf).await? {
                    return Ok(());
                }
            }
            WsNext::Pong(pong) => s
                .write_all(&pong)
                .await
                .map_err(|e| Error::net("ws pong", e))?,
            WsNext::Closed => return Ok(()),
        }
    }
}

/// What the connection must do after the frames handled so far.
#[derive(Debug, PartialEq, Eq)]
enum WsNext {
    /// Read more: every complete frame is handled.
    Read,
    /// Send this pong (answering a ping) before handling the rest.
    Pong(Vec<u8>),
    /// The server closed the connection.
    Closed,
}

/// What one WebSocket subscriber does with the frames it receives.
struct WsReceiver<'a> {
    ctx: &'a Ctx,
    sub: &'a Sub,
    setup: Connecting<'a>,
    /// Payload of a fragmented message being reassembled (servers rarely fragment).
    frag: Vec<u8>,
}

impl WsReceiver<'_> {
    /// Handles the complete frames at the start of `buf`; returns the bytes they took and what
    /// the connection must do next. Stops after a ping (its pong goes out first) or a close.
    fn on_frames(&mut self, buf: &[u8]) -> Result<(usize, WsNext)> {
        let mut pos = 0;
        while let Some(f) = rawhttp::parse_frame(&buf[pos..])? {
            let body = &buf[pos + f.start..pos + f.end];
            pos += f.end;
            match f.opcode {
                0x1 | 0x2 if f.fin => self.on_message(body),
                0x1 | 0x2 => self.frag = body.to_vec(),
                0x0 => self.on_continuation(body, f.fin),
                0x9 => return Ok((pos, WsNext::Pong(rawhttp::client_frame(0xA, body)))),
                0x8 => {
                    self.on_close(body);
                    return Ok((pos, WsNext::Closed));
                }
                _ => {}
            }
        }
        Ok((pos, WsNext::Read))
    }

    fn on_continuation(&mut self, body: &[u8], fin: bool) {
        self.frag.extend_from_slice(body);
        if fin {
            let frag = std::mem::take(&mut self.frag);
            self.on_message(&frag);
            self.frag = frag;
            self.frag.clear();
        }
    }

    /// A whole message: the payloads it carries, or one of switchboard's control messages.
    fn on_message(&mut self, b: &[u8]) {
        let (ctx, sub) = (self.ctx, self.sub);
        let n = payload::scan(b, |seq, sent| {
            ctx.shared.on_payload(&sub.tracker, seq, sent)
        });
        if n == 0 && ctx.flavor == Flavor::Switchboard {
            if memchr::memmem::find(b, br#""type":"subscribed""#).is_some() {
                self.setup.ok();
            } else if memchr::memmem::find(b, br#""type":"reset""#).is_some() {
                ctx.shared.resets.set(ctx.shared.resets.get() + 1);
            } else if memchr::memmem::find(b, br#""type":"error""#).is_some() {
                ctx.shared.error("ws error frame");
            }
        }
    }

    fn on_close(&self, body: &[u8]) {
        if !self.ctx.shared.stopping.get() {
            let code = if body.len() >= 2 {
                u16::from_be_bytes([body[0], body[1]])
            } else {
                0
            };
            self.ctx
                .shared
                .error(format!("ws closed by server ({code})"));
        }
    }
}

/// The SSE request's headers.
const SSE_HEADERS: &str = "Accept: text/event-stream\r\n";

/// SSE subscriber: reads the event stream (chunked or not) until the server ends it.
async fn sse(ctx: &Ctx, sub: &Sub) -> Result<()> {
    let (mut setup, mut s, head, mut raw) = open_stream(ctx, sub, Transport::Sse).await?;
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
            on_sse_lines(ctx, sub, &mut setup, &data[..=last]);
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

/// Complete SSE lines: the payloads they carry, and switchboard's `subscribed` and `reset`
/// events.
fn on_sse_lines(ctx: &Ctx, sub: &Sub, setup: &mut Connecting<'_>, lines: &[u8]) {
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
}

/// Long-poll subscriber. Switchboard: `GET /poll?topic=T&since=CURSOR`, the reply carries every
/// waiting message and the next cursor. Nchan: `GET /sub/lp/T` walking the channel with
/// `If-Modified-Since`/`If-None-Match` from the previous reply's `Last-Modified`/`Etag`.
async fn poll(ctx: &Ctx, sub: &Sub, transport: Transport) -> Result<()> {
    let mut setup = Connecting::new(ctx);
    let topic = ctx.topics[sub.tracker.borrow().topic as usize].clone();
    let to = ctx.node_of(sub);
    let (permit, mut s) = dial(ctx, to, "poll").await?;
    drop(permit);
    setup.ok();
    let mut at = PollPosition::default();
    let mut errors = 0u32;
    let mut buf = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(4096);
    let mut req = Vec::with_capacity(512);
    loop {
        at.request(&mut req, ctx.flavor, &to.host, &topic, transport);
        let head = match rawhttp::exchange(&mut s, &req, &mut buf, &mut body).await {
            Ok(h) => h,
            Err(_) if ctx.shared.stopping.get() => return Ok(()),
            Err(e) => return Err(e.context("poll")),
        };
        let close = head.close;
        match (ctx.flavor, head.status) {
            (_, 200) => {
                errors = 0;
                at.on_reply(ctx, sub, head, &body);
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
        if close {
            s = to
                .dialer
                .connect()
                .await
                .map_err(|e| Error::net("poll reconnect", e))?;
            buf.clear();
        }
    }
}

/// Where a long-poller is in its topic: what the last reply said to ask for next.
#[derive(Debug, Default)]
struct PollPosition {
    /// Switchboard's cursor.
    cursor: Option<String>,
    /// Nchan's `Last-Modified` and `Etag`.
    last_modified: Option<Vec<u8>>,
    etag: Option<Vec<u8>>,
}

impl PollPosition {
    /// Writes the next long-poll request for `topic` on `flavor` at `host` into `req`.
    fn request(
        &self,
        req: &mut Vec<u8>,
        flavor: Flavor,
        host: &str,
        topic: &str,
        transport: Transport,
    ) {
        req.clear();
        match flavor {
            // The floor serves no long-poll; it is never asked (see `Flavor::variants`).
            Flavor::Switchboard | Flavor::Floor => {
                req.extend_from_slice(b"GET /poll?topic=");
                req.extend_from_slice(topic.as_bytes());
                if let Some(c) = &self.cursor {
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
        req.extend_from_slice(host.as_bytes());
        if let Some(v) = &self.last_modified {
            req.extend_from_slice(b"\r\nIf-Modified-Since: ");
            req.extend_from_slice(v);
        }
        if let Some(v) = &self.etag {
            req.extend_from_slice(b"\r\nIf-None-Match: ");
            req.extend_from_slice(v);
        }
        if transport == Transport::PollMultipart {
            req.extend_from_slice(b"\r\nAccept: multipart/mixed");
        }
        req.extend_from_slice(b"\r\n\r\n");
    }

    /// A 200 reply: counts the payloads (and switchboard's resets) in `body` and moves on.
    fn on_reply(&mut self, ctx: &Ctx, sub: &Sub, head: rawhttp::Head, body: &[u8]) {
        payload::scan(body, |seq, sent| {
            ctx.shared.on_payload(&sub.tracker, seq, sent)
        });
        if ctx.flavor == Flavor::Switchboard {
            match payload::json_str(body, "cursor") {
                Some(c) => self.cursor = Some(String::from_utf8_lossy(c).into_owned()),
                None => ctx.shared.error("poll reply without cursor"),
            }
            if memchr::memmem::find(body, br#""reset":[]"#).is_none() {
                let n = memchr::memmem::find_iter(body, br#""reason":"#).count();
                ctx.shared.resets.set(ctx.shared.resets.get() + n as u64);
            }
        } else {
            self.last_modified = head.last_modified.or(self.last_modified.take());
            self.etag = head.etag.or(self.etag.take());
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
    /// Publishes the server acknowledged (2xx).
    pub(crate) acked: Cell<u64>,
}

/// One item of a publisher's queue: topic index and sequence (0 = warm-up).
pub(crate) type PubItem = (u32, u64);

/// Most publish requests one publisher keeps in flight (pipelined) on its connection, unless
/// its workload asks for fewer (`Spec::window`).
pub(crate) const PUBLISH_WINDOW: usize = 32;

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
            Flavor::Switchboard | Flavor::Floor => format!("/events?topic={t}"),
            Flavor::Nchan => format!("/pub?id={t}"),
        })
        .collect();
    let mut pending: Option<PubItem> = None;
    loop {
        let Some(tcp) = connect_publisher(&ctx).await else {
            return;
        };
        let broken = if ctx.ws_publish {
            ws_publish_on(&ctx, tcp, &mut rx, &mut pending).await
        } else {
            publish_on(&ctx, tcp, &paths, &mut rx, &mut pending).await
        };
        if !broken || ctx.shared.stopping.get() {
            return;
        }
        ctx.shared.error("publisher connection lost");
    }
}

/// Connects a publisher, retrying every 50 ms; `None` once the run is stopping.
async fn connect_publisher(ctx: &Ctx) -> Option<TcpStream> {
    loop {
        match ctx.publish_to.dialer.connect().await {
            Ok(t) => return Some(t),
            Err(e) => {
                ctx.shared
                    .error(Error::net("publisher connect", e).to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
                if ctx.shared.stopping.get() {
                    return None;
                }
            }
        }
    }
}

/// Publishes the queue on one connection until the queue closes (`false`) or the connection
/// breaks (`true`). An item taken from the queue but not written stays in `pending` for the
/// next connection; one written is settled by the reply reader, answered or not, and is never
/// sent again (it may have reached the server).
async fn publish_on(
    ctx: &Rc<Ctx>,
    tcp: TcpStream,
    paths: &[String],
    rx: &mut mpsc::Receiver<PubItem>,
    pending: &mut Option<PubItem>,
) -> bool {
    let (rd, wr) = tcp.into_split();
    let pipe = Pipeline::new(ctx);
    let reader = tokio::task::spawn_local(read_publish_replies(pipe.clone(), rd));
    write_publishes(&pipe, wr, rx, pending, reader, |req, items| {
        if ctx.batch > 1 {
            batch_request(req, ctx, items);
        } else {
            let (topic, seq) = items[0];
            publish_request(req, ctx, &paths[topic as usize], seq);
        }
    })
    .await
}

/// Writes the queue's publishes on `wr`, each encoded by `encode` (a batch: what is queued
/// now, up to `Ctx::batch`, the first never waited for), keeping at most the window unanswered,
/// until the queue closes (`false`) or the connection breaks (`true`); then waits for `reader`
/// to settle every written publish (answered or failed) before the connection is left.
async fn write_publishes(
    pipe: &Rc<Pipeline>,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::Receiver<PubItem>,
    pending: &mut Option<PubItem>,
    reader: tokio::task::JoinHandle<()>,
    mut encode: impl FnMut(&mut Vec<u8>, &[PubItem]),
) -> bool {
    let mut req = Vec::with_capacity(512);
    let broken = loop {
        let item = match pending.take() {
            Some(i) => i,
            None => match rx.recv().await {
                Some(i) => i,
                None => break false,
            },
        };
        let Ok(permit) = pipe.window.acquire().await else {
            *pending = Some(item);
            break true;
        };
        permit.forget(); // returned by the reader when the answer arrives
        let mut items = vec![item];
        while items.len() < pipe.ctx.batch {
            match rx.try_recv() {
                Ok(i) => items.push(i),
                Err(_) => break,
            }
        }
        encode(&mut req, &items);
        pipe.waiting.borrow_mut().push_back(items);
        if wr.write_all(&req).await.is_err() {
            // Possibly partly sent: the reader settles it as failed; never resent.
            break true;
        }
    };
    drop(wr);
    let _ = reader.await;
    broken
}

/// Publishes the queue as WebSocket `publish` frames on one connection (opened here with
/// `GET /ws`), up to the window unanswered; like [`publish_on`] otherwise. The server answers a
/// connection's publishes in the order they were sent, with an `ack` or an `error` frame each.
async fn ws_publish_on(
    ctx: &Rc<Ctx>,
    mut tcp: TcpStream,
    rx: &mut mpsc::Receiver<PubItem>,
    pending: &mut Option<PubItem>,
) -> bool {
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\n{WS_HEADERS}\r\n",
        ctx.publish_to.host
    );
    let mut buf = Vec::with_capacity(16 * 1024);
    match rawhttp::request(&mut tcp, req.as_bytes(), &mut buf).await {
        Ok(head) if head.status == 101 => {}
        Ok(head) => {
            ctx.shared
                .error(format!("ws publisher: status {}", head.status));
            return true;
        }
        Err(e) => {
            ctx.shared.error(format!("ws publisher: {e}"));
            return true;
        }
    }
    let (rd, wr) = tcp.into_split();
    let pipe = Pipeline::new(ctx);
    let reader = tokio::task::spawn_local(read_ws_answers(pipe.clone(), rd, buf));
    write_publishes(&pipe, wr, rx, pending, reader, |frame, items| {
        publish_frame(frame, ctx, items[0]);
    })
    .await
}

/// Writes the masked `publish` frame of `item` into `frame`, its payload built now.
fn publish_frame(frame: &mut Vec<u8>, ctx: &Ctx, (topic, seq): PubItem) {
    let mut text = Vec::with_capacity(ctx.payload_bytes + 64);
    text.extend_from_slice(b"{\"type\":\"publish\",\"topic\":\"");
    text.extend_from_slice(ctx.topics[topic as usize].as_bytes());
    text.extend_from_slice(b"\",\"ref\":\"");
    text.extend_from_slice(seq.to_string().as_bytes());
    text.extend_from_slice(b"\",\"data\":");
    text.extend_from_slice(&payload::build(seq, ctx.shared.now_us(), ctx.payload_bytes));
    text.push(b'}');
    *frame = rawhttp::client_frame(0x1, &text);
}

/// Reads a WebSocket publisher's answers (`ack` or `error`, in the order of its publishes)
/// and settles each; when the connection is over, whatever still waits was not (provably)
/// published. Pings are not answered: a run is shorter than the server's heartbeat timeout.
async fn read_ws_answers(
    pipe: Rc<Pipeline>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
) {
    'read: loop {
        loop {
            let frame = match rawhttp::parse_frame(&buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    pipe.ctx.shared.error(format!("ws publisher: {e}"));
                    break 'read;
                }
            };
            let text = &buf[frame.start..frame.end];
            if frame.opcode == 0x8 {
                break 'read;
            }
            let answer = if frame.opcode != 0x1 {
                None
            } else if memchr::memmem::find(text, b"\"type\":\"ack\"").is_some() {
                Some(true)
            } else if memchr::memmem::find(text, b"\"type\":\"error\"").is_some() {
                pipe.ctx.shared.error(format!(
                    "ws publish refused: {}",
                    String::from_utf8_lossy(text)
                ));
                Some(false)
            } else {
                None
            };
            let end = frame.end;
            if let Some(ok) = answer {
                let Some(items) = pipe.waiting.borrow_mut().pop_front() else {
                    pipe.ctx
                        .shared
                        .error("ws publisher: an answer without a publish");
                    break 'read;
                };
                pipe.answered(items, |_| ok);
            }
            buf.drain(..end);
        }
        match rawhttp::fill(&mut rd, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    pipe.abandon();
}

/// Writes the publish request of message `seq` to `path` into `req`. The payload is built
/// here, just before the request is written, so its send time is as late as it can be.
fn publish_request(req: &mut Vec<u8>, ctx: &Ctx, path: &str, seq: u64) {
    let body = payload::build(seq, ctx.shared.now_us(), ctx.payload_bytes);
    req.clear();
    req.extend_from_slice(b"POST ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(ctx.publish_to.host.as_bytes());
    req.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    req.extend_from_slice(body.len().to_string().as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(&body);
}

/// Writes one `POST /publish` request carrying `items` (one line each) into `req`.
fn batch_request(req: &mut Vec<u8>, ctx: &Ctx, items: &[PubItem]) {
    let mut body = Vec::with_capacity(items.len() * (ctx.payload_bytes + 48));
    for &(topic, seq) in items {
        body.extend_from_slice(b"{\"topic\":\"");
        body.extend_from_slice(ctx.topics[topic as usize].as_bytes());
        body.extend_from_slice(b"\",\"data\":");
        body.extend_from_slice(&payload::build(seq, ctx.shared.now_us(), ctx.payload_bytes));
        body.extend_from_slice(b"}\n");
    }
    req.clear();
    req.extend_from_slice(b"POST /publish HTTP/1.1\r\nHost: ");
    req.extend_from_slice(ctx.publish_to.host.as_bytes());
    req.extend_from_slice(b"\r\nContent-Type: application/x-ndjson\r\nContent-Length: ");
    req.extend_from_slice(body.len().to_string().as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(&body);
}

/// Which lines of a batch reply say published (`"id"`); `None` when the reply does not have
/// one line per message.
fn batch_outcomes(body: &[u8], messages: usize) -> Option<Vec<bool>> {
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    (lines.len() == messages).then(|| {
        lines
            .iter()
            .map(|l| memchr::memmem::find(l, b"\"id\":").is_some())
            .collect()
    })
}

/// The publish requests of one connection that await their replies, shared by the writer and
/// the reply reader.
struct Pipeline {
    ctx: Rc<Ctx>,
    /// Requests written and not yet answered, in order: the messages each carries.
    waiting: RefCell<std::collections::VecDeque<Vec<PubItem>>>,
    /// Permits for requests in flight; closed when the connection is over.
    window: Semaphore,
}

impl Pipeline {
    fn new(ctx: &Rc<Ctx>) -> Rc<Pipeline> {
        Rc::new(Pipeline {
            ctx: ctx.clone(),
            waiting: RefCell::default(),
            window: Semaphore::new(ctx.window),
        })
    }

    /// Settles one written request: acknowledged, or failed (its sequence never existed).
    fn settle(&self, item: PubItem, ok: bool) {
        let p = &self.ctx.publish;
        p.inflight.set(p.inflight.get().saturating_sub(1));
        if ok {
            p.acked.set(p.acked.get() + 1);
        } else if item.1 > 0 {
            p.failed.borrow_mut()[item.0 as usize] += 1;
        }
    }

    /// Settles every complete reply at the start of `buf` (and removes it). An error means
    /// the replies can no longer be matched to requests.
    fn take_replies(&self, buf: &mut Vec<u8>) -> Result<()> {
        loop {
            let (head, head_len) = match rawhttp::parse_head(buf) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Error::protocol(format!("publish reply: {e}"))),
            };
            let Some(len) = head.content_length else {
                return Err(Error::protocol("publish reply without Content-Length"));
            };
            if buf.len() < head_len + len {
                return Ok(());
            }
            let Some(items) = self.waiting.borrow_mut().pop_front() else {
                return Err(Error::protocol("publish reply without request"));
            };
            let ok = (200..300).contains(&head.status);
            if !ok {
                self.ctx
                    .shared
                    .error(format!("publish status {}", head.status));
            }
            let outcomes = match self.ctx.batch {
                1 => Some(vec![ok]),
                _ if ok => batch_outcomes(&buf[head_len..head_len + len], items.len()),
                _ => None,
            };
            if outcomes.as_ref().is_none_or(|o| o.contains(&false)) && ok {
                self.ctx.shared.error("batch publish: a line not published");
            }
            buf.drain(..head_len + len);
            let outcomes = outcomes.unwrap_or_else(|| vec![false; items.len()]);
            self.answered(items, |i| outcomes[i]);
        }
    }

    /// Settles the messages of one answered publish (`ok(i)`: whether the i-th was published)
    /// and lets one more be sent.
    fn answered(&self, items: Vec<PubItem>, ok: impl Fn(usize) -> bool) {
        for (i, item) in items.into_iter().enumerate() {
            self.settle(item, ok(i));
        }
        self.window.add_permits(1);
    }

    /// Settles what still waits once the connection is over: not (provably) published.
    fn abandon(&self) {
        let rest: Vec<Vec<PubItem>> = self.waiting.borrow_mut().drain(..).collect();
        for item in rest.into_iter().flatten() {
            self.settle(item, false);
        }
        self.window.close();
    }
}

/// Reads pipelined publish replies in order and settles each written request; when the
/// connection is over, whatever still waits was not (provably) published.
async fn read_publish_replies(pipe: Rc<Pipeline>, mut rd: tokio::net::tcp::OwnedReadHalf) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if let Err(e) = pipe.take_replies(&mut buf) {
            pipe.ctx.shared.error(e.to_string());
            break;
        }
        match rawhttp::fill(&mut rd, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    pipe.abandon();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(flavor: Flavor) -> Ctx {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        Ctx {
            flavor,
            publish_to: Endpoint::new(addr, 1),
            subscribe_to: vec![Endpoint::new(addr, 1)],
            connect_sem: Semaphore::new(1),
            shared: Shared::new(),
            topics: vec!["t.0".into()],
            payload_bytes: 64,
            batch: 1,
            window: PUBLISH_WINDOW,
            ws_publish: false,
            publish: PublishState::default(),
        }
    }

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        [&[first, body.len() as u8][..], body].concat()
    }

    #[test]
    fn ws_frames_stop_at_ping_and_close() {
        let ctx = ctx(Flavor::Switchboard);
        let sub = Sub {
            tracker: RefCell::new(Tracker::new(0)),
            node: 0,
        };
        let mut rx = WsReceiver {
            ctx: &ctx,
            sub: &sub,
            setup: Connecting::new(&ctx),
            frag: Vec::new(),
        };
        let subscribed = frame(0x81, br#"{"type":"subscribed"}"#);
        let message = payload::build(1, 0, 60);
        let (p1, p2) = message.split_at(30);
        let buf = [
            subscribed.clone(),
            frame(0x01, p1),    // first fragment
            frame(0x89, b"hi"), // ping between fragments
            frame(0x80, p2),    // last fragment
            frame(0x88, &[0x03, 0xe8]),
        ]
        .concat();
        let (used, next) = rx.on_frames(&buf).unwrap_or((0, WsNext::Read));
        assert_eq!(next, WsNext::Pong(rawhttp::client_frame(0xA, b"hi")));
        assert!(rx.setup.done);
        assert_eq!(ctx.shared.delivered.get(), 0);
        let (rest, next) = rx.on_frames(&buf[used..]).unwrap_or((0, WsNext::Read));
        assert_eq!(next, WsNext::Closed);
        assert_eq!(used + rest, buf.len());
        assert_eq!(ctx.shared.delivered.get(), 1);
        assert_eq!(
            ctx.shared.errors.borrow().get("ws closed by server (1000)"),
            Some(&1)
        );
        // An incomplete frame is left for the next read.
        let (used, next) = rx
            .on_frames(&subscribed[..5])
            .unwrap_or((9, WsNext::Closed));
        assert_eq!((used, next), (0, WsNext::Read));
    }

    #[test]
    fn batch_requests_and_replies() {
        let mut c = ctx(Flavor::Switchboard);
        c.topics.push("t.1".into());
        let mut req = Vec::new();
        batch_request(&mut req, &c, &[(0, 1), (1, 7)]);
        let text = String::from_utf8_lossy(&req).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("POST /publish HTTP/1.1\r\n"));
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with(r#"{"topic":"t.1","data":{"bs":7,"bt":"#));
        let mut seqs = Vec::new();
        payload::scan(body.as_bytes(), |s, _| seqs.push(s));
        assert_eq!(seqs, [1, 7]);
        let reply =
            b"{\"topic\":\"t.0\",\"id\":\"1-2-3\"}\n{\"error\":{\"code\":\"rate_limited\"}}\n";
        assert_eq!(batch_outcomes(reply, 2), Some(vec![true, false]));
        assert_eq!(batch_outcomes(reply, 3), None);
    }

    #[test]
    fn poll_requests_carry_the_position() {
        let mut req = Vec::new();
        let mut at = PollPosition::default();
        let sb = ctx(Flavor::Switchboard);
        at.request(&mut req, sb.flavor, "127.0.0.1:9", "t.0", Transport::Poll);
        assert_eq!(
            req,
            b"GET /poll?topic=t.0&timeout=25 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
        );
        let sub = Sub {
            tracker: RefCell::new(Tracker::new(0)),
            node: 0,
        };
        at.on_reply(
            &sb,
            &sub,
            rawhttp::Head::default(),
            br#"{"cursor":"a-1","reset":[]}"#,
        );
        at.request(&mut req, sb.flavor, "127.0.0.1:9", "t.0", Transport::Poll);
        assert!(req.starts_with(b"GET /poll?topic=t.0&since=a-1&timeout=25 HTTP/1.1\r\n"));

        let nchan = ctx(Flavor::Nchan);
        let mut at = PollPosition::default();
        let head = rawhttp::Head {
            etag: Some(b"7".to_vec()),
            last_modified: Some(b"Thu".to_vec()),
            ..rawhttp::Head::default()
        };
        at.on_reply(&nchan, &sub, head, b"");
        at.request(
            &mut req,
            nchan.flavor,
            "127.0.0.1:9",
            "t.0",
            Transport::PollMultipart,
        );
        assert_eq!(
            req,
            &b"GET /sub/lpm/t.0 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nIf-Modified-Since: Thu\r\n\
               If-None-Match: 7\r\nAccept: multipart/mixed\r\n\r\n"[..]
        );
    }
}
