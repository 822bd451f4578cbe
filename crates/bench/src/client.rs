//! Subscribers (WebSocket, SSE, long-poll) and HTTP publishers for both servers.
//!
//! Every connection is one cheap task on the generator's single-threaded runtime; per-message
//! work is a substring scan of what arrived (see `payload`) plus a few counter updates.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    ACCEPT, CONTENT_TYPE, ETAG, HOST, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::payload;
use crate::stats::{Shared, Tracker};

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

async fn http1(ctx: &Ctx) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = ctx
        .dialer
        .connect()
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        // Ends when the connection closes; errors surface through the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

fn get(ctx: &Ctx, path: &str) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = path.parse().unwrap_or_default();
    req.headers_mut()
        .insert(HOST, ctx.host.parse().unwrap_or_else(|_| unreachable!()));
    req
}

/// Runs one subscriber until its stream ends (or the run aborts the task).
pub(crate) async fn subscriber(ctx: Rc<Ctx>, sub: Rc<Sub>, transport: Transport) {
    let res = match transport {
        Transport::Ws => ws(&ctx, &sub).await,
        Transport::Sse => sse(&ctx, &sub).await,
        Transport::Poll | Transport::PollMultipart => poll(&ctx, &sub, transport).await,
    };
    if let Err(e) = res {
        ctx.shared.error(e);
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

async fn ws(ctx: &Ctx, sub: &Sub) -> Result<(), String> {
    let mut setup = Connecting::new(ctx);
    let topic = &ctx.topics[sub.tracker.borrow().topic as usize];
    let permit = ctx
        .connect_sem
        .acquire()
        .await
        .map_err(|_| "semaphore closed")?;
    let tcp = ctx
        .dialer
        .connect()
        .await
        .map_err(|e| format!("ws connect: {}", e.kind()))?;
    let path = match ctx.flavor {
        Flavor::Switchboard => format!("/ws?topic={topic}"),
        Flavor::Nchan => format!("/sub/ws/{topic}"),
    };
    let req = format!("ws://{}{}", ctx.host, path)
        .into_client_request()
        .map_err(|e| format!("ws request: {e}"))?;
    // Small buffers: 10k idle connections must not cost the generator gigabytes.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg))
        .await
        .map_err(|e| format!("ws handshake: {e}"))?;
    drop(permit);
    if ctx.flavor == Flavor::Nchan {
        setup.ok(); // Nchan subscribes during the upgrade
    }
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                let b = t.as_str().as_bytes();
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
            }
            Ok(Message::Ping(_)) => {
                // tungstenite queued the pong; push it out now rather than on the next read.
                let _ = futures_util::SinkExt::flush(&mut ws).await;
            }
            Ok(Message::Close(f)) => {
                if !ctx.shared.stopping.get() {
                    let code = f.map_or(0, |f| u16::from(f.code));
                    ctx.shared.error(format!("ws closed by server ({code})"));
                }
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                if ctx.shared.stopping.get() {
                    return Ok(());
                }
                return Err(format!("ws read: {e}"));
            }
        }
    }
    if !ctx.shared.stopping.get() {
        ctx.shared.error("ws stream ended");
    }
    Ok(())
}

async fn sse(ctx: &Ctx, sub: &Sub) -> Result<(), String> {
    let mut setup = Connecting::new(ctx);
    let topic = &ctx.topics[sub.tracker.borrow().topic as usize];
    let permit = ctx
        .connect_sem
        .acquire()
        .await
        .map_err(|_| "semaphore closed")?;
    let mut sender = http1(ctx).await?;
    let path = match ctx.flavor {
        Flavor::Switchboard => format!("/events?topic={topic}"),
        Flavor::Nchan => format!("/sub/sse/{topic}"),
    };
    let mut req = get(ctx, &path);
    req.headers_mut().insert(
        ACCEPT,
        "text/event-stream"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sse request: {e}"))?;
    drop(permit);
    if resp.status() != StatusCode::OK {
        return Err(format!("sse status {}", resp.status().as_u16()));
    }
    if ctx.flavor == Flavor::Nchan {
        setup.ok();
    }
    let mut body = resp.into_body();
    // Bytes after the last complete line of the previous chunk.
    let mut carry: Vec<u8> = Vec::new();
    let process = |buf: &[u8], setup: &mut Connecting<'_>| {
        payload::scan(buf, |seq, sent| {
            ctx.shared.on_payload(&sub.tracker, seq, sent)
        });
        if ctx.flavor == Flavor::Switchboard {
            if !setup.done && memchr::memmem::find(buf, b"event: subscribed").is_some() {
                setup.ok();
            }
            let resets = memchr::memmem::find_iter(buf, b"event: reset").count() as u64;
            ctx.shared.resets.set(ctx.shared.resets.get() + resets);
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) if ctx.shared.stopping.get() => {
                let _ = e;
                return Ok(());
            }
            Err(e) => return Err(format!("sse read: {e}")),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // Only complete lines are scanned, so a payload split across chunks is seen once.
        match memchr::memrchr(b'\n', &data) {
            None => carry.extend_from_slice(&data),
            Some(last) if carry.is_empty() => {
                process(&data[..=last], &mut setup);
                carry.extend_from_slice(&data[last + 1..]);
            }
            Some(last) => {
                carry.extend_from_slice(&data[..=last]);
                process(&carry, &mut setup);
                carry.clear();
                carry.extend_from_slice(&data[last + 1..]);
            }
        }
        if carry.len() > 1 << 20 {
            return Err("sse line over 1 MiB".into());
        }
    }
    if !ctx.shared.stopping.get() {
        ctx.shared.error("sse stream ended");
    }
    Ok(())
}

/// Long-poll subscriber. Switchboard: `GET /poll?topic=T&since=CURSOR`, the reply carries every
/// waiting message and the next cursor. Nchan: `GET /sub/lp/T` walking the channel with
/// `If-Modified-Since`/`If-None-Match` from the previous reply's `Last-Modified`/`Etag`.
async fn poll(ctx: &Ctx, sub: &Sub, transport: Transport) -> Result<(), String> {
    let mut setup = Connecting::new(ctx);
    let topic = ctx.topics[sub.tracker.borrow().topic as usize].clone();
    let permit = ctx
        .connect_sem
        .acquire()
        .await
        .map_err(|_| "semaphore closed")?;
    let mut sender = http1(ctx).await?;
    drop(permit);
    setup.ok();
    let mut cursor: Option<String> = None;
    let mut last_modified = None;
    let mut etag = None;
    let mut errors = 0u32;
    loop {
        let mut req = match ctx.flavor {
            Flavor::Switchboard => {
                let path = match &cursor {
                    Some(c) => format!("/poll?topic={topic}&since={c}&timeout=25"),
                    None => format!("/poll?topic={topic}&timeout=25"),
                };
                get(ctx, &path)
            }
            Flavor::Nchan => {
                let path = if transport == Transport::PollMultipart {
                    format!("/sub/lpm/{topic}")
                } else {
                    format!("/sub/lp/{topic}")
                };
                let mut req = get(ctx, &path);
                let h = req.headers_mut();
                if let Some(v) = &last_modified {
                    h.insert(IF_MODIFIED_SINCE, Clone::clone(v));
                }
                if let Some(v) = &etag {
                    h.insert(IF_NONE_MATCH, Clone::clone(v));
                }
                if transport == Transport::PollMultipart {
                    h.insert(
                        ACCEPT,
                        "multipart/mixed".parse().unwrap_or_else(|_| unreachable!()),
                    );
                }
                req
            }
        };
        *req.method_mut() = Method::GET;
        if sender.ready().await.is_err() {
            if ctx.shared.stopping.get() {
                return Ok(());
            }
            return Err("poll connection closed".into());
        }
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(_) if ctx.shared.stopping.get() => return Ok(()),
            Err(e) => return Err(format!("poll request: {e}")),
        };
        let status = resp.status();
        if ctx.flavor == Flavor::Nchan && status == StatusCode::OK {
            let h = resp.headers();
            last_modified = h.get(LAST_MODIFIED).cloned().or(last_modified);
            etag = h.get(ETAG).cloned().or(etag);
        }
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) if ctx.shared.stopping.get() => return Ok(()),
            Err(e) => return Err(format!("poll body: {e}")),
        };
        match (ctx.flavor, status) {
            (_, StatusCode::OK) => {
                errors = 0;
                payload::scan(&body, |seq, sent| {
                    ctx.shared.on_payload(&sub.tracker, seq, sent)
                });
                match ctx.flavor {
                    Flavor::Switchboard => {
                        match payload::json_str(&body, "cursor") {
                            Some(c) => cursor = Some(String::from_utf8_lossy(c).into_owned()),
                            None => ctx.shared.error("poll reply without cursor"),
                        }
                        if memchr::memmem::find(&body, br#""reset":[]"#).is_none() {
                            let n = memchr::memmem::find_iter(&body, br#""reason":"#).count();
                            ctx.shared.resets.set(ctx.shared.resets.get() + n as u64);
                        }
                    }
                    Flavor::Nchan => {}
                }
            }
            // Nchan: held request timed out (408) or nothing new (304): ask again.
            (Flavor::Nchan, StatusCode::REQUEST_TIMEOUT | StatusCode::NOT_MODIFIED) => {}
            (_, s) => {
                ctx.shared.error(format!("poll status {}", s.as_u16()));
                errors += 1;
                if errors > 20 {
                    return Err("poll: giving up after 20 consecutive errors".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
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

/// One keep-alive HTTP connection publishing its queue in order.
///
/// All messages of a topic go through the same publisher, one request at a time, so the order
/// the server receives them in is the sequence order: any disorder seen by a subscriber is
/// the server's.
pub(crate) async fn publisher(ctx: Rc<Ctx>, mut rx: mpsc::Receiver<PubItem>) {
    let paths: Vec<String> = ctx
        .topics
        .iter()
        .map(|t| match ctx.flavor {
            Flavor::Switchboard => format!("/events?topic={t}"),
            Flavor::Nchan => format!("/pub?id={t}"),
        })
        .collect();
    let mut sender = None;
    while let Some((topic, seq)) = rx.recv().await {
        let ok = publish_one(&ctx, &mut sender, &paths[topic as usize], seq).await;
        let p = &ctx.publish;
        p.inflight.set(p.inflight.get().saturating_sub(1));
        if ok {
            p.acked.set(p.acked.get() + 1);
        } else if seq > 0 {
            p.failed.borrow_mut()[topic as usize] += 1;
        }
    }
}

async fn publish_one(
    ctx: &Ctx,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    path: &str,
    seq: u64,
) -> bool {
    for _attempt in 0..2 {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match http1(ctx).await {
                Ok(s) => *sender = Some(s),
                Err(e) => {
                    ctx.shared.error(format!("publisher {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        if s.ready().await.is_err() {
            *sender = None;
            continue;
        }
        let body = payload::build(seq, ctx.shared.now_us(), ctx.payload_bytes);
        let mut req = get(ctx, path);
        *req.method_mut() = Method::POST;
        *req.body_mut() = Full::new(Bytes::from(body));
        req.headers_mut().insert(
            CONTENT_TYPE,
            "application/json"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                if status.is_success() {
                    return true;
                }
                ctx.shared
                    .error(format!("publish status {}", status.as_u16()));
                // A rejected publish is not retried: retrying could duplicate it.
                return false;
            }
            Err(e) => {
                // The request may or may not have reached the server; do not retry it.
                ctx.shared.error(format!("publish: {e}"));
                *sender = None;
                return false;
            }
        }
    }
    false
}
